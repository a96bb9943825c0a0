"""Resources at their stable addresses, read from a HostState (actual) or a Resolution (desired).

Addresses and attributes are the plan vocabulary's (``planner.vocab``): each resource is
an ``Address`` with its kind's attribute model. Attributes never hold the ids the driver
assigns anew at each creation (GI/CI ids), so equal layouts compare equal.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from planner.hardware.model import GpuModel
from planner.host.records import HostRecords, attachment_metadata
from planner.host.state import Gpu, GpuInstance, HostState
from planner.plan.bindings import Bindings
from planner.plan.resolution import GpuDecision, PlannedGi, PlannedVgpu, Resolution
from planner.plan.resolve_vgpu import vf_type_name
from planner.vocab import (
    Address,
    Attrs,
    ComputeInstanceAttrs,
    DomainAttrs,
    GpuInstanceAttrs,
    HostdevAttrs,
    Kind,
    MigModeAttrs,
    SriovAttrs,
    VgpuAttrs,
    VmAttrs,
)

HOST_BRANCH = "host"


@dataclass(frozen=True)
class Resource:
    address: Address
    kind: Kind
    attrs: Attrs
    deps: tuple[Address, ...] = ()
    branch: str = HOST_BRANCH
    users: tuple[str, ...] = ()  # running domains that use it (a delete is destructive)
    owner: str | None = None  # who wants it: a node name, "host", or None
    key: str | None = None  # the config key path that wants it
    extra: dict[str, Any] = field(default_factory=dict)  # facts for reasons, not compared

    def compared(self) -> tuple[Any, ...]:
        return self.attrs.compared()


def gi_name(model: GpuModel | None, gi: GpuInstance) -> str:
    prof = model.profile_by_id(gi.profile_id) if model else None
    return prof.name if prof else gi.profile_name


def ci_name(model: GpuModel | None, gi: GpuInstance, profile_id: int) -> str:
    prof = model.profile_by_id(gi.profile_id) if model else None
    if prof is not None and model is not None:
        ci = next((c for c in model.ci_profiles_for(prof) if c.id == profile_id), None)
        if ci is not None:
            return ci.name(prof)
    return f"ci{profile_id}.{gi.profile_name}"


def _running(host: HostState) -> set[str]:
    return {d.name for d in host.domains if d.running}


def actual_resources(host: HostState, models: dict[str, GpuModel | None],
                     records: HostRecords | None = None) -> dict[Address, Resource]:
    """Every resource the host has, keyed by address. With ``records``, a hostdev of a
    domain aihow defined carries the slice its metadata records (so undoing its detach
    writes that metadata back)."""
    bindings = Bindings(host)
    running = _running(host)
    out: dict[Address, Resource] = {}
    gi_addr_by_id: dict[tuple[str, int], Address] = {}
    gi_text_by_id: dict[tuple[str, int], str] = {}  # GI -> "PROFILE@START"
    dep_by_id: dict[tuple[str, int], Address] = {}
    for gpu in host.gpus:
        model = models.get(gpu.pci)
        mig = Address.gpu(gpu.pci).mig()
        gpu_users = tuple(sorted(gpu_domains(host, gpu, bindings) & running))
        out[mig] = Resource(mig, Kind.MIG_MODE, MigModeAttrs.of(gpu.mig_current, gpu.mig_pending),
                            branch=gpu.pci, users=gpu_users)
        for gi in gpu.gpu_instances:
            name = gi_name(model, gi)
            ga = Address.gpu(gpu.pci).gi(name, gi.placement_start)
            users = tuple(sorted(bindings.domains_of(gpu.pci, gi) & running))
            out[ga] = Resource(ga, Kind.GPU_INSTANCE,
                               GpuInstanceAttrs(name, gi.placement_start, gi.placement_size),
                               deps=(mig,), branch=gpu.pci, users=users)
            gi_addr_by_id[(gpu.pci, gi.gi_id)] = ga
            gi_text_by_id[(gpu.pci, gi.gi_id)] = f"{name}@{gi.placement_start}"
            dep_by_id[(gpu.pci, gi.gi_id)] = ga
            for ci in sorted(gi.compute_instances, key=lambda c: c.placement_start):
                cname = ci_name(model, gi, ci.profile_id)
                ca = ga.ci(cname, ci.placement_start)
                out[ca] = Resource(ca, Kind.COMPUTE_INSTANCE,
                                   ComputeInstanceAttrs(cname, ci.placement_start,
                                                        ci.placement_size),
                                   deps=(ga,), branch=gpu.pci, users=users,
                                   extra={"mig_uuid": ci.mig_uuid})
                dep_by_id.setdefault((gpu.pci, gi.gi_id), ca)
                if dep_by_id[(gpu.pci, gi.gi_id)] == ga:
                    dep_by_id[(gpu.pci, gi.gi_id)] = ca
    attached: dict[str, list[str]] = {}
    for dom in host.domains:
        for hd in dom.hostdevs:
            attached.setdefault(hd.key, []).append(dom.name)
    vgpu_keys: dict[str, Address] = {}  # device key -> vgpu address
    for p in host.vgpu_parents:
        sa = Address.gpu(bindings.gpu_of_parent(p.pci)).vfs()
        if p.physfn is not None and sa not in out:
            out[sa] = Resource(sa, Kind.SRIOV, SriovAttrs(True),
                               deps=(Address.gpu(p.physfn).mig(),), branch=p.physfn)

    def type_name(parent: str, type_id: str) -> str:
        p = bindings.parents.get(parent)
        found = next((t.name for t in p.types if t.type_id == type_id), None) if p else None
        return found or type_id

    for mdev in host.mdevs:
        gpu_pci = bindings.gpu_of_parent(mdev.parent)
        va = Address.vgpu(mdev.uuid)
        dep = dep_by_id.get((gpu_pci, mdev.gi_id)) if mdev.gi_id is not None else None
        out[va] = Resource(va, Kind.VGPU,
                           VgpuAttrs("mdev", gpu_pci, mdev.parent, mdev.type_id,
                                     type_name(mdev.parent, mdev.type_id),
                                     gi_text_by_id.get((gpu_pci, mdev.gi_id or -1))),
                           deps=(dep,) if dep else (), branch=gpu_pci,
                           users=tuple(sorted(set(attached.get(mdev.uuid, [])) & running)),
                           extra={"gi": gi_addr_by_id.get((gpu_pci, mdev.gi_id or -1))})
        vgpu_keys[mdev.uuid] = va
    known = {t.type_id: t.name for p in host.vgpu_parents for t in p.types}
    for p in host.vgpu_parents:
        if p.backend != "vfio-vf" or not p.current_type:
            continue
        gpu_pci = bindings.gpu_of_parent(p.pci)
        va = Address.vgpu(p.pci)
        dep = dep_by_id.get((gpu_pci, p.gi_id)) if p.gi_id is not None else None
        on = host.gpu(gpu_pci)
        vf_type = vf_type_name(p, on.gpu_instances if on else (), models.get(gpu_pci), known)
        out[va] = Resource(va, Kind.VGPU,
                           VgpuAttrs("vfio-vf", gpu_pci, p.pci, p.current_type,
                                     vf_type or p.current_type,
                                     gi_text_by_id.get((gpu_pci, p.gi_id or -1))),
                           deps=(dep,) if dep else (), branch=gpu_pci,
                           users=tuple(sorted(set(attached.get(p.pci, [])) & running)))
        vgpu_keys[p.pci] = va
    attachments = {name: attachment_metadata(d.xml)
                   for name, d in (records.defined.items() if records else ())}
    from planner.plan.vm_resources import actual_vm_resources

    out.update(actual_vm_resources(host))
    for dom in host.domains:
        da = Address.domain(dom.name)
        out[da] = Resource(da, Kind.DOMAIN, DomainAttrs(dom.name, dom.state),
                           branch=HOST_BRANCH, users=(dom.name,) if dom.name in running else ())
        for hd in dom.hostdevs:
            ha = da.hostdev(hd.key)
            attached_as = HostdevAttrs(dom.name, hostdev_type(hd.type), hd.key)
            meta = attachments.get(dom.name, {})
            if meta.get("vgpu") == hd.key:
                attached_as = dataclasses.replace(
                    attached_as, mig_profile=meta.get("mig-profile"),
                    mig_uuid=meta.get("mig-uuid"), gpu_instance=meta.get("gpu-instance"))
            found = vgpu_keys.get(hd.key)
            if found is None:
                # No such vGPU device now (after a reboot, before apply re-creates it), or
                # no vGPU at all (passthrough): the reference is there all the same. It is
                # only compared where the config wants it (host branch: never deleted).
                out[ha] = Resource(ha, Kind.HOSTDEV, attached_as,
                                   deps=(da,), branch=HOST_BRANCH,
                                   users=(dom.name,) if dom.name in running else ())
                continue
            va = found
            out[ha] = Resource(ha, Kind.HOSTDEV, attached_as,
                               deps=(va, da), branch=out[va].branch,
                               users=(dom.name,) if dom.name in running else ())
    return out


def gpu_domains(host: HostState, gpu: Gpu, bindings: Any) -> set[str]:
    """Domains that use the GPU: through a vGPU device on it, or by passthrough of the GPU."""
    return set(bindings.domains_on_gpu(gpu.pci))


def desired_resources(res: Resolution) -> tuple[dict[Address, Resource], set[Address]]:
    """Every resource the config wants, keyed by address; and the domains of requests
    that come without their VMs (slices only: the plan attaches to such a domain if it
    exists, and never defines it)."""
    out: dict[Address, Resource] = {}
    ci_of: dict[int, Address] = {}  # a vGPU's GI -> what the vGPU depends on there
    slices_only: set[Address] = set()
    backs_vgpu = {id(v.gi): v for v in res.vgpus}
    for vm in res.requests.vms:
        da = Address.domain(vm.name)
        if vm.attrs is None:
            slices_only.add(da)
            continue
        out[da] = Resource(da, Kind.DOMAIN, vm.attrs, branch=HOST_BRANCH, owner=vm.name,
                           key=vm.key)
    for d in res.gpus:
        if not d.touched:
            continue
        pci = d.gpu.pci
        mig = Address.gpu(pci).mig()
        want = d.want_mig if d.want_mig is not None else d.gpu.mig_current
        out[mig] = Resource(mig, Kind.MIG_MODE, MigModeAttrs.of(want, want),
                            branch=pci, owner="host",
                            key=d.policy.key if d.policy else None)
        for gi in d.instances:
            ga = Address.gpu(pci).gi(gi.profile.name, gi.start)
            out[ga] = Resource(ga, Kind.GPU_INSTANCE,
                               GpuInstanceAttrs(gi.profile.name, gi.start,
                                                gi.profile.placement_size),
                               deps=(mig,), branch=pci, owner=gi.owner.node, key=gi.owner.key)
            if id(gi) in backs_vgpu and _held_by_vgpu(res, backs_vgpu[id(gi)]):
                ci_of[id(gi)] = _guest_cis(out, d, gi, ga)
                continue
            if id(gi) in backs_vgpu and d.policy is not None \
                    and d.policy.vgpu_compute_instances == "guest":
                ci_of[id(gi)] = ga  # the guest driver makes its CI: none on the host
                continue
            cname = gi.ci.name(gi.profile)
            ca = ga.ci(cname, gi.ci_start)
            out[ca] = Resource(ca, Kind.COMPUTE_INSTANCE,
                               ComputeInstanceAttrs(cname, gi.ci_start, gi.ci.slice_count),
                               deps=(ga,), branch=pci, owner=gi.owner.node, key=gi.owner.key)
            ci_of[id(gi)] = ca
    for v in res.vgpus:
        ga = Address.gpu(v.gi.gpu).gi(v.gi.profile.name, v.gi.start)
        mig_uuid = v.gi.owner.mig_uuid
        da = Address.domain(v.node)
        vm_res = out.get(da)
        if vm_res is not None and isinstance(vm_res.attrs, VmAttrs):
            out[da] = dataclasses.replace(vm_res, attrs=dataclasses.replace(
                vm_res.attrs, mig_profile=v.gi.profile.name, mig_uuid=mig_uuid,
                gpu_instance=str(ga), vgpu=v.key,
                vgpu_type="mdev" if v.backend == "mdev" else "pci"))
        sa = Address.gpu(v.gi.gpu).vfs()
        if sa not in out:
            out[sa] = Resource(sa, Kind.SRIOV, SriovAttrs(True),
                               deps=(Address.gpu(v.gi.gpu).mig(),), branch=v.gi.gpu,
                               owner="host", key=v.gi.owner.key)
        va = Address.vgpu(v.key)
        out[va] = Resource(va, Kind.VGPU,
                           VgpuAttrs(vgpu_backend(v.backend), v.gi.gpu, v.parent, v.type_id,
                                     v.type_name, f"{v.gi.profile.name}@{v.gi.start}"),
                           deps=(ci_of[id(v.gi)], sa), branch=v.gi.gpu, owner=v.node,
                           key=v.gi.owner.key)
        da = Address.domain(v.node)
        ha = da.hostdev(v.key)
        out[ha] = Resource(ha, Kind.HOSTDEV,
                           HostdevAttrs(v.node, "mdev" if v.backend == "mdev" else "pci", v.key,
                                        mig_profile=v.gi.profile.name, mig_uuid=mig_uuid,
                                        gpu_instance=str(ga)),
                           deps=(va, da), branch=v.gi.gpu, owner=v.node, key=v.gi.owner.key)
        if da not in out:
            slices_only.add(da)
    _instances_after_vfs(out)
    _add_vm_resources(res, out)
    return out, slices_only


def _instances_after_vfs(out: dict[Address, Resource]) -> None:
    """On a GPU whose VFs the config wants, its GPU instances come after the VFs:
    ``sriov-manage`` unbinds and rebinds the GPU, which destroys every GPU instance
    (vgpu-on-mig.md section 4), so VFs enabled after the instances would wipe them."""
    vfs = {res.branch: addr for addr, res in out.items() if res.kind is Kind.SRIOV}
    for addr, res in list(out.items()):
        if res.kind is Kind.GPU_INSTANCE and res.branch in vfs:
            out[addr] = dataclasses.replace(res, deps=(*res.deps, vfs[res.branch]))


def _held_by_vgpu(res: Resolution, v: PlannedVgpu) -> bool:
    """Whether the vGPU the plan keeps for this GPU instance holds it now (its binding is
    known): the compute instances inside are then the guest's (vgpu-on-mig.md section 3).
    A GI whose vGPU goes, or goes to another node, is planned as any other."""
    gi = v.gi
    if gi.existing is None:
        return False
    at = (gi.gpu, gi.existing.gi_id)
    if v.backend == "mdev":
        return res.bindings.gi_of_mdev.get(v.key) == at
    vf = res.bindings.parents.get(v.key)
    return vf is not None and bool(vf.current_type) and vf.gi_id == gi.existing.gi_id \
        and (v.type_id is None or vf.current_type == v.type_id)


def _guest_cis(out: dict[Address, Resource], d: GpuDecision, gi: PlannedGi,
               ga: Address) -> Address:
    """The compute instances found inside a GI a vGPU holds, wanted as they are: the guest
    made or removed them (NVIDIA: the guest manages them; the host must not create CIs on
    a GI whose guest runs), so the plan neither creates, deletes nor replaces any, and a
    guest's change is no drift. Whether the host sees the guest's CIs at all is not
    documented; with none seen, none is planned. Returns what the vGPU depends on."""
    assert gi.existing is not None
    pci = d.gpu.pci
    planned = (gi.ci.name(gi.profile), gi.ci_start)
    for ci in sorted(gi.existing.compute_instances, key=lambda c: c.placement_start):
        cname = ci_name(d.model, gi.existing, ci.profile_id)
        ca = ga.ci(cname, ci.placement_start)
        ours = (cname, ci.placement_start) == planned
        out[ca] = Resource(ca, Kind.COMPUTE_INSTANCE,
                           ComputeInstanceAttrs(cname, ci.placement_start, ci.placement_size),
                           deps=(ga,), branch=pci, owner=gi.owner.node, key=gi.owner.key,
                           extra={} if ours else {"guest": gi.owner.node})
    return ga


def _add_vm_resources(res: Resolution, out: dict[Address, Resource]) -> None:
    """Each declared VM's network, pool, volume and running state; the domain depends on
    its network and volume, its running state on the domain and its hostdevs."""
    from planner.plan.vm_resources import desired_vm_resources, network_name, volume_name
    from planner.vm.vm_factory import mac_for

    vms = tuple(vm for vm in res.requests.vms if vm.attrs is not None)
    extra = desired_vm_resources(vms, {vm.name: mac_for(vm.name) for vm in vms}, res.host)
    hostdevs: dict[str, list[Address]] = {}
    for addr, r in out.items():
        if r.kind is Kind.HOSTDEV and addr.domain_name:
            hostdevs.setdefault(addr.domain_name, []).append(addr)
    for vm in vms:
        da = Address.domain(vm.name)
        pool = f"{vm.cluster}-pool"
        out[da] = dataclasses.replace(out[da], deps=(
            Address.network(network_name(vm.cluster)),
            Address.pool(pool).volume(volume_name(vm.name))))
        ra = da.running()
        if ra in extra:
            extra[ra] = dataclasses.replace(
                extra[ra], deps=(da, *sorted(hostdevs.get(vm.name, ()))))
    out.update(extra)


def hostdev_type(value: str) -> Literal["mdev", "pci"]:
    if value not in ("mdev", "pci"):
        raise ValueError(f"hostdev type {value!r} is neither mdev nor pci")
    return "mdev" if value == "mdev" else "pci"


def vgpu_backend(value: str) -> Literal["mdev", "vfio-vf"]:
    if value not in ("mdev", "vfio-vf"):
        raise ValueError(f"vGPU backend {value!r} is neither mdev nor vfio-vf")
    return "mdev" if value == "mdev" else "vfio-vf"
