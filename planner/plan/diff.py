"""Diff: desired vs actual resources -> ordered actions with reasons.

Scope follows the ownership rule: on a managed GPU every actual resource is compared
(what the config does not want is deleted); on any other GPU only the addresses the
config wants are compared, so nothing there is ever deleted and its mode never changes.

Order: every delete first, in reverse dependency order (hostdev, vGPU, CI, GI), then
updates and creates in dependency order (mode, GI, CI, vGPU, hostdev); each GPU is its
own branch (apply may run branches in parallel), sorted by PCI address.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Any, cast

from planner.host.records import NO_RECORDS, HostRecords
from planner.host.state import HostState
from planner.plan.claims import gi_key
from planner.plan.model import Action, ActionName, Kind
from planner.plan.resolve import Resolution, ResolveError
from planner.plan.resources import (
    COMPARED,
    HOST_BRANCH,
    KIND_RANK,
    Resource,
    gpu_domains,
)


@dataclass
class _Change:
    address: str
    kind: str
    action: str  # create | delete | update | replace | no-op
    before: Resource | None
    after: Resource | None
    reason: str
    needs_reset: bool = False
    destructive: bool = False
    blocked_by: tuple[str, ...] = ()

    @property
    def branch(self) -> str:
        res = self.after or self.before
        assert res is not None
        return res.branch


def _attrs(res: Resource | None) -> dict[str, Any] | None:
    return None if res is None else dict(res.attrs)


def _scope(actual: dict[str, Resource], desired: dict[str, Resource],
           managed: set[str], records: HostRecords, clusters: set[str]) -> dict[str, Resource]:
    """The actual resources the plan may act on. A domain is in scope when the config
    declares it, or when aihow itself defined it for one of the config's clusters (so a VM
    dropped from the config is deleted); a domain aihow did not define is never touched."""
    scoped: dict[str, Resource] = {}
    for addr, res in actual.items():
        if res.kind == "domain":
            if addr in desired:
                scoped[addr] = res
                continue
            rec = records.defined.get(str(res.attrs.get("name")))
            if rec is not None and rec.cluster in clusters:
                scoped[addr] = Resource(addr, "domain", {**res.attrs, "cluster": rec.cluster,
                                                         "xml": rec.xml},
                                        branch=res.branch, users=res.users)
            continue
        if res.kind == "sriov" and addr not in desired:
            continue  # VFs are enabled when needed and never switched off
        if addr in desired or res.branch in managed:
            scoped[addr] = res
    return scoped


def _wanted_by(res: Resource) -> str:
    if res.owner in (None, "host"):
        return f"wanted by {res.key}" if res.key else "wanted by the config"
    return f"wanted by {res.owner} ({res.key})"


def _create_reason(res: Resource, actual: dict[str, Resource]) -> str:
    if res.kind == "vgpu":
        return f"{res.attrs['type_name']} on {res.attrs['parent']} for {res.owner}"
    if res.kind == "sriov":
        return (f"enable the SR-IOV virtual functions of {res.branch} (sriov-manage -e): "
                f"they are the parents of its vGPU devices")
    if res.kind == "hostdev":
        dom = res.attrs["domain"]
        text = f"attach {res.attrs['device']} to {dom}"
        if f"domain[{dom}]" not in actual:
            text += " (once the domain is defined)"
        return text
    if res.kind == "domain":
        a = res.attrs
        return (f"define VM {a['name']} ({res.key}): {a['cpu_cores']} vCPUs, "
                f"{a['memory_gb']} GiB memory, {a['disk_gb']} GiB disk, network "
                f"{a['cluster']}-network")
    return _wanted_by(res)


def _delete_reason(res: Resource, managed: dict[str, str]) -> str:
    entry = managed.get(res.branch, "the config")
    if res.kind == "hostdev":
        return f"detach {res.attrs['device']} from {res.attrs['domain']}: the device is removed"
    if res.kind == "domain":
        text = (f"aihow defined {res.attrs['name']} for cluster {res.attrs['cluster']}, and "
                f"the config no longer declares it")
        if res.users:
            text += "; it is running: stop it first (aihow never stops a domain unasked)"
        return text
    return f"not wanted on GPU {res.branch}, which {entry} manages"


def _noop_reason(want: Resource, have: Resource, records: HostRecords) -> str:
    if have.kind in ("gpu_instance", "compute_instance"):
        return f"kept: {_wanted_by(want)}"
    if have.kind == "domain":
        who = "by aihow" if str(want.attrs.get("name")) in records.defined else \
            "outside aihow"
        return f"defined {who}; never redefined, only its vGPU hostdevs are planned"
    return "unchanged"


def diff(res: Resolution, desired: dict[str, Resource],
         actual: dict[str, Resource], records: HostRecords = NO_RECORDS) -> list[_Change]:
    host: HostState = res.host
    managed = {d.gpu.pci: d.policy.key for d in res.gpus if d.policy is not None}
    scoped = _scope(actual, desired, set(managed), records, set(res.requests.clusters))
    changes: dict[str, _Change] = {}
    for addr in sorted(set(desired) | set(scoped)):
        want, have = desired.get(addr), scoped.get(addr)
        if want is not None and want.kind == "domain" and not want.attrs and have is None:
            continue  # requests without their VMs (slices only): no domain to define
        if have is None:
            assert want is not None
            changes[addr] = _Change(addr, want.kind, "create", None, want,
                                    _create_reason(want, actual))
        elif want is None:
            _check_release(have, res, managed)
            blocked = (f"domain {have.attrs['name']} (running)",) \
                if have.kind == "domain" and have.users else ()
            changes[addr] = _Change(addr, have.kind, "delete", have, None,
                                    _delete_reason(have, managed),
                                    destructive=bool(have.users), blocked_by=blocked)
        elif want.compared() == have.compared():
            changes[addr] = _Change(addr, want.kind, "no-op", have, want,
                                    _noop_reason(want, have, records))
        elif want.kind == "mig_mode":
            changes[addr] = _mode_change(res, host, want, have, managed)
        else:
            diffs = [k for k in COMPARED[want.kind] if want.attrs.get(k) != have.attrs.get(k)]
            what = ", ".join(f"{k} {have.attrs.get(k)} -> {want.attrs.get(k)}" for k in diffs)
            changes[addr] = _Change(addr, want.kind, "replace", have, want,
                                    f"{what} (cannot change in place)",
                                    destructive=bool(have.users))
    _cascade(changes, scoped)
    return list(changes.values())


def _check_release(have: Resource, res: Resolution, managed: dict[str, str]) -> None:
    """A GPU instance another cluster holds in the allocation ledger is never deleted."""
    if have.kind != "gpu_instance" or not res.held:
        return
    key = gi_key(have.branch, int(have.attrs["start"]))
    holder = res.held.get(("gi_placement", key))
    if holder is not None:
        raise ResolveError(
            f"{managed.get(have.branch, 'the config')}: gi_placement[{key}] "
            f"({have.attrs['profile']}) is held by {holder} (allocation ledger); the config "
            f"of cluster(s) {', '.join(res.requests.clusters) or 'none'} manages GPU "
            f"{have.branch} and would delete it"
        )


def _mode_change(res: Resolution, host: HostState, want: Resource, have: Resource,
                 managed: dict[str, str]) -> _Change:
    decision = res.gpu(want.branch)
    assert decision is not None
    model = decision.model
    needs_reset = model.mode_change_needs_reset if model is not None else True
    if have.attrs["pending"] == want.attrs["mode"]:
        reason = f"{managed[want.branch]} asks for MIG {want.attrs['mode']}; the change is " \
                 f"pending and a GPU reset commits it"
    else:
        reason = f"{managed[want.branch]} asks for MIG {want.attrs['mode']} " \
                 f"(now {have.attrs['mode']})"
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
    return _Change(want.address, "mig_mode", "update", have, want, reason,
                   needs_reset=needs_reset, destructive=bool(have.users),
                   blocked_by=tuple(blockers))


def _cascade(changes: dict[str, _Change], scoped: dict[str, Resource]) -> None:
    """A kept resource whose actual dependency goes away must be re-made: replace it."""
    order = sorted(changes.values(), key=lambda c: KIND_RANK[c.kind])
    for ch in order:
        if ch.action not in ("no-op",) or ch.before is None:
            continue
        for dep in ch.before.deps:
            dc = changes.get(dep)
            if dc is not None and dc.action in ("delete", "replace"):
                ch.action = "replace"
                ch.reason = f"{dep} it depends on is {dc.action}d"
                ch.destructive = bool(ch.before.users)
                break


def _topological(preds: list[set[int]], key: Any) -> list[int]:
    succs: list[list[int]] = [[] for _ in preds]
    waiting = [len(p) for p in preds]
    for b, ps in enumerate(preds):
        for a in ps:
            succs[a].append(b)
    # Rank every node by (key, node) once, with one sort, so that the heap compares small
    # ints rather than nested tuples of strings on every push and pop.
    by_rank = sorted(range(len(preds)), key=key)  # stable: equal keys keep node order
    rank = [0] * len(preds)
    for r, n in enumerate(by_rank):
        rank[n] = r
    ready = [rank[n] for n, w in enumerate(waiting) if w == 0]
    heapq.heapify(ready)
    out: list[int] = []
    while ready:
        n = by_rank[heapq.heappop(ready)]
        out.append(n)
        for m in succs[n]:
            waiting[m] -= 1
            if waiting[m] == 0:
                heapq.heappush(ready, rank[m])
    if len(out) != len(preds):  # a cycle: a bug in how dependencies were drawn
        raise AssertionError("plan steps depend on each other in a cycle")
    return out


def order_actions(changes: list[_Change]) -> list[Action]:
    """Number the changes in execution order and work out each one's dependencies.

    A lexicographic topological sort (Kahn's algorithm with a heap): among the steps whose
    dependencies are done, the smallest key goes next, so every delete precedes every
    create and each GPU's steps stay together. Plain dicts rather than networkx here: this
    runs over every resource of a large host and must stay cheap."""
    steps: list[tuple[str, _Change]] = []  # (phase, change): phase "del" or "make"
    for ch in changes:
        if ch.action in ("delete", "replace"):
            steps.append(("del", ch))
        if ch.action != "delete":
            steps.append(("make", ch))
    index = {(phase, ch.address): n for n, (phase, ch) in enumerate(steps)}
    preds: list[set[int]] = [set() for _ in steps]

    def edge(a: int, b: int) -> None:  # a before b
        preds[b].add(a)

    branch_deletes: dict[str, list[int]] = {}
    for n, (phase, ch) in enumerate(steps):
        if phase == "del":
            branch_deletes.setdefault(ch.branch, []).append(n)
    for n, (phase, ch) in enumerate(steps):
        if phase == "del":
            assert ch.before is not None
            for dep in ch.before.deps:  # delete the dependants of a thing before the thing
                m = index.get(("del", dep))
                if m is not None:
                    edge(n, m)
            continue
        if ch.action == "no-op":
            continue
        assert ch.after is not None
        has_dep = False
        for dep in ch.after.deps:
            m = index.get(("make", dep))
            if m is not None and steps[m][1].action != "no-op":
                edge(m, n)
                has_dep = True
        own = index.get(("del", ch.address))
        if own is not None:
            edge(own, n)
        if not has_dep:  # a root of its branch's creations waits for its branch's deletes
            for m in branch_deletes.get(ch.branch, []):
                edge(m, n)

    def key(n: int) -> tuple[Any, ...]:
        phase, ch = steps[n]
        rank = KIND_RANK[ch.kind]
        branch = (ch.branch == HOST_BRANCH, ch.branch)
        if phase == "del":
            return (0, branch, -rank, ch.address)
        return (1, branch, rank, ch.address)

    ordered = _topological(preds, key)
    ids = {n: i + 1 for i, n in enumerate(ordered)}
    actions: list[Action] = []
    for n in ordered:
        phase, ch = steps[n]
        deps = tuple(sorted(ids[m] for m in preds[n]))
        if phase == "del":
            name = "delete"
            replaced_by = ids[index[("make", ch.address)]] if ch.action == "replace" else None
            after = None if ch.action == "delete" else _attrs(ch.after)
            reason = ch.reason if ch.action == "delete" else f"replace, step 1 of 2: {ch.reason}"
        else:
            name, replaced_by, after = ch.action, None, _attrs(ch.after)
            reason = ch.reason
        actions.append(Action.model_construct(
            id=ids[n], address=ch.address, kind=cast(Kind, ch.kind),
            action=cast(ActionName, name),
            before=_attrs(ch.before), after=after if name != "delete" else None,
            depends_on=deps, reason=reason, needs_reset=ch.needs_reset and phase == "make",
            destructive=ch.destructive and (phase == "del" or ch.action == "update"),
            branch=ch.branch, blocked_by=ch.blocked_by if phase == "make" else (),
            replaced_by=replaced_by,
        ))
    return actions
