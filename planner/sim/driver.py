"""The simulated NVIDIA driver: MIG mode, GPU and compute instances, reset and reboot.

Pure functions over a ``SimState`` (the caller holds the transaction). Refusals raise
``DriverError`` with the NVML return code the real driver uses, and every function checks
everything before it changes anything, so a refusal leaves the state as it was.

Behaviour that the sources leave open is decided here and marked INFERRED or ASSUMED:

* Placement the driver picks when none is given (INFERRED from the three A100-40GB
  observations in the MIG user guide): among the free placements of the profile, take the
  one that makes the fewest currently free placements (of every profile the driver offers,
  within their instance limits) unavailable; ties go to the lowest start. This gives
  ``19,14,5`` -> 1g@6, 2g@4, 4g@0; ``19,19,14,9`` -> 1g@6, 1g@4, 2g@0 and then profile 9
  fails with Insufficient Resources; ``9,19,14,19`` -> 3g@4, 1g@0, 2g@2, 1g@1.
* Compute instances without a placement take the lowest free start (observed -lci output:
  1c CIs at 0:1, 1:1, ... in creation order).
* GI ids come from the size-class ranges of the open kernel driver (FULL 0, HALF 1-2,
  QUARTER 3-6, EIGHTH 7-14; A30 uses the first three): id = n-1+slot for a placement that is
  1/n of the GPU, where slot = start/size, permuted per GPU ("swapped-halves" maps slot s to
  (s+n/2) mod n, as seen on one GPU in DCGM issue #138). Never infer placement from an id.
* CI ids: the lowest id not in use in the GI (the guide shows 0, 1, 2 for three CIs).
* "+me" profiles: at most one instance of any "+me" profile at a time (one OFA per GPU);
  a "+me.all" instance admits only "-me" profiles beside it (nml.h). ASSUMED for counts.
* SetMigMode: the mode always becomes pending. On GPUs whose mode change needs a reset
  (Ampere) the driver resets the GPU at once unless something holds it, in which case the
  activation status is IN_USE and the change stays pending until reset or reboot. Hopper
  and later apply it at once unless a compute process holds the GPU (ASSUMED).
  Disabling while GPU instances exist is refused with IN_USE (ASSUMED).
* Reset fails with IN_USE while any holder or vGPU exists; otherwise the pending mode
  becomes current and GIs, CIs and VFs are gone.
* Reboot: GIs, CIs, VFs, vGPUs and compute processes vanish, services come back; the
  pending mode becomes current where MIG mode is persistent (Ampere: InfoROM bit) and MIG
  is disabled where it is not (Hopper and later).
* Profile enums below NVML's count that a GPU lacks: real drivers answer some with
  NOT_SUPPORTED and some with INVALID_ARGUMENT (NVIDIA's go-nvlib skips both since its
  commit 8b5e3d2, "Ensure that invalid MIG profiles are skipped"); which ids get which is
  not documented. ASSUMED: a GI enum the GPU model has no profile for at all, and a CI enum
  whose slice count fits in the GI but is not a shape it offers (3c in a 4g GI), answer
  INVALID_ARGUMENT; a GI profile this driver version does not offer yet, and a CI bigger
  than the GI, answer NOT_SUPPORTED. So both answers come in the middle of the range, and
  a walk that stops at the first INVALID_ARGUMENT misses profiles (4g in a 4g GI, +me on
  A100, 4g.96gb on RTX PRO 6000).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

from planner.hardware.model import CiProfile, GiProfile, GpuModel
from planner.sim import ids
from planner.sim.codes import DriverError, Nvml
from planner.sim.models import driver_at_least, mig_capable, sim_model
from planner.sim.state import Holder, SimCi, SimGi, SimGpu, SimState

GI_PROFILE_ENUM_COUNT = 0x12  # NVML_GPU_INSTANCE_PROFILE_COUNT
CI_PROFILE_ENUM_COUNT = 0x9  # NVML_COMPUTE_INSTANCE_PROFILE_COUNT
# Compute slices of each NVML_COMPUTE_INSTANCE_PROFILE_* (nvml.h): 1, 2, 3, 4, 7, 8, 6,
# 1_SLICE_REV1, 7_SLICE_NVL.
CI_ENUM_SLICES = (1, 2, 3, 4, 7, 8, 6, 1, 7)

# Holders that are system services rather than compute processes (names as ps shows them).
SERVICE_NAMES = frozenset(
    {
        "nvidia-persistenced",
        "nvidia-fabricmanager",
        "nv-fabricmanager",
        "dcgm",
        "nv-hostengine",
        "dcgm-exporter",
        "nvsm",
        "nvidia-device-plugin",
        "gpu-feature-discovery",
        "Xorg",
    }
)


def model_of(gpu: SimGpu) -> GpuModel:
    return sim_model(gpu.model)


# ---------------------------------------------------------------- profiles


def offered_gi_profiles(state: SimState, gpu: SimGpu) -> tuple[GiProfile, ...]:
    """The GI profiles this driver version offers on this GPU (e.g. 1g.10gb needs R525)."""
    return _offered(gpu.model, state.driver_version)


@functools.lru_cache(maxsize=64)
def _offered(model_id: str, driver_version: str) -> tuple[GiProfile, ...]:
    # Asked on nearly every NVML query: a pure function of two strings, kept.
    return tuple(
        p for p in sim_model(model_id).gi_profiles if driver_at_least(driver_version, p.min_driver)
    )


def require_mig_capable(gpu: SimGpu) -> None:
    if not mig_capable(model_of(gpu)):
        raise DriverError(Nvml.NOT_SUPPORTED, f"GPU {gpu.pci} is not MIG-capable")


def require_mig_enabled(gpu: SimGpu) -> None:
    require_mig_capable(gpu)
    if not gpu.mig_current:
        raise DriverError(Nvml.NOT_SUPPORTED, f"MIG mode is not enabled on GPU {gpu.pci}")


def gi_profile_by_enum(state: SimState, gpu: SimGpu, enum: int) -> GiProfile:
    require_mig_capable(gpu)
    if not 0 <= enum < GI_PROFILE_ENUM_COUNT:
        raise DriverError(Nvml.INVALID_ARGUMENT, f"GPU instance profile enum {enum}")
    for p in offered_gi_profiles(state, gpu):
        if p.enum == enum:
            return p
    if model_of(gpu).profile_by_enum(enum) is None:  # ASSUMED (module doc)
        raise DriverError(Nvml.INVALID_ARGUMENT, f"GPU instance profile enum {enum} on {gpu.pci}")
    raise DriverError(Nvml.NOT_SUPPORTED, f"GPU instance profile enum {enum} on {gpu.pci}")


def gi_profile_by_id(state: SimState, gpu: SimGpu, profile_id: int) -> GiProfile:
    require_mig_capable(gpu)
    for p in offered_gi_profiles(state, gpu):
        if p.id == profile_id:
            return p
    raise DriverError(Nvml.INVALID_ARGUMENT, f"GPU instance profile id {profile_id} on {gpu.pci}")


def profile_of(state: SimState, gpu: SimGpu, gi: SimGi) -> GiProfile:
    p = model_of(gpu).profile_by_id(gi.profile_id)
    assert p is not None, f"GI with unknown profile {gi.profile_id}"
    return p


# ---------------------------------------------------------------- placement math


def _overlaps(a_start: int, a_size: int, b_start: int, b_size: int) -> bool:
    return a_start < b_start + b_size and b_start < a_start + a_size


def _media(p: GiProfile) -> str:
    if "+me.all" in p.name:
        return "all"
    if "-me" in p.name:
        return "none"
    if "+me" in p.name:
        return "me"
    return ""


def _media_allows(new: GiProfile, existing: Iterable[GiProfile]) -> bool:
    kinds = [_media(p) for p in existing]
    kind = _media(new)
    if "all" in kinds and kind != "none":
        return False
    if kind == "all" and any(k != "none" for k in kinds):
        return False
    return not (kind in ("me", "all") and any(k in ("me", "all") for k in kinds))


def _gi_free_starts(
    model: GpuModel, profile: GiProfile, instances: list[tuple[GiProfile, int]]
) -> list[int]:
    if sum(1 for p, _ in instances if p.id == profile.id) >= profile.instance_count:
        return []
    if not _media_allows(profile, (p for p, _ in instances)):
        return []
    return [
        s
        for s in profile.placements
        if s + profile.placement_size <= model.memory_slices
        and not any(_overlaps(s, profile.placement_size, t, p.placement_size) for p, t in instances)
    ]


def _instances(state: SimState, gpu: SimGpu) -> list[tuple[GiProfile, int]]:
    return [(profile_of(state, gpu, gi), gi.start) for gi in gpu.gpu_instances]


def gi_free_starts(state: SimState, gpu: SimGpu, profile: GiProfile) -> list[int]:
    return _gi_free_starts(model_of(gpu), profile, _instances(state, gpu))


def gi_remaining_capacity(state: SimState, gpu: SimGpu, profile: GiProfile) -> int:
    """How many more instances of ``profile`` fit together (NVML RemainingCapacity)."""
    model = model_of(gpu)
    current = _instances(state, gpu)
    count = 0
    while True:
        starts = _gi_free_starts(model, profile, current)
        if not starts:
            return count
        current = [*current, (profile, starts[0])]
        count += 1


def _choose(candidates: list[int], size: int, others: list[tuple[list[int], int]]) -> int | None:
    """The driver's own pick (INFERRED, see the module doc): fewest free placements blocked."""
    best: tuple[int, int] | None = None
    for s in candidates:
        blocked = sum(1 for starts, osize in others for t in starts if _overlaps(s, size, t, osize))
        if best is None or (blocked, s) < best:
            best = (blocked, s)
    return None if best is None else best[1]


def gi_default_start(state: SimState, gpu: SimGpu, profile: GiProfile) -> int | None:
    model = model_of(gpu)
    current = _instances(state, gpu)
    others = [
        (_gi_free_starts(model, q, current), q.placement_size)
        for q in offered_gi_profiles(state, gpu)
    ]
    return _choose(_gi_free_starts(model, profile, current), profile.placement_size, others)


def gi_id_for(gpu: SimGpu, profile: GiProfile, start: int) -> int:
    model = model_of(gpu)
    n = max(1, model.memory_slices // profile.placement_size)
    slot = start // profile.placement_size
    if gpu.gi_id_map == "swapped-halves" and n > 1:
        slot = (slot + n // 2) % n
    return n - 1 + slot


# ---------------------------------------------------------------- GPU instances


def find_gi(gpu: SimGpu, gi_id: int) -> SimGi:
    for gi in gpu.gpu_instances:
        if gi.gi_id == gi_id:
            return gi
    raise DriverError(Nvml.NOT_FOUND, f"GPU instance {gi_id} on {gpu.pci}")


def find_gi_serial(gpu: SimGpu, serial: int) -> SimGi | None:
    return next((gi for gi in gpu.gpu_instances if gi.serial == serial), None)


def create_gi(
    state: SimState, gpu: SimGpu, profile_id: int, placement: tuple[int, int] | None = None
) -> SimGi:
    require_mig_enabled(gpu)
    profile = gi_profile_by_id(state, gpu, profile_id)
    if placement is None:
        start = gi_default_start(state, gpu, profile)
        if start is None:
            raise DriverError(Nvml.INSUFFICIENT_RESOURCES, f"profile {profile_id} on {gpu.pci}")
    else:
        start, size = placement
        if size != profile.placement_size or start not in profile.placements:
            raise DriverError(
                Nvml.INVALID_ARGUMENT, f"placement {start}:{size} for profile {profile_id}"
            )
        if start not in gi_free_starts(state, gpu, profile):
            raise DriverError(Nvml.INSUFFICIENT_RESOURCES, f"placement {start}:{size} on {gpu.pci}")
    gi = SimGi(
        gi_id=gi_id_for(gpu, profile, start),
        profile_id=profile.id,
        start=start,
        size=profile.placement_size,
        serial=state.take_serial(),
    )
    gpu.gpu_instances.append(gi)
    return gi


def gi_vgpu_users(state: SimState, gpu: SimGpu, gi: SimGi) -> list[str]:
    users = [m.uuid for m in state.mdevs if m.gpu == gpu.pci and m.gi_serial == gi.serial]
    users += [vf for vf, v in gpu.vf_vgpus.items() if v.gi_serial == gi.serial]
    return users


def destroy_gi(state: SimState, gpu: SimGpu, gi: SimGi) -> None:
    require_mig_enabled(gpu)
    if gi.cis:
        raise DriverError(Nvml.IN_USE, f"GPU instance {gi.gi_id} has compute instances")
    if gi_vgpu_users(state, gpu, gi):
        raise DriverError(Nvml.IN_USE, f"GPU instance {gi.gi_id} backs a vGPU")
    gpu.gpu_instances.remove(gi)


# ---------------------------------------------------------------- compute instances


def ci_profiles(state: SimState, gpu: SimGpu, gi: SimGi) -> tuple[CiProfile, ...]:
    return model_of(gpu).ci_profiles_for(profile_of(state, gpu, gi))


def ci_profile_by_enum(state: SimState, gpu: SimGpu, gi: SimGi, enum: int) -> CiProfile:
    if not 0 <= enum < CI_PROFILE_ENUM_COUNT:
        raise DriverError(Nvml.INVALID_ARGUMENT, f"compute instance profile enum {enum}")
    for c in ci_profiles(state, gpu, gi):
        if c.id == enum:
            return c
    if CI_ENUM_SLICES[enum] <= profile_of(state, gpu, gi).compute_slices:  # ASSUMED
        raise DriverError(Nvml.INVALID_ARGUMENT, f"compute instance profile {enum} in GI "
                                                 f"{gi.gi_id}")
    raise DriverError(Nvml.NOT_SUPPORTED, f"compute instance profile {enum} in GI {gi.gi_id}")


def ci_profile_by_id(state: SimState, gpu: SimGpu, gi: SimGi, profile_id: int) -> CiProfile:
    for c in ci_profiles(state, gpu, gi):
        if c.id == profile_id:
            return c
    raise DriverError(
        Nvml.INVALID_ARGUMENT, f"compute instance profile id {profile_id} in GI {gi.gi_id}"
    )


def _ci_free_starts(gi_slices: int, cp: CiProfile, cis: list[tuple[int, int, int]]) -> list[int]:
    """``cis``: (profile id, start, size) of the CIs that exist."""
    if sum(1 for pid, _, _ in cis if pid == cp.id) >= cp.instance_count:
        return []
    return [
        s
        for s in cp.placements
        if s + cp.slice_count <= gi_slices
        and not any(_overlaps(s, cp.slice_count, t, n) for _, t, n in cis)
    ]


def _ci_tuples(gi: SimGi) -> list[tuple[int, int, int]]:
    return [(c.profile_id, c.start, c.size) for c in gi.cis]


def ci_free_starts(state: SimState, gpu: SimGpu, gi: SimGi, cp: CiProfile) -> list[int]:
    return _ci_free_starts(profile_of(state, gpu, gi).compute_slices, cp, _ci_tuples(gi))


def ci_remaining_capacity(state: SimState, gpu: SimGpu, gi: SimGi, cp: CiProfile) -> int:
    g = profile_of(state, gpu, gi).compute_slices
    current = _ci_tuples(gi)
    count = 0
    while starts := _ci_free_starts(g, cp, current):
        current = [*current, (cp.id, starts[0], cp.slice_count)]
        count += 1
    return count


def create_ci(
    state: SimState, gpu: SimGpu, gi: SimGi, profile_id: int, placement: tuple[int, int] | None
) -> SimCi:
    require_mig_enabled(gpu)
    cp = ci_profile_by_id(state, gpu, gi, profile_id)
    g = profile_of(state, gpu, gi).compute_slices
    free = _ci_free_starts(g, cp, _ci_tuples(gi))
    if placement is None:
        # Observed: 1c CIs in 2g and 3g GIs land at 0:1, 1:1, ... in creation order.
        if not free:
            raise DriverError(
                Nvml.INSUFFICIENT_RESOURCES, f"CI profile {profile_id} in GI {gi.gi_id}"
            )
        start = free[0]
    else:
        start, size = placement
        if size != cp.slice_count or start not in cp.placements:
            raise DriverError(Nvml.INVALID_ARGUMENT, f"CI placement {start}:{size}")
        if start not in free:
            raise DriverError(Nvml.INSUFFICIENT_RESOURCES, f"CI placement {start}:{size}")
    used = {c.ci_id for c in gi.cis}
    ci_id = next(i for i in range(len(used) + 1) if i not in used)
    serial = state.take_serial()
    ci = SimCi(
        ci_id=ci_id,
        profile_id=cp.id,
        start=start,
        size=cp.slice_count,
        serial=serial,
        mig_uuid=ids.mig_uuid(gpu.uuid, state.boot, gi.serial, serial),
    )
    gi.cis.append(ci)
    return ci


def find_ci(gi: SimGi, ci_id: int) -> SimCi:
    for ci in gi.cis:
        if ci.ci_id == ci_id:
            return ci
    raise DriverError(Nvml.NOT_FOUND, f"compute instance {ci_id} in GPU instance {gi.gi_id}")


def destroy_ci(state: SimState, gpu: SimGpu, gi: SimGi, ci: SimCi) -> None:
    require_mig_enabled(gpu)
    if any(h.mig_uuid == ci.mig_uuid for h in gpu.holders):
        raise DriverError(Nvml.IN_USE, f"processes run on compute instance {ci.ci_id}")
    gi.cis.remove(ci)


def mig_devices(gpu: SimGpu) -> list[tuple[SimGi, SimCi]]:
    """MIG devices (GI + CI) in the order NVML and ``nvidia-smi -L`` list them."""
    pairs = [(gi, ci) for gi in gpu.gpu_instances for ci in gi.cis]
    return sorted(pairs, key=lambda p: (p[0].gi_id, p[1].ci_id))


def max_mig_devices(gpu: SimGpu) -> int:
    return model_of(gpu).max_instances if gpu.mig_current else 0


# ---------------------------------------------------------------- mode, reset, reboot


def _blocks_mode_change(gpu: SimGpu) -> bool:
    if model_of(gpu).mode_change_needs_reset:
        return bool(gpu.holders)
    return any(h.kind == "compute" for h in gpu.holders)


def set_mig_mode(state: SimState, gpu: SimGpu, enable: int) -> int:
    """Returns the activation status (an NVML return code, not raised)."""
    require_mig_capable(gpu)
    if enable not in (0, 1):
        raise DriverError(Nvml.INVALID_ARGUMENT, f"MIG mode {enable}")
    if not enable and gpu.gpu_instances:
        raise DriverError(Nvml.IN_USE, f"GPU instances exist on {gpu.pci}")
    gpu.mig_pending = bool(enable)
    if gpu.mig_current == gpu.mig_pending:
        return Nvml.SUCCESS
    if _blocks_mode_change(gpu):
        return Nvml.IN_USE
    gpu.mig_current = gpu.mig_pending
    return Nvml.SUCCESS


FABRIC_MANAGER = frozenset({"nvidia-fabricmanager", "nv-fabricmanager"})


# NVLinks per GPU on an NVSwitch board, all to NVSwitches (HGX): ASSUMED figures from the
# boards' public specs (A100 12 links, H100 and later 18).
NVLINKS = {"ampere": 12}
NVLINKS_DEFAULT = 18


def nvlink_count(state: SimState, gpu: SimGpu) -> int:
    """The GPU's active NVLinks: all of them on an NVSwitch board, none elsewhere."""
    if not state.nvswitch:
        return 0
    return NVLINKS.get(model_of(gpu).architecture, NVLINKS_DEFAULT)


def fabric_manager_running(state: SimState) -> bool:
    return any(h.name in FABRIC_MANAGER for g in state.gpus for h in g.holders)


def reset_peers_missing(state: SimState, gpu: SimGpu, chosen: set[str]) -> list[str]:
    """The NVLink peers that must be reset in the same command as ``gpu`` but are not in
    ``chosen`` (nvidia-smi(1), -r: on an NVSwitch system a single GPU resets alone only
    from Ampere on and, on Ampere, only while Fabric Manager runs; otherwise every GPU
    NVLink-connected to it goes with it). Docs: vgpu-on-mig.md section 6."""
    if not state.nvswitch:
        return []
    if model_of(gpu).architecture != "ampere":
        return []  # Hopper and later: no Fabric Manager dependency
    if fabric_manager_running(state):
        return []
    return sorted(g.pci for g in state.gpus if g.pci not in chosen)


def reset_blockers(state: SimState, gpu: SimGpu) -> list[str]:
    # Fabric Manager is a service every HGX board runs; it does not hold a GPU against a
    # reset there (on Ampere the reset needs it: reset_peers_missing).
    blockers = [f"{h.name} (pid {h.pid})" for h in gpu.holders
                if not (state.nvswitch and h.name in FABRIC_MANAGER)]
    blockers += [f"vGPU {m.uuid}" for m in state.mdevs if m.gpu == gpu.pci]
    blockers += [f"vGPU on VF {vf}" for vf in gpu.vf_vgpus]
    return blockers


def reset_gpu(state: SimState, gpu: SimGpu) -> None:
    blockers = reset_blockers(state, gpu)
    if blockers:
        raise DriverError(Nvml.IN_USE, ", ".join(blockers))
    gpu.mig_current = gpu.mig_pending
    gpu.gpu_instances.clear()
    gpu.num_vfs = 0
    gpu.vf_vgpus.clear()


def reboot(state: SimState) -> None:
    state.boot += 1
    state.mdevs = [m for m in state.mdevs if m.persistent and state.gpu(m.parent) is not None]
    for gpu in state.gpus:
        model = model_of(gpu)
        if model.mig_mode_persists_reboot:
            gpu.mig_current = gpu.mig_pending
        else:
            gpu.mig_current = gpu.mig_pending = False
        gpu.gpu_instances.clear()
        gpu.holders = [h for h in gpu.holders if h.kind == "service"]
        gpu.num_vfs = 0
        gpu.vf_vgpus.clear()


# ---------------------------------------------------------------- holders


def hold(gpu: SimGpu, name: str, pid: int | None, mig_uuid: str | None = None) -> Holder:
    if mig_uuid is not None and not any(ci.mig_uuid == mig_uuid for _, ci in mig_devices(gpu)):
        raise DriverError(Nvml.NOT_FOUND, f"no MIG device {mig_uuid} on {gpu.pci}")
    used = {h.pid for h in gpu.holders}
    if pid is None:
        pid = 1000 + sum(map(ord, name)) % 30000
        while pid in used:
            pid += 1
    elif pid in used:
        raise DriverError(Nvml.INVALID_ARGUMENT, f"pid {pid} already holds {gpu.pci}")
    kind = "service" if name in SERVICE_NAMES and mig_uuid is None else "compute"
    holder = Holder(pid=pid, name=name, kind=kind, mig_uuid=mig_uuid)
    gpu.holders.append(holder)
    return holder


def release(gpu: SimGpu, name: str | None, pid: int | None) -> int:
    before = len(gpu.holders)
    gpu.holders = [
        h
        for h in gpu.holders
        if not ((name is None or h.name == name) and (pid is None or h.pid == pid))
    ]
    return before - len(gpu.holders)
