"""Apply handlers for ``sriov`` and ``vgpu`` actions, through the host's sysfs.

``gpu[PF].vfs`` (kind ``sriov``): the PF's SR-IOV virtual functions, enabled with NVIDIA's
``sriov-manage -e PF`` and disabled with ``-d PF`` (the only way NVIDIA supports;
``planner.host.sriov_manage``), with this run's NVML session closed meanwhile (the script
unbinds the PF, which an open NVML client prevents). The VFs being there afterwards is
the proof: the script exits 0 on a GPU without SR-IOV.

``vgpu[KEY]`` (kind ``vgpu``), two backends:

- ``mdev``: KEY is the mdev UUID, written to the ``create`` file of the type
  ``nvidia-N`` on the parent VF; removed by writing 1 to ``bus/mdev/devices/UUID/remove``.
  Never defined with mdevctl (it cannot keep a MIG-backed mdev: see the create path); an
  old definition is undefined on delete.
- ``vfio-vf``: KEY is the VF's PCI address; the type id is written to
  ``nvidia/current_vgpu_type`` and read back (a non-creatable type reads back as 0);
  released by writing 0.

The type is chosen by id: the plan's, or, before the VFs existed, one the driver maps to
the target GPU instance's profile through NVML (names are for display). The driver picks
the GPU instance behind a new vGPU; ``planner.apply.vgpu_placement`` makes its pick the
plan's and the binding is recorded (``planner.host.vgpu_bindings``). All writes go through
``Sysfs.write``, which on a ``sim:`` host is the simulated kernel.
"""

from __future__ import annotations

import uuid
from typing import Any

from planner.apply.handlers import (
    ActionFailed,
    ApplyContext,
    Side,
    Step,
    step_state,
)
from planner.apply.vgpu_placement import PlacementError, parse_gi, target_of, with_placeholders
from planner.errors import AihowError
from planner.host import sriov_manage
from planner.host.mdev_persist import MdevPersistence, is_defined
from planner.host.nvml import NvmlHost
from planner.host.state import HostState
from planner.host.sysfs import MDEV_DEVICES, PCI_DEVICES, Sysfs, parse_creatable_types
from planner.host.vgpu_bindings import Binding, record_binding
from planner.lang.pci import normalize_pci
from planner.vocab import Address, Attrs, SriovAttrs, VgpuAttrs
from planner.vocab.plan import Change


def _vgpu_attrs(step: Step) -> VgpuAttrs:
    """The vGPU's attributes: the step's ``after``, else its ``before`` (what to remove)."""
    attrs = step_state(step, "after", VgpuAttrs) or step_state(step, "before", VgpuAttrs)
    if attrs is None:
        raise ActionFailed(f"{step.address}: the plan carries no vGPU attributes")
    return attrs


# --- SR-IOV VFs ------------------------------------------------------------------------


def _pf(address: Address) -> str:
    if address.pci is None:
        raise ActionFailed(f"{address}: the address names no GPU")
    return normalize_pci(address.pci)


def _enabled(value: SriovAttrs | None) -> bool:
    return value is not None and value.enabled


class SriovHandler:
    def ensure(self, ctx: ApplyContext, step: Step, side: Side) -> dict[str, Any]:
        pf = _pf(step.address)
        sysfs: Sysfs = ctx.adapter("sysfs")
        numvfs = f"{PCI_DEVICES}/{pf}/sriov_numvfs"
        want = _enabled(step_state(step, side, SriovAttrs))
        try:
            current = int(sysfs.read(numvfs).strip() or "0")
            if want == (current != 0):
                return {"already": True}
            tool = sriov_manage.locate(ctx.env.tools.sriov_manage)
            nvml: NvmlHost = ctx.adapter("nvml")
            nvml.without_session(lambda: sriov_manage.run(tool, want, pf))
            now = int(sysfs.read(numvfs).strip() or "0")
        except ActionFailed:
            raise
        except AihowError as exc:
            raise ActionFailed(f"{step.address}: {exc}") from None
        if want and now == 0:
            raise ActionFailed(f"{step.address}: {tool} -e {pf} succeeded but enabled no VFs: "
                               "the GPU has no SR-IOV, or the vGPU manager does not drive it")
        if not want and now != 0:
            raise ActionFailed(f"{step.address}: {tool} -d {pf} left {now} VFs enabled")
        return {"num_vfs": now}

    def matches(self, host: HostState, address: Address, state: Attrs | None) -> bool:
        pf = _pf(address)
        enabled = any(p.physfn == pf for p in host.vgpu_parents)
        want = isinstance(state, SriovAttrs) and state.enabled
        return enabled == want

    def inverse(self, step: Step) -> str:
        on = _enabled(step_state(step, "before", SriovAttrs))
        return f"{'enable' if on else 'disable'} the SR-IOV VFs of {_pf(step.address)}"

    def preflight(self, host: HostState, change: Change, ctx: ApplyContext) -> list[str]:
        return []


# --- vGPU devices ------------------------------------------------------------------------


def _key(address: Address) -> str:
    if not address.key:
        raise ActionFailed(f"{address}: the address names no vGPU")
    return address.key


def _short(name: str | None) -> str:
    """A type name as NVIDIA's tools compare it: its last word, so "GRID A100-1-5C",
    "NVIDIA A100-1-5C" and "A100-1-5C" are one name (vgpu-on-mig.md section 1.4)."""
    words = (name or "").split()
    return words[-1] if words else ""


def _pick_type(offered: dict[str, str], want: VgpuAttrs, profile_id: int,
               by_profile: dict[int, int | None], where: str) -> str:
    """The type id to create among ``offered`` (id -> name): the plan's id when it has
    one, else one that the driver maps to the target GI's profile (NVML's
    ``nvmlVgpuTypeGetGpuInstanceProfileId``; the plan's name only breaks ties). Where the
    driver answers no type query (``by_profile`` empty), by the name's last word."""
    if want.type_id is not None:
        if want.type_id not in offered:
            raise AihowError(f"{where} offers no vGPU type {want.type_id} now "
                             f"(no free GPU instance?)")
        return want.type_id
    if by_profile:
        fits = [t for t in offered if by_profile.get(_number(t)) == profile_id]
        fits.sort(key=lambda t: (_short(offered[t]) != _short(want.type_name), t))
        if fits:
            return fits[0]
        raise AihowError(f"{where} offers no vGPU type for GPU instance profile {profile_id} "
                         f"now (no free GPU instance?)")
    for t, name in offered.items():
        if _short(name) == _short(want.type_name):
            return t
    raise AihowError(f"{where} offers no type {want.type_name} now (no free GPU instance?)")


def _number(type_id: str) -> int:
    text = type_id.removeprefix("nvidia-")
    return int(text) if text.isdigit() else -1


def _mdev_types(sysfs: Sysfs, parent: str) -> dict[str, str]:
    types = f"{PCI_DEVICES}/{parent}/mdev_supported_types"
    names = sysfs.list(types)
    if not names:
        raise AihowError(f"vGPU parent {parent} has no mdev types (are its VFs enabled?)")
    return {tid: sysfs.read_optional(f"{types}/{tid}/name") or tid for tid in names}


def _vf_types(sysfs: Sysfs, vf: str) -> dict[str, str]:
    text = sysfs.read_optional(f"{PCI_DEVICES}/{vf}/nvidia/creatable_vgpu_types")
    if text is None:
        raise AihowError(f"VF {vf} has no nvidia/creatable_vgpu_types (not a vGPU VF?)")
    return {t.type_id: t.name for t in parse_creatable_types(text)}


def _persistence(ctx: ApplyContext) -> MdevPersistence:
    """The host's mdev definition store (mdevctl on a real host; the simulated host keeps
    its own, so the real mdevctl and /etc are never touched for it)."""
    store: MdevPersistence = ctx.adapter("mdev_store")
    return store


class _Creator:
    """Creates the vGPU of a step, and placeholders of the same type, through sysfs."""

    def __init__(self, ctx: ApplyContext, attrs: VgpuAttrs, key: str, profile_id: int) -> None:
        self.sysfs: Sysfs = ctx.adapter("sysfs")
        nvml: NvmlHost = ctx.adapter("nvml")
        self.by_profile = {n: t.gi_profile_id
                           for n, t in nvml.vgpu_types(nvml.handle(attrs.gpu)).items()}
        self.attrs, self.key, self.profile_id = attrs, key, profile_id
        self.type_id: str | None = None

    def _type(self, parent: str) -> str:
        if self.type_id is None:
            offered = (_mdev_types(self.sysfs, parent) if self.attrs.backend == "mdev"
                       else _vf_types(self.sysfs, parent))
            where = f"vGPU parent {parent}" if self.attrs.backend == "mdev" else f"VF {parent}"
            self.type_id = _pick_type(offered, self.attrs, self.profile_id, self.by_profile,
                                      where)
        return self.type_id

    def create(self, parent: str, token: str | None) -> None:
        tid = self._type(parent)
        if self.attrs.backend == "mdev":
            types = f"{PCI_DEVICES}/{parent}/mdev_supported_types"
            self.sysfs.write(f"{types}/{tid}/create", token or str(uuid.UUID(self.key)))
            return
        cur_path = f"{PCI_DEVICES}/{parent}/nvidia/current_vgpu_type"
        self.sysfs.write(cur_path, tid)
        got = (self.sysfs.read_optional(cur_path) or "0").strip()
        if got != tid:
            raise AihowError(f"VF {parent} reads back type {got} after writing {tid}")

    def remove(self, parent: str, token: str | None) -> None:
        if self.attrs.backend == "mdev":
            self.sysfs.write(f"{MDEV_DEVICES}/{token}/remove", "1")
        else:
            self.sysfs.write(f"{PCI_DEVICES}/{parent}/nvidia/current_vgpu_type", "0")


def _create_on_target(ctx: ApplyContext, attrs: VgpuAttrs, key: str) -> dict[str, Any]:
    """Create the vGPU so that the driver backs it with the planned GI, record the
    binding, and check it against NVML where NVML can tell already. Only the vGPU's own
    GPU is read, before and after: the driver's choice depends on nothing else."""
    nvml: NvmlHost = ctx.adapter("nvml")
    with nvml.in_use():  # its own NVML session must not overlap a reset or sriov-manage
        host = ctx.env.probe(attrs.gpu)
    target = target_of(host, attrs)
    creator = _Creator(ctx, attrs, key, target.gi.profile_id)
    placeholders = with_placeholders(host, target, attrs, key, creator.create, creator.remove)
    record_binding(ctx.env.state_dir(), key, Binding(target.gpu.pci, target.gi.gi_id,
                                                     target.gi.profile_id,
                                                     target.gi.placement_start))
    with nvml.in_use():
        after = ctx.env.probe(attrs.gpu)
    found = next((m.gi_id for m in after.mdevs if m.uuid == key.lower() and m.gi_from == "nvml"),
                 None) or next((p.gi_id for p in after.vgpu_parents
                                if p.pci == key.lower() and p.gi_from == "nvml"), None)
    if found is not None and found != target.gi.gi_id:
        record_binding(ctx.env.state_dir(), key, None)
        raise PlacementError(f"the driver backed it with GPU instance {found}, not "
                             f"{attrs.gi} (GI {target.gi.gi_id})")
    facts: dict[str, Any] = {"type_id": creator.type_id, "gi_id": target.gi.gi_id}
    if placeholders:
        facts["placeholders_on_gi_ids"] = placeholders
    return facts


class VgpuHandler:
    def ensure(self, ctx: ApplyContext, step: Step, side: Side) -> dict[str, Any]:
        key = _key(step.address)
        attrs = _vgpu_attrs(step)
        want = step.state(side) is not None
        sysfs: Sysfs = ctx.adapter("sysfs")
        try:
            if attrs.backend == "vfio-vf":
                vf = normalize_pci(key)
                cur_path = f"{PCI_DEVICES}/{vf}/nvidia/current_vgpu_type"
                current = (sysfs.read_optional(cur_path) or "0").strip()
                if want and current in ("", "0"):
                    return _create_on_target(ctx, attrs, vf)
                if not want and current not in ("", "0"):
                    sysfs.write(cur_path, "0")
                    record_binding(ctx.env.state_dir(), vf, None)
                    return {"released_type_id": current}
                return {"already": True}
            mdev = str(uuid.UUID(key))
            exists = sysfs.exists(f"{MDEV_DEVICES}/{mdev}")
            if want:
                # MIG-backed: never ``mdevctl define``d. mdevctl cannot make such an mdev
                # persistent (its GPU instance is gone at boot, and mdevctl's udev start runs
                # before GIs exist); the boot-time ``aihow apply`` makes it again
                # (docs/reference/vgpu-on-mig.md section 5).
                if exists:
                    return {"already": True}
                return {**_create_on_target(ctx, attrs, mdev), "parent": attrs.parent}
            facts: dict[str, Any] = {}
            store = _persistence(ctx)
            if is_defined(store, mdev):  # a definition an older aihow (or a person) made
                store.undefine(mdev)
                facts["undefined"] = mdev
            if exists:
                sysfs.write(f"{MDEV_DEVICES}/{mdev}/remove", "1")
                record_binding(ctx.env.state_dir(), mdev, None)
                facts["removed"] = mdev
            return facts or {"already": True}
        except ActionFailed:
            raise
        except (AihowError, ValueError) as exc:
            raise ActionFailed(f"{step.address}: {exc}") from None

    def matches(self, host: HostState, address: Address, state: Attrs | None) -> bool:
        """Absent, or present with the planned backend, parent and type (a replace keeps
        the address and changes the type, so presence alone says nothing)."""
        key = _key(address)
        vf = next((p for p in host.vgpu_parents if p.current_type and p.pci == key.lower()),
                  None)
        mdev = next((m for m in host.mdevs if m.uuid == key.lower()), None)
        if state is None:
            return vf is None and mdev is None
        if not isinstance(state, VgpuAttrs):
            return False
        if state.backend == "vfio-vf":
            return vf is not None and _on_planned_gi(host, state, vf.gi_id)
        return mdev is not None and mdev.parent == state.parent and \
            _on_planned_gi(host, state, mdev.gi_id)

    def inverse(self, step: Step) -> str:
        verb = "create" if step.before is not None else "remove"
        return f"{verb} vGPU {_key(step.address)}"

    def preflight(self, host: HostState, change: Change, ctx: ApplyContext) -> list[str]:
        return []


def _on_planned_gi(host: HostState, state: VgpuAttrs, gi_id: int | None) -> bool:
    """Whether the GI known to back the vGPU is the planned one (by placement)."""
    if state.gi is None:
        return True
    gpu = host.gpu(state.gpu)
    gi = next((g for g in gpu.gpu_instances if g.gi_id == gi_id), None) if gpu else None
    return gi is not None and gi.placement_start == parse_gi(state.gi)[1]
