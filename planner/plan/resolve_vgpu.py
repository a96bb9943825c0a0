"""vGPU planning: the device (mdev or vfio-vf VF) that gives each node's GPU instance to
its VM, reusing devices that exist and still fit."""

from __future__ import annotations

from collections.abc import Sequence

from planner.hardware.model import GiProfile, GpuModel
from planner.hardware.vgpu import gfx_profile_for, vgpu_type_name
from planner.host.state import GpuInstance, HostState, VgpuParent, VgpuType
from planner.plan.bindings import Bindings
from planner.plan.request import Requests, mdev_uuid
from planner.plan.resolution import GpuDecision, PlannedGi, PlannedVgpu, ResolveError


def vf_address(pf: str, k: int, offset: int = 4, stride: int = 1) -> str:
    """The k-th VF of a PF once SR-IOV is on: routing id + offset + k * stride. NVIDIA
    data-center GPUs use offset 4, stride 1 (0000:41:00.0 -> 0000:41:00.4, ...)."""
    domain, bus, devfn_text = pf.split(":")
    dev, fn = devfn_text.split(".")
    routing = (int(bus, 16) << 8) | (int(dev, 16) << 3) | int(fn)
    routing += offset + k * stride
    return f"{domain}:{routing >> 8:02x}:{(routing & 0xFF) >> 3:02x}.{routing & 7}"


def _type_for(parent: VgpuParent, gi: GiProfile) -> VgpuType | None:
    for t in parent.types:
        if t.gi_profile_id is not None:
            if t.gi_profile_id == gi.id:
                return t
        elif gi.vgpu_type and t.name.split()[-1] == gi.vgpu_type:
            return t
    return None


def vf_type_name(parent: VgpuParent, gis: Sequence[GpuInstance], model: GpuModel | None,
                 known: dict[str, str]) -> str | None:
    """The name of the vGPU type a vfio-vf VF holds. An assigned VF no longer lists its type
    as creatable, so the name comes from another VF that lists it or else from the catalog,
    by the profile of the GI the driver reports behind the VF."""
    if parent.current_type is None:
        return None
    found = next((t.name for t in parent.types if t.type_id == parent.current_type), None)
    if found is None:
        found = known.get(parent.current_type)
    if found is None and model is not None and parent.gi_id is not None:
        gi = next((g for g in gis if g.gi_id == parent.gi_id), None)
        prof = model.profile_by_id(gi.profile_id) if gi is not None else None
        found = vgpu_type_name(model, prof) if prof is not None else None
    return found


def _vf_holding(gi: PlannedGi, parents: Sequence[VgpuParent], used: set[str],
                attached: dict[str, set[str]], model: GpuModel | None
                ) -> tuple[VgpuParent, VgpuType] | None:
    """A VF that already holds this node's vGPU: attached to the node's domain and backed
    by the very GPU instance the plan keeps for the node."""
    if gi.existing is None:
        return None
    for parent in parents:
        if (parent.pci in used or parent.current_type is None or parent.gi_id is None
                or parent.gi_id != gi.existing.gi_id
                or gi.owner.node not in attached.get(parent.pci, set())):
            continue
        name = vf_type_name(parent, (gi.existing,), model, {}) or parent.current_type
        return parent, VgpuType(type_id=parent.current_type, name=name, available_instances=0,
                                gi_profile_id=gi.profile.id)
    return None


def _gfx_hint(model: GpuModel | None, profile: GiProfile) -> str:
    """"; ..." naming the +gfx profile a vGPU needs on a model where only those back one."""
    gfx = gfx_profile_for(model, profile) if model is not None else None
    if model is None or gfx is None:
        return ""
    return (f"; on {model.display_name} MIG-backed vGPUs run only on +gfx instances: "
            f"ask for {gfx.name}")


def plan_vgpus(requests: Requests, host: HostState, gpus: Sequence[GpuDecision],
                bindings: Bindings) -> tuple[PlannedVgpu, ...]:
    order = {s.node: n for n, s in enumerate(requests.slices)}
    node_gis = sorted((gi for d in gpus for gi in d.instances if gi.owner.vgpu_name),
                      key=lambda gi: order.get(gi.owner.node, len(order)))
    if not node_gis:
        return ()
    backend = requests.vgpu_backend
    if host.vgpu_backend is not None and host.vgpu_backend != backend:
        raise ResolveError(
            f"global.host.vgpu_backend: {backend} asked for, but host {host.uri} offers "
            f"{host.vgpu_backend} vGPUs"
        )
    managed = {d.gpu.pci for d in gpus if d.managed}
    parents_of: dict[str, list[VgpuParent]] = {}
    for p in sorted(host.vgpu_parents, key=lambda p: p.pci):
        if p.backend == backend:
            parents_of.setdefault(bindings.gpu_of_parent(p.pci), []).append(p)
    mdevs_on: dict[str, list[str]] = {}
    for m in host.mdevs:
        mdevs_on.setdefault(m.parent, []).append(m.uuid)
    attached: dict[str, set[str]] = bindings.users

    any_vf = {bindings.gpu_of_parent(p.pci) for p in host.vgpu_parents}
    models = {d.gpu.pci: d.model for d in gpus}
    used: set[str] = set()
    chosen: dict[int, tuple[VgpuParent, VgpuType, str]] = {}
    predicted: set[int] = set()

    def key_for(gi: PlannedGi, parent: VgpuParent) -> str:
        assert gi.owner.vgpu_name is not None
        return mdev_uuid(gi.owner.vgpu_name) if backend == "mdev" else parent.pci

    # First pass: devices that exist already and still fit stay where they are.
    for n, gi in enumerate(node_gis):
        own = mdev_uuid(gi.owner.vgpu_name or "")
        for parent in parents_of.get(gi.gpu, []):
            t = _type_for(parent, gi.profile)
            if t is None or parent.pci in used:
                continue  # (an assigned VF lists no creatable type: _vf_holding sees it)
            if backend == "mdev":
                here = own in mdevs_on.get(parent.pci, [])
                cur = bindings.mdev_by_uuid.get(own)
                fits = here and cur is not None and cur.type_id == t.type_id
            else:
                fits = (parent.current_type == t.type_id
                        and gi.owner.node in attached.get(parent.pci, set()))
            if fits:
                chosen[n] = (parent, t, key_for(gi, parent))
                used.add(parent.pci)
                break
        else:
            if backend == "vfio-vf":
                held = _vf_holding(gi, parents_of.get(gi.gpu, []), used, attached,
                                   models.get(gi.gpu))
                if held is not None:
                    chosen[n] = (held[0], held[1], key_for(gi, held[0]))
                    used.add(held[0].pci)

    def busy(parent: VgpuParent, own: str) -> bool:
        if parent.pci in used:
            return True
        if bindings.gpu_of_parent(parent.pci) in managed:
            return False  # whatever is there and not planned is removed
        if backend == "mdev":
            return any(u != own for u in mdevs_on.get(parent.pci, []))
        return parent.current_type is not None

    for n, gi in enumerate(node_gis):
        if n in chosen:
            continue
        own = mdev_uuid(gi.owner.vgpu_name or "")
        parents = parents_of.get(gi.gpu, [])
        if not parents and gi.gpu not in any_vf:  # SR-IOV is off: the plan turns it on
            model = models.get(gi.gpu)
            name = vgpu_type_name(model, gi.profile) if model else None
            if name is None:
                raise ResolveError(f"{gi.owner.describe()}: no MIG-backed vGPU type is known "
                                   f"for {gi.profile.name} on GPU {gi.gpu}"
                                   f"{_gfx_hint(model, gi.profile)}")
            k = 0
            while vf_address(gi.gpu, k) in used:
                k += 1
            parent = VgpuParent(pci=vf_address(gi.gpu, k), physfn=gi.gpu, backend=backend)
            chosen[n] = (parent, VgpuType(type_id="", name=name, available_instances=1,
                                          gi_profile_id=gi.profile.id), key_for(gi, parent))
            used.add(parent.pci)
            predicted.add(n)
            continue
        for parent in parents:
            t = _type_for(parent, gi.profile)
            if t is not None and not busy(parent, own):
                chosen[n] = (parent, t, key_for(gi, parent))
                used.add(parent.pci)
                break
        else:
            # On vendor-specific VFIO a free VF lists a MIG-backed type as creatable only
            # while a free GPU instance of its profile exists (NVIDIA vGPU user guide), so
            # for an instance this plan creates no VF offers it yet: take a free VF and
            # name the type from the catalog; apply looks its id up once the GI exists.
            free_vf = next((p for p in parents if p.current_type is None
                            and not busy(p, own)), None) if backend == "vfio-vf" else None
            model = models.get(gi.gpu)
            name = vgpu_type_name(model, gi.profile) if model else None
            if free_vf is not None and name is not None and gi.existing is None:
                chosen[n] = (free_vf, VgpuType(type_id="", name=name, available_instances=1,
                                               gi_profile_id=gi.profile.id),
                             key_for(gi, free_vf))
                used.add(free_vf.pci)
                predicted.add(n)
                continue
            what = "SR-IOV VF" if parents or backend == "vfio-vf" else "vGPU parent device"
            hint = _gfx_hint(models.get(gi.gpu), gi.profile)
            raise ResolveError(
                f"{gi.owner.describe()}: no free {backend} {what} offering a {gi.profile.name} "
                f"vGPU type on GPU {gi.gpu} ({len(parents)} {backend} parents there; "
                + (hint.removeprefix("; ") if hint else
                   "enable the VFs with sriov-manage -e, or free one") + ")"
            )
    out = []
    for n, gi in enumerate(node_gis):
        parent, t, key = chosen[n]
        out.append(PlannedVgpu(backend=backend, key=key, parent=parent.pci,
                               type_id=None if n in predicted else t.type_id, type_name=t.name,
                               node=gi.owner.node, gi=gi, enables_vfs=n in predicted))
    return tuple(sorted(out, key=lambda v: (v.node, v.key)))
