"""Handlers for the MIG resources: MIG mode, GPU instances, compute instances.

Inverses: create GI <-> delete GI (same profile, same placement: the driver's new GI id
is not part of the resource); create CI <-> delete CI (same profile and placement in the
same GI); mode on <-> mode off (each with the GPU reset the model needs, only under
``--allow-reset``). Every action is addressed by placement, never by driver id.
"""

from __future__ import annotations

from typing import Any

from planner.apply.address import Address, parse_address
from planner.apply.handlers import (
    ActionFailed,
    ActionLike,
    ApplyContext,
    Side,
    register,
    side_for_presence,
    side_present,
    side_value,
)
from planner.hardware.catalog import get_model
from planner.hardware.model import GpuModel
from planner.host.state import Gpu, GpuInstance, HostState
from planner.lang.pci import normalize_pci

KIND_MODE = "mig_mode"
KIND_GI = "gpu_instance"
KIND_CI = "compute_instance"


def _addr(action: ActionLike) -> Address:
    return parse_address(action.address)


def _pci(action: ActionLike) -> str:
    pci = _addr(action).gpu
    if pci is None:
        raise ActionFailed(f"{action.address}: the address names no GPU")
    return pci


def _model(gpu: Gpu, where: str) -> GpuModel:
    if gpu.model is None:
        raise ActionFailed(f"{where}: {gpu.name} is not a GPU model aihow knows")
    return get_model(gpu.model)



def _field(value: Any, *names: str) -> Any:
    if isinstance(value, dict):
        for name in names:
            if name in value:
                return value[name]
    return None


def _gpu(ctx: ApplyContext, pci: str) -> Gpu:
    nh = ctx.adapter("nvml")
    want = normalize_pci(pci)
    for index, handle in nh.handles():
        if nh.pci_of(handle) == want:
            gpu: Gpu = nh.read_gpu(index, handle)
            return gpu
    raise ActionFailed(f"gpu[{pci}]: no such GPU on this host")


# --- MIG mode -------------------------------------------------------------------------


def mode_wanted(value: Any, key: str = "mode") -> bool | None:
    """A MIG mode of one side of a mode action: ``{"mode": "enabled", "pending": ...}``."""
    raw = _field(value, key)
    if raw is None and key == "pending":
        raw = _field(value, "mode")
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str):
        return raw.lower() == "enabled"
    return None


class MigModeHandler:
    """``update`` of ``gpu[PCI].mig``: before/after are ``{"mode", "pending"}``. Undo sets
    the mode back the same way (and resets the GPU again where the model needs it)."""

    def ensure(self, ctx: ApplyContext, action: ActionLike, side: Side) -> dict[str, Any]:
        pci = _pci(action)
        value = side_value(action, side)
        want, want_pending = mode_wanted(value), mode_wanted(value, "pending")
        if want is None or want_pending is None:
            raise ActionFailed(f"{action.address}: the plan gives no MIG mode for {side}")
        nh = ctx.adapter("nvml")
        gpu = _gpu(ctx, pci)
        if gpu.mig_current == want and gpu.mig_pending == want_pending:
            return {"already": True}
        status = None
        if gpu.mig_pending != want_pending:
            status = nh.set_mig_mode(pci, want_pending)
            gpu = _gpu(ctx, pci)
        if gpu.mig_current == want:
            return {"activation_status": status}
        # The mode is pending: the GPU must be reset (Ampere) before it takes effect.
        what = "enabling" if want else "disabling"
        if not ctx.allow_reset:
            raise ActionFailed(
                f"{action.address}: {what} MIG mode is pending until the GPU is reset; "
                "rerun with --allow-reset"
            )
        holders = describe_holders(gpu, None)
        if holders:
            raise ActionFailed(
                f"{action.address}: cannot reset the GPU to finish {what} MIG mode: "
                f"it is held by {holders}; stop them and retry"
            )
        nh.reset_gpu(pci)
        gpu = _gpu(ctx, pci)
        if gpu.mig_current != want:
            raise ActionFailed(f"{action.address}: MIG mode still not {'on' if want else 'off'} "
                               "after a GPU reset")
        return {"activation_status": status, "reset": True}

    def observe(self, host: HostState, action: ActionLike) -> Side | None:
        gpu = host.gpu(_pci(action))
        if gpu is None:
            return None
        sides: tuple[Side, ...] = ("after", "before")
        for side in sides:
            value = side_value(action, side)
            want, pending = mode_wanted(value), mode_wanted(value, "pending")
            if want is not None and gpu.mig_current == want and gpu.mig_pending == pending:
                return side
        return None

    def inverse(self, action: ActionLike) -> str:
        want = mode_wanted(action.before)
        return f"set MIG mode {'on' if want else 'off'} again"

    def preflight(self, host: HostState, action: ActionLike, ctx: ApplyContext) -> list[str]:
        gpu = host.gpu(_pci(action))
        if gpu is None:
            return [f"{action.address}: the GPU is not on this host"]
        want = mode_wanted(action.after)
        if not action.needs_reset or want is None:
            return []
        what = "enabling" if want else "disabling"
        if not ctx.allow_reset:
            return [f"{action.address}: {what} MIG mode needs a GPU reset on this model; "
                    "rerun with --allow-reset"]
        holders = describe_holders(gpu, host)
        if holders:
            return [f"{action.address}: {what} MIG mode needs a GPU reset, but the GPU is "
                    f"held by {holders}; stop them first"]
        return []


def describe_holders(gpu: Gpu, host: HostState | None) -> str:
    """Processes, services and domains holding a GPU, in words ("" when none)."""
    parts = [f"process {p.name or '?'} (pid {p.pid})" for p in gpu.processes]
    if host is not None:
        parts += [f"domain {d}" for d in domains_using_gpu(host, gpu.pci)]
    return ", ".join(parts)


def domains_using_gpu(host: HostState, pci: str) -> list[str]:
    """Running domains with a hostdev on the GPU: the GPU itself, one of its VFs, or an
    mdev whose parent is the GPU or one of its VFs."""
    devices = {pci} | {p.pci for p in host.vgpu_parents if p.physfn == pci}
    mdevs = {m.uuid.lower() for m in host.mdevs if m.parent in devices}
    names = []
    for domain in host.domains:
        if not domain.running:
            continue
        for hd in domain.hostdevs:
            if (hd.type == "pci" and hd.pci in devices) or (
                hd.type == "mdev" and hd.uuid and hd.uuid.lower() in mdevs
            ):
                names.append(domain.name)
                break
    return names


# --- GPU instances ----------------------------------------------------------------------


def _gi_slot(action: ActionLike) -> tuple[str, int]:
    slot = _addr(action).slot("gi")
    if slot is None:
        raise ActionFailed(f"{action.address}: the address names no GPU instance")
    return slot


def _find_gi(gpu: Gpu, name: str, start: int) -> GpuInstance | None:
    return next(
        (g for g in gpu.gpu_instances if g.placement_start == start and g.profile_name == name),
        None,
    )


def _gi_profile_id(action: ActionLike, gpu: Gpu, name: str) -> int:
    for value in (action.after, action.before):
        pid = _field(value, "profile_id", "gi_profile_id")
        if isinstance(pid, int):
            return pid
    profile = _model(gpu, action.address).profile(name)
    if profile is None:
        raise ActionFailed(f"{action.address}: {gpu.model} has no GPU-instance profile {name}")
    return profile.id


class GpuInstanceHandler:
    def ensure(self, ctx: ApplyContext, action: ActionLike, side: Side) -> dict[str, Any]:
        pci = _pci(action)
        name, start = _gi_slot(action)
        nh = ctx.adapter("nvml")
        gpu = _gpu(ctx, pci)
        existing = _find_gi(gpu, name, start)
        want = side_present(action, side)
        if want and existing is None:
            gi = nh.create_gpu_instance(pci, _gi_profile_id(action, gpu, name), start)
            return {"gi_id": gi.gi_id}
        if not want and existing is not None:
            nh.destroy_gpu_instance(pci, existing.profile_id, start)
            return {"destroyed_gi_id": existing.gi_id}
        return {"already": True}

    def observe(self, host: HostState, action: ActionLike) -> Side | None:
        gpu = host.gpu(_pci(action))
        name, start = _gi_slot(action)
        present = gpu is not None and _find_gi(gpu, name, start) is not None
        return side_for_presence(action, present)

    def inverse(self, action: ActionLike) -> str:
        name, start = _gi_slot(action)
        return f"{_undo_verb(action)} GI {name}@{start}"

    def preflight(self, host: HostState, action: ActionLike, ctx: ApplyContext) -> list[str]:
        return []


# --- compute instances ------------------------------------------------------------------


def _ci_slot(action: ActionLike) -> tuple[str, int]:
    slot = _addr(action).slot("ci")
    if slot is None:
        raise ActionFailed(f"{action.address}: the address names no compute instance")
    return slot


def _ci_profile_id(action: ActionLike, gpu: Gpu, gi_name: str, ci_name: str) -> int:
    for value in (action.after, action.before):
        pid = _field(value, "profile_id", "ci_profile_id")
        if isinstance(pid, int):
            return pid
    model = _model(gpu, action.address)
    gi = model.profile(gi_name)
    if gi is not None:
        for ci in model.ci_profiles_for(gi):
            if ci.name(gi) == ci_name:
                return ci.id
    raise ActionFailed(f"{action.address}: {gpu.model} has no compute-instance profile "
                       f"{ci_name} in a {gi_name} GPU instance")


def _find_ci(gpu: Gpu, action: ActionLike) -> tuple[GpuInstance | None, Any]:
    gi_name, gi_start = _gi_slot(action)
    ci_name, ci_start = _ci_slot(action)
    gi = _find_gi(gpu, gi_name, gi_start)
    if gi is None:
        return None, None
    pid = _ci_profile_id(action, gpu, gi_name, ci_name)
    ci = next((c for c in gi.compute_instances
               if c.placement_start == ci_start and c.profile_id == pid), None)
    return gi, ci


class ComputeInstanceHandler:
    def ensure(self, ctx: ApplyContext, action: ActionLike, side: Side) -> dict[str, Any]:
        pci = _pci(action)
        gi_name, gi_start = _gi_slot(action)
        ci_name, ci_start = _ci_slot(action)
        nh = ctx.adapter("nvml")
        gpu = _gpu(ctx, pci)
        gi, ci = _find_ci(gpu, action)
        want = side_present(action, side)
        if want and ci is None:
            if gi is None:
                raise ActionFailed(f"{action.address}: its GPU instance {gi_name}@{gi_start} "
                                   "does not exist")
            made = nh.create_compute_instance(
                pci, gi_start, _ci_profile_id(action, gpu, gi_name, ci_name), ci_start
            )
            return {"ci_id": made.ci_id, "mig_uuid": made.mig_uuid}
        if not want and ci is not None:
            nh.destroy_compute_instance(pci, gi_start, ci_start)
            return {"destroyed_ci_id": ci.ci_id}
        return {"already": True}

    def observe(self, host: HostState, action: ActionLike) -> Side | None:
        gpu = host.gpu(_pci(action))
        present = gpu is not None and _find_ci(gpu, action)[1] is not None
        return side_for_presence(action, present)

    def inverse(self, action: ActionLike) -> str:
        ci_name, ci_start = _ci_slot(action)
        return f"{_undo_verb(action)} CI {ci_name}@{ci_start}"

    def preflight(self, host: HostState, action: ActionLike, ctx: ApplyContext) -> list[str]:
        return []


def _undo_verb(action: ActionLike) -> str:
    return "create" if side_present(action, "before") else "delete"




register(KIND_MODE, MigModeHandler())
register(KIND_GI, GpuInstanceHandler())
register(KIND_CI, ComputeInstanceHandler())
