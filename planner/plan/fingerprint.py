"""The host fingerprint: a digest of the probed state a plan depends on.

It covers MIG modes, instances by profile and placement (not the GI/CI ids or MIG UUIDs
the driver assigns anew at each creation; not the compute instances inside a GI a vGPU
holds, which are the guest's), vGPU devices (the GI behind each one named by
its placement), domains (name, running or not) and their hostdevs, the MIG UUIDs the
config names (where they are), and the names of the processes on a GPU whose mode the
config changes (they block its reset). A host rebuilt to the same layout has the same
fingerprint.
"""

from __future__ import annotations

from typing import Any

from planner.host.state import HostState
from planner.plan.bindings import Bindings
from planner.plan.gpu_select import model_of, selects
from planner.plan.request import Requests, requests_from_config
from planner.plan.resources import ci_name, gi_name
from planner.vocab.plan import digest


def fingerprint_data(host: HostState, requests: Requests) -> dict[str, Any]:
    bindings = Bindings(host)
    gi_place: dict[tuple[str, int], str] = {}
    gpus: list[dict[str, Any]] = []
    named = {u.lower() for u in requests.named_mig_uuids}
    found: dict[str, str] = {}
    for gpu in sorted(host.gpus, key=lambda g: g.pci):
        model = model_of(gpu)
        instances = []
        for gi in sorted(gpu.gpu_instances, key=lambda g: g.placement_start):
            name = gi_name(model, gi)
            where = f"{name}@{gi.placement_start}"
            gi_place[(gpu.pci, gi.gi_id)] = where
            cis: list[dict[str, Any]] | str = []
            if (gpu.pci, gi.gi_id) in bindings.by_gi:
                # a vGPU holds it: its compute instances are the guest's to change at any
                # time, and no plan acts on them (plan.resources._guest_cis)
                cis = "guest"
            for ci in sorted(gi.compute_instances, key=lambda c: c.placement_start):
                cname = ci_name(model, gi, ci.profile_id)
                if isinstance(cis, list):
                    cis.append({"profile": cname, "profile_id": ci.profile_id,
                                "start": ci.placement_start, "size": ci.placement_size})
                if ci.mig_uuid and ci.mig_uuid.lower() in named:
                    found[ci.mig_uuid.lower()] = f"{gpu.pci}/{where}/{cname}@{ci.placement_start}"
            instances.append({"profile": name, "profile_id": gi.profile_id,
                              "start": gi.placement_start, "size": gi.placement_size,
                              "compute_instances": cis})
        entry: dict[str, Any] = {
            "pci": gpu.pci, "uuid": gpu.uuid, "name": gpu.name,
            "model": model.id if model else None,
            "mig_capable": gpu.mig_capable, "mig_current": gpu.mig_current,
            "mig_pending": gpu.mig_pending, "instances": instances,
        }
        policy = next((p for p in requests.policies if selects(p.select, gpu, model)), None)
        if policy is not None:
            want = policy.mig == "enabled"
            if (gpu.mig_current, gpu.mig_pending) != (want, want):
                entry["processes"] = sorted({p.name for p in gpu.processes})
        gpus.append(entry)
    mdevs = [{"uuid": m.uuid, "parent": m.parent, "type_id": m.type_id,
              "gi": gi_place.get((bindings.gpu_of_parent(m.parent), m.gi_id))
              if m.gi_id is not None else None}
             for m in sorted(host.mdevs, key=lambda m: m.uuid)]
    vfs = [{"pci": p.pci, "physfn": p.physfn, "backend": p.backend,
            "current_type": p.current_type,
            "gi": gi_place.get((bindings.gpu_of_parent(p.pci), p.gi_id))
            if p.gi_id is not None else None,
            "types": sorted(t.type_id for t in p.types)}
           for p in sorted(host.vgpu_parents, key=lambda p: p.pci)]
    domains = [{"name": d.name, "running": d.running,
                "hostdevs": sorted(f"{h.type}:{h.key}" for h in d.hostdevs)}
               for d in sorted(host.domains, key=lambda d: d.name)]
    out: dict[str, Any] = {
        "vgpu_backend": host.vgpu_backend,
        "gpus": gpus,
        "vgpu_parents": vfs,
        "mdevs": mdevs,
        "domains": domains,
        "named_mig_uuids": {u: found.get(u) for u in sorted(named)},
    }
    # libvirt networks and pools (keys only when the host has any, so the fingerprints
    # of hosts without them stay as they were).
    if host.networks:
        out["networks"] = [{"name": n.name, "active": n.active, "bridge": n.bridge,
                            "hosts": [f"{h.mac}={h.ip}" for h in n.hosts]}
                           for n in host.networks]
    if host.pools:
        out["pools"] = [{"name": p.name, "active": p.active,
                         "volumes": [v.name for v in p.volumes]} for p in host.pools]
    if any(d.autostart for d in host.domains):
        out["autostart"] = sorted(d.name for d in host.domains if d.autostart)
    return out


def fingerprint_requests(host: HostState, requests: Requests) -> str:
    return digest(fingerprint_data(host, requests))


def fingerprint(host: HostState, cfg: Any) -> str:
    """Contract 5: the fingerprint of ``host`` as far as a plan for ``cfg`` depends on it."""
    return fingerprint_requests(host, requests_from_config(cfg))
