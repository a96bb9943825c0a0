"""Random operation sequences through FakeNvml keep the driver's invariants."""

from __future__ import annotations

import ctypes
import tempfile

import pynvml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planner.sim.fake_nvml import FakeNvml
from planner.sim.host import GpuSpec, HostSpec, init_host
from planner.sim.models import sim_model
from planner.sim.state import SimStore

OPS = st.lists(
    st.tuples(
        st.sampled_from(["create", "create-at", "destroy", "cci", "dci"]),
        st.integers(0, 20),
        st.integers(0, 20),
    ),
    max_size=14,
)


def _gis(n: FakeNvml, h: object, profile_ids: list[int]) -> list[object]:
    out = []
    for pid in profile_ids:
        arr = (pynvml.c_nvmlGpuInstance_t * 8)()
        count = ctypes.c_uint()
        n.nvmlDeviceGetGpuInstances(h, pid, arr, ctypes.byref(count))
        out += [arr[i] for i in range(count.value)]
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=st.sampled_from(["a100-40gb", "h100-80gb", "a30"]), ops=OPS)
def test_random_sequences_keep_invariants(model: str, ops: list[tuple[str, int, int]]) -> None:
    m = sim_model(model)
    pids = [p.id for p in m.gi_profiles]
    with tempfile.TemporaryDirectory() as root:
        init_host(root, HostSpec(gpus=(GpuSpec(model, mig=True),)))
        n = FakeNvml(root)
        n.nvmlInit()
        h = n.nvmlDeviceGetHandleByIndex(0)
        for op, a, b in ops:
            prof = m.gi_profiles[a % len(m.gi_profiles)]
            gis = _gis(n, h, pids)
            try:
                if op == "create":
                    free = n.nvmlDeviceGetGpuInstanceRemainingCapacity(h, prof.id)
                    try:
                        n.nvmlDeviceCreateGpuInstance(h, prof.id)
                        assert free > 0
                    except pynvml.NVMLError_InsufficientResources:
                        assert free == 0
                elif op == "create-at":
                    start = prof.placements[b % len(prof.placements)]
                    p = pynvml.c_nvmlGpuInstancePlacement_t(start, prof.placement_size)
                    n.nvmlDeviceCreateGpuInstanceWithPlacement(h, prof.id, ctypes.byref(p))
                elif op == "destroy" and gis:
                    n.nvmlGpuInstanceDestroy(gis[a % len(gis)])
                elif op == "cci" and gis:
                    n.nvmlGpuInstanceCreateComputeInstance(gis[a % len(gis)], b % 2)
                elif op == "dci" and gis:
                    gi = gis[a % len(gis)]
                    for pid in range(5):
                        try:
                            ci = n.nvmlGpuInstanceGetComputeInstanceById(gi, pid)
                        except pynvml.NVMLError_NotFound:
                            continue
                        n.nvmlComputeInstanceDestroy(ci)
                        break
            except (
                pynvml.NVMLError_InsufficientResources,
                pynvml.NVMLError_InUse,
                pynvml.NVMLError_InvalidArgument,
            ):
                pass
        state = SimStore(root).read()
        gpu = state.gpus[0]
        spans = []
        for gi in gpu.gpu_instances:
            p = m.profile_by_id(gi.profile_id)
            assert p is not None and gi.start in p.placements and gi.size == p.placement_size
            n_slots = m.memory_slices // gi.size
            assert n_slots - 1 <= gi.gi_id < 2 * n_slots - 1  # the size class's id range
            spans.append(set(range(gi.start, gi.start + gi.size)))
            used: set[int] = set()
            for ci in gi.cis:
                span = set(range(ci.start, ci.start + ci.size))
                assert not span & used and ci.start + ci.size <= p.compute_slices
                used |= span
        assert sum(len(s) for s in spans) == len(set().union(*spans)) if spans else True
        assert len({gi.gi_id for gi in gpu.gpu_instances}) == len(gpu.gpu_instances)
        for p in m.gi_profiles:
            assert sum(gi.profile_id == p.id for gi in gpu.gpu_instances) <= p.instance_count
        # NVML's view is the state
        listed = sorted(
            (info.id, info.profileId, info.placement.start)
            for info in (n.nvmlGpuInstanceGetInfo(g) for g in _gis(n, h, pids))
        )
        assert listed == sorted((gi.gi_id, gi.profile_id, gi.start) for gi in gpu.gpu_instances)
