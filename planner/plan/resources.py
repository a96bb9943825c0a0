"""Resources at their stable addresses, read from a HostState (actual) or a Resolution (desired).

Addresses (architecture.md): ``gpu[PCI].mig``, ``gpu[PCI].gi[PROFILE@START]``,
``gpu[PCI].gi[PROFILE@START].ci[PROFILE@START]``, ``vgpu[UUID or VF]``,
``domain[NAME]`` and ``domain[NAME].hostdev[UUID or VF]``, plus ``gpu[PCI].vfs`` for the
GPU's SR-IOV virtual functions (the parents of its vGPU devices). Attributes never hold the ids
the driver assigns anew at each creation (GI/CI ids), so equal layouts compare equal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from planner.hardware.model import GpuModel
from planner.host.state import Gpu, GpuInstance, HostState
from planner.plan.resolve import Resolution, vf_type_name

KINDS = ("mig_mode", "gpu_instance", "compute_instance", "sriov", "vgpu", "domain", "hostdev")
KIND_RANK = {k: i for i, k in enumerate(KINDS)}
HOST_BRANCH = "host"

# Attributes whose difference makes a resource change (the rest are shown, not compared).
COMPARED = {
    "mig_mode": ("mode", "pending"),
    "gpu_instance": ("profile", "start", "size"),
    "compute_instance": ("profile", "start", "size"),
    "sriov": ("enabled",),
    "vgpu": ("backend", "parent", "type_name"),
    "hostdev": ("domain", "type", "device"),
    "domain": (),
}


@dataclass(frozen=True)
class Resource:
    address: str
    kind: str
    attrs: dict[str, Any]
    deps: tuple[str, ...] = ()
    branch: str = HOST_BRANCH
    users: tuple[str, ...] = ()  # running domains that use it (a delete is destructive)
    owner: str | None = None  # who wants it: a node name, "host", or None
    key: str | None = None  # the config key path that wants it
    extra: dict[str, Any] = field(default_factory=dict)  # facts for reasons, not compared

    def compared(self) -> tuple[Any, ...]:
        return tuple(self.attrs.get(k) for k in COMPARED[self.kind])


def mig_address(pci: str) -> str:
    return f"gpu[{pci}].mig"


def gi_address(pci: str, profile: str, start: int) -> str:
    return f"gpu[{pci}].gi[{profile}@{start}]"


def ci_address(gi_addr: str, profile: str, start: int) -> str:
    return f"{gi_addr}.ci[{profile}@{start}]"


def sriov_address(pci: str) -> str:
    return f"gpu[{pci}].vfs"


def vgpu_address(key: str) -> str:
    return f"vgpu[{key}]"


def domain_address(name: str) -> str:
    return f"domain[{name}]"


def hostdev_address(domain: str, key: str) -> str:
    return f"domain[{domain}].hostdev[{key}]"


def _mode(on: bool) -> str:
    return "enabled" if on else "disabled"


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


def actual_resources(host: HostState, models: dict[str, GpuModel | None]) -> dict[str, Resource]:
    """Every resource the host has, keyed by address."""
    from planner.plan.resolve import Bindings

    bindings = Bindings(host)
    running = _running(host)
    out: dict[str, Resource] = {}
    gi_addr_by_id: dict[tuple[str, int], str] = {}
    dep_by_id: dict[tuple[str, int], str] = {}
    for gpu in host.gpus:
        model = models.get(gpu.pci)
        mig = mig_address(gpu.pci)
        gpu_users = tuple(sorted(gpu_domains(host, gpu, bindings) & running))
        out[mig] = Resource(mig, "mig_mode", {"mode": _mode(gpu.mig_current),
                                              "pending": _mode(gpu.mig_pending)},
                            branch=gpu.pci, users=gpu_users)
        for gi in gpu.gpu_instances:
            name = gi_name(model, gi)
            ga = gi_address(gpu.pci, name, gi.placement_start)
            users = tuple(sorted(bindings.domains_of(gpu.pci, gi) & running))
            out[ga] = Resource(ga, "gpu_instance", {"profile": name, "start": gi.placement_start,
                                                    "size": gi.placement_size},
                               deps=(mig,), branch=gpu.pci, users=users)
            gi_addr_by_id[(gpu.pci, gi.gi_id)] = ga
            dep_by_id[(gpu.pci, gi.gi_id)] = ga
            for ci in sorted(gi.compute_instances, key=lambda c: c.placement_start):
                cname = ci_name(model, gi, ci.profile_id)
                ca = ci_address(ga, cname, ci.placement_start)
                out[ca] = Resource(ca, "compute_instance",
                                   {"profile": cname, "start": ci.placement_start,
                                    "size": ci.placement_size},
                                   deps=(ga,), branch=gpu.pci, users=users,
                                   extra={"mig_uuid": ci.mig_uuid})
                dep_by_id.setdefault((gpu.pci, gi.gi_id), ca)
                if dep_by_id[(gpu.pci, gi.gi_id)] == ga:
                    dep_by_id[(gpu.pci, gi.gi_id)] = ca
    attached: dict[str, list[str]] = {}
    for dom in host.domains:
        for hd in dom.hostdevs:
            attached.setdefault(hd.key, []).append(dom.name)
    vgpu_keys: dict[str, str] = {}  # device key -> vgpu address
    for p in host.vgpu_parents:
        sa = sriov_address(bindings.gpu_of_parent(p.pci))
        if p.physfn is not None and sa not in out:
            out[sa] = Resource(sa, "sriov", {"enabled": True}, deps=(mig_address(p.physfn),),
                               branch=p.physfn)

    def type_name(parent: str, type_id: str) -> str:
        p = bindings.parents.get(parent)
        found = next((t.name for t in p.types if t.type_id == type_id), None) if p else None
        return found or type_id

    for mdev in host.mdevs:
        gpu_pci = bindings.gpu_of_parent(mdev.parent)
        va = vgpu_address(mdev.uuid)
        dep = dep_by_id.get((gpu_pci, mdev.gi_id)) if mdev.gi_id is not None else None
        out[va] = Resource(va, "vgpu", {"backend": "mdev", "gpu": gpu_pci, "parent": mdev.parent,
                                        "type_id": mdev.type_id,
                                        "type_name": type_name(mdev.parent, mdev.type_id)},
                           deps=(dep,) if dep else (), branch=gpu_pci,
                           users=tuple(sorted(set(attached.get(mdev.uuid, [])) & running)),
                           extra={"gi": gi_addr_by_id.get((gpu_pci, mdev.gi_id or -1))})
        vgpu_keys[mdev.uuid] = va
    known = {t.type_id: t.name for p in host.vgpu_parents for t in p.types}
    for p in host.vgpu_parents:
        if p.backend != "vfio-vf" or not p.current_type:
            continue
        gpu_pci = bindings.gpu_of_parent(p.pci)
        va = vgpu_address(p.pci)
        dep = dep_by_id.get((gpu_pci, p.gi_id)) if p.gi_id is not None else None
        on = host.gpu(gpu_pci)
        vf_type = vf_type_name(p, on.gpu_instances if on else (), models.get(gpu_pci), known)
        out[va] = Resource(va, "vgpu", {"backend": "vfio-vf", "gpu": gpu_pci, "parent": p.pci,
                                        "type_id": p.current_type,
                                        "type_name": vf_type or p.current_type},
                           deps=(dep,) if dep else (), branch=gpu_pci,
                           users=tuple(sorted(set(attached.get(p.pci, [])) & running)))
        vgpu_keys[p.pci] = va
    for dom in host.domains:
        da = domain_address(dom.name)
        out[da] = Resource(da, "domain", {"name": dom.name, "state": dom.state},
                           branch=HOST_BRANCH, users=(dom.name,) if dom.name in running else ())
        for hd in dom.hostdevs:
            ha = hostdev_address(dom.name, hd.key)
            found = vgpu_keys.get(hd.key)
            if found is None:
                # No such vGPU device now (after a reboot, before apply re-creates it), or
                # no vGPU at all (passthrough): the reference is there all the same. It is
                # only compared where the config wants it (host branch: never deleted).
                out[ha] = Resource(ha, "hostdev", {"domain": dom.name, "type": hd.type,
                                                   "device": hd.key},
                                   deps=(da,), branch=HOST_BRANCH,
                                   users=(dom.name,) if dom.name in running else ())
                continue
            va = found
            out[ha] = Resource(ha, "hostdev", {"domain": dom.name, "type": hd.type,
                                               "device": hd.key},
                               deps=(va, da), branch=out[va].branch,
                               users=(dom.name,) if dom.name in running else ())
    return out


def gpu_domains(host: HostState, gpu: Gpu, bindings: Any) -> set[str]:
    """Domains that use the GPU: through a vGPU device on it, or by passthrough of the GPU."""
    return set(bindings.domains_on_gpu(gpu.pci))


def desired_resources(res: Resolution) -> dict[str, Resource]:
    """Every resource the config wants, keyed by address."""
    out: dict[str, Resource] = {}
    ci_of: dict[int, str] = {}
    for vm in res.requests.vms:
        da = domain_address(vm.name)
        out[da] = Resource(da, "domain", dict(vm.attrs), branch=HOST_BRANCH, owner=vm.name,
                           key=vm.key)
    for d in res.gpus:
        if not d.touched:
            continue
        pci = d.gpu.pci
        mig = mig_address(pci)
        want = d.want_mig if d.want_mig is not None else d.gpu.mig_current
        out[mig] = Resource(mig, "mig_mode", {"mode": _mode(want), "pending": _mode(want)},
                            branch=pci, owner="host",
                            key=d.policy.key if d.policy else None)
        for gi in d.instances:
            ga = gi_address(pci, gi.profile.name, gi.start)
            out[ga] = Resource(ga, "gpu_instance", {"profile": gi.profile.name, "start": gi.start,
                                                    "size": gi.profile.placement_size},
                               deps=(mig,), branch=pci, owner=gi.owner.node, key=gi.owner.key)
            cname = gi.ci.name(gi.profile)
            ca = ci_address(ga, cname, gi.ci_start)
            out[ca] = Resource(ca, "compute_instance", {"profile": cname, "start": gi.ci_start,
                                                        "size": gi.ci.slice_count},
                               deps=(ga,), branch=pci, owner=gi.owner.node, key=gi.owner.key)
            ci_of[id(gi)] = ca
    for v in res.vgpus:
        sa = sriov_address(v.gi.gpu)
        if sa not in out:
            out[sa] = Resource(sa, "sriov", {"enabled": True}, deps=(mig_address(v.gi.gpu),),
                               branch=v.gi.gpu, owner="host", key=v.gi.owner.key)
        va = vgpu_address(v.key)
        out[va] = Resource(va, "vgpu", {"backend": v.backend, "gpu": v.gi.gpu, "parent": v.parent,
                                        "type_id": v.type_id, "type_name": v.type_name},
                           deps=(ci_of[id(v.gi)], sa), branch=v.gi.gpu, owner=v.node,
                           key=v.gi.owner.key)
        da = domain_address(v.node)
        ha = hostdev_address(v.node, v.key)
        out[ha] = Resource(ha, "hostdev", {"domain": v.node,
                                           "type": "mdev" if v.backend == "mdev" else "pci",
                                           "device": v.key},
                           deps=(va, da), branch=v.gi.gpu, owner=v.node, key=v.gi.owner.key)
        if da not in out:
            out[da] = Resource(da, "domain", {}, branch=HOST_BRANCH, owner=v.node,
                               key=v.gi.owner.key)
    return out
