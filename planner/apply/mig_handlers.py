"""Handlers for the MIG resources: MIG mode, GPU instances, compute instances.

Inverses: create GI <-> delete GI (same profile, same placement: the driver's new GI id
is not part of the resource); create CI <-> delete CI (same profile and placement in the
same GI); mode on <-> mode off (each with the GPU reset the model needs, only under
``--allow-reset``). Every action is addressed by placement, never by driver id.
"""

from __future__ import annotations

from typing import Any

from planner.apply.handlers import (
    ActionFailed,
    ApplyContext,
    Side,
    Step,
    step_state,
)
from planner.hardware.catalog import get_model
from planner.hardware.model import GpuModel
from planner.host.state import ComputeInstance, Gpu, GpuInstance, HostState
from planner.vocab import (
    Address,
    Attrs,
    ComputeInstanceAttrs,
    GpuInstanceAttrs,
    MigModeAttrs,
    Slot,
)
from planner.vocab.plan import Change


def _pci(address: Address) -> str:
    if address.pci is None:
        raise ActionFailed(f"{address}: the address names no GPU")
    return address.pci


def _model(gpu: Gpu, where: str) -> GpuModel:
    if gpu.model is None:
        raise ActionFailed(f"{where}: {gpu.name} is not a GPU model aihow knows")
    return get_model(gpu.model)


def _gpu(ctx: ApplyContext, pci: str) -> Gpu:
    gpu: Gpu | None = ctx.adapter("nvml").find_gpu(pci)
    if gpu is not None:
        return gpu
    raise ActionFailed(f"{Address.gpu(pci)}: no such GPU on this host")


# --- MIG mode -------------------------------------------------------------------------


class MigModeHandler:
    """``update`` of ``gpu[PCI].mig``: before/after are ``MigModeAttrs``. Undo sets the
    mode back the same way (and resets the GPU again where the model needs it)."""

    def ensure(self, ctx: ApplyContext, step: Step, side: Side) -> dict[str, Any]:
        pci = _pci(step.address)
        value = step_state(step, side, MigModeAttrs)
        if value is None:
            raise ActionFailed(f"{step.address}: the plan gives no MIG mode for {side}")
        want, want_pending = value.on, value.pending_on
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
                f"{step.address}: {what} MIG mode is pending until the GPU is reset; "
                "rerun with --allow-reset"
            )
        holders = describe_holders(gpu, None)
        if holders:
            raise ActionFailed(
                f"{step.address}: cannot reset the GPU to finish {what} MIG mode: "
                f"it is held by {holders}; stop them and retry"
            )
        nh.reset_gpu(pci)
        gpu = _gpu(ctx, pci)
        if gpu.mig_current != want:
            raise ActionFailed(f"{step.address}: MIG mode still not {'on' if want else 'off'} "
                               "after a GPU reset")
        return {"activation_status": status, "reset": True}

    def matches(self, host: HostState, address: Address, state: Attrs | None) -> bool:
        gpu = host.gpu(_pci(address))
        if gpu is None or not isinstance(state, MigModeAttrs):
            return False
        return gpu.mig_current == state.on and gpu.mig_pending == state.pending_on

    def inverse(self, step: Step) -> str:
        before = step_state(step, "before", MigModeAttrs)
        return f"set MIG mode {'on' if before is not None and before.on else 'off'} again"

    def preflight(self, host: HostState, change: Change, ctx: ApplyContext) -> list[str]:
        gpu = host.gpu(_pci(change.address))
        if gpu is None:
            return [f"{change.address}: the GPU is not on this host"]
        after = change.after
        if not change.needs_reset or not isinstance(after, MigModeAttrs):
            return []
        what = "enabling" if after.on else "disabling"
        if not ctx.allow_reset:
            return [f"{change.address}: {what} MIG mode needs a GPU reset on this model; "
                    "rerun with --allow-reset"]
        # With --restart-running-vms the domains are shut down before the reset.
        holders = describe_holders(gpu, None if ctx.restart_running_vms else host)
        if holders:
            return [f"{change.address}: {what} MIG mode needs a GPU reset, but the GPU is "
                    f"held by {holders}; stop them first"]
        return []


# NVIDIA Fabric Manager is never a holder to stop: on an HGX A100 the reset needs it running
# (without it, every NVLink peer must be reset together), and on later boards the reset does
# not depend on it (nvidia-smi(1) -r; docs/reference/vgpu-on-mig.md section 6).
FABRIC_MANAGER = frozenset({"nvidia-fabricmanager", "nv-fabricmanager"})


def describe_holders(gpu: Gpu, host: HostState | None) -> str:
    """Processes, services and domains holding a GPU, in words ("" when none)."""
    parts = [f"process {p.name or '?'} (pid {p.pid})" for p in gpu.processes
             if p.name not in FABRIC_MANAGER]
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


def _gi_slot(address: Address) -> Slot:
    if address.gi_slot is None:
        raise ActionFailed(f"{address}: the address names no GPU instance")
    return address.gi_slot


def _find_gi(gpu: Gpu, slot: Slot) -> GpuInstance | None:
    return next(
        (g for g in gpu.gpu_instances
         if g.placement_start == slot.start and g.profile_name == slot.profile),
        None,
    )


def _gi_profile_id(address: Address, gpu: Gpu, name: str) -> int:
    profile = _model(gpu, str(address)).profile(name)
    if profile is None:
        raise ActionFailed(f"{address}: {gpu.model} has no GPU-instance profile {name}")
    return profile.id


def _undo_verb(step: Step) -> str:
    return "create" if step.before is not None else "delete"


class GpuInstanceHandler:
    def ensure(self, ctx: ApplyContext, step: Step, side: Side) -> dict[str, Any]:
        pci = _pci(step.address)
        slot = _gi_slot(step.address)
        nh = ctx.adapter("nvml")
        gpu = _gpu(ctx, pci)
        existing = _find_gi(gpu, slot)
        want = step_state(step, side, GpuInstanceAttrs) is not None
        if want and existing is None:
            gi = nh.create_gpu_instance(pci, _gi_profile_id(step.address, gpu, slot.profile),
                                        slot.start, where=str(step.address))
            return {"gi_id": gi.gi_id}
        if not want and existing is not None:
            nh.destroy_gpu_instance(pci, existing.profile_id, slot.start,
                                    where=str(step.address))
            return {"destroyed_gi_id": existing.gi_id}
        return {"already": True}

    def matches(self, host: HostState, address: Address, state: Attrs | None) -> bool:
        gpu = host.gpu(_pci(address))
        present = gpu is not None and _find_gi(gpu, _gi_slot(address)) is not None
        return present == (state is not None)

    def inverse(self, step: Step) -> str:
        return f"{_undo_verb(step)} GI {_gi_slot(step.address)}"

    def preflight(self, host: HostState, change: Change, ctx: ApplyContext) -> list[str]:
        return []


# --- compute instances ------------------------------------------------------------------


def _ci_slot(address: Address) -> Slot:
    if address.ci_slot is None:
        raise ActionFailed(f"{address}: the address names no compute instance")
    return address.ci_slot


def _ci_profile_id(address: Address, gpu: Gpu, gi_name: str, ci_name: str) -> int:
    model = _model(gpu, str(address))
    gi = model.profile(gi_name)
    if gi is not None:
        for ci in model.ci_profiles_for(gi):
            if ci.name(gi) == ci_name:
                return ci.id
    raise ActionFailed(f"{address}: {gpu.model} has no compute-instance profile "
                       f"{ci_name} in a {gi_name} GPU instance")


def _find_ci(gpu: Gpu, address: Address
             ) -> tuple[GpuInstance | None, ComputeInstance | None]:
    gi_slot, ci_slot = _gi_slot(address), _ci_slot(address)
    gi = _find_gi(gpu, gi_slot)
    if gi is None:
        return None, None
    pid = _ci_profile_id(address, gpu, gi_slot.profile, ci_slot.profile)
    ci = next((c for c in gi.compute_instances
               if c.placement_start == ci_slot.start and c.profile_id == pid), None)
    return gi, ci


class ComputeInstanceHandler:
    def ensure(self, ctx: ApplyContext, step: Step, side: Side) -> dict[str, Any]:
        address = step.address
        pci = _pci(address)
        gi_slot, ci_slot = _gi_slot(address), _ci_slot(address)
        nh = ctx.adapter("nvml")
        gpu = _gpu(ctx, pci)
        gi, ci = _find_ci(gpu, address)
        want = step_state(step, side, ComputeInstanceAttrs) is not None
        if want and ci is None:
            if gi is None:
                raise ActionFailed(f"{address}: its GPU instance {gi_slot} does not exist")
            made = nh.create_compute_instance(
                pci, gi_slot.start, _ci_profile_id(address, gpu, gi_slot.profile,
                                                   ci_slot.profile), ci_slot.start,
                where=str(address),
            )
            return {"ci_id": made.ci_id, "mig_uuid": made.mig_uuid}
        if not want and ci is not None:
            nh.destroy_compute_instance(pci, gi_slot.start, ci_slot.start, where=str(address))
            return {"destroyed_ci_id": ci.ci_id}
        return {"already": True}

    def matches(self, host: HostState, address: Address, state: Attrs | None) -> bool:
        gpu = host.gpu(_pci(address))
        present = gpu is not None and _find_ci(gpu, address)[1] is not None
        return present == (state is not None)

    def inverse(self, step: Step) -> str:
        return f"{_undo_verb(step)} CI {_ci_slot(step.address)}"

    def preflight(self, host: HostState, change: Change, ctx: ApplyContext) -> list[str]:
        return []

