"""The host Environment: what each of the three hands out, that a snapshot refuses to
change anything, and that a command parses its host URI once."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import planner.host.uri as uri_module
from planner.cli.host_opts import open_environment
from planner.host.environment import LOCAL_STATE_DIR, LocalEnvironment
from planner.host.errors import HostError
from planner.host.mdev_persist import Mdevctl, MdevDefinition
from planner.host.records import DefinedDomain, HostRecords
from planner.host.snapshot import (
    FORMAT,
    FORMAT_VERSION,
    SnapshotEnvironment,
    load_snapshot,
    snapshot_json,
)
from planner.sim.environment import SimEnvironment
from planner.sim.fake_nvml import FakeNvml
from planner.sim.host import GpuSpec
from planner.sim.mdev_store import SimMdevDefinitions

ROOT = Path(__file__).resolve().parents[2]
GPU = "0000:17:00.0"
MDEV = "2f0c6a3e-1111-4222-8333-444455556666"


def test_local_environment_hands_out_this_machine() -> None:
    env = open_environment(None)
    assert isinstance(env, LocalEnvironment)
    assert env.host_uri == "local" and env.libvirt_uri is None
    assert env.root() == Path("/") and env.proc_root() == Path("/proc")
    assert env.state_dir() == LOCAL_STATE_DIR == Path("/var/lib/aihow")
    assert (env.tools.nvidia_smi, env.tools.mdevctl, env.tools.sriov_manage) == (
        "nvidia-smi", "mdevctl", "sriov-manage")
    import pynvml

    assert env.nvml_module() is pynvml
    sysfs = env.sysfs()
    assert sysfs.root == Path("/") and sysfs._writable and sysfs._writer is None
    assert not env.sysfs_readonly()._writable
    store = env.mdev_store()
    assert isinstance(store, Mdevctl) and store.binary == "mdevctl"


def test_local_libvirt_follows_the_override() -> None:
    env = open_environment("local", "test:///default")
    with env.libvirt(read_only=True) as session:
        assert session.uri == "test:///default" and session.read_only
        session.commit()  # a real libvirt keeps its own state: nothing to do
    assert env.with_libvirt_uri(None).libvirt_uri is None


def test_sim_environment_hands_out_the_simulated_host(
        make_host: Callable[..., Path]) -> None:
    d = make_host(GpuSpec("a100-40gb", GPU, mig=True))
    env = open_environment(f"sim:{d}")
    assert isinstance(env, SimEnvironment) and env.host_uri == f"sim:{d}"
    assert env.root() == d and env.proc_root() == d / "proc"
    assert env.state_dir() == d / "state"
    assert env.tools.nvidia_smi == str(d / "bin" / "nvidia-smi")
    assert env.tools.mdevctl is None
    assert env.tools.sriov_manage == str(d / "bin" / "sriov-manage")
    assert isinstance(env.nvml_module(), FakeNvml)
    with pytest.raises(AttributeError, match="not available on a read-only NVML view"):
        env.nvml_readonly().nvmlDeviceCreateGpuInstanceWithPlacement  # noqa: B018
    nvml = env.nvml()
    try:
        assert [g.pci for g in nvml.read_gpus()] == [GPU]
    finally:
        nvml.close()
    with env.libvirt() as session:
        assert session.uri == f"sim:{d} (libvirt test driver)" and not session.read_only
    store = env.mdev_store()
    assert isinstance(store, SimMdevDefinitions) and store.root == d / "etc" / "mdevctl.d"
    store.define(MdevDefinition(MDEV, "0000:17:00.4", "nvidia-474"))
    assert (d / "etc/mdevctl.d/0000:17:00.4" / MDEV).is_file()


def test_sim_sysfs_writes_reach_the_simulated_kernel(make_host: Callable[..., Path]) -> None:
    d = make_host(GpuSpec("a100-40gb", GPU, mig=True), vgpu="mdev")
    env = open_environment(f"sim:{d}")
    with pytest.raises(HostError, match="read-only"):
        env.sysfs_readonly().write(f"bus/pci/devices/{GPU}/sriov_numvfs", "4")
    # the simulated kernel answers: only sriov-manage may change the VFs
    with pytest.raises(HostError, match="No such file or directory"):
        env.sysfs().write(f"bus/pci/devices/{GPU}/sriov_numvfs", "4")
    assert env.tools.sriov_manage is not None
    out = subprocess.run([env.tools.sriov_manage, "-e", GPU], capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    # the simulated host's sriov-manage made the VFs: their links appear in the tree
    assert (d / f"sys/bus/pci/devices/{GPU}/virtfn3").exists()
    assert env.probe().vgpu_parents  # and the probe sees them


def test_a_directory_without_a_simulated_host_is_named(tmp_path: Path) -> None:
    env = open_environment(f"sim:{tmp_path}")
    for port in (env.nvml_module, env.sysfs, env.sysfs_readonly, env.probe):
        with pytest.raises(HostError, match=r"no simulated host in .*aihow sim init"):
            port()
    with env.libvirt(read_only=True) as session:  # its libvirt store alone still serves
        assert session.conn.listAllDomains() == []


def _records() -> HostRecords:
    xml = "<domain type='kvm'><name>vm-a</name></domain>"
    return HostRecords(defined={"vm-a": DefinedDomain("vm-a", "hpc", xml)},
                       claims={("gi_placement", f"{GPU}/0"): "hpc/hpc-compute-01",
                               ("pci", GPU): "hpc/hpc-compute-02"})


@pytest.fixture
def snapshot(make_host: Callable[..., Path], tmp_path: Path) -> tuple[Path, Path]:
    """(the simulated host, a snapshot of it carrying some records)."""
    d = make_host(GpuSpec("a100-40gb", GPU, mig=True))
    state = open_environment(f"sim:{d}").probe()
    path = tmp_path / "snap.json"
    path.write_text(snapshot_json(state, _records()))
    return d, path


def test_snapshot_format_round_trips(snapshot: tuple[Path, Path]) -> None:
    import json

    d, path = snapshot
    doc = json.loads(path.read_text())
    assert (doc["format"], doc["format_version"]) == (FORMAT, FORMAT_VERSION)
    assert doc["host_uri"] == f"sim:{d}"
    state, records = load_snapshot(path)
    assert state == open_environment(f"sim:{d}").probe()
    assert records == _records()
    assert snapshot_json(state, records) == path.read_text()  # canonical bytes


def test_snapshot_environment_serves_the_saved_probe_only(
        snapshot: tuple[Path, Path]) -> None:
    d, path = snapshot
    env = open_environment(f"snapshot:{path}", "qemu:///system")
    assert isinstance(env, SnapshotEnvironment)
    assert env.host_uri == f"sim:{d}"  # plans made on it name the host it was taken from
    assert env.probe() == open_environment(f"sim:{d}").probe()
    assert env.records() == _records() == env.records(Path("/nonexistent"))
    assert env.with_libvirt_uri("test:///default") is env
    assert (env.tools.nvidia_smi, env.tools.mdevctl, env.tools.sriov_manage) == (None,) * 3


@pytest.mark.parametrize("port", [
    "nvml", "sysfs", "mdev_store", "libvirt", "state_dir", "nvml_module", "root",
    "nvml_readonly", "sysfs_readonly", "proc_root",
])
def test_snapshot_refuses_every_other_port_in_one_line(
        snapshot: tuple[Path, Path], port: str) -> None:
    d, path = snapshot
    env = open_environment(f"snapshot:{path}")
    with pytest.raises(HostError) as info:
        getattr(env, port)()
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"snapshot:{path}: a saved probe is a read-only host")
    assert message.endswith(f"use the host it was taken from (sim:{d})")


@pytest.mark.parametrize(("text", "why"), [
    ("not json", "not a host snapshot (not JSON"),
    ('{"format": "something-else"}', "not a host snapshot (no \"format\""),
    (f'{{"format": "{FORMAT}", "format_version": 99}}', "format_version 99 is not 1"),
    (f'{{"format": "{FORMAT}", "format_version": 1, "state": {{}}}}', "damaged host snapshot"),
])
def test_a_bad_snapshot_is_one_line_naming_the_file(tmp_path: Path, text: str,
                                                    why: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(HostError) as info:
        open_environment(f"snapshot:{path}")
    assert str(info.value).startswith(f"{path}: ") and why in str(info.value)
    assert "\n" not in str(info.value)
    with pytest.raises(HostError, match="cannot read the snapshot"):
        open_environment(f"snapshot:{tmp_path / 'absent.json'}")


# --- the URI is parsed once per command ---------------------------------------------------


def test_only_open_environment_parses_host_uris() -> None:
    """No module but the environment's constructor looks at a host URI's text."""
    callers = sorted(
        str(p.relative_to(ROOT)) for p in (ROOT / "planner").rglob("*.py")
        if re.search(r"\bparse_host_uri\b", p.read_text()) and p.name != "uri.py")
    assert callers == ["planner/cli/host_opts.py"]


def test_lower_layers_never_import_the_simulator() -> None:
    for layer in ("host", "apply", "plan", "vm", "config", "hardware", "lang"):
        for p in (ROOT / "planner" / layer).rglob("*.py"):
            assert "planner.sim" not in p.read_text(), p


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = uri_module.parse_host_uri

    def counting(text: str) -> Any:
        calls.append(text)
        return real(text)

    monkeypatch.setattr(uri_module, "parse_host_uri", counting)
    return calls


def _run(*args: str) -> Any:
    import planner.cli as cli

    result = CliRunner().invoke(cli.app, list(args))
    # validate may fail a row on a bare simulated host (exit 1); a crash may not
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


def test_each_command_parses_the_host_uri_once(
        make_host: Callable[..., Path], tmp_path: Path, counted: list[str]) -> None:
    from tests.apply.simhost import write_config

    d = make_host(GpuSpec("h100-80gb", GPU, mig=True))
    host = f"sim:{d}"
    cfg = write_config(tmp_path / "a.yaml", {GPU: "3g.40gb@4"})
    plan = tmp_path / "plan.json"
    snap = tmp_path / "snap.json"
    steps: list[tuple[str, ...]] = [
        ("probe", "--host", host, "-o", str(snap)),
        ("validate", str(cfg), "--host", host),
        ("plan", str(cfg), "--host", f"snapshot:{snap}", "-o", str(plan)),
        ("plan", str(cfg), "--host", host),
        ("graph", str(cfg), "--host", host),
        ("apply", str(plan), "--auto-approve", "--allow-reset"),
        ("apply", str(cfg), "--host", host, "--auto-approve"),
        ("generations", "--host", host),
        ("rollback", "--host", host, "--to", "1", "--auto-approve"),
        ("rollback", "--to", "1", "--auto-approve", "--state-dir", str(d / "state")),
        ("recover", "--host", host),
    ]
    for args in steps:
        counted.clear()
        _run(*args)
        assert len(counted) == 1, (args, counted)
