"""Property: for any sequence of operations on a simulated host (through FakeNvml's
pynvml mutators, plus reboots and compute processes), the GPUs NvmlHost reads equal the
simulator's own state."""

from __future__ import annotations

import contextlib
import ctypes
import tempfile
from pathlib import Path
from typing import Any

import pynvml
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from planner.hardware.catalog import all_models
from planner.host.nvml import NvmlHost
from planner.host.state import ComputeInstance, Gpu, GpuInstance, GpuProcess
from planner.sim import driver
from planner.sim.codes import DriverError
from planner.sim.fake_nvml import FakeNvml
from planner.sim.host import GpuSpec, HostSpec, init_host
from planner.sim.models import product_name, sim_model
from planner.sim.state import SimState, SimStore

MODELS = ("a100-40gb", "a30", "h100-80gb", "rtx-pro-6000", "b200-180gb", "l40s")
CATALOG_IDS = {m.id for m in all_models()}


def expected_gpus(state: SimState) -> tuple[Gpu, ...]:
    """The simulator's own state, in HostState terms (the oracle)."""
    gpus = []
    for g in sorted(state.gpus, key=lambda g: g.pci):
        model = sim_model(g.model)
        capable = bool(model.gi_profiles)
        instances: list[GpuInstance] = []
        if g.mig_current:
            for gi in sorted(g.gpu_instances, key=lambda gi: gi.start):
                profile = model.profile_by_id(gi.profile_id)
                assert profile is not None
                cis = tuple(
                    ComputeInstance(ci_id=ci.ci_id, profile_id=ci.profile_id,
                                    placement_start=ci.start, placement_size=ci.size,
                                    mig_uuid=ci.mig_uuid)
                    for ci in sorted(gi.cis, key=lambda c: c.start)
                )
                instances.append(GpuInstance(
                    gi_id=gi.gi_id, profile_id=gi.profile_id, profile_name=profile.name,
                    placement_start=gi.start, placement_size=gi.size, compute_instances=cis))
        # The fake has no nvmlSystemGetProcessName, so names read back empty.
        procs = sorted({h.pid for h in g.holders if h.kind == "compute"})
        gpus.append(Gpu(
            index=g.index, pci=g.pci, uuid=g.uuid, name=product_name(model),
            model=model.id if model.id in CATALOG_IDS else None,
            pci_device_id=model.pci_device_ids[0] if model.pci_device_ids else "0000",
            mig_capable=capable, mig_current=capable and g.mig_current,
            mig_pending=capable and g.mig_pending, gpu_instances=tuple(instances),
            processes=tuple(GpuProcess(pid=p, name="") for p in procs),
        ))
    return tuple(gpus)


# --- operations through pynvml's API on the fake ----------------------------------------

def _gi_profiles(n: Any, dev: Any) -> list[Any]:
    found = []
    for enum in range(pynvml.NVML_GPU_INSTANCE_PROFILE_COUNT):
        try:
            found.append(n.nvmlDeviceGetGpuInstanceProfileInfo(dev, enum))
        except pynvml.NVMLError:
            continue
    return found


def _gis(n: Any, dev: Any) -> list[Any]:
    out = []
    for info in _gi_profiles(n, dev):
        arr = (pynvml.c_nvmlGpuInstance_t * info.instanceCount)()
        count = ctypes.c_uint(0)
        n.nvmlDeviceGetGpuInstances(dev, info.id, arr, ctypes.byref(count))
        out += [arr[i] for i in range(count.value)]
    return out


def _ci_profiles(n: Any, gi: Any) -> list[Any]:
    found = []
    for enum in range(pynvml.NVML_COMPUTE_INSTANCE_PROFILE_COUNT):
        try:
            found.append(n.nvmlGpuInstanceGetComputeInstanceProfileInfo(
                gi, enum, pynvml.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED))
        except pynvml.NVMLError:
            continue
    return found


def _cis(n: Any, gi: Any) -> list[Any]:
    out = []
    for info in _ci_profiles(n, gi):
        arr = (pynvml.c_nvmlComputeInstance_t * info.instanceCount)()
        count = ctypes.c_uint(0)
        n.nvmlGpuInstanceGetComputeInstances(gi, info.id, arr, ctypes.byref(count))
        out += [arr[i] for i in range(count.value)]
    return out


def _pick(items: list[Any], k: int) -> Any:
    return items[k % len(items)] if items else None


def apply_op(n: Any, root: Path, op: tuple[Any, ...]) -> None:
    kind, gpu_k, a, b, c = op
    dev = n.nvmlDeviceGetHandleByIndex(gpu_k % n.nvmlDeviceGetCount())
    if kind == "mig":
        n.nvmlDeviceSetMigMode(dev, a % 2)
    elif kind == "create_gi":
        info = _pick(_gi_profiles(n, dev), a)
        if info is None:
            return
        if b is None:
            n.nvmlDeviceCreateGpuInstance(dev, info.id)
            return
        arr = (pynvml.c_nvmlGpuInstancePlacement_t * 16)()
        count = ctypes.c_uint(16)
        n.nvmlDeviceGetGpuInstancePossiblePlacements(dev, info.id, arr, ctypes.byref(count))
        place = arr[b % count.value]
        n.nvmlDeviceCreateGpuInstanceWithPlacement(dev, info.id, ctypes.byref(place))
    elif kind == "destroy_gi":
        gi = _pick(_gis(n, dev), a)
        if gi is not None:
            n.nvmlGpuInstanceDestroy(gi)
    elif kind == "create_ci":
        gi = _pick(_gis(n, dev), a)
        if gi is None:
            return
        info = _pick(_ci_profiles(n, gi), b or 0)
        if c is None:
            n.nvmlGpuInstanceCreateComputeInstance(gi, info.id)
            return
        arr = (pynvml.c_nvmlComputeInstancePlacement_t * 16)()
        count = ctypes.c_uint(16)
        n.nvmlGpuInstanceGetComputeInstancePossiblePlacements(gi, info.id, arr,
                                                              ctypes.byref(count))
        if count.value:
            place = arr[c % count.value]
            n.nvmlGpuInstanceCreateComputeInstanceWithPlacement(gi, info.id,
                                                                ctypes.byref(place))
    elif kind == "destroy_ci":
        gi = _pick(_gis(n, dev), a)
        ci = _pick(_cis(n, gi), b or 0) if gi is not None else None
        if ci is not None:
            n.nvmlComputeInstanceDestroy(ci)
    elif kind in ("reboot", "process"):
        with SimStore(root).transaction() as state:
            if kind == "reboot":
                driver.reboot(state)
            else:
                gpu = sorted(state.gpus, key=lambda g: g.index)[gpu_k % len(state.gpus)]
                mig = _pick([ci.mig_uuid for _, ci in driver.mig_devices(gpu)], a)
                driver.hold(gpu, "python3", 5000 + a % 50, mig if b is not None else None)


small = st.integers(0, 30)
# Weighted towards building, so most examples end with instances to read back.
KINDS = ["create_gi"] * 5 + ["create_ci"] * 5 + [
    "mig", "destroy_gi", "destroy_ci", "process", "reboot"]
ops = st.lists(
    st.tuples(st.sampled_from(KINDS), small, small, st.none() | small, st.none() | small),
    min_size=1,
    max_size=16,
)


BUSY = [("create_gi", 0, 0, k, None) for k in range(7)] + [  # seven 1g, all placed
    ("create_ci", 0, k, 0, None) for k in range(0, 7, 2)] + [
    ("destroy_gi", 0, 1, None, None), ("process", 0, 1, 0, None),
    ("create_gi", 1, 1, None, None), ("create_gi", 1, 0, 1, None), ("create_ci", 1, 0, 0, 0)]


@example(models=["a100-40gb", "h100-80gb"], start_mig=True, gi_ids="swapped-halves",
         operations=BUSY)
@example(models=["rtx-pro-6000", "a30"], start_mig=True, gi_ids="identity", operations=BUSY)
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    models=st.lists(st.sampled_from(MODELS), min_size=1, max_size=2),
    start_mig=st.sampled_from([True] * 9 + [False]),
    gi_ids=st.sampled_from(["identity", "swapped-halves"]),
    operations=ops,
)
def test_nvml_host_reads_what_the_simulator_holds(
    models: list[str], start_mig: bool, gi_ids: str, operations: list[tuple[Any, ...]]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "host"
        specs = tuple(
            GpuSpec(m, f"0000:{0x17 + 0x1A * i:02x}:00.0",
                    mig=start_mig and m != "l40s", gi_ids=gi_ids)
            for i, m in enumerate(models)
        )
        init_host(root, HostSpec(gpus=specs))
        n = FakeNvml(root)
        n.nvmlInit()
        for op in operations:
            # A refusal is behaviour too; the state must still read back equal.
            with contextlib.suppress(pynvml.NVMLError, DriverError):
                apply_op(n, root, op)
        n.nvmlShutdown()
        with NvmlHost(FakeNvml(root)) as host:
            read = host.read_gpus()
        gis = [gi for g in read for gi in g.gpu_instances]
        event(f"MIG on: {any(g.mig_current for g in read)}, GIs: {min(len(gis), 3)}, "
              f"CIs: {min(sum(len(gi.compute_instances) for gi in gis), 2)}")
        assert read == expected_gpus(SimStore(root).read())
