"""Pure parts of the executor: grouping actions into waves, and the drift diff."""

from __future__ import annotations

from dataclasses import dataclass

from planner.apply.drift import diff_values
from planner.apply.schedule import waves


@dataclass
class A:
    id: int
    branch: str | None
    depends_on: tuple[int, ...] = ()
    address: str = ""
    kind: str = "gpu_instance"
    action: str = "create"


def test_branches_run_side_by_side_in_plan_order() -> None:
    acts = [A(1, "g0"), A(2, "g0"), A(3, "g1"), A(4, "g0"), A(5, "g1")]
    assert waves(acts) == [[0, 2], [1, 4], [3]]


def test_dependency_across_branches_waits() -> None:
    acts = [A(1, "g0"), A(2, "g0"), A(3, "host", depends_on=(2,)), A(4, "g1")]
    assert waves(acts) == [[0, 3], [1], [2]]


def test_action_without_branch_is_a_barrier() -> None:
    acts = [A(1, "g0"), A(2, "g1"), A(3, None), A(4, "g0"), A(5, "g1")]
    assert waves(acts) == [[0, 1], [2], [3, 4]]


def test_drift_names_what_changed() -> None:
    old = {"gpus": [{"pci": "0000:17:00.0", "mig_current": True,
                     "instances": [{"profile": "1g.5gb", "start": 0}]}]}
    new = {"gpus": [{"pci": "0000:17:00.0", "mig_current": False,
                     "instances": [{"profile": "1g.5gb", "start": 0},
                                   {"profile": "3g.20gb", "start": 4}]}]}
    lines = diff_values(old, new)
    assert "~ gpus[0000:17:00.0].mig_current: true -> false" in lines
    assert '+ gpus[0000:17:00.0].instances[3g.20gb@4]: {"profile": "3g.20gb", "start": 4}' \
        in lines
    assert diff_values(old, old) == []


def test_snapshot_drift_names_resources_by_their_plan_address() -> None:
    from planner.apply.plan_api import snapshot_item_path

    old = {"gpus": [{"pci": "0000:17:00.0", "instances": [
        {"profile": "3g.20gb", "start": 4, "compute_instances": [
            {"profile": "1c.3g.20gb", "start": 0}]}]}],
        "domains": [{"name": "hpc-compute-01", "running": False}]}
    new = {"gpus": [{"pci": "0000:17:00.0", "instances": [
        {"profile": "3g.20gb", "start": 4, "compute_instances": [
            {"profile": "1c.3g.20gb", "start": 1}]}]}],
        "domains": [{"name": "hpc-compute-01", "running": True}]}
    lines = diff_values(old, new, item_path=snapshot_item_path)
    assert "- gpu[0000:17:00.0].gi[3g.20gb@4].ci[1c.3g.20gb@0]: " \
        '{"profile": "1c.3g.20gb", "start": 0}' in lines
    assert "~ domain[hpc-compute-01].running: false -> true" in lines
