"""Pure parts of the executor: when each step may start (the schedule), and the drift diff."""

from __future__ import annotations

from planner.apply.drift import diff_values
from planner.apply.schedule import Schedule, serial_key
from planner.apply.steps import Step
from planner.vocab import Action, Address
from planner.vocab.plan import Change


def _step(id_: int, address: str, deps: tuple[int, ...] = ()) -> Step:
    addr = Address.parse(address)
    branch = addr.pci or "host"
    change = Change.model_construct(id=id_, address=addr, kind=addr.kind, action=Action.CREATE,
                                    before=None, after=None, depends_on=deps, branch=branch)
    return Step(id_, change, Action.CREATE, None, None, deps)


def _run(sched: Schedule, finish_order: list[int] | None = None) -> list[list[int]]:
    """Start everything ready, finish the running steps (lowest first, or as given), and
    return the sets that were ready together."""
    rounds = []
    order = list(finish_order or [])
    running: list[int] = []
    while not sched.done:
        ready = sched.ready()
        for i in ready:
            sched.start(i)
        running += ready
        if ready:
            rounds.append(ready)
        nxt = next((i for i in order if i in running), min(running))
        running.remove(nxt)
        if nxt in order:
            order.remove(nxt)
        sched.finish(nxt)
    return rounds


G0, G1 = "gpu[0000:17:00.0]", "gpu[0000:65:00.0]"


def test_gpus_run_side_by_side_each_in_plan_order() -> None:
    steps = [_step(1, f"{G0}.mig"), _step(2, f"{G0}.gi[1g.10gb@0]"), _step(3, f"{G1}.mig"),
             _step(4, f"{G0}.gi[1g.10gb@1]"), _step(5, f"{G1}.gi[1g.10gb@0]")]
    sched = Schedule(steps)
    assert sched.ready() == [0, 2]  # one step per GPU at a time
    sched.start(0)
    sched.start(2)
    assert sched.ready() == []
    sched.finish(2)  # GPU 1 goes on without waiting for GPU 0
    assert sched.ready() == [4]


def test_a_step_starts_as_soon_as_its_dependencies_are_done() -> None:
    # Domains are not one lock: every define may start at once; a hostdev waits for its
    # domain and its vGPU, not for the other domains.
    steps = [_step(1, "vgpu[0000:17:00.4]"), _step(2, "domain[a]"), _step(3, "domain[b]"),
             _step(4, "domain[c]"), _step(5, "domain[a].hostdev[0000:17:00.4]", (1, 2))]
    sched = Schedule(steps)
    assert sched.ready() == [0, 1, 2, 3]
    for i in (0, 1, 2, 3):
        sched.start(i)
    sched.finish(1)
    assert sched.ready() == []  # its vGPU is still being made
    sched.finish(0)
    assert sched.ready() == [4]


def test_steps_of_one_domain_are_serial() -> None:
    steps = [_step(1, "domain[a].hostdev[0000:17:00.4]"), _step(2, "domain[a]")]
    assert serial_key(steps[0]) == serial_key(steps[1]) == "domain:a"
    assert _run(Schedule(steps)) == [[0], [1]]


def test_not_parallel_runs_in_plan_order() -> None:
    steps = [_step(1, f"{G0}.mig"), _step(2, f"{G1}.mig"), _step(3, "domain[a]"),
             _step(4, f"{G0}.gi[1g.10gb@0]", (1,))]
    assert _run(Schedule(steps, parallel=False)) == [[0], [1], [2], [3]]


def test_a_dependency_outside_the_run_is_met() -> None:
    steps = [_step(5, f"{G0}.gi[1g.10gb@0]", (1,))]  # step 1 is a no-op, not in the run
    assert Schedule(steps).ready() == [0]


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
