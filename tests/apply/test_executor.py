"""The executor on simulated hosts, in process: a failed undo, GPU holders, the journal."""

from __future__ import annotations

from pathlib import Path

import pytest

from planner.apply.generations import list_generations
from planner.apply.journal import active_path, archived_journals, open_journal, read_journal
from planner.apply.recovery import recover
from planner.apply.results import PlanRefused
from planner.cli.host_opts import open_environment
from planner.sim import faults
from planner.sim.state import SimStore
from tests.apply.simhost import SimHost, write_config
from tests.clirun import aihow

G0, G1 = "0000:17:00.0", "0000:31:00.0"


def _arm(host: SimHost, op: str, at: int) -> None:
    with SimStore(host.dir).transaction() as state:
        faults.arm(state, op, at)


def _clear(host: SimHost) -> None:
    with SimStore(host.dir).transaction() as state:
        faults.clear(state)


def test_failed_undo_stops_keeps_the_journal_and_recover_finishes(tmp_path: Path) -> None:
    host = SimHost.create(tmp_path / "h", [("h100-80gb", G0, True)])
    cfg = write_config(tmp_path / "c.yaml", {G0: "3*1g.10gb"})
    plan = host.plan(cfg)
    start = host.layout()
    # the third GI creation fails, and so does the undo (destroy) of the second GI
    _arm(host, "nvmlDeviceCreateGpuInstanceWithPlacement", 3)
    _arm(host, "nvmlGpuInstanceDestroy", 1)
    result = host.apply(plan, cfg, parallel=False)
    assert result.outcome == "rollback-failed"
    assert not result.back_at_start
    states = "\n".join(result.resource_states)
    assert "gpu[0000:17:00.0].gi[1g.10gb@0]: as the plan wanted" in states
    assert "gpu[0000:17:00.0].gi[1g.10gb@2]: as before the apply" in states
    assert "journal kept at" in states
    view = open_journal(host.state_dir)
    assert view is not None and not view.finished
    statuses = {view.actions[a].address: view.actions[a].status for a in view.order}
    assert statuses["gpu[0000:17:00.0].gi[1g.10gb@1]"] == "undo-failed"
    assert statuses["gpu[0000:17:00.0].gi[1g.10gb@2]"] == "failed"
    assert statuses["gpu[0000:17:00.0].gi[1g.10gb@0]"] == "done"

    with pytest.raises(PlanRefused, match="aihow recover"):
        host.apply(plan, cfg)
    _clear(host)
    rec = recover(open_environment(host.uri), host.state_dir)
    assert rec.outcome == "recovered-back" and rec.reached, rec
    assert host.layout() == start
    assert host.fingerprint(cfg) == plan.host.fingerprint
    assert not active_path(host.state_dir).exists()
    closed = read_journal(archived_journals(host.state_dir)[-1])
    assert closed.end is not None and closed.end["outcome"] == "recovered-back"


def test_reset_refused_while_a_service_holds_the_gpu(tmp_path: Path) -> None:
    host = SimHost.create(tmp_path / "h", [("a100-40gb", G0, False)])
    held = aihow("sim", "hold", str(host.dir), "--gpu", G0, "--name", "nvidia-persistenced")
    assert held.returncode == 0, held.stderr
    cfg = write_config(tmp_path / "c.yaml", {G0: "7g.40gb"})
    plan = host.plan(cfg)
    before = host.layout()
    with pytest.raises(PlanRefused) as info:
        host.apply(plan, cfg, allow_reset=True)
    assert "held by process nvidia-persistenced (pid" in str(info.value)
    assert "nothing was changed" in str(info.value)
    assert host.layout() == before
    assert not active_path(host.state_dir).exists()


def test_journal_records_every_step_in_an_order_the_plan_allows(tmp_path: Path) -> None:
    """Two GPUs run side by side, so which GPU's step the journal names first depends on
    timing; what holds every run: each step's intent before its outcome, every
    dependency's outcome before the dependant's intent, and each GPU's steps in plan
    order."""
    from planner.apply.schedule import serial_key
    from planner.apply.steps import plan_steps

    bodies = []
    for run in ("one", "two"):
        host = SimHost.create(tmp_path / run, [("h100-80gb", G0, True), ("h100-80gb", G1, True)])
        cfg = write_config(tmp_path / f"{run}.yaml", {G0: "2*2g.20gb", G1: "7g.80gb"})
        events: list[object] = []
        plan = host.plan(cfg)
        result = host.apply(plan, cfg, parallel=True, events=events)
        assert result.outcome == "applied"
        view = read_journal(archived_journals(host.state_dir)[-1])
        body = [(r["type"], r.get("action_id"), r.get("op"), r.get("address"))
                for r in view.records]
        bodies.append(body)
        assert all(view.actions[a].status == "done" for a in view.order)
        assert [g.number for g in list_generations(host.state_dir)] == [1]
        steps = plan_steps(plan)
        at = {(t, aid): n for n, (t, aid, _, _) in enumerate(body)}
        assert set(view.order) == {str(s.id) for s in steps}
        for s in steps:
            assert at[("intent", str(s.id))] < at[("done", str(s.id))]
            for d in s.depends_on:
                if ("done", str(d)) in at:
                    assert at[("done", str(d))] < at[("intent", str(s.id))]
        for key in {serial_key(s) for s in steps}:
            mine = [str(s.id) for s in steps if serial_key(s) == key]
            assert [a for a in view.order if a in mine] == mine
    kinds = [b[0] for b in bodies[0]]
    assert kinds[0] == "begin" and kinds[-1] == "end"
    assert kinds.count("intent") == kinds.count("done") > 0
