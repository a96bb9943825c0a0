"""State: transactions across processes, reboot, pending mode, faults, spec files, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pynvml
import pytest

from planner.sim import driver, faults
from planner.sim.fake_nvml import FakeNvml
from planner.sim.host import GpuSpec, load_spec
from planner.sim.state import SimError, SimStore
from tests.clirun import aihow


def _nvml(root: Path) -> tuple[FakeNvml, object]:
    n = FakeNvml(root)
    n.nvmlInit()
    return n, n.nvmlDeviceGetHandleByIndex(0)


CREATOR = """
import sys
from planner.sim.fake_nvml import FakeNvml
n = FakeNvml(sys.argv[1]); n.nvmlInit(); h = n.nvmlDeviceGetHandleByIndex(0)
made = 0
for _ in range(20):
    try:
        n.nvmlDeviceCreateGpuInstance(h, 19); made += 1
    except n.NVMLError_InsufficientResources:
        pass
print(made)
"""


def test_concurrent_processes_never_corrupt_state(a100: Path) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CREATOR, str(a100)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    made = [int(p.communicate(timeout=120)[0]) for p in procs]
    assert sum(made) == 7  # exactly the 7 slots: no lost update, no double allocation
    state = SimStore(a100).read()
    starts = sorted(gi.start for gi in state.gpus[0].gpu_instances)
    assert starts == list(range(7))
    assert len({gi.gi_id for gi in state.gpus[0].gpu_instances}) == 7


@pytest.mark.parametrize(("model", "persists"), [("a100-40gb", True), ("h100-80gb", False)])
def test_reboot(make_host, model: str, persists: bool) -> None:
    root = make_host(GpuSpec(model, mig=True), vgpu="mdev")
    n, h = _nvml(root)
    gi = n.nvmlDeviceCreateGpuInstance(h, 9)
    n.nvmlGpuInstanceCreateComputeInstance(gi, 2)
    with SimStore(root).transaction() as state:
        driver.hold(state.gpus[0], "nvidia-persistenced", 10)
        driver.hold(state.gpus[0], "python", 11)
        state.gpus[0].num_vfs = 4
    r = aihow("sim", "reboot", str(root))
    assert r.returncode == 0, r.stderr
    state = SimStore(root).read()
    gpu = state.gpus[0]
    assert gpu.gpu_instances == [] and gpu.num_vfs == 0
    assert [h.name for h in gpu.holders] == ["nvidia-persistenced"]
    assert (gpu.mig_current, gpu.mig_pending) == (persists, persists)
    n2, h2 = _nvml(root)
    assert n2.nvmlDeviceGetMigMode(h2) == [int(persists), int(persists)]
    with pytest.raises(pynvml.NVMLError_InvalidArgument):  # old handle's GI is gone
        n.nvmlGpuInstanceGetInfo(gi)


def test_pending_mode_on_ampere_and_hopper(make_host) -> None:
    root = make_host(GpuSpec("a100-40gb"), GpuSpec("h100-80gb"))
    with SimStore(root).transaction() as state:
        for gpu in state.gpus:
            driver.hold(gpu, "dcgm", None)
    n = FakeNvml(root)
    n.nvmlInit()
    a100, h100 = n.nvmlDeviceGetHandleByIndex(0), n.nvmlDeviceGetHandleByIndex(1)
    assert n.nvmlDeviceSetMigMode(a100, 1) == pynvml.NVML_ERROR_IN_USE  # returned, not raised
    assert n.nvmlDeviceGetMigMode(a100) == [0, 1]
    with pytest.raises(pynvml.NVMLError_NotSupported):  # pending is not enabled
        n.nvmlDeviceCreateGpuInstance(a100, 19)
    assert n.nvmlDeviceSetMigMode(h100, 1) == pynvml.NVML_SUCCESS  # Hopper: no reset needed
    assert n.nvmlDeviceGetMigMode(h100) == [1, 1]
    aihow("sim", "reboot", str(root))
    assert n.nvmlDeviceGetMigMode(a100) == [1, 1]  # pending applied at boot, kept (InfoROM)
    assert n.nvmlDeviceGetMigMode(h100) == [0, 0]  # Hopper loses MIG mode on reboot


def test_faults_fire_on_the_nth_call(nvml: FakeNvml, a100: Path) -> None:
    r = aihow("sim", "fail", str(a100), "--op", "nvmlDeviceCreateGpuInstance", "--at", "2")
    assert r.returncode == 0, r.stderr
    h = nvml.nvmlDeviceGetHandleByIndex(0)
    nvml.nvmlDeviceCreateGpuInstance(h, 19)
    with pytest.raises(pynvml.NVMLError_InsufficientResources):
        nvml.nvmlDeviceCreateGpuInstance(h, 19)
    nvml.nvmlDeviceCreateGpuInstance(h, 19)  # fires once
    assert len(SimStore(a100).read().gpus[0].gpu_instances) == 2
    aihow(
        "sim",
        "fail",
        str(a100),
        "--op",
        "nvmlGpuInstanceDestroy",
        "--at",
        "1",
        "--error",
        "GPU_IS_LOST",
    )
    gi = nvml.nvmlDeviceGetGpuInstanceById(h, 13)
    with pytest.raises(pynvml.NVMLError_GpuIsLost):
        nvml.nvmlGpuInstanceDestroy(gi)
    listing = aihow("sim", "fail", str(a100), "--list").stdout
    assert "nvmlGpuInstanceDestroy at call 1: GPU_IS_LOST (fired)" in listing
    assert "sysfs.mdev_create" in listing and "virDomainDefineXML" in listing
    assert aihow("sim", "fail", str(a100), "--clear").returncode == 0
    assert SimStore(a100).read().faults == []


def test_fault_validation_and_libvirt_check(a100: Path) -> None:
    r = aihow("sim", "fail", str(a100), "--op", "nvmlNope", "--at", "1")
    assert r.returncode == 1 and "unknown operation 'nvmlNope'" in r.stderr
    assert "Traceback" not in r.stderr
    r = aihow(
        "sim", "fail", str(a100), "--op", "sysfs.mdev_create", "--at", "1", "--error", "IN_USE"
    )
    assert r.returncode == 1 and "does not fit" in r.stderr
    assert SimStore(a100).read().faults == []  # nothing changed
    with SimStore(a100).transaction() as state:
        faults.arm(state, "virDomainCreate", 2)
    assert faults.check(a100, "virDomainCreate") is None
    assert faults.check(a100, "virDomainCreate") == "VIR_ERR_OPERATION_FAILED"


def test_spec_files(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    a = load_spec(repo / "config" / "sim-a100.toml")
    assert (a.gpus[0].model, a.gpus[0].pci, a.vgpu) == ("a100-40gb", "0000:17:00.0", "mdev")
    h = load_spec(repo / "config" / "sim-h100.toml")
    assert (h.gpus[0].model, h.gpus[0].pci, h.vgpu) == ("h100-80gb", "0000:65:00.0", "vfio-vf")
    bad = tmp_path / "bad.toml"
    bad.write_text('[[gpu]]\nmodel = "a100-40gb"\ncolour = "red"\n')
    with pytest.raises(SimError, match=r"bad.toml: gpu\[0\]: unknown key 'colour'"):
        load_spec(bad)


def test_cli_init_show_and_bad_input(tmp_path: Path) -> None:
    root = tmp_path / "h"
    r = aihow("sim", "init", str(root), "--gpu", "a100-40gb", "--gpu", "h100-80gb@65:00.0")
    assert r.returncode == 0, r.stderr
    shown = json.loads(aihow("sim", "show", str(root), "--format", "json").stdout)
    assert [(g["pci"], g["model"]) for g in shown["gpus"]] == [
        ("0000:17:00.0", "a100-40gb"),
        ("0000:65:00.0", "h100-80gb"),
    ]
    before = (root / "state.json").read_text()
    r = aihow("sim", "init", str(root), "--gpu", "a100-40gb")
    assert r.returncode == 1 and "already a simulated host" in r.stderr
    r = aihow("sim", "init", str(tmp_path / "x"), "--gpu", "a100-40gb@zz")
    assert r.returncode == 1 and "--gpu 'a100-40gb@zz'" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "x").exists()
    assert (root / "state.json").read_text() == before
    assert "a100-40gb" in aihow("sim", "models").stdout


def test_init_force_replaces_the_whole_host(tmp_path: Path) -> None:
    """A replaced host keeps nothing of the old one: no domains, mdev definitions or
    aihow state (so `make demo` always starts from a bare host)."""
    from planner.sim.host import init_host

    spec = load_spec(Path(__file__).resolve().parents[2] / "config" / "sim-a100.toml")
    init_host(tmp_path, spec)
    leftovers = [tmp_path / "libvirt" / "domains" / "old.xml",
                 tmp_path / "etc" / "mdevctl.d" / "0000:17:00.4" / "x",
                 tmp_path / "state" / "generations" / "1" / "meta.json"]
    for path in leftovers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("old")
    with pytest.raises(SimError):
        init_host(tmp_path, spec)
    assert all(p.exists() for p in leftovers)
    init_host(tmp_path, spec, force=True)
    assert not any(p.exists() for p in leftovers)
    assert (tmp_path / "bin" / "nvidia-smi").exists() and (tmp_path / "sys").is_dir()
