"""Resolve: requests + HostState + catalog -> the desired MIG instances and vGPU devices.

Ownership rule (docs/plan-format.md): a GPU selected by a ``global.gpus`` entry with
``select`` is *managed* and the config is the whole truth on it; any other GPU only gets
additions (never a mode change, never a delete); a GPU nothing selects is never touched.

The MIG placement is ``resolve_mig``'s, the vGPU devices ``resolve_vgpu``'s; this module
runs them in order and checks the result against the allocation ledger.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from planner.host.state import HostState
from planner.plan.claims import conflict, foreign, gi_key
from planner.plan.request import Requests
from planner.plan.resolution import GpuDecision, PlannedVgpu, Resolution, ResolveError
from planner.plan.resolve_mig import MigResolver
from planner.plan.resolve_vgpu import plan_vgpus

__all__ = ["Resolution", "ResolveError", "resolve"]


def _check_held(gpus: Sequence[GpuDecision], vgpus: Sequence[PlannedVgpu],
                held: Mapping[tuple[str, str], str]) -> None:
    """Nothing the plan gives a node may be held by another cluster's node."""
    for d in gpus:
        for gi in d.instances:
            if gi.owner.for_host:
                continue
            key = gi_key(gi.gpu, gi.start)
            if ("gi_placement", key) in held:
                raise ResolveError(conflict(gi.owner, "gi_placement", key,
                                            held[("gi_placement", key)]))
            for ci in gi.existing.compute_instances if gi.existing else ():
                if ci.mig_uuid and ("mig_uuid", ci.mig_uuid) in held:
                    raise ResolveError(conflict(gi.owner, "mig_uuid", ci.mig_uuid,
                                                held[("mig_uuid", ci.mig_uuid)]))
    for v in vgpus:
        if ("vgpu", v.key) in held:
            raise ResolveError(conflict(v.gi.owner, "vgpu", v.key, held[("vgpu", v.key)]))


def resolve(requests: Requests, host: HostState,
            claims: Mapping[tuple[str, str], str] | None = None) -> Resolution:
    """The desired state for ``requests`` on ``host``; raises ResolveError when impossible.
    ``claims`` is the allocation ledger: what another cluster holds is never given out."""
    held = foreign(claims or {}, requests.clusters)
    r = MigResolver(requests, host, held)
    r.check_pins()
    r.place_layouts()
    for req in requests.slices:
        if req.mig_uuid:
            r.place_uuid(req)
    rest = [s for s in requests.slices if not s.mig_uuid]
    for req in rest:
        if req.profile is None:
            raise ResolveError(f"{req.describe()}: gpu_config needs mig_profile or mig_uuid")
    unbound = [req for req in rest if not r.place_bound(req)]
    for req in unbound:
        r.place_free(req)
    gpus = r.decisions()
    vgpus = plan_vgpus(requests, host, gpus, r.bindings)
    _check_held(gpus, vgpus, held)
    return Resolution(host=host, requests=requests, gpus=gpus, vgpus=vgpus, bindings=r.bindings,
                      held=held)
