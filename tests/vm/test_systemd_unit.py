"""contrib/systemd/aihow-apply.service: ordering, oneshot semantics, and systemd's verdict."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "contrib" / "systemd" / "aihow-apply.service"


def directives() -> dict[tuple[str, str], list[str]]:
    """(section, key) -> values, repeated keys kept in order (systemd allows them)."""
    out: dict[tuple[str, str], list[str]] = {}
    section = ""
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.setdefault((section, key.strip()), []).append(value.strip())
    return out


def words(d: dict[tuple[str, str], list[str]], section: str, key: str) -> list[str]:
    return [w for v in d.get((section, key), []) for w in v.split()]


def test_runs_apply_once_per_boot_and_stays_active() -> None:
    d = directives()
    assert d[("Service", "Type")] == ["oneshot"]
    assert d[("Service", "RemainAfterExit")] == ["yes"]
    (cmd,) = d[("Service", "ExecStart")]
    # the last applied generation, not a file that may hold an unapplied edit
    assert cmd.split()[1:4] == ["apply", "--last-generation", "--auto-approve"]
    assert "--lock-timeout" in cmd.split()
    assert ("Unit", "ConditionPathExists") not in d
    assert d[("Install", "WantedBy")] == ["multi-user.target"]


def test_has_a_finite_start_timeout() -> None:
    (timeout,) = directives()[("Service", "TimeoutStartSec")]
    assert timeout not in ("0", "infinity")
    assert timeout.rstrip("min").isdigit()


def test_ordered_after_the_driver_and_libvirtd_and_before_guests() -> None:
    d = directives()
    after = words(d, "Unit", "After")
    for unit in ("nvidia-persistenced.service", "nvidia-vgpu-mgr.service", "libvirtd.service"):
        assert unit in after
    assert words(d, "Unit", "Before") == ["libvirt-guests.service"]
    # Never "Before=libvirtd": apply talks to libvirtd, a socket-activated start would wait.
    assert "libvirtd.service" not in words(d, "Unit", "Before")


def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed")
    # verify insists the ExecStart binary exists: point it at this checkout's aihow.
    aihow = Path(sys.executable).with_name("aihow")
    if not aihow.exists():
        pytest.skip(f"{aihow} is not installed (pip install -e .)")
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/aihow", str(aihow)))
    res = subprocess.run(
        [tool, "verify", str(unit)], capture_output=True, text=True, check=False, timeout=120
    )
    # verify exits 0 on warnings such as unknown keys; demand silence too.
    assert res.returncode == 0 and res.stdout + res.stderr == "", res.stdout + res.stderr
