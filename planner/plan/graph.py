"""The resource graph: a networkx DiGraph whose edges mean "must exist before".

Nodes are addresses (``gpu[PCI].mig`` -> ``gpu[PCI].gi[P@S]`` -> ``...ci[P@S]`` ->
``vgpu[UUID]`` -> ``domain[NAME].hostdev[UUID]``, and ``domain[NAME]`` -> its hostdevs),
each carrying its ``kind``, ``branch`` and the planned ``action``.
"""

from __future__ import annotations

from typing import Any

import networkx as nx

from planner.plan.resources import Resource
from planner.vocab import Action, Address
from planner.vocab.plan import canonical_json


def build_graph(desired: dict[Address, Resource], actual: dict[Address, Resource],
                actions: dict[Address, Action]) -> nx.DiGraph:
    """Desired resources plus the actual ones the plan acts on, with edges from each."""
    g = nx.DiGraph()
    wanted = set(desired) | {a for a in actions if a in actual}
    for addr in sorted(wanted):
        res = desired.get(addr) or actual[addr]
        g.add_node(str(addr), kind=res.kind.value, branch=res.branch,
                   action=actions.get(addr, Action.NO_OP).value)
    for addr in sorted(wanted):
        res = desired.get(addr) or actual[addr]
        deps = set(res.deps)
        if addr not in desired:
            deps = set(actual[addr].deps)
        for dep in sorted(deps):
            if dep not in g:
                src = desired.get(dep) or actual.get(dep)
                if src is None:
                    continue
                g.add_node(str(dep), kind=src.kind.value, branch=src.branch,
                           action=actions.get(dep, Action.NO_OP).value)
            g.add_edge(str(dep), str(addr))
    return g


def graph_json(g: nx.DiGraph) -> str:
    data: dict[str, Any] = {
        "nodes": [{"address": n, **g.nodes[n]} for n in sorted(g.nodes)],
        "edges": sorted([u, v] for u, v in g.edges),
    }
    return canonical_json(data, indent=2)


_DOT_COLOUR = {"create": "darkgreen", "delete": "red3", "update": "orange3",
               "replace": "purple3", "no-op": "gray40"}


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def graph_dot(g: nx.DiGraph) -> str:
    """Graphviz DOT: one cluster per branch (GPU), colour by action."""
    lines = ["digraph aihow {", "  rankdir=LR;", '  node [shape=box, fontname="monospace"];']
    branches: dict[str, list[str]] = {}
    for n in sorted(g.nodes):
        branches.setdefault(g.nodes[n]["branch"], []).append(n)
    for i, (branch, nodes) in enumerate(sorted(branches.items())):
        lines.append(f"  subgraph cluster_{i} {{")
        lines.append(f"    label={_q(branch)};")
        for n in nodes:
            act = g.nodes[n]["action"]
            label = _q(n)[:-1] + "\\n" + act + '"'  # address, then the action below it
            lines.append(f"    {_q(n)} [label={label}, color={_DOT_COLOUR.get(act, 'black')}];")
        lines.append("  }")
    for u, v in sorted(g.edges):
        lines.append(f"  {_q(u)} -> {_q(v)};")
    lines.append("}")
    return "\n".join(lines) + "\n"
