"""No write follows a symbolic link (issue 16, item 5): a link planted in the state
directory (the lock, ``generations/``, ``journals/``, the journal) or at a temporary
name of the simulated host is refused or replaced, never written through."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from planner.apply.fsutil import write_atomic
from tests.apply.simhost import SimHost
from tests.campaign.cases import config
from tests.clirun import aihow

G0 = "0000:17:00.0"


@pytest.fixture()
def host(tmp_path: Path) -> SimHost:
    h = SimHost.create(tmp_path / "h", [("a100-40gb", G0, False)])
    h.state_dir.mkdir()
    return h


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    return victim


def _apply(host: SimHost, cfg: Path) -> tuple[int, str]:
    res = aihow("apply", str(cfg), "--host", host.uri, "--auto-approve", "--allow-reset")
    assert "Traceback" not in res.stderr, res.stderr
    return res.returncode, res.stderr


def test_a_lock_symlink_is_refused_and_its_target_kept(host: SimHost, tmp_path: Path) -> None:
    victim = _victim(tmp_path)
    (host.state_dir / "lock").symlink_to(victim)
    before = host.layout()
    code, err = _apply(host, config(tmp_path))
    assert code == 1 and err.count("\n") == 1, err
    assert f"{host.state_dir / 'lock'}: cannot take the host lock: is a symbolic link" in err
    assert victim.read_text() == "precious\n"
    assert host.layout() == before


@pytest.mark.parametrize("name", ["generations", "journals"])
def test_a_state_subdirectory_symlink_is_refused_before_anything_changes(
        host: SimHost, tmp_path: Path, name: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (host.state_dir / name).symlink_to(outside, target_is_directory=True)
    before = host.layout()
    code, err = _apply(host, config(tmp_path))
    assert code == 1 and err.count("\n") == 1, err
    assert f"{host.state_dir / name}: is a symbolic link" in err
    assert list(outside.iterdir()) == []
    assert host.layout() == before
    assert not (host.state_dir / "lock").exists()  # nothing left behind either


def test_a_journal_symlink_is_refused(host: SimHost, tmp_path: Path) -> None:
    victim = _victim(tmp_path)
    (host.state_dir / "journal.jsonl").symlink_to(victim)
    code, err = _apply(host, config(tmp_path))
    assert code == 1 and "journal.jsonl: is a symbolic link" in err, err
    assert victim.read_text() == "precious\n"


def test_write_atomic_never_writes_through_a_planted_temporary_name(tmp_path: Path) -> None:
    victim = _victim(tmp_path)
    target = tmp_path / "meta.json"
    for guess in (f".meta.json.tmp-{os.getpid()}", ".meta.json.tmp"):
        (tmp_path / guess).symlink_to(victim)
    write_atomic(target, "{}\n")
    assert target.read_text() == "{}\n" and not target.is_symlink()
    assert victim.read_text() == "precious\n"


def test_the_simulated_hosts_stores_ignore_planted_temporary_names(host: SimHost,
                                                                  tmp_path: Path) -> None:
    """The simulated libvirt store once wrote ``.NAME.tmp`` beside each file, following
    a link planted there; its temporary names are now unpredictable and exclusive."""
    victim = _victim(tmp_path)
    domains = host.dir / "libvirt" / "domains"
    domains.mkdir(parents=True, exist_ok=True)
    for name in ("hpc-controller", "hpc-compute-01"):
        (domains / f".{name}.xml.tmp").symlink_to(victim)
    (host.dir / "libvirt" / ".runstate.json.tmp").symlink_to(victim)
    code, err = _apply(host, config(tmp_path))
    assert code == 0, err
    assert victim.read_text() == "precious\n"
    assert (domains / "hpc-controller.xml").is_file()
