"""Fault campaign: for plans over several GPU models and layout transitions, a fault
injected (simulator ``fail``) at every action position in turn ends with the host back
at the plan's starting fingerprint, every time, with the journal closed."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from planner.apply.journal import active_path, archived_journals, read_journal
from planner.apply.steps import plan_steps
from planner.sim import faults
from planner.sim.state import SimStore
from tests.apply.simhost import SimHost, write_config

G0, G1 = "0000:17:00.0", "0000:31:00.0"

# (name, GPUs (model, pci, MIG on at start), config applied first or None, target config)
SCENARIOS: list[tuple[str, list[tuple[str, str, bool]], dict[str, str | None] | None,
                      dict[str, str | None]]] = [
    ("a100 enable+layout", [("a100-40gb", G0, False)], None,
     {G0: "3g.20gb@4 + 2*1g.5gb"}),
    ("a100 relayout", [("a100-40gb", G0, True)], {G0: "3g.20gb@4 + 1g.5gb@0 + 1g.5gb@1"},
     {G0: "3g.20gb@0 + 2g.10gb@4 + 1g.5gb@6"}),
    ("a100 disable", [("a100-40gb", G0, True)], {G0: "4g.20gb@0 + 1g.5gb@4"}, {G0: None}),
    ("h100 layout", [("h100-80gb", G0, True)], None, {G0: "2*1g.10gb + 3g.40gb@4"}),
    ("a30 relayout", [("a30", G0, True)], {G0: "2g.12gb@0 + 2*1g.6gb"}, {G0: "4g.24gb"}),
    ("rtx-pro-6000 layout", [("rtx-pro-6000", G0, True)], None, {G0: "2g.48gb@0 + 2*1g.24gb"}),
    ("two GPUs", [("a100-40gb", G0, True), ("h100-80gb", G1, False)],
     {G0: "7g.40gb"}, {G0: "2*3g.20gb", G1: "1g.10gb + 2g.20gb@2"}),
]

OP_OF = {
    ("mig_mode", "update"): "nvmlDeviceSetMigMode",
    ("gpu_instance", "create"): "nvmlDeviceCreateGpuInstanceWithPlacement",
    ("gpu_instance", "delete"): "nvmlGpuInstanceDestroy",
    ("compute_instance", "create"): "nvmlGpuInstanceCreateComputeInstanceWithPlacement",
    ("compute_instance", "delete"): "nvmlComputeInstanceDestroy",
    ("domain", "create"): "virDomainDefineXML",
    ("domain", "delete"): "virDomainUndefine",
    ("network", "create"): "virNetworkDefineXML",
    ("network", "update"): "virNetworkUpdate",
    ("pool", "create"): "virStoragePoolDefineXML",
    ("volume", "create"): "virStorageVolCreateXML",
    ("running", "create"): "virDomainCreate",
    ("running", "delete"): "virDomainShutdown",
}


def _arm(host: SimHost, op: str, at: int) -> None:
    with SimStore(host.dir).transaction() as state:
        faults.arm(state, op, at)


def _fault_points(plan: Any) -> list[tuple[Any, str, int]]:
    """(action, operation, which call of that operation) for every action, in the order
    the executor runs them when not parallel (plan order)."""
    seen: Counter[str] = Counter()
    points = []
    acts = plan_steps(plan)
    for a in acts:
        op = OP_OF[(a.kind, a.phase)]
        seen[op] += 1
        points.append((a, op, seen[op]))
    return points


CASES: list[str] = []


@pytest.mark.parametrize("name,gpus,first,target", SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_fault_at_every_action_rolls_back(tmp_path: Path, name: str,
                                          gpus: list[tuple[str, str, bool]],
                                          first: dict[str, str | None] | None,
                                          target: dict[str, str | None]) -> None:
    cfg0 = write_config(tmp_path / "first.yaml", first) if first is not None else None
    template = SimHost.build(tmp_path / "template", gpus, cfg0)
    cfg = write_config(tmp_path / "target.yaml", target)
    plan = template.plan(cfg)
    points = _fault_points(plan)
    assert len(points) >= 2, f"{name}: the transition should take several actions"
    start_layout = template.layout()
    for k, (action, op, nth) in enumerate(points, 1):
        host = SimHost.build(tmp_path / f"case{k}", gpus, cfg0)
        case_plan = host.plan(cfg)  # a plan names its host; same actions as the template's
        assert [a.address for a in case_plan.actions] == [a.address for a in plan.actions]
        assert host.fingerprint(cfg) == case_plan.host.fingerprint
        _arm(host, op, nth)
        result = host.apply(case_plan, cfg, parallel=False)
        assert result.outcome == "rolled-back", (name, k, result)
        assert result.failed and result.failed[0][0] == action.address, (name, k, result.failed)
        assert result.back_at_start, (name, k, result.resource_states)
        assert host.fingerprint(cfg) == case_plan.host.fingerprint
        assert host.layout() == start_layout
        assert not active_path(host.state_dir).exists()
        last = read_journal(archived_journals(host.state_dir)[-1])
        assert last.end is not None and last.end["outcome"] == "rolled-back"
        assert set(result.done) <= set(result.undone)  # every completed action was undone
        CASES.append(f"{name}#{k}")
    # and without a fault the same plan applies and re-plans to nothing
    host = SimHost.build(tmp_path / "clean", gpus, cfg0)
    assert host.apply(host.plan(cfg), cfg).outcome == "applied"
    assert not host.plan(cfg).has_changes


def test_parallel_branches_roll_back_from_any_fault(tmp_path: Path) -> None:
    """Two GPUs in one plan run side by side; a fault in either branch still ends at the
    starting fingerprint."""
    name, gpus, first, target = SCENARIOS[-1]
    assert first is not None
    cfg0 = write_config(tmp_path / "first.yaml", first)
    template = SimHost.build(tmp_path / "template", gpus, cfg0)
    cfg = write_config(tmp_path / "target.yaml", target)
    plan = template.plan(cfg)
    assert {"0000:17:00.0", "0000:31:00.0"} <= {a.branch for a in plan.changes}
    for k, (_, op, nth) in enumerate(_fault_points(plan), 1):
        host = SimHost.build(tmp_path / f"par{k}", gpus, cfg0)
        case_plan = host.plan(cfg)
        _arm(host, op, nth)
        result = host.apply(case_plan, cfg, parallel=True)
        assert result.outcome == "rolled-back" and result.back_at_start, (k, result)
        assert host.fingerprint(cfg) == case_plan.host.fingerprint
        CASES.append(f"parallel#{k}")


def test_zz_report_case_count() -> None:
    """Prints how many fault cases ran (pytest -s shows it)."""
    if not CASES:
        pytest.skip("the campaign did not run in this session")
    print(f"\nfault campaign: {len(CASES)} cases, host back at the starting fingerprint "
          "in every one")
