"""The plan's notes: facts a reviewer must see that the plan does not act on.

- ``name-reused``: ai-how names VMs by list position (``hpc-compute-02`` is the second
  compute node), so removing a node from the middle of a list gives its name to the next
  node. aihow keeps the names (they are ai-how's) but records each domain's config identity
  (cluster, role, ip) in its metadata when it defines it; when the identity recorded for a
  name differs from the node the config now gives that name, the plan says so.
- ``domain-left-alone``: a domain aihow did not define and the config does not declare
  holds a vGPU device on a GPU the config manages; aihow never undefines, stops or starts
  it, and names it (its hostdev follows the device: the config is the truth on that GPU).
"""

from __future__ import annotations

from planner.host.records import HostRecords
from planner.plan.diff import _scope, untouched_domains
from planner.plan.resources import Resource
from planner.vocab import Address, Reason, VmAttrs
from planner.vocab.plan import Note


def plan_notes(res: object, desired: dict[Address, Resource], actual: dict[Address, Resource],
               slices_only: frozenset[Address], records: HostRecords) -> list[Note]:
    from planner.plan.resolution import Resolution

    assert isinstance(res, Resolution)
    notes: list[Note] = []
    for addr in sorted(desired):
        want = desired[addr]
        if not isinstance(want.attrs, VmAttrs) or addr not in actual:
            continue
        rec = records.defined.get(want.attrs.name)
        if rec is None:
            continue
        cluster, role, ip = rec.identity
        now = (want.attrs.cluster, want.attrs.role, want.attrs.ip)
        if ip is None or now == (cluster, role, ip):
            continue
        was = rec.mark("key-path") or f"cluster {cluster}, role {role}"
        notes.append(Note(
            code=Reason.NAME_REUSED, subject=str(addr),
            message=(f"{want.attrs.name} was defined for the node with ip {ip} ({was}); the "
                     f"config now gives this name to the node with ip {want.attrs.ip} "
                     f"({want.attrs.key_path}), because ai-how names VMs by their position "
                     "in the list. The domain, its disk and its slice stay with the name; "
                     "check that is what you meant")))
    managed = {d.gpu.pci for d in res.gpus if d.policy is not None}
    scoped = _scope(actual, set(desired) | slices_only, managed, records,
                    set(res.requests.clusters), res.requests.config_name)
    for name, devices in untouched_domains(actual, set(desired) | slices_only, scoped):
        notes.append(Note(
            code=Reason.DOMAIN_LEFT_ALONE, subject=str(Address.domain(name)),
            message=(f"not defined by aihow and not in the config: aihow never undefines, "
                     f"stops or starts it; it holds {', '.join(devices)} on a GPU this "
                     "config manages, so only those devices are planned (kept if wanted, "
                     "else detached)")))
    return notes
