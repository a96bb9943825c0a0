"""Random YAML documents and mutated valid configs give a ClusterConfig or a clean
ConfigError of one-line Diagnostics, never any other exception."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from planner.config import ClusterConfigParser, expand_vms
from planner.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SEEDS = [
    ROOT / "config" / "example-mig-cluster.yaml",
    ROOT / "tests" / "config" / "data" / "mig-extension.yaml",
    ROOT / "tests" / "config" / "data" / "template-nodes.yaml",
]
SEED_TEXTS = [p.read_text() for p in SEEDS]
SEED_DATA = [YAML(typ="safe", pure=True).load(t) for t in SEED_TEXTS]
FIELDS = ["mode", "mig_profile", "mig_uuid", "gpu", "placement", "select", "layout", "ip",
          "count", "cpu_cores", "pci_address", "device_type", "enabled", "name", "version",
          "vgpu_backend", "subnet", "hpc", "cloud", "global"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 300), st.floats(allow_nan=False, width=32),
    st.text(max_size=12),
    st.sampled_from(["1g.5gb", "3g.20gb@4 + 2*1g.5gb", "0000:17:00.0", "17:00.0", "DHCP",
                     "MIG-4f1a2b3c-0000-1111-2222-333344445555", "mig", "none", "passthrough",
                     "192.168.100.11", "${NOPE}", "${X:-1}", "model=H100*", "GPU-xyz", "1.0"]),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=8)), children,
                        max_size=4),
    ),
    max_leaves=12,
)


def check(text: str) -> None:
    try:
        cfg = ClusterConfigParser(env={"X": "2"}).parse_text(text, "f.yaml")
    except ConfigError as exc:
        assert exc.diagnostics
        for d in exc.diagnostics:
            line = str(d)
            assert line.startswith("f.yaml:") and "\n" not in line, line
            assert d.line >= 1 and d.column >= 1, line
    else:
        expand_vms(cfg)


def dump(data: Any) -> str:
    out = io.StringIO()
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.dump(data, out)
    return out.getvalue()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=200))
def test_random_text(text: str) -> None:
    check(text)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values)
def test_random_yaml_documents(data: Any) -> None:
    check(dump(data))


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out.extend(_paths(v, (*prefix, k)))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out.extend(_paths(v, (*prefix, i)))
    return out


@st.composite
def mutated_configs(draw: st.DrawFn) -> str:
    import copy

    data = copy.deepcopy(draw(st.sampled_from(SEED_DATA)))
    for _ in range(draw(st.integers(1, 4))):
        paths = [p for p in _paths(data) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = data
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["replace", "delete", "add", "copy"]))
        if action == "replace":
            parent[path[-1]] = draw(values)
        elif action == "delete":
            del parent[path[-1]]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.sampled_from(FIELDS))] = draw(values)
        elif action == "copy" and isinstance(parent, list):
            parent.append(copy.deepcopy(parent[path[-1]]))
    return dump(data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_configs())
def test_mutated_valid_configs(text: str) -> None:
    check(text)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SEED_TEXTS), st.integers(0, 10_000), st.integers(0, 6),
       st.text(max_size=6))
def test_text_edits_of_valid_configs(text: str, at: int, cut: int, insert: str) -> None:
    at %= len(text)
    check(text[:at] + insert + text[at + cut:])
