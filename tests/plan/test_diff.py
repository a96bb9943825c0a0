"""Diff and order: ownership scope, cleanup, delete-before-create, reset and destructive marks."""

from __future__ import annotations

from hosts import (
    A100,
    H100,
    acts,
    domain,
    gi,
    gpu,
    host,
    kept,
    make,
    manage,
    mdev,
    node,
    pci,
    type_id,
    vf,
)

from planner.apply.steps import plan_steps
from planner.plan.request import mdev_uuid

G17, G18 = pci(0x17), pci(0x18)


def _index(plan, address: str, action: str | None = None) -> int:  # type: ignore[no-untyped-def]
    return next(a.id for a in plan.actions
                if a.address == address and (action is None or a.action == action))


def test_unlisted_gpu_gets_only_additions_and_keeps_foreign_instances() -> None:
    foreign = "0f0f0f0f-0000-4000-8000-000000000001"
    state = host(
        gpu(0x17, instances=[gi("3g.20gb", 0), gi("1g.5gb", 6, ci=False)]),
        mdevs=[mdev(foreign, vf(0x17, 0), type_id(A100, "3g.20gb"), gi_id=1)],
        domains=[domain("other-vm", foreign)],
    )
    plan = make(state, node("n1", "2g.10gb"))
    changes = acts(plan)
    assert all(action == "create" for action in changes.values()), changes
    # nothing on the GPU is deleted, its mode untouched, the foreign vGPU and domain left alone
    assert not [a for a in plan.actions if a.action in ("delete", "replace", "update")]
    assert f"vgpu[{foreign}]" not in {a.address for a in plan.actions}
    assert acts(plan, "gpu_instance") == {f"gpu[{G17}].gi[2g.10gb@4]": "create"}
    assert kept(plan) == set()  # the foreign instances are not even listed: out of scope


def test_unlisted_free_instance_is_reused_not_duplicated() -> None:
    state = host(gpu(0x17, instances=[gi("1g.5gb", 4)]))
    plan = make(state, node("n1", "1g.5gb"))
    assert kept(plan) == {f"gpu[{G17}].gi[1g.5gb@4]"}
    assert acts(plan, "gpu_instance", "compute_instance") == {}


def test_gpus_nothing_selects_are_never_in_the_plan() -> None:
    state = host(gpu(0x17), gpu(0x18, index=1, mig=False, instances=[]),
                 gpu(0x19, index=2, instances=[gi("7g.40gb", 0)]))
    plan = make(state, node("n1", "1g.5gb", gpu=G17))
    assert {a.branch for a in plan.actions} == {G17}


def test_unlisted_gpu_with_mig_off_is_not_switched_on_for_a_node() -> None:
    state = host(gpu(0x17, mig=False))
    plan_error = None
    try:
        make(state, node("n1", "1g.5gb"))
    except Exception as exc:  # noqa: BLE001 - the message is what is checked
        plan_error = str(exc)
    assert plan_error is not None and "MIG is off" in plan_error


def test_managed_gpu_cleanup_deletes_what_the_config_does_not_want() -> None:
    state = host(gpu(0x17, instances=[gi("3g.20gb", 0), gi("2g.10gb", 4), gi("1g.5gb", 6)]))
    plan = make(state, node("n1", "2g.10gb"), policies=[manage(G17)])
    assert acts(plan, "gpu_instance") == {
        f"gpu[{G17}].gi[3g.20gb@0]": "delete",
        f"gpu[{G17}].gi[1g.5gb@6]": "delete",
    }
    assert kept(plan) == {f"gpu[{G17}].gi[2g.10gb@4]"}
    assert plan.summary["delete"] == 4  # two GIs and their CIs


def test_managed_gpu_with_mig_disabled_deletes_everything_then_switches_mode() -> None:
    state = host(gpu(0x17, instances=[gi("7g.40gb", 0)]))
    plan = make(state, policies=[manage(G17, mig="disabled")])
    order = [(a.action, a.address) for a in plan.actions]
    assert order == [
        ("delete", f"gpu[{G17}].gi[7g.40gb@0].ci[7g.40gb@0]"),
        ("delete", f"gpu[{G17}].gi[7g.40gb@0]"),
        ("update", f"gpu[{G17}].mig"),
    ]
    assert plan.actions[2].depends_on == (1, 2) or 2 in plan.actions[2].depends_on


def test_deletes_come_first_in_reverse_dependency_order_then_creates() -> None:
    old = mdev_uuid("hpc/n1/gpu0")
    state = host(
        gpu(0x17, instances=[gi("3g.20gb", 4)]),
        mdevs=[mdev(old, vf(0x17, 0), type_id(A100, "3g.20gb"), gi_id=2)],
        domains=[domain("n1", old, running=False)],
    )
    plan = make(state, node("n1", "2g.10gb", placement=4), policies=[manage(G17)])
    steps = [(s.phase, s.kind) for s in plan_steps(plan)]
    deletes = [k for act, k in steps if act == "delete"]
    assert deletes == ["hostdev", "vgpu", "compute_instance", "gpu_instance"]
    first_make = next(i for i, (act, _) in enumerate(steps) if act != "delete")
    assert all(act == "delete" for act, _ in steps[:first_make])
    assert all(act != "delete" for act, _ in steps[first_make:])
    makes = [k for act, k in steps[first_make:]]
    assert makes == ["gpu_instance", "compute_instance", "vgpu", "hostdev"]
    # the same mdev UUID on another type: a replace, shown once in the summary
    assert acts(plan, "vgpu")[f"vgpu[{old}]"] == "replace"
    assert plan.summary["replace"] == 2  # the vGPU device and its hostdev
    replace = next(a for a in plan.actions if a.address == f"vgpu[{old}]")
    assert replace.reason_code == "changed" and replace.delete_step is not None
    hostdev = next(a for a in plan.actions if a.kind == "hostdev" and a.action == "replace")
    assert hostdev.reason_code == "dependency-replaced"
    gi_new = _index(plan, f"gpu[{G17}].gi[2g.10gb@4]")
    gi_old = _index(plan, f"gpu[{G17}].gi[3g.20gb@4]")
    assert gi_old in [d for a in plan.actions if a.id == gi_new for d in a.depends_on]


def test_depends_on_points_backwards_and_branches_are_gpus() -> None:
    state = host(gpu(0x17, instances=[gi("1g.5gb", 3)]), gpu(0x18, index=1, mig=False))
    plan = make(state, node("a", "1g.5gb", gpu=G17), node("b", "2g.10gb", gpu=G18),
                policies=[manage(G17), manage(G18, i=1)])
    ids = {a.id for a in plan.actions}
    for a in plan.actions:
        assert all(d < a.id and d in ids for d in a.depends_on)
        assert a.branch in (G17, G18)
    # no step of one GPU waits for a step of the other: they may run in parallel
    branch = {a.id: a.branch for a in plan.actions}
    assert all(branch[d] == a.branch for a in plan.actions for d in a.depends_on)


def test_ampere_mode_change_needs_reset_and_names_blockers() -> None:
    state = host(gpu(0x17, mig=False, processes=["nvidia-persistenced"]),
                 domains=[domain("gpu-vm", G17)])
    plan = make(state, policies=[manage(G17)])
    (mode,) = [a for a in plan.actions if a.kind == "mig_mode"]
    assert (mode.action, mode.needs_reset) == ("update", True)
    assert mode.blocked_by == ("domain gpu-vm (running)", "process nvidia-persistenced")
    assert "blocked by domain gpu-vm (running), process nvidia-persistenced" in mode.reason
    assert mode.destructive


def test_hopper_mode_change_needs_no_reset() -> None:
    state = host(gpu(0x17, mig=False, model=H100))
    plan = make(state, policies=[manage(G17)])
    (mode,) = [a for a in plan.actions if a.kind == "mig_mode"]
    assert (mode.action, mode.needs_reset, mode.blocked_by) == ("update", False, ())


def test_pending_mode_change_is_still_planned_as_a_reset() -> None:
    state = host(gpu(0x17, mig=False, pending=True))
    plan = make(state, policies=[manage(G17)])
    (mode,) = [a for a in plan.actions if a.kind == "mig_mode"]
    assert mode.needs_reset and "pending" in mode.reason


def test_taking_a_slice_from_a_running_domain_is_destructive() -> None:
    used = "0f0f0f0f-0000-4000-8000-000000000002"
    idle = "0f0f0f0f-0000-4000-8000-000000000003"
    state = host(
        gpu(0x17, instances=[gi("1g.5gb", 0), gi("1g.5gb", 1)]),
        mdevs=[mdev(used, vf(0x17, 0), type_id(A100, "1g.5gb"), gi_id=7),
               mdev(idle, vf(0x17, 1), type_id(A100, "1g.5gb"), gi_id=8)],
        domains=[domain("running-vm", used), domain("stopped-vm", idle, running=False)],
    )
    plan = make(state, policies=[manage(G17, "4g.20gb")])
    destructive = {a.address for a in plan.actions if a.destructive}
    assert destructive == {
        f"domain[running-vm].hostdev[{used}]", f"vgpu[{used}]",
        f"gpu[{G17}].gi[1g.5gb@0]", f"gpu[{G17}].gi[1g.5gb@0].ci[1g.5gb@0]",
        "domain[running-vm].running",
    }
    assert plan.summary["destructive"] == 5
    # The running VM is shut down before anything it uses goes, and started again after
    # the last of it went; the stopped one is left off.
    by = {a.address: a for a in plan.actions}
    restart = by["domain[running-vm].running"]
    assert restart.action == "replace" and restart.reason_code == "restart-for-change"
    assert restart.delete_step is not None
    for taken in destructive - {"domain[running-vm].running"}:
        assert restart.delete_step.id < by[taken].id < restart.id, taken
    assert restart.delete_step.id in by[f"domain[running-vm].hostdev[{used}]"].depends_on
    assert "domain[stopped-vm].running" not in by
    assert {a.address for a in plan.actions if a.action == "delete"} >= {
        f"domain[stopped-vm].hostdev[{idle}]", f"vgpu[{idle}]"}


def test_a_converged_host_plans_no_changes() -> None:
    state = host(gpu(0x17))
    first = make(state, node("n1", "3g.20gb"), policies=[manage(G17, "2*1g.5gb")])
    assert first.has_changes
    gis = [gi("3g.20gb", 4, gi_id=2), gi("1g.5gb", 0, gi_id=7), gi("1g.5gb", 1, gi_id=8)]
    n1 = mdev_uuid("hpc/n1/gpu0")
    done = host(gpu(0x17, instances=gis),
                mdevs=[mdev(n1, vf(0x17, 0), type_id(A100, "3g.20gb"), gi_id=2)],
                domains=[domain("n1", n1)])
    again = make(done, node("n1", "3g.20gb"), policies=[manage(G17, "2*1g.5gb")])
    assert not again.has_changes, acts(again)
    assert again.summary["create"] == again.summary["delete"] == 0


def test_the_plan_graph_orders_the_plan_and_is_what_aihow_graph_draws() -> None:
    """One networkx graph: its topological order numbers the steps, its edges are each
    step's depends_on (a replace's delete step included), and graph_json draws it."""
    import json

    from planner.plan.diff import diff
    from planner.plan.graph import graph_json, number, plan_graph
    from planner.plan.make import resources_for
    from planner.plan.request import Requests

    old = mdev_uuid("hpc/n1/gpu0")
    state = host(
        gpu(0x17, instances=[gi("3g.20gb", 4)]),
        mdevs=[mdev(old, vf(0x17, 0), type_id(A100, "3g.20gb"), gi_id=2)],
        domains=[domain("n1", old, running=False)],
    )
    plan = make(state, node("n1", "2g.10gb", placement=4), policies=[manage(G17)])
    r = resources_for(Requests(policies=(manage(G17),), slices=(node("n1", "2g.10gb",
                                                                    placement=4),)), state)
    g = plan_graph(diff(r.resolution, r.desired, r.actual, slices_only=r.slices_only))
    ordered = number(g)
    assert [g.nodes[n]["id"] for n in ordered] == list(range(1, len(ordered) + 1))
    # every step of the plan is a node, with the plan's dependencies as its in-edges
    deps = {}
    for a in plan.actions:
        deps[a.id] = set(a.depends_on)
        if a.delete_step is not None:
            deps[a.delete_step.id] = set(a.delete_step.depends_on)
    drawn = {g.nodes[n]["id"]: {g.nodes[m]["id"] for m in g.pred[n]} for n in g}
    assert drawn == deps
    data = json.loads(graph_json(g))
    names = {n["name"]: n for n in data["nodes"]}
    assert names[f"vgpu[{old}] (delete)"]["id"] == next(
        a.delete_step.id for a in plan.actions if a.address == f"vgpu[{old}]"
        and a.delete_step is not None)
    assert [f"vgpu[{old}] (delete)", f"vgpu[{old}]"] in data["edges"]
    assert len(data["edges"]) == sum(len(d) for d in deps.values())


def test_a_gpus_vgpus_are_created_in_the_order_of_their_gpu_instances() -> None:
    """The driver backs a new vGPU with the free GI of lowest id, and ids follow the
    placements on most GPUs: made in placement order, each vGPU lands on its planned GI
    with no placeholder vGPUs, whatever order their UUIDs (the addresses) sort in."""
    state = host(gpu(0x17))
    nodes = [node(f"n{k}", "1g.5gb", placement=start)
             for k, start in enumerate((6, 0, 3, 1, 5, 2, 4))]
    plan = make(state, *nodes, policies=[manage(G17)])
    vgpus = [a for a in plan.actions if a.kind == "vgpu"]
    starts = [a.after.gi for a in vgpus]  # type: ignore[union-attr]
    assert starts == [f"1g.5gb@{s}" for s in range(7)]
    assert [a.address for a in vgpus] != sorted(a.address for a in vgpus)  # not by UUID
