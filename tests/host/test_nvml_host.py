"""NvmlHost on the simulator's FakeNvml (pynvml's own code over a simulated library):
reading, and the mutators apply uses, addressed by placement."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from planner.host.errors import HostError, NvmlOperationError
from planner.host.nvml import NvmlHost, nvidia_smi_reset
from planner.sim.fake_nvml import FakeNvml
from planner.sim.host import GpuSpec
from planner.sim.state import SimStore

A100 = "0000:17:00.0"
H100 = "0000:31:00.0"


@pytest.fixture
def host_dir(make_host: Callable[..., Path]) -> Path:
    return make_host(
        GpuSpec("a100-40gb", A100, mig=True, gi_ids="swapped-halves"),
        GpuSpec("h100-80gb", H100),
    )


@pytest.fixture
def host(host_dir: Path) -> NvmlHost:
    h = NvmlHost(FakeNvml(host_dir), reset=nvidia_smi_reset(str(host_dir / "bin/nvidia-smi")))
    with h:
        yield h


def test_reads_gpus_in_pci_order_with_model_and_mode(host: NvmlHost) -> None:
    a100, h100 = host.read_gpus()
    assert (a100.pci, a100.model, a100.pci_device_id) == (A100, "a100-40gb", "20b0")
    assert a100.name == "NVIDIA A100-SXM4-40GB"
    assert (a100.mig_capable, a100.mig_current, a100.mig_pending) == (True, True, True)
    assert a100.uuid.startswith("GPU-")
    assert (h100.model, h100.mig_current) == ("h100-80gb", False)
    assert host.driver_version() == "580.82.07"


def test_the_a100_creation_order_succeeds_with_placements(host: NvmlHost) -> None:
    # docs/reference/mig-hardware.md 2.2: -cgi 19,19,14,9 without placements fails on
    # profile 9; the same profiles in the same order succeed when each gets its placement.
    for profile_id, start in ((19, 0), (19, 1), (14, 2), (9, 4)):
        created = host.create_gpu_instance(A100, profile_id, start)
        assert (created.profile_id, created.placement_start) == (profile_id, start)
    (gpu, _) = host.read_gpus()
    assert [(g.profile_name, g.placement_start, g.placement_size) for g in gpu.gpu_instances] == [
        ("1g.5gb", 0, 1), ("1g.5gb", 1, 1), ("2g.10gb", 2, 2), ("3g.20gb", 4, 4)]


def test_occupied_and_illegal_placements(host: NvmlHost) -> None:
    host.create_gpu_instance(A100, 19, 6)
    with pytest.raises(NvmlOperationError, match="Insufficient Resources") as info:
        host.create_gpu_instance(A100, 9, 4)  # overlaps the 1g at 6
    assert info.value.nvml_code == 23
    with pytest.raises(HostError, match=r"3g.20gb cannot start at 2 \(legal starts: 0, 4\)"):
        host.create_gpu_instance(A100, 9, 2)


def test_placement_is_read_back_not_inferred_from_the_id(host: NvmlHost) -> None:
    host.create_gpu_instance(A100, 9, 4)
    host.create_gpu_instance(A100, 14, 0)
    (gpu, _) = host.read_gpus()
    by_start = {g.placement_start: g.gi_id for g in gpu.gpu_instances}
    # Swapped halves: the 3g in the upper half has id 1 (not 2), the 2g at 0 has id 5 (not 3).
    assert by_start == {0: 5, 4: 1}


def test_compute_instances_and_mig_uuids(host: NvmlHost) -> None:
    host.create_gpu_instance(A100, 9, 0)
    ci = host.create_compute_instance(A100, 0, 0, 1)
    assert (ci.profile_id, ci.placement_start, ci.placement_size) == (0, 1, 1)
    assert ci.mig_uuid is not None and ci.mig_uuid.startswith("MIG-")
    host.create_compute_instance(A100, 0, 0, 0)
    (gpu, _) = host.read_gpus()
    (gi,) = gpu.gpu_instances
    assert [(c.placement_start, c.mig_uuid is not None) for c in gi.compute_instances] == [
        (0, True), (1, True)]
    assert ci in gi.compute_instances
    with pytest.raises(NvmlOperationError, match="In use by another client") as info:
        host.destroy_gpu_instance(A100, 9, 0)
    assert info.value.nvml_code == 19
    host.destroy_compute_instance(A100, 0, 0)
    host.destroy_compute_instance(A100, 0, 1)
    host.destroy_gpu_instance(A100, 9, 0)
    assert host.read_gpus()[0].gpu_instances == ()


def test_default_ci_placement_when_none_given(host: NvmlHost) -> None:
    host.create_gpu_instance(A100, 19, 3)
    ci = host.create_compute_instance(A100, 3, 0)
    assert (ci.placement_start, ci.placement_size) == (0, 1)


def test_addressing_errors_name_the_resource(host: NvmlHost) -> None:
    with pytest.raises(HostError, match=r"gpu\[0000:99:00.0\]: no such GPU"):
        host.create_gpu_instance("99:00.0", 19, 0)
    with pytest.raises(HostError, match="no GPU instance at placement 2"):
        host.destroy_gpu_instance(A100, 19, 2)
    with pytest.raises(HostError, match="no GPU-instance profile with id 77"):
        host.create_gpu_instance(A100, 77, 0)
    with pytest.raises(HostError, match=r"gpu\[0000:31:00.0\] \(GPU-instance profile id 19 "
                                        r"at 0\): MIG mode is not enabled"):
        host.create_gpu_instance(H100, 19, 0)  # MIG is disabled on the H100


def test_mig_mode_and_reset(host: NvmlHost, host_dir: Path) -> None:
    assert host.set_mig_mode(H100, True) == 0  # Hopper: no reset needed, nothing holds it
    gpu = host.read_gpus()[1]
    assert (gpu.mig_current, gpu.mig_pending) == (True, True)
    host.reset_gpu(H100)
    with SimStore(host_dir).transaction() as state:
        state.gpu(A100).holders.clear()
    host.create_gpu_instance(A100, 0, 0)
    host.reset_gpu(A100)  # instances vanish on reset
    assert host.read_gpus()[0].gpu_instances == ()


def test_pending_mode_while_held(make_host: Callable[..., Path]) -> None:
    from planner.sim.host import HolderSpec, HostSpec, init_host

    root = make_host(GpuSpec("a100-40gb", A100))
    init_host(root, HostSpec(gpus=(GpuSpec("a100-40gb", A100),),
                             holders=(HolderSpec(A100, "nvidia-persistenced"),)), force=True)
    with NvmlHost(FakeNvml(root)) as host:
        assert host.set_mig_mode(A100, True) == 19  # IN_USE: stays pending
        (gpu,) = host.read_gpus()
        assert (gpu.mig_current, gpu.mig_pending, gpu.mig_change_pending) == (False, True, True)
        with pytest.raises(HostError, match="GPU reset failed"):
            NvmlHost(host.nvml, reset=nvidia_smi_reset(str(root / "bin/nvidia-smi"))).reset_gpu(
                A100)
        with pytest.raises(HostError, match="no way to reset"):
            host.reset_gpu(A100)


def test_compute_processes_are_read(make_host: Callable[..., Path]) -> None:
    root = make_host(GpuSpec("a100-40gb", A100, mig=True))
    with SimStore(root).transaction() as state:
        from planner.sim import driver

        driver.hold(state.gpu(A100), "python3", 4242)
    with NvmlHost(FakeNvml(root)) as host:
        (gpu,) = host.read_gpus()
    assert [p.pid for p in gpu.processes] == [4242]


def test_a_driver_without_the_v2_profile_struct_still_reads(
    host_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from planner.sim.fake_nvml import FakeNvmlLib

    with NvmlHost(FakeNvml(host_dir)) as host:
        host.create_gpu_instance(A100, 9, 4)
        expected = host.read_gpus()
    monkeypatch.delattr(FakeNvmlLib, "_c_nvmlDeviceGetGpuInstanceProfileInfoV")
    with NvmlHost(FakeNvml(host_dir)) as host:
        assert host.read_gpus() == expected  # names come from the catalog instead
        assert [p.name for p in host.gi_profiles(host.handle(A100))][:3] == [
            "1g.5gb", "2g.10gb", "3g.20gb"]


def test_profile_walk_skips_gaps_instead_of_stopping(make_host: Callable[..., Path]) -> None:
    """The simulated driver answers INVALID_ARGUMENT for some enums in the middle of the
    range (A100: 8_SLICE, 6_SLICE before +me and 1g.10gb; RTX PRO 6000: 3_SLICE before
    4g.96gb and the +gfx/-me/+me.all profiles; a 3c shape before the 4c CI of a 4g GI).
    NvmlHost must see every profile after them, as go-nvlib does."""
    from planner.hardware.catalog import get_model

    rtx = "0000:4b:00.0"
    root = make_host(GpuSpec("a100-40gb", A100, mig=True), GpuSpec("rtx-pro-6000", rtx, mig=True))
    with NvmlHost(FakeNvml(root)) as host:
        for pci, model_id in ((A100, "a100-40gb"), (rtx, "rtx-pro-6000")):
            seen = sorted(p.id for p in host.gi_profiles(host.handle(pci)))
            assert seen == sorted(p.id for p in get_model(model_id).gi_profiles), model_id
        host.create_gpu_instance(A100, 5, 0)  # 4g.20gb
        host.create_compute_instance(A100, 0, 3)  # its full-size 4c CI, enum 3 after the gap
        (a100, _) = host.read_gpus()
        (gi,) = a100.gpu_instances
        assert [(c.profile_id, c.placement_start) for c in gi.compute_instances] == [(3, 0)]
        handle = host.handle(A100)
        gi_handle = host._find_gi(handle, 0, "test")
        assert sorted(c.id for c in host.ci_profiles(gi_handle)) == [0, 1, 3]
