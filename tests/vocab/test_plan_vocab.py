"""The vocabulary and the plan file agree: enums, reason codes, the kind order, and a
replace expanded by the executor into its delete and create steps."""

from __future__ import annotations

from typing import Any

from planner.apply.recovery import recovery_steps
from planner.apply.steps import expand, plan_steps
from planner.plan.model import plan_schema
from planner.vocab import Action, Kind, Reason, VgpuAttrs
from planner.vocab.plan import Change, ConfigRef, HostRef, Plan, summarize

UUID = "2f0c6a3e-0000-4000-8000-000000000001"
OLD = {"backend": "mdev", "gpu": "0000:17:00.0", "parent": "0000:17:00.4",
       "type_id": "nvidia-778", "type_name": "NVIDIA A100-1-5C"}
NEW = {**OLD, "type_id": "nvidia-779", "type_name": "NVIDIA A100-1-5CME"}


def test_the_schema_lists_exactly_the_vocabulary() -> None:
    action = plan_schema()["$defs"]["action"]["properties"]
    assert action["kind"]["enum"] == [k.value for k in Kind]
    assert sorted(action["action"]["enum"]) == sorted(a.value for a in Action)
    assert sorted(action["reason_code"]["enum"]) == sorted(r.value for r in Reason)


def test_the_kind_order_is_the_dependency_order() -> None:
    assert [k.value for k in sorted(Kind, key=lambda k: k.rank)] == [
        "mig_mode", "gpu_instance", "compute_instance", "sriov", "vgpu", "network", "pool",
        "volume", "domain", "hostdev", "running"]


def _change(**over: Any) -> Change:
    data = {"id": 7, "address": f"vgpu[{UUID}]", "kind": "vgpu", "action": "replace",
            "before": OLD, "after": NEW, "depends_on": [2, 6], "reason": "type changes",
            "reason_code": "changed", "branch": "0000:17:00.0",
            "delete_step": {"id": 2, "depends_on": [1]}}
    data.update(over)
    return Change.model_validate(data)


def test_a_replace_expands_into_its_delete_then_its_create() -> None:
    delete, create = expand(_change())
    assert (delete.id, delete.phase, delete.depends_on) == (2, Action.DELETE, (1,))
    assert delete.before == VgpuAttrs(**OLD) and delete.after is None
    assert (create.id, create.phase, create.depends_on) == (7, Action.CREATE, (2, 6))
    assert create.before is None and create.after == VgpuAttrs(**NEW)
    assert "replace" in delete.describe() and "(delete the old)" in delete.describe()
    (single,) = expand(_change(action="update", delete_step=None))
    assert (single.id, single.phase, single.before, single.after) == \
        (7, Action.UPDATE, VgpuAttrs(**OLD), VgpuAttrs(**NEW))


def _plan(*changes: Change) -> Plan:
    return Plan(aihow_version="0", host=HostRef(uri="sim:x", fingerprint="0" * 64),
                config=ConfigRef(path="c", sha256="0" * 64), actions=changes,
                summary=summarize(changes))


def test_steps_run_by_id_and_recovery_reverses_a_replace() -> None:
    hostdev = {"domain": "n1", "type": "mdev", "device": UUID}
    plan = _plan(
        _change(depends_on=[2]),
        Change.model_validate({"id": 8, "address": f"domain[n1].hostdev[{UUID}]",
                               "kind": "hostdev", "action": "replace", "before": hostdev,
                               "after": hostdev, "depends_on": [1, 7],
                               "reason": "its vGPU is replaced",
                               "reason_code": "dependency-replaced", "branch": "0000:17:00.0",
                               "delete_step": {"id": 1}}),
    )
    assert plan.summary["replace"] == 2 and sum(plan.summary[k] for k in Action) == 2
    assert [(s.id, s.kind, s.phase) for s in plan_steps(plan)] == [
        (1, Kind.HOSTDEV, Action.DELETE), (2, Kind.VGPU, Action.DELETE),
        (7, Kind.VGPU, Action.CREATE), (8, Kind.HOSTDEV, Action.CREATE)]
    # back to "before": remove the new (dependants first), then make the old (by kind)
    back = [(s.kind, s.phase) for _, s in recovery_steps(plan, "before")]
    assert back == [(Kind.HOSTDEV, Action.CREATE), (Kind.VGPU, Action.CREATE),
                    (Kind.VGPU, Action.DELETE), (Kind.HOSTDEV, Action.DELETE)]
    forward = [(s.kind, s.phase) for _, s in recovery_steps(plan, "after")]
    assert forward == [(Kind.HOSTDEV, Action.DELETE), (Kind.VGPU, Action.DELETE),
                       (Kind.VGPU, Action.CREATE), (Kind.HOSTDEV, Action.CREATE)]
