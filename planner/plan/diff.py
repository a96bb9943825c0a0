"""Diff: desired vs actual resources -> ordered actions with reasons.

Scope follows the ownership rule: on a managed GPU every actual resource is compared
(what the config does not want is deleted); on any other GPU only the addresses the
config wants are compared, so nothing there is ever deleted and its mode never changes.

Order: the plan graph (``planner.plan.graph``, a networkx DiGraph of the steps) orders
the changes: every delete first, in reverse dependency order (hostdev, vGPU, CI, GI),
then updates and creates in dependency order (mode, GI, CI, vGPU, hostdev); each GPU is
its own branch (apply may run branches in parallel), sorted by PCI address.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from planner.host.records import NO_RECORDS, DefinedDomain, HostRecords
from planner.host.state import HostState
from planner.plan.claims import gi_key
from planner.plan.graph import DELETE, number, plan_graph
from planner.plan.resolution import PlannedGi, Resolution, ResolveError
from planner.plan.resources import Resource, gpu_domains
from planner.vocab import (
    Action,
    Address,
    Attrs,
    DomainAttrs,
    GpuInstanceAttrs,
    HostdevAttrs,
    Kind,
    MigModeAttrs,
    NetworkAttrs,
    PoolAttrs,
    Reason,
    RunningAttrs,
    SriovAttrs,
    VgpuAttrs,
    VmAttrs,
    VolumeAttrs,
)
from planner.vocab.plan import Change, DeleteStep


@dataclass
class _Change:
    address: Address
    kind: Kind
    action: Action
    before: Resource | None
    after: Resource | None
    reason: str
    code: Reason
    needs_reset: bool = False
    destructive: bool = False
    blocked_by: tuple[str, ...] = ()

    @property
    def branch(self) -> str:
        res = self.after or self.before
        assert res is not None
        return res.branch


def _attrs(res: Resource | None) -> Attrs | None:
    return None if res is None else res.attrs


def owned_by_config(rec: DefinedDomain | None, clusters: set[str],
                    config_name: str | None) -> bool:
    """Whether a domain is this config's to delete: aihow defined it, for one of the
    config's clusters or under the config's name (a cluster the config dropped)."""
    if rec is None:
        return False
    return rec.cluster in clusters or (config_name is not None and rec.config == config_name)


def _scope(actual: dict[Address, Resource], desired: set[Address],
           managed: set[str], records: HostRecords, clusters: set[str],
           config_name: str | None = None) -> dict[Address, Resource]:
    """The actual resources the plan may act on. A domain is in scope when the config
    declares it, or when aihow itself defined it for this config (so a VM or a cluster
    dropped from the config is deleted); a domain aihow did not define is never undefined
    (on a GPU the config manages, its vGPU hostdevs go with the devices, so it is not left
    pointing at a device that no longer exists)."""
    scoped: dict[Address, Resource] = {}
    for addr, res in actual.items():
        if isinstance(res.attrs, DomainAttrs):
            if addr in desired:
                scoped[addr] = res
                continue
            rec = records.defined.get(res.attrs.name)
            if rec is not None and owned_by_config(rec, clusters, config_name):
                attrs = dataclasses.replace(res.attrs, cluster=rec.cluster, xml=rec.xml)
                scoped[addr] = Resource(addr, Kind.DOMAIN, attrs, branch=res.branch,
                                        users=res.users)
    for addr, res in actual.items():
        if isinstance(res.attrs, DomainAttrs):
            continue
        if res.kind is Kind.SRIOV and addr not in desired:
            continue  # VFs are enabled when needed and never switched off
        if res.kind in (Kind.NETWORK, Kind.POOL, Kind.VOLUME, Kind.RUNNING):
            if addr in desired:  # adopted when wanted; never deleted (maybe not aihow's)
                scoped[addr] = res
            continue
        if addr in desired or res.branch in managed:
            scoped[addr] = res
    for addr, res in actual.items():
        # A running domain the plan deletes is shut down first, as its own step.
        if res.kind is Kind.RUNNING and addr not in desired and addr.domain_name:
            da = Address.domain(addr.domain_name)
            if da in scoped and da not in desired:
                scoped[addr] = res
    return scoped


def untouched_domains(actual: dict[Address, Resource], desired: set[Address],
                      scoped: dict[Address, Resource]) -> list[tuple[str, list[str]]]:
    """Domains outside the config (not declared, not aihow's to delete) that hold a vGPU
    device on a GPU the config manages: (name, those devices), for the plan's notes."""
    out: dict[str, list[str]] = {}
    for addr, res in actual.items():
        if not isinstance(res.attrs, HostdevAttrs) or addr in desired:
            continue
        dom = Address.domain(res.attrs.domain)
        if dom in scoped or dom in desired:
            continue
        if addr in scoped:
            out.setdefault(res.attrs.domain, []).append(res.attrs.device)
    return sorted((name, sorted(devs)) for name, devs in out.items())


def _wanted_by(res: Resource) -> str:
    if res.owner in (None, "host"):
        return f"wanted by {res.key}" if res.key else "wanted by the config"
    return f"wanted by {res.owner} ({res.key})"


def _create_reason(res: Resource, actual: dict[Address, Resource]) -> tuple[str, Reason]:
    a = res.attrs
    if isinstance(a, VgpuAttrs):
        on = f" backed by gi[{a.gi}]" if a.gi else ""
        return f"{a.type_name} on {a.parent}{on} for {res.owner}", Reason.VGPU_FOR_NODE
    if isinstance(a, SriovAttrs):
        return (f"enable the SR-IOV virtual functions of {res.branch} (sriov-manage -e): "
                f"they are the parents of its vGPU devices"), Reason.VFS_FOR_VGPU
    if isinstance(a, HostdevAttrs):
        text = f"attach {a.device} to {a.domain}"
        if Address.domain(a.domain) not in actual:
            text += " (once the domain is defined)"
        return text, Reason.ATTACH
    if isinstance(a, NetworkAttrs):
        return (f"network for cluster {res.key}: bridge {a.bridge}, subnet {a.subnet}, "
                f"{len(a.hosts)} static DHCP lease(s)"), Reason.NETWORK_FOR_CLUSTER
    if isinstance(a, PoolAttrs):
        return f"storage pool for {res.key} at {a.path}", Reason.POOL_FOR_CLUSTER
    if isinstance(a, VolumeAttrs):
        return (f"disk of {res.owner}: {a.capacity_gb} GiB qcow2 overlay of {a.backing} "
                f"({res.key})"), Reason.VOLUME_FOR_VM
    if isinstance(a, RunningAttrs):
        return f"start {a.domain} and set libvirt autostart ({res.key})", Reason.START_VM
    if isinstance(a, VmAttrs):
        return (f"define VM {a.name} ({res.key}): {a.cpu_cores} vCPUs, {a.memory_gb} GiB "
                f"memory, {a.disk_gb} GiB disk, network {a.cluster}-network"), Reason.DEFINE_VM
    return _wanted_by(res), Reason.WANTED


def _delete_reason(res: Resource, managed: dict[str, str],
                   clusters: tuple[str, ...] = ()) -> tuple[str, Reason]:
    entry = managed.get(res.branch, "the config")
    a = res.attrs
    if isinstance(a, HostdevAttrs):
        return f"detach {a.device} from {a.domain}: the device is removed", \
            Reason.DEVICE_REMOVED
    if isinstance(a, RunningAttrs):
        return (f"shut down {a.domain} (ACPI, then destroy after the timeout): aihow "
                "deletes it"), Reason.STOP_VM
    if isinstance(a, DomainAttrs):
        text = (f"aihow defined {a.name} for cluster {a.cluster}, and the config no longer "
                f"declares it")
        if a.cluster not in clusters:
            text += f" (nor cluster {a.cluster})"
        if res.users:
            text += ("; it is running: the step before shuts it down, which apply does only "
                     "with --restart-running-vms")
        return text, Reason.VM_DROPPED
    return f"not wanted on GPU {res.branch}, which {entry} manages", Reason.NOT_WANTED


def _noop_reason(want: Resource, have: Resource, records: HostRecords) -> tuple[str, Reason]:
    if have.kind is Kind.COMPUTE_INSTANCE and want.extra.get("guest"):
        return (f"kept: the guest's (inside the GPU instance whose vGPU "
                f"{want.extra['guest']} uses; compute instances there are never planned)",
                Reason.KEPT)
    if have.kind in (Kind.GPU_INSTANCE, Kind.COMPUTE_INSTANCE):
        return f"kept: {_wanted_by(want)}", Reason.KEPT
    if have.kind in (Kind.NETWORK, Kind.POOL, Kind.VOLUME):
        return f"found on the host (made by ai-how or an earlier apply): reused for " \
               f"{_wanted_by(want)}", Reason.ADOPTED
    if have.kind is Kind.RUNNING:
        return "running, with libvirt autostart", Reason.UNCHANGED
    if have.kind is Kind.DOMAIN:
        name = want.attrs.name if isinstance(want.attrs, VmAttrs | DomainAttrs) else None
        who = "by aihow" if name in records.defined else "outside aihow"
        return f"defined {who}; never redefined, only its vGPU hostdevs are planned", \
            Reason.DOMAIN_KEPT
    return "unchanged", Reason.UNCHANGED


def diff(res: Resolution, desired: dict[Address, Resource], actual: dict[Address, Resource],
         records: HostRecords = NO_RECORDS, slices_only: frozenset[Address] = frozenset()
         ) -> list[_Change]:
    """The change per address. ``slices_only``: domains that requests name without their
    VMs; such a domain is kept if it exists and never defined or deleted."""
    host: HostState = res.host
    managed = {d.gpu.pci: d.policy.key for d in res.gpus if d.policy is not None}
    scoped = _scope(actual, set(desired) | slices_only, set(managed), records,
                    set(res.requests.clusters), res.requests.config_name)
    changes: dict[Address, _Change] = {}
    for addr in sorted(set(desired) | set(scoped)):
        want, have = desired.get(addr), scoped.get(addr)
        if want is None and addr in slices_only:
            assert have is not None
            want = have  # a domain the plan does not declare: kept as it is
        if have is None:
            assert want is not None
            text, code = _create_reason(want, actual)
            changes[addr] = _Change(addr, want.kind, Action.CREATE, None, want, text, code)
        elif want is None:
            _check_release(have, res, managed)
            text, code = _delete_reason(have, managed, res.requests.clusters)
            changes[addr] = _Change(addr, have.kind, Action.DELETE, have, None, text, code,
                                    destructive=bool(have.users))
        elif want.kind in (Kind.NETWORK, Kind.POOL, Kind.RUNNING):
            changes[addr] = _vm_side_change(want, have)
        elif want.compared() == have.compared():
            text, code = _noop_reason(want, have, records)
            changes[addr] = _Change(addr, want.kind, Action.NO_OP, have, want, text, code)
        elif want.kind is Kind.MIG_MODE:
            changes[addr] = _mode_change(res, host, want, have, managed)
        else:
            fields = want.attrs.COMPARED
            diffs = [k for k in fields if getattr(want.attrs, k) != getattr(have.attrs, k)]
            what = ", ".join(f"{k} {getattr(have.attrs, k)} -> {getattr(want.attrs, k)}"
                             for k in diffs)
            changes[addr] = _Change(addr, want.kind, Action.REPLACE, have, want,
                                    f"{what} (cannot change in place)", Reason.CHANGED,
                                    destructive=bool(have.users))
    _wiped_by_vfs(changes)
    _cascade(changes, scoped)
    _mark_moves(changes, res)
    _restarts(changes, actual)
    return list(changes.values())


def _moves(res: Resolution) -> list[PlannedGi]:
    return [gi for d in res.gpus for gi in d.instances if gi.moved_for is not None]


def _backed_by(res: Resource | None, gpu: str, gi: Address) -> bool:
    a = res.attrs if res is not None else None
    return isinstance(a, VgpuAttrs) and a.gpu == gpu and a.gi is not None \
        and gi.gi_slot is not None and a.gi == str(gi.gi_slot)


def _mark_moves(changes: dict[Address, _Change], res: Resolution) -> None:
    """A repack's changes say so: the moved VM's old and new instance, its vGPU device and
    its hostdev carry the reason code ``repack`` and whom the move makes room for."""
    for gi in _moves(res):
        node, why = gi.owner.node, f"repack for {gi.moved_for}"
        old = Address.gpu(gi.gpu).gi(gi.profile.name, gi.moved_from or 0)
        new = Address.gpu(gi.gpu).gi(gi.profile.name, gi.start)
        for ch in changes.values():
            if ch.action is Action.NO_OP:
                continue
            addr, res_ = ch.address, ch.after or ch.before
            if addr.gi_address == old and ch.action is Action.DELETE:
                ch.reason = (f"{node} is shut off and its slice moves to {new} to make room "
                             f"({why})")
            elif addr.gi_address == new and ch.action is Action.CREATE:
                ch.reason = f"{node}'s slice, moved from {old} ({why}); {_wanted_by(ch.after)}" \
                    if ch.after is not None else ch.reason
            elif addr.kind is Kind.HOSTDEV and addr.domain_name == node:
                ch.reason = f"{node}'s slice moves from {old} to {new} ({why})"
            elif addr.kind is Kind.VGPU and res_ is not None and (
                    res_.owner == node or _backed_by(ch.before, gi.gpu, old)):
                ch.reason = f"{node}'s slice moves from {old} to {new} ({why})" + (
                    "" if ch.action is Action.DELETE else f": {ch.reason}")
            else:
                continue
            ch.code = Reason.REPACK


def _wiped_by_vfs(changes: dict[Address, _Change]) -> None:
    """Enabling a GPU's VFs (``sriov-manage -e``) destroys every GPU instance on it
    (vgpu-on-mig.md section 4): an instance kept there is made again after the VFs."""
    enabling = {ch.branch: addr for addr, ch in changes.items()
                if ch.kind is Kind.SRIOV and ch.action is Action.CREATE}
    for ch in changes.values():
        if ch.kind is Kind.GPU_INSTANCE and ch.action is Action.NO_OP \
                and ch.branch in enabling:
            ch.action = Action.REPLACE
            ch.reason = (f"{enabling[ch.branch]} (sriov-manage -e) destroys every GPU "
                         f"instance of {ch.branch}: made again after the VFs")
            ch.code = Reason.DEPENDENCY_REPLACED
            assert ch.before is not None
            ch.destructive = bool(ch.before.users)


def _vm_side_change(want: Resource, have: Resource) -> _Change:
    """Networks, pools and running state change in place (never replaced): a network
    gets the leases it lacks and is started, a pool is started, autostart is set."""
    from planner.plan.vm_resources import check_network, merged_hosts

    w, h = want.attrs, have.attrs
    if isinstance(w, NetworkAttrs) and isinstance(h, NetworkAttrs):
        check_network(w, h, want.key or str(want.address))
        hosts = merged_hosts(w, h, want.key or str(want.address))
        after = dataclasses.replace(want, attrs=dataclasses.replace(w, hosts=hosts))
        if hosts == h.hosts and h.active:
            text, code = _noop_reason(want, have, NO_RECORDS)
            return _Change(want.address, want.kind, Action.NO_OP, have, after, text, code)
        added = len(set(hosts) - set(h.hosts))
        gone = len(set(h.hosts) - set(hosts))
        text = ", ".join(t for t in (f"add {added} static DHCP lease(s)" if added else "",
                                     f"remove {gone} lease(s) of VMs the config no longer "
                                     "declares" if gone else "") if t)
        if not h.active:
            text = f"{text}; start it" if text else "start it"
        return _Change(want.address, want.kind, Action.UPDATE, have, after,
                       f"{text} ({want.key})", Reason.LEASES)
    if isinstance(w, PoolAttrs) and isinstance(h, PoolAttrs):
        after = want
        if h.active:
            text, code = _noop_reason(want, have, NO_RECORDS)
            return _Change(want.address, want.kind, Action.NO_OP, have, after, text, code)
        return _Change(want.address, want.kind, Action.UPDATE, have, after,
                       f"start pool {w.name}: it exists but is not active", Reason.POOL_STOPPED)
    assert isinstance(w, RunningAttrs) and isinstance(h, RunningAttrs)
    if w.autostart == h.autostart:
        text, code = _noop_reason(want, have, NO_RECORDS)
        return _Change(want.address, want.kind, Action.NO_OP, have, want, text, code)
    return _Change(want.address, want.kind, Action.UPDATE, have, want,
                   f"set libvirt autostart of {w.domain} ({want.key})", Reason.AUTOSTART)


def _check_release(have: Resource, res: Resolution, managed: dict[str, str]) -> None:
    """A GPU instance another cluster holds in the allocation ledger is never deleted."""
    if not isinstance(have.attrs, GpuInstanceAttrs) or not res.held:
        return
    key = gi_key(have.branch, have.attrs.start)
    holder = res.held.get(("gi_placement", key))
    if holder is not None:
        raise ResolveError(
            f"{managed.get(have.branch, 'the config')}: gi_placement[{key}] "
            f"({have.attrs.profile}) is held by {holder} (allocation ledger); the config "
            f"of cluster(s) {', '.join(res.requests.clusters) or 'none'} manages GPU "
            f"{have.branch} and would delete it"
        )


def _mode_change(res: Resolution, host: HostState, want: Resource, have: Resource,
                 managed: dict[str, str]) -> _Change:
    decision = res.gpu(want.branch)
    assert decision is not None
    model = decision.model
    needs_reset = model.mode_change_needs_reset if model is not None else True
    assert isinstance(want.attrs, MigModeAttrs) and isinstance(have.attrs, MigModeAttrs)
    wanted, now = want.attrs.mode, have.attrs.mode
    if have.attrs.pending == wanted:
        reason = f"{managed[want.branch]} asks for MIG {wanted}; the change is " \
                 f"pending and a GPU reset commits it"
        code = Reason.MIG_MODE_PENDING
    else:
        reason = f"{managed[want.branch]} asks for MIG {wanted} (now {now})"
        code = Reason.MIG_MODE
        if needs_reset:
            reason += f"; {model.display_name if model else 'this GPU'} needs a GPU reset"
    blockers: list[str] = []
    if needs_reset:
        running = {d.name for d in host.domains if d.running}
        users = gpu_domains(host, decision.gpu, res.bindings) & running
        blockers += [f"domain {n} (running)" for n in sorted(users)]
        blockers += [f"process {n}" for n in sorted({p.name for p in decision.gpu.processes})]
        if blockers:
            reason += "; blocked by " + ", ".join(blockers)
    return _Change(want.address, Kind.MIG_MODE, Action.UPDATE, have, want, reason, code,
                   needs_reset=needs_reset, destructive=bool(have.users),
                   blocked_by=tuple(blockers))


def _cascade(changes: dict[Address, _Change], scoped: dict[Address, Resource]) -> None:
    """A kept resource whose actual dependency goes away must be re-made: replace it."""
    order = sorted(changes.values(), key=lambda c: c.kind.rank)
    for ch in order:
        if ch.action is not Action.NO_OP or ch.before is None or ch.kind is Kind.RUNNING:
            continue  # a running state is restarted around a change, never remade
        for dep in ch.before.deps:
            dc = changes.get(dep)
            if dc is not None and dc.action in (Action.DELETE, Action.REPLACE):
                ch.action = Action.REPLACE
                ch.reason = f"{dep} it depends on is {dc.action}d"
                ch.code = Reason.DEPENDENCY_REPLACED
                ch.destructive = bool(ch.before.users)
                break


def _takes(ch: _Change) -> bool:
    """Whether a change takes something from the running domains that use it."""
    if ch.before is None or ch.kind is Kind.RUNNING:
        return False
    if ch.action in (Action.DELETE, Action.REPLACE):
        return True
    return ch.action is Action.UPDATE and ch.kind is Kind.MIG_MODE


def _restarts(changes: dict[Address, _Change], actual: dict[Address, Resource]) -> None:
    """A running domain whose slice a change takes (a delete or replace of what it uses,
    or its GPU's MIG mode change) is shut down before those changes and started again
    after them: its ``running`` state becomes a replace ordered around them (apply
    carries it out only with ``--restart-running-vms``). A domain the plan deletes is
    only stopped (its ``running`` delete)."""
    takes: dict[str, list[_Change]] = {}
    for ch in changes.values():
        if _takes(ch):
            assert ch.before is not None
            for name in ch.before.users:
                takes.setdefault(name, []).append(ch)
    for name, causes in sorted(takes.items()):
        ra = Address.domain(name).running()
        have, rc = actual.get(ra), changes.get(ra)
        if have is None or (rc is not None and rc.action is Action.DELETE):
            continue
        want = rc.after if rc is not None and rc.after is not None else have
        addrs = sorted({c.address for c in causes})
        attached = sorted(c.address for c in changes.values()
                          if c.kind is Kind.HOSTDEV and c.address.domain_name == name
                          and c.action in (Action.CREATE, Action.REPLACE))
        before = dataclasses.replace(have, deps=tuple(dict.fromkeys((*have.deps, *addrs))))
        after = dataclasses.replace(
            want, deps=tuple(dict.fromkeys((*want.deps, *attached, *addrs))))
        shown = ", ".join(str(a) for a in addrs[:2])
        if len(addrs) > 2:
            shown += f" and {len(addrs) - 2} more"
        changes[ra] = _Change(
            ra, Kind.RUNNING, Action.REPLACE, before, after,
            f"shut down {name} (ACPI, then destroy after the timeout) before {shown} "
            "change(s), started again after", Reason.RESTART_FOR_CHANGE, destructive=True)


# Every change sets every field: one set of their names serves all of them (pydantic
# keeps one per model; per change it would cost more memory than the change's values).
_CHANGE_FIELDS = set(Change.model_fields)


def order_actions(changes: list[_Change]) -> list[Change]:
    """Number the steps in execution order and work out each one's dependencies, from
    the plan graph (``planner.plan.graph``: networkx orders it). A replace becomes one
    change again, numbered by its create step and carrying its delete step's id and
    dependencies."""
    g = plan_graph(changes)
    ordered = number(g)
    ids = [0] * len(ordered)
    for n in ordered:
        ids[n] = g.nodes[n]["id"]
    pred = g.pred

    def deps(n: int) -> tuple[int, ...]:
        return tuple(sorted(ids[m] for m in pred[n]))

    delete_of = {g.nodes[n]["change"].address: n for n in ordered
                 if g.nodes[n]["phase"] == DELETE}
    out: list[Change] = []
    for n in ordered:
        node = g.nodes[n]
        ch: _Change = node["change"]
        if node["phase"] == DELETE and ch.action is Action.REPLACE:
            continue  # the replace's delete step rides on its change (below)
        delete_step = None
        if ch.action is Action.REPLACE:
            d = delete_of[ch.address]
            delete_step = DeleteStep(id=ids[d], depends_on=deps(d))
        out.append(Change.model_construct(
            _CHANGE_FIELDS, id=ids[n], address=ch.address, kind=ch.kind, action=ch.action,
            before=_attrs(ch.before), after=_attrs(ch.after),
            depends_on=deps(n), reason=ch.reason,
            reason_code=ch.code, needs_reset=ch.needs_reset, destructive=ch.destructive,
            branch=ch.branch, delete_step=delete_step,
            blocked_by=ch.blocked_by if ch.action is not Action.DELETE else (),
        ))
    # networkx's graph refers to itself (its cached node and edge views), so with the
    # cyclic collector off during plan-making it would keep every change and resource
    # alive until the end: empty it now.
    g.clear()
    return out
