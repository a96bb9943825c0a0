"""GPU reset on NVLink boards (issue 11 item 7; nvidia-smi(1), vgpu-on-mig.md section 6):
on an HGX A100 without Fabric Manager a GPU resets only together with its NVLink peers, so
NvmlHost finds the peers through NVML and resets them in the same command while they are
idle, and otherwise refuses in one line naming them and the way out."""

from __future__ import annotations

from pathlib import Path

import pytest

from planner.host.errors import HostError
from planner.host.nvml import NvmlHost, ReadOnlyNvml, nvidia_smi_reset
from planner.sim import driver
from planner.sim.fake_nvml import FakeNvml
from planner.sim.host import GpuSpec, HostSpec, init_host
from planner.sim.state import SimStore

G0, G1, G2 = "0000:07:00.0", "0000:0f:00.0", "0000:47:00.0"


def hgx(tmp_path: Path, model: str = "a100-40gb", *, nvswitch: bool = True) -> Path:
    root = tmp_path / "hgx"
    init_host(root, HostSpec(gpus=tuple(GpuSpec(model, p) for p in (G0, G1, G2)),
                             nvswitch=nvswitch))
    return root


def pending_mig(root: Path, pci: str) -> None:
    """MIG asked for while a client held the GPU: pending until a reset."""
    with SimStore(root).transaction() as state:
        gpu = state.gpu(pci)
        assert gpu is not None
        driver.hold(gpu, "nvidia-persistenced", None)
        driver.set_mig_mode(state, gpu, 1)
        driver.release(gpu, "nvidia-persistenced", None)
        assert (gpu.mig_current, gpu.mig_pending) == (False, True)


def nvml_host(root: Path) -> NvmlHost:
    return NvmlHost(FakeNvml(root), reset=nvidia_smi_reset(str(root / "bin" / "nvidia-smi")))


def test_peers_come_from_nvml(tmp_path: Path) -> None:
    with NvmlHost(ReadOnlyNvml(FakeNvml(hgx(tmp_path)))) as h:  # a read-only view suffices
        assert h.nvlink_peers(G0) == (G1, G2)
    with NvmlHost(FakeNvml(hgx(tmp_path / "pcie", nvswitch=False))) as h:
        assert h.nvlink_peers(G0) == ()


def test_idle_peers_are_reset_in_the_same_command(tmp_path: Path) -> None:
    root = hgx(tmp_path)
    pending_mig(root, G0)
    with nvml_host(root) as h:
        h.reset_gpu(G0)  # alone it fails (no Fabric Manager): with G1 and G2 it works
        gpus = {g.pci: g for g in h.read_gpus()}
    assert gpus[G0].mig_current and not gpus[G0].mig_change_pending


def test_busy_peers_make_the_reset_refuse_naming_them(tmp_path: Path) -> None:
    root = hgx(tmp_path)
    pending_mig(root, G0)
    with SimStore(root).transaction() as state:
        g1 = state.gpu(G1)
        assert g1 is not None
        g1.mig_current = g1.mig_pending = True
    with nvml_host(root) as h:
        h.create_gpu_instance(G1, 19, 0)
        with pytest.raises(HostError) as err:
            h.reset_gpu(G0)
        text = str(err.value)
        assert "\n" not in text
        assert f"gpu[{G1}] has 1 GPU instance(s)" in text and G2 not in text.split("idle")[1]
        assert "start Fabric Manager" in text
        assert len(h.find_gpu(G1).gpu_instances) == 1  # type: ignore[union-attr]
        assert h.find_gpu(G0).mig_change_pending  # type: ignore[union-attr]


def test_with_fabric_manager_or_on_hopper_a_gpu_resets_alone(tmp_path: Path) -> None:
    root = hgx(tmp_path)
    pending_mig(root, G0)
    with SimStore(root).transaction() as state:
        g1 = state.gpu(G1)
        assert g1 is not None
        g1.mig_current = g1.mig_pending = True
        driver.hold(state.gpus[2], "nvidia-fabricmanager", None)
    with nvml_host(root) as h:
        h.create_gpu_instance(G1, 19, 0)
        h.reset_gpu(G0)  # Fabric Manager runs: G1's instance is no obstacle and stays
        assert len(h.find_gpu(G1).gpu_instances) == 1  # type: ignore[union-attr]
    hopper = hgx(tmp_path / "h100", "h100-80gb")
    with SimStore(hopper).transaction() as state:
        g1 = state.gpu(G1)
        assert g1 is not None
        g1.mig_current = g1.mig_pending = True
    with nvml_host(hopper) as h:
        h.create_gpu_instance(G1, 19, 0)
        h.reset_gpu(G0)  # Hopper: no Fabric Manager dependency
        assert len(h.find_gpu(G1).gpu_instances) == 1  # type: ignore[union-attr]
