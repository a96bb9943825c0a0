"""The plan graph: one networkx DiGraph whose nodes are the plan's steps and whose edges
mean "runs before". It orders the plan (``order``) and is what ``aihow graph`` draws.

Steps: a create, update, no-op or delete is one step, at the change's address; a replace
is two, its delete step (drawn ``ADDRESS (delete)``) and its create step. Edges come from
the resources' "must exist before" dependencies (MIG mode -> GPU instance -> compute
instance -> vGPU device -> domain hostdev, and a domain -> its hostdevs):

- a delete step runs after the delete steps of what depends on the resource (reverse
  dependency order: hostdev, vGPU, CI, GI), and before the update of a dependency (a
  running VM's stop before its GPU's MIG mode change);
- a create step runs after the create or update steps of its dependencies (a dependency
  that is kept, a no-op, is already there and orders nothing), after the delete step of
  a dependency that only goes (a VM started again after the slice it used is deleted),
  and after its own delete step (a replace);
- a create with no such dependency (a root of its branch's creations) runs after every
  delete step of its branch (GPU), so a branch frees its slices before it fills them.

The order is networkx's lexicographical topological sort with one key per step
(``step_key``): among the steps whose predecessors are done, deletes go first (dependants
first), then each GPU's branch in PCI order, the host's branch last, then rising kind
rank, a GPU's vGPUs by their GPU instances' placements, and the address. The same inputs
give the same order, so plans are byte-stable.

networkx is imported inside the functions that need it (start-up cost: ``aihow
validate`` and ``--help`` never load it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from planner.plan.resources import HOST_BRANCH, Resource
from planner.vocab import Action, Address, Kind, VgpuAttrs
from planner.vocab.plan import canonical_json

if TYPE_CHECKING:
    import networkx as nx

DELETE, MAKE = "delete", "make"  # a step's phase


class PlannedChange(Protocol):
    """What the graph needs of a change (``planner.plan.diff`` makes them)."""

    address: Address
    kind: Kind
    action: Action
    before: Resource | None
    after: Resource | None

    @property
    def branch(self) -> str: ...


def step_key(phase: str, change: PlannedChange) -> tuple[Any, ...]:
    """The tie-break among ready steps: deletes first, in falling kind rank; then per
    branch (GPUs by PCI address, the host last) in rising kind rank; then a GPU's vGPUs
    by the placement of the GPU instance each is to sit on (``_gi_start``); then the
    address."""
    branch = (change.branch == HOST_BRANCH, change.branch)
    if phase == DELETE:
        return (0, branch, -change.kind.rank, change.address)
    return (1, branch, change.kind.rank, _gi_start(change), change.address)


def _gi_start(change: PlannedChange) -> int:
    """Where a vGPU's GPU instance starts (-1 for anything else). The driver backs a new
    vGPU with the free GI of its profile that has the lowest id, and GI ids rise with the
    placement on most GPUs (docs/reference/mig-hardware.md: id = base + start/size), so
    vGPUs created in this order each land on their planned GI with no placeholder vGPUs
    parked first; where ids do not follow placements, ``apply/vgpu_placement.py`` still
    parks them."""
    attrs = change.after.attrs if change.after is not None else None
    if change.kind is not Kind.VGPU or not isinstance(attrs, VgpuAttrs) or not attrs.gi:
        return -1
    start = attrs.gi.rpartition("@")[2]
    return int(start) if start.isdigit() else -1


def plan_graph(changes: Sequence[PlannedChange]) -> nx.DiGraph:
    """The step graph of ``changes``: node n is step n (deletes and creates in the order
    of ``changes``), with attributes ``phase``, ``change`` and ``rank`` (its place by
    ``step_key``); edges mean "runs before"."""
    import networkx as nx  # heavy: loaded when a plan is ordered, not by show or validate

    steps: list[tuple[str, PlannedChange]] = []
    for ch in changes:
        if ch.action in (Action.DELETE, Action.REPLACE):
            steps.append((DELETE, ch))
        if ch.action is not Action.DELETE:
            steps.append((MAKE, ch))
    index = {(phase, ch.address): n for n, (phase, ch) in enumerate(steps)}
    # Rank every step by its key once, with one sort, so that the sort's heap compares
    # small ints rather than nested tuples of strings on every push and pop.
    by_key = sorted(range(len(steps)), key=lambda n: step_key(*steps[n]))
    rank = [0] * len(steps)
    for r, n in enumerate(by_key):
        rank[n] = r
    g = nx.DiGraph()
    g.add_nodes_from((n, {"phase": phase, "change": ch, "rank": rank[n]})
                     for n, (phase, ch) in enumerate(steps))
    g.add_edges_from(_edges(steps, index))
    return g


def _edges(steps: list[tuple[str, PlannedChange]], index: dict[tuple[str, Address], int]
           ) -> list[tuple[int, int]]:
    edges: list[tuple[int, int]] = []
    branch_deletes: dict[str, list[int]] = {}
    for n, (phase, ch) in enumerate(steps):
        if phase == DELETE:
            branch_deletes.setdefault(ch.branch, []).append(n)
    for n, (phase, ch) in enumerate(steps):
        if phase == DELETE:
            assert ch.before is not None
            for dep in ch.before.deps:  # delete the dependants of a thing before the thing
                m = index.get((DELETE, dep))
                if m is None:  # or before it changes in place (a VM stopped before its
                    m = index.get((MAKE, dep))  # GPU's MIG mode changes)
                    if m is not None and steps[m][1].action is not Action.UPDATE:
                        m = None
                if m is not None:
                    edges.append((n, m))
            continue
        if ch.action is Action.NO_OP:
            continue
        assert ch.after is not None
        has_dep = False
        for dep in ch.after.deps:
            m = index.get((MAKE, dep))
            if m is None:  # a dependency that only goes (a VM started after the slice
                m = index.get((DELETE, dep))  # it used is deleted)
            if m is not None and steps[m][1].action is not Action.NO_OP:
                edges.append((m, n))
                has_dep = True
        own = index.get((DELETE, ch.address))
        if own is not None:
            edges.append((own, n))
        if not has_dep:  # a root of its branch's creations waits for its branch's deletes
            edges.extend((m, n) for m in branch_deletes.get(ch.branch, []))
    return edges


def order(g: nx.DiGraph) -> list[int]:
    """The steps in execution order: networkx's lexicographical topological sort by each
    step's ``rank``. A cycle is a bug in how dependencies were drawn."""
    import networkx as nx  # heavy: see plan_graph

    rank = g.nodes.data("rank")
    try:
        return list(nx.lexicographical_topological_sort(g, key=rank.__getitem__))
    except nx.NetworkXUnfeasible:
        raise AssertionError("plan steps depend on each other in a cycle") from None


def number(g: nx.DiGraph) -> list[int]:
    """Order the steps and give each node its plan id (``id``, from 1); returns the order."""
    ordered = order(g)
    for i, n in enumerate(ordered, 1):
        g.nodes[n]["id"] = i
    return ordered


# --- drawing (``aihow graph``) --------------------------------------------------------


def _name(g: nx.DiGraph, n: int) -> str:
    """A step's name in a drawing: its address; a replace's delete step gets a suffix."""
    node = g.nodes[n]
    ch = node["change"]
    if node["phase"] == DELETE and ch.action is Action.REPLACE:
        return f"{ch.address} (delete)"
    return str(ch.address)


def _drawn(g: nx.DiGraph) -> tuple[list[dict[str, Any]], list[list[str]]]:
    nodes = []
    for n in g.nodes:
        node, ch = g.nodes[n], g.nodes[n]["change"]
        nodes.append({"name": _name(g, n), "address": str(ch.address), "id": node.get("id"),
                      "kind": ch.kind.value, "branch": ch.branch, "action": ch.action.value,
                      "phase": node["phase"]})
    nodes.sort(key=lambda d: d["name"])
    edges = sorted([_name(g, u), _name(g, v)] for u, v in g.edges)
    return nodes, edges


def graph_json(g: nx.DiGraph) -> str:
    nodes, edges = _drawn(g)
    return canonical_json({"nodes": nodes, "edges": edges}, indent=2)


_DOT_COLOUR = {"create": "darkgreen", "delete": "red3", "update": "orange3",
               "replace": "purple3", "no-op": "gray40"}


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def graph_dot(g: nx.DiGraph) -> str:
    """Graphviz DOT: one cluster per branch (GPU), colour by action, each step labelled
    with its plan id and action."""
    nodes, edges = _drawn(g)
    lines = ["digraph aihow {", "  rankdir=LR;", '  node [shape=box, fontname="monospace"];']
    branches: dict[str, list[dict[str, Any]]] = {}
    for node in nodes:
        branches.setdefault(node["branch"], []).append(node)
    for i, (branch, members) in enumerate(sorted(branches.items())):
        lines.append(f"  subgraph cluster_{i} {{")
        lines.append(f"    label={_q(branch)};")
        for node in members:
            act = node["action"]
            step = "" if node["id"] is None else f"#{node['id']} "
            label = _q(node["name"])[:-1] + "\\n" + step + act + '"'  # then id and action
            lines.append(f"    {_q(node['name'])} [label={label}, "
                         f"color={_DOT_COLOUR.get(act, 'black')}];")
        lines.append("  }")
    for u, v in edges:
        lines.append(f"  {_q(u)} -> {_q(v)};")
    lines.append("}")
    return "\n".join(lines) + "\n"
