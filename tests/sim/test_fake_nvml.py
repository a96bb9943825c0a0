"""FakeNvml through pynvml's own code: enum vs id, placements, driver choice, errors."""

from __future__ import annotations

import ctypes
from pathlib import Path

import pynvml
import pytest

from planner.sim.codes import Nvml
from planner.sim.fake_nvml import FakeNvml
from planner.sim.host import GpuSpec


def gi_info(n: FakeNvml, gi: object) -> tuple[int, int, int]:
    info = n.nvmlGpuInstanceGetInfo(gi)
    return info.profileId, info.placement.start, info.id


def test_codes_match_pynvml() -> None:
    for code in Nvml:
        if code is Nvml.SUCCESS:
            assert pynvml.NVML_SUCCESS == 0
        else:
            assert getattr(pynvml, f"NVML_ERROR_{code.name}") == code.value


def test_device_identity(nvml: FakeNvml) -> None:
    assert nvml.nvmlDeviceGetCount() == 1
    h = nvml.nvmlDeviceGetHandleByIndex(0)
    assert isinstance(h, pynvml.c_nvmlDevice_t)
    assert nvml.nvmlDeviceGetName(h) == "NVIDIA A100-SXM4-40GB"
    uuid = nvml.nvmlDeviceGetUUID(h)
    assert uuid.startswith("GPU-")
    pci = nvml.nvmlDeviceGetPciInfo(h)
    assert pci.busId == "00000000:17:00.0"
    assert pci.pciDeviceId == 0x20B010DE
    for other in (
        nvml.nvmlDeviceGetHandleByPciBusId("0000:17:00.0"),
        nvml.nvmlDeviceGetHandleByUUID(uuid),
    ):
        assert nvml.nvmlDeviceGetUUID(other) == uuid
    with pytest.raises(pynvml.NVMLError_NotFound):
        nvml.nvmlDeviceGetHandleByPciBusId("0000:99:00.0")
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        nvml.nvmlDeviceGetHandleByIndex(1)
    assert nvml.nvmlSystemGetDriverVersion() == "580.82.07"


def test_uuid_is_stable_across_directories(make_host) -> None:
    spec = GpuSpec("a100-40gb", "0000:17:00.0")
    uuids = []
    for _ in range(2):
        n = FakeNvml(make_host(spec))
        n.nvmlInit()
        uuids.append(n.nvmlDeviceGetUUID(n.nvmlDeviceGetHandleByIndex(0)))
    assert uuids[0] == uuids[1]


def test_uninitialized_and_unknown_function(a100: Path) -> None:
    n = FakeNvml(a100)
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        n.nvmlDeviceGetCount()
    n.nvmlInit()
    with pytest.raises(pynvml.NVMLError_FunctionNotFound):
        n.nvmlDeviceGetTemperature(n.nvmlDeviceGetHandleByIndex(0), 0)


def test_profile_enum_is_not_profile_id(nvml: FakeNvml) -> None:
    h = nvml.nvmlDeviceGetHandleByIndex(0)
    v2 = nvml.nvmlDeviceGetGpuInstanceProfileInfo(h, pynvml.NVML_GPU_INSTANCE_PROFILE_1_SLICE)
    assert (v2.id, v2.name, v2.memorySizeMB, v2.sliceCount) == (19, "MIG 1g.5gb", 4864, 1)
    v1 = nvml.nvmlDeviceGetGpuInstanceProfileInfo(h, pynvml.NVML_GPU_INSTANCE_PROFILE_3_SLICE, 1)
    assert isinstance(v1, pynvml.c_nvmlGpuInstanceProfileInfo_t) and v1.id == 9
    by_id = nvml.nvmlDeviceGetGpuInstanceProfileInfoById(h, 9)
    assert by_id.name == "MIG 3g.20gb"
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        nvml.nvmlDeviceGetGpuInstanceProfileInfoById(h, 2)  # 2 is an enum, not an A100 id
    with pytest.raises(pynvml.NVMLError_InvalidArgument):  # past the enum range
        nvml.nvmlDeviceGetGpuInstanceProfileInfo(h, pynvml.NVML_GPU_INSTANCE_PROFILE_COUNT)


def test_unsupported_profile_enums_answer_both_codes_mid_range(make_host) -> None:
    """Below the count, a missing profile answers INVALID_ARGUMENT or NOT_SUPPORTED (ASSUMED
    split, planner/sim/driver.py), with supported ones after it: a walk must skip both."""
    root = make_host(GpuSpec("a100-40gb", mig=True), driver="470.57.02")
    n = FakeNvml(root)
    n.nvmlInit()
    h = n.nvmlDeviceGetHandleByIndex(0)

    def answer(enum: int) -> str:
        try:
            return str(n.nvmlDeviceGetGpuInstanceProfileInfo(h, enum).id)
        except pynvml.NVMLError_InvalidArgument:
            return "INVALID"
        except pynvml.NVMLError_NotSupported:
            return "NOT_SUPPORTED"

    answers = [answer(e) for e in range(pynvml.NVML_GPU_INSTANCE_PROFILE_COUNT)]
    # enums 0-4: 1g..7g; 5, 6 (8_SLICE, 6_SLICE): no such A100 profile; 7: 1g.5gb+me;
    # 8: no 2g+me on A100; 9: 1g.10gb, which R470 does not offer yet
    assert answers[:10] == ["19", "14", "9", "5", "0", "INVALID", "INVALID", "20", "INVALID",
                            "NOT_SUPPORTED"]
    assert set(answers[10:]) == {"INVALID"}
    gi = n.nvmlDeviceCreateGpuInstance(h, 5)  # 4g.20gb: CIs 1c, 2c, 4c but no 3c
    shared = pynvml.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED
    with pytest.raises(pynvml.NVMLError_InvalidArgument):  # a 3c shape does not cut a 4g GI
        n.nvmlGpuInstanceGetComputeInstanceProfileInfo(gi, 2, shared)
    assert n.nvmlGpuInstanceGetComputeInstanceProfileInfo(gi, 3, shared).sliceCount == 4
    with pytest.raises(pynvml.NVMLError_NotSupported):  # 7c: bigger than the GI
        n.nvmlGpuInstanceGetComputeInstanceProfileInfo(gi, 4, shared)


def test_driver_version_gates_profiles(make_host) -> None:
    root = make_host(GpuSpec("a100-40gb", mig=True), driver="470.57.02")
    n = FakeNvml(root)
    n.nvmlInit()
    h = n.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(pynvml.NVMLError_NotSupported):  # 1g.10gb needs R525
        n.nvmlDeviceGetGpuInstanceProfileInfo(h, pynvml.NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV2)
    assert n.nvmlDeviceGetGpuInstanceProfileInfo(h, 7).id == 20  # 1g.5gb+me since R470


def test_possible_placements_and_capacity(nvml: FakeNvml) -> None:
    h = nvml.nvmlDeviceGetHandleByIndex(0)
    arr = (pynvml.c_nvmlGpuInstancePlacement_t * 8)()
    count = ctypes.c_uint()
    nvml.nvmlDeviceGetGpuInstancePossiblePlacements(h, 14, arr, ctypes.byref(count))
    assert [(arr[i].start, arr[i].size) for i in range(count.value)] == [(0, 2), (2, 2), (4, 2)]
    assert nvml.nvmlDeviceGetGpuInstanceRemainingCapacity(h, 9) == 2
    p = pynvml.c_nvmlGpuInstancePlacement_t(4, 4)
    nvml.nvmlDeviceCreateGpuInstanceWithPlacement(h, 9, ctypes.byref(p))
    assert nvml.nvmlDeviceGetGpuInstanceRemainingCapacity(h, 9) == 1
    assert nvml.nvmlDeviceGetGpuInstanceRemainingCapacity(h, 5) == 1  # 4g at 0 still fits
    assert nvml.nvmlDeviceGetGpuInstanceRemainingCapacity(h, 19) == 4
    # all possible placements are listed whatever is occupied
    nvml.nvmlDeviceGetGpuInstancePossiblePlacements(h, 9, arr, ctypes.byref(count))
    assert count.value == 2


@pytest.mark.parametrize(
    ("order", "expected"),
    [
        ((19, 14, 5), [(19, 6, 13), (14, 4, 5), (5, 0, 1)]),
        ((9, 19, 14, 19), [(9, 4, 2), (19, 0, 7), (14, 2, 4), (19, 1, 8)]),
    ],
)
def test_driver_placement_choice_matches_the_guide(nvml, order, expected) -> None:
    h = nvml.nvmlDeviceGetHandleByIndex(0)
    got = [gi_info(nvml, nvml.nvmlDeviceCreateGpuInstance(h, p)) for p in order]
    assert got == expected


def test_creation_order_failure_and_explicit_placements(nvml: FakeNvml) -> None:
    h = nvml.nvmlDeviceGetHandleByIndex(0)
    got = [gi_info(nvml, nvml.nvmlDeviceCreateGpuInstance(h, p)) for p in (19, 19, 14)]
    assert [(p, s) for p, s, _ in got] == [(19, 6), (19, 4), (14, 0)]
    with pytest.raises(pynvml.NVMLError_InsufficientResources) as err:
        nvml.nvmlDeviceCreateGpuInstance(h, 9)
    assert err.value.value == 23 and str(err.value) == "Insufficient Resources"
    for gi in [nvml.nvmlDeviceGetGpuInstanceById(h, i) for _, _, i in got]:
        nvml.nvmlGpuInstanceDestroy(gi)
    # the same set with explicit placements succeeds, in the same order
    for profile, start in ((19, 0), (19, 1), (14, 2), (9, 4)):
        size = nvml.nvmlDeviceGetGpuInstanceProfileInfoById(h, profile).sliceCount
        p = pynvml.c_nvmlGpuInstancePlacement_t(start, 4 if profile == 9 else size)
        gi = nvml.nvmlDeviceCreateGpuInstanceWithPlacement(h, profile, ctypes.byref(p))
        assert gi_info(nvml, gi)[:2] == (profile, start)


def test_overlap_refused(nvml: FakeNvml) -> None:
    h = nvml.nvmlDeviceGetHandleByIndex(0)
    p = pynvml.c_nvmlGpuInstancePlacement_t(0, 4)
    nvml.nvmlDeviceCreateGpuInstanceWithPlacement(h, 5, ctypes.byref(p))
    overlapping = pynvml.c_nvmlGpuInstancePlacement_t(2, 2)
    with pytest.raises(pynvml.NVMLError_InsufficientResources):
        nvml.nvmlDeviceCreateGpuInstanceWithPlacement(h, 14, ctypes.byref(overlapping))
    illegal = pynvml.c_nvmlGpuInstancePlacement_t(1, 2)  # 2g starts only at 0, 2, 4
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        nvml.nvmlDeviceCreateGpuInstanceWithPlacement(h, 14, ctypes.byref(illegal))
    with pytest.raises(TypeError, match="byref"):  # by value would crash real NVML
        nvml.nvmlDeviceCreateGpuInstanceWithPlacement(
            h, 14, pynvml.c_nvmlGpuInstancePlacement_t(4, 2)
        )


def test_destroy_gi_with_ci_is_in_use(nvml: FakeNvml) -> None:
    h = nvml.nvmlDeviceGetHandleByIndex(0)
    gi = nvml.nvmlDeviceCreateGpuInstance(h, 9)
    ci = nvml.nvmlGpuInstanceCreateComputeInstance(gi, 2)
    with pytest.raises(pynvml.NVMLError_InUse) as err:
        nvml.nvmlGpuInstanceDestroy(gi)
    assert str(err.value) == "In use by another client"
    nvml.nvmlComputeInstanceDestroy(ci)
    nvml.nvmlGpuInstanceDestroy(gi)
    with pytest.raises(pynvml.NVMLError_InvalidArgument):  # stale handle
        nvml.nvmlGpuInstanceGetInfo(gi)


def test_compute_instances(nvml: FakeNvml) -> None:
    h = nvml.nvmlDeviceGetHandleByIndex(0)
    gi = nvml.nvmlDeviceCreateGpuInstance(h, 9)
    shared = pynvml.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED
    info = nvml.nvmlGpuInstanceGetComputeInstanceProfileInfo(gi, 0, shared)
    assert (info.name, info.instanceCount, info.multiprocessorCount) == ("MIG 1c.3g.20gb", 3, 14)
    with pytest.raises(pynvml.NVMLError_NotSupported):  # no 4c in a 3g GI
        nvml.nvmlGpuInstanceGetComputeInstanceProfileInfo(gi, 3, shared)
    cis = [nvml.nvmlGpuInstanceCreateComputeInstance(gi, 0) for _ in range(3)]
    assert [nvml.nvmlComputeInstanceGetInfo(c).id for c in cis] == [0, 1, 2]
    assert nvml.nvmlGpuInstanceGetComputeInstanceRemainingCapacity(gi, 0) == 0
    with pytest.raises(pynvml.NVMLError_InsufficientResources):
        nvml.nvmlGpuInstanceCreateComputeInstance(gi, 1)
    nvml.nvmlComputeInstanceDestroy(cis[1])
    p = pynvml.c_nvmlComputeInstancePlacement_t(1, 1)
    again = nvml.nvmlGpuInstanceCreateComputeInstanceWithPlacement(gi, 0, ctypes.byref(p))
    ci_info = nvml.nvmlComputeInstanceGetInfo(again)
    assert (ci_info.id, ci_info.placement.start) == (1, 1)
    arr = (pynvml.c_nvmlComputeInstance_t * 3)()
    count = ctypes.c_uint()
    nvml.nvmlGpuInstanceGetComputeInstances(gi, 0, arr, ctypes.byref(count))
    assert count.value == 3


def test_mig_device_handles(nvml: FakeNvml) -> None:
    h = nvml.nvmlDeviceGetHandleByIndex(0)
    assert nvml.nvmlDeviceGetMaxMigDeviceCount(h) == 7
    gi = nvml.nvmlDeviceCreateGpuInstance(h, 9)
    gi_id = nvml.nvmlGpuInstanceGetInfo(gi).id
    nvml.nvmlGpuInstanceCreateComputeInstance(gi, 2)
    mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(h, 0)
    assert nvml.nvmlDeviceIsMigDeviceHandle(mig).value == 1
    assert nvml.nvmlDeviceIsMigDeviceHandle(h).value == 0
    assert nvml.nvmlDeviceGetGpuInstanceId(mig) == gi_id
    assert nvml.nvmlDeviceGetComputeInstanceId(mig) == 0
    uuid = nvml.nvmlDeviceGetUUID(mig)
    assert uuid.startswith("MIG-") and nvml.nvmlDeviceGetUUID(mig) == uuid
    parent = nvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(mig)
    assert nvml.nvmlDeviceGetUUID(parent) == nvml.nvmlDeviceGetUUID(h)
    assert nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetHandleByUUID(uuid)) == uuid
    with pytest.raises(pynvml.NVMLError_NotFound):
        nvml.nvmlDeviceGetMigDeviceHandleByIndex(h, 1)


def test_mig_disabled_and_non_mig_gpus(make_host) -> None:
    root = make_host(GpuSpec("a100-40gb"), GpuSpec("l40s"))
    n = FakeNvml(root)
    n.nvmlInit()
    a100, l40s = n.nvmlDeviceGetHandleByIndex(0), n.nvmlDeviceGetHandleByIndex(1)
    assert n.nvmlDeviceGetMigMode(a100) == [0, 0]
    with pytest.raises(pynvml.NVMLError_NotSupported):
        n.nvmlDeviceCreateGpuInstance(a100, 19)
    with pytest.raises(pynvml.NVMLError_NotSupported):
        n.nvmlDeviceGetGpuInstanceRemainingCapacity(a100, 19)
    arr = (pynvml.c_nvmlGpuInstancePlacement_t * 8)()
    count = ctypes.c_uint()  # placements work whether MIG is enabled or not
    n.nvmlDeviceGetGpuInstancePossiblePlacements(a100, 19, arr, ctypes.byref(count))
    assert count.value == 7
    assert n.nvmlDeviceGetMaxMigDeviceCount(a100) == 0
    with pytest.raises(pynvml.NVMLError_NotSupported):
        n.nvmlDeviceSetMigMode(l40s, pynvml.NVML_DEVICE_MIG_ENABLE)
    with pytest.raises(pynvml.NVMLError_NotSupported):
        n.nvmlDeviceGetMigMode(l40s)


def test_gi_ids_come_from_size_classes_and_may_be_permuted(make_host) -> None:
    ids = {}
    for mapping in ("identity", "swapped-halves"):
        n = FakeNvml(make_host(GpuSpec("a100-40gb", mig=True, gi_ids=mapping)))
        n.nvmlInit()
        h = n.nvmlDeviceGetHandleByIndex(0)
        got = []
        for profile, start, size in ((9, 4, 4), (14, 0, 2), (19, 2, 1), (19, 3, 1)):
            p = pynvml.c_nvmlGpuInstancePlacement_t(start, size)
            gi = n.nvmlDeviceCreateGpuInstanceWithPlacement(h, profile, ctypes.byref(p))
            got.append(n.nvmlGpuInstanceGetInfo(gi).id)
        ids[mapping] = got
    assert ids["identity"] == [2, 3, 9, 10]
    assert ids["swapped-halves"] == [1, 5, 13, 14]  # as on the GPU of DCGM issue #138


def test_running_processes(make_host) -> None:
    from planner.sim import driver
    from planner.sim.state import SimStore

    root = make_host(GpuSpec("h100-80gb", mig=True))
    n = FakeNvml(root)
    n.nvmlInit()
    h = n.nvmlDeviceGetHandleByIndex(0)
    gi = n.nvmlDeviceCreateGpuInstance(h, 9)
    n.nvmlGpuInstanceCreateComputeInstance(gi, 2)
    mig = n.nvmlDeviceGetMigDeviceHandleByIndex(h, 0)
    assert n.nvmlDeviceGetComputeRunningProcesses(h) == []
    mig_uuid = n.nvmlDeviceGetUUID(mig)
    with SimStore(root).transaction() as state:
        driver.hold(state.gpus[0], "python", 4242, mig_uuid)
        driver.hold(state.gpus[0], "nvidia-persistenced", 900)
    procs = n.nvmlDeviceGetComputeRunningProcesses(h)
    assert [(p.pid, p.gpuInstanceId) for p in procs] == [(4242, n.nvmlDeviceGetGpuInstanceId(mig))]
    assert [p.pid for p in n.nvmlDeviceGetComputeRunningProcesses(mig)] == [4242]
    ci = n.nvmlGpuInstanceGetComputeInstanceById(gi, 0)
    with pytest.raises(pynvml.NVMLError_InUse):
        n.nvmlComputeInstanceDestroy(ci)


@pytest.mark.parametrize(
    ("model", "created", "ids"),
    [
        # A30 ("reduced" config): 1g@0 -> 3 as observed, 2g@2 -> 2, 4g -> 0
        ("a30", [(14, 0, 1), (5, 2, 2)], [3, 2]),
        # RTX PRO 6000 12-unit grid: 1g@0..9 -> 3..6 as observed, 2g@6 -> 2
        ("rtx-pro-6000", [(14, 3, 3), (14, 0, 3), (5, 6, 6)], [4, 3, 2]),
    ],
)
def test_gi_ids_on_other_grids(make_host, model, created, ids) -> None:
    n = FakeNvml(make_host(GpuSpec(model, mig=True, gi_ids="identity")))
    n.nvmlInit()
    h = n.nvmlDeviceGetHandleByIndex(0)
    got = []
    for profile, start, size in created:
        p = pynvml.c_nvmlGpuInstancePlacement_t(start, size)
        got.append(
            n.nvmlGpuInstanceGetInfo(
                n.nvmlDeviceCreateGpuInstanceWithPlacement(h, profile, ctypes.byref(p))
            ).id
        )
    assert got == ids
