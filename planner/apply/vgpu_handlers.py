"""Apply handlers for ``sriov`` and ``vgpu`` actions, through the host's sysfs.

``gpu[PF].vfs`` (kind ``sriov``): the PF's SR-IOV virtual functions, enabled by writing
``sriov_totalvfs`` to ``sriov_numvfs`` (what NVIDIA's ``sriov-manage -e`` does after its
driver checks) and disabled by writing 0.

``vgpu[KEY]`` (kind ``vgpu``), two backends:

- ``mdev``: KEY is the mdev UUID. Created by writing it to the ``create`` file of the type
  on the parent VF whose ``name`` is the planned type name (type ids are board-specific,
  so the plan names the type and apply finds its id), then made persistent (``mdevctl
  define``, manual start; on ``sim:DIR`` a simulated definition under DIR/etc/mdevctl.d);
  removed by undefining it and writing 1 to ``bus/mdev/devices/UUID/remove``.
- ``vfio-vf``: KEY is the VF's PCI address. The type id is looked up by name in the VF's
  ``nvidia/creatable_vgpu_types`` and written to ``nvidia/current_vgpu_type``, then read
  back (a non-creatable type reads back as 0); released by writing 0.

Which GPU instance backs the new vGPU is the driver's choice; it is read back by the next
probe and never assumed here. All writes go through ``Sysfs.write``, which on a ``sim:``
host is the simulated kernel.
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
from planner.errors import AihowError
from planner.host.mdev_persist import MdevDefinition, MdevPersistence, is_defined
from planner.host.state import HostState, VgpuParent
from planner.host.sysfs import MDEV_DEVICES, PCI_DEVICES, Sysfs, parse_creatable_types
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
        base = f"{PCI_DEVICES}/{pf}"
        want = _enabled(step_state(step, side, SriovAttrs))
        try:
            current = int(sysfs.read(f"{base}/sriov_numvfs").strip() or "0")
            if want and current == 0:
                total = sysfs.read(f"{base}/sriov_totalvfs").strip()
                sysfs.write(f"{base}/sriov_numvfs", total)
                return {"num_vfs": int(total)}
            if not want and current != 0:
                sysfs.write(f"{base}/sriov_numvfs", "0")
                return {"num_vfs": 0}
        except ActionFailed:
            raise
        except AihowError as exc:
            raise ActionFailed(f"{step.address}: {exc}") from None
        return {"already": True}

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


def _type_matches(parent: VgpuParent | None, type_id: str, want: VgpuAttrs) -> bool:
    """Whether the type ``type_id`` on ``parent`` is the planned one: by id when the plan
    knows it, else by name (the plan names the type before its VFs exist)."""
    if want.type_id is not None:
        return type_id == want.type_id
    names = {t.type_id: t.name for t in parent.types} if parent is not None else {}
    if type_id not in names:  # an assigned VF stops listing its type: presence must do
        return True
    return names[type_id] == want.type_name


def _mdev_type_dir(sysfs: Sysfs, parent: str, type_id: str | None, type_name: str | None) -> str:
    types = f"{PCI_DEVICES}/{parent}/mdev_supported_types"
    names = sysfs.list(types)
    if not names:
        raise AihowError(f"vGPU parent {parent} has no mdev types (are its VFs enabled?)")
    for tid in names:
        name = sysfs.read_optional(f"{types}/{tid}/name")
        if (type_id is not None and tid == type_id) or (
            type_name is not None and name == type_name
        ):
            return f"{types}/{tid}"
    raise AihowError(f"vGPU parent {parent} offers no type {type_name or type_id}")


def _vf_type_id(sysfs: Sysfs, vf: str, type_id: str | None, type_name: str | None) -> str:
    text = sysfs.read_optional(f"{PCI_DEVICES}/{vf}/nvidia/creatable_vgpu_types")
    if text is None:
        raise AihowError(f"VF {vf} has no nvidia/creatable_vgpu_types (not a vGPU VF?)")
    for t in parse_creatable_types(text):
        if (type_id is not None and t.type_id == type_id) or t.name == type_name:
            return t.type_id
    raise AihowError(f"VF {vf} cannot create {type_name or type_id} now (no free GPU instance?)")


def _persistence(ctx: ApplyContext) -> MdevPersistence:
    """The host's mdev definition store (mdevctl on a real host; the simulated host keeps
    its own, so the real mdevctl and /etc are never touched for it)."""
    store: MdevPersistence = ctx.adapter("mdev_store")
    return store


class VgpuHandler:
    def ensure(self, ctx: ApplyContext, step: Step, side: Side) -> dict[str, Any]:
        key = _key(step.address)
        attrs = _vgpu_attrs(step)
        want = step.state(side) is not None
        sysfs: Sysfs = ctx.adapter("sysfs")
        type_id, type_name = attrs.type_id, attrs.type_name
        try:
            if attrs.backend == "vfio-vf":
                vf = normalize_pci(key)
                cur_path = f"{PCI_DEVICES}/{vf}/nvidia/current_vgpu_type"
                current = (sysfs.read_optional(cur_path) or "0").strip()
                if want and current in ("", "0"):
                    tid = _vf_type_id(sysfs, vf, type_id, type_name)
                    sysfs.write(cur_path, tid)
                    got = (sysfs.read_optional(cur_path) or "0").strip()
                    if got != tid:
                        raise ActionFailed(
                            f"{step.address}: VF {vf} reads back type {got} after writing {tid}"
                        )
                    return {"type_id": tid}
                if not want and current not in ("", "0"):
                    sysfs.write(cur_path, "0")
                    return {"released_type_id": current}
                return {"already": True}
            mdev = str(uuid.UUID(key))
            exists = sysfs.exists(f"{MDEV_DEVICES}/{mdev}")
            store = _persistence(ctx)
            defined = is_defined(store, mdev)
            if want:
                parent = normalize_pci(attrs.parent)
                type_dir = _mdev_type_dir(sysfs, parent, type_id, type_name)
                tid = type_dir.rsplit("/", 1)[1]
                facts: dict[str, Any] = {}
                if not exists:
                    sysfs.write(f"{type_dir}/create", mdev)
                    facts.update(type_id=tid, parent=parent)
                if not defined:  # survives a reboot as a definition; aihow starts it
                    store.define(MdevDefinition(mdev, parent, tid))
                    facts["persistent"] = store.label
                return facts or {"already": True}
            facts = {}
            if defined:
                store.undefine(mdev)
                facts["undefined"] = mdev
            if exists:
                sysfs.write(f"{MDEV_DEVICES}/{mdev}/remove", "1")
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
        parents = {p.pci: p for p in host.vgpu_parents}
        vf = next((p for p in host.vgpu_parents if p.current_type and p.pci == key.lower()),
                  None)
        mdev = next((m for m in host.mdevs if m.uuid == key.lower()), None)
        if state is None:
            return vf is None and mdev is None
        if not isinstance(state, VgpuAttrs):
            return False
        if state.backend == "vfio-vf":
            return vf is not None and vf.current_type is not None and \
                _type_matches(vf, vf.current_type, state)
        return mdev is not None and mdev.parent == state.parent and \
            _type_matches(parents.get(mdev.parent), mdev.type_id, state)

    def inverse(self, step: Step) -> str:
        verb = "create" if step.before is not None else "remove"
        return f"{verb} vGPU {_key(step.address)}"

    def preflight(self, host: HostState, change: Change, ctx: ApplyContext) -> list[str]:
        return []

