"""Repack (``repack: shut-off``): the fewest shut-off VMs' slices move so that a slice
fits; running, paused and pinned slices never move; without the opt-in the refusal names
what blocks each legal start and what would make room."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hosts import A100, gi, gpu, host, make, manage, mdev, node, pci, type_id, vf

from planner.host.state import Domain, Hostdev, HostState
from planner.plan.repack import fewest_moves
from planner.plan.request import GpuPolicy, Requests, SliceRequest, mdev_uuid
from planner.plan.resolve import ResolveError, resolve
from planner.vocab import Reason

G17 = pci(0x17)
REPACK = replace(manage(G17), repack="shut-off")


# -- the search itself ----------------------------------------------------------------

def test_fewest_moves_prefers_one_move_over_two_and_breaks_ties_by_cost_then_order() -> None:
    fits = {("b",): 3, ("c",): 2, ("a", "d"): 1}
    got = fewest_moves(["a", "b", "c", "d"], lambda s: fits.get(s))
    assert got == (("c",), 2)  # one move beats two; the cheaper of the single moves
    same = {("b",): 3, ("c",): 3}
    assert fewest_moves(["a", "b", "c"], lambda s: same.get(s)) == (("b",), 3)


def test_fewest_moves_is_none_when_moving_everything_does_not_help() -> None:
    assert fewest_moves(["a", "b"], lambda s: None) is None
    assert fewest_moves([], lambda s: 0) is None


# -- on a GPU -----------------------------------------------------------------------------

def _host(starts: dict[str, int], states: dict[str, str]) -> HostState:
    """An A100 whose 1g.5gb instances at ``starts`` each back one domain's mdev."""
    mdevs, domains = [], []
    for k, (name, start) in enumerate(sorted(starts.items(), key=lambda kv: kv[1])):
        uuid = mdev_uuid(f"hpc/{name}/gpu0")
        mdevs.append(mdev(uuid, vf(0x17, k), type_id(A100, "1g.5gb"), gi_id=7 + start))
        domains.append(Domain(name=name, uuid=f"00000000-0000-0000-0000-{k:012d}",
                              state=states.get(name, "running"),
                              hostdevs=(Hostdev(type="mdev", uuid=uuid),)))
    return host(gpu(0x17, instances=[gi("1g.5gb", s, mig_uuid=f"MIG-{s:08d}-0000-0000-0000-"
                                      f"000000000000") for s in starts.values()]),
                mdevs=mdevs, domains=domains)


SIX = {"n1": 0, "n2": 1, "n3": 2, "n4": 3, "n5": 4, "n6": 5}


def _nodes(grow: str = "n1", **pins: SliceRequest) -> tuple[SliceRequest, ...]:
    return tuple(pins.get(n) or node(n, "2g.10gb" if n == grow else "1g.5gb") for n in SIX)


def _layout(state: HostState, slices: tuple[SliceRequest, ...], policy: GpuPolicy
            ) -> dict[str, tuple[str, int, int | None, str | None]]:
    res = resolve(Requests(policies=(policy,), slices=slices), state)
    return {g.owner.node: (g.profile.name, g.start, g.moved_from, g.moved_for)
            for d in res.gpus for g in d.instances}


def test_without_the_opt_in_the_refusal_names_each_blocked_start_and_what_to_do() -> None:
    state = _host(SIX, {"n1": "shut off", "n2": "shut off"})
    with pytest.raises(ResolveError) as err:
        _layout(state, _nodes(), manage(G17))
    msg = str(err.value)
    assert "\n" not in msg
    assert ("legal starts blocked: @0 by n2 (1g.5gb@1, shut off), @2 by n3 (1g.5gb@2, running) "
            "and n4 (1g.5gb@3, running), @4 by n5 (1g.5gb@4, running) and n6 (1g.5gb@5, "
            "running); to make room, set repack: shut-off on global.gpus[0] so that the plan "
            "moves the slice of n2, or choose another GPU (gpu_config.gpu)") in msg


def test_the_opt_in_moves_the_one_shut_off_slice_in_the_way() -> None:
    state = _host(SIX, {"n1": "shut off", "n2": "shut off", "n3": "shut off"})
    got = _layout(state, _nodes(), REPACK)
    assert got["n1"] == ("2g.10gb", 0, None, None)
    assert got["n2"] == ("1g.5gb", 6, 1, "n1")
    # n3 is shut off too, but moving it would not be the fewest moves: it stays
    assert {n: got[n] for n in ("n3", "n4", "n5", "n6")} == {
        n: ("1g.5gb", SIX[n], None, None) for n in ("n3", "n4", "n5", "n6")}


def test_nothing_moves_when_the_slice_fits_without_moving() -> None:
    state = _host({"n1": 0, "n2": 1}, {"n2": "shut off"})
    res = resolve(Requests(policies=(REPACK,), slices=(node("n1", "2g.10gb"),
                                                       node("n2", "1g.5gb"))), state)
    assert all(g.moved_for is None for d in res.gpus for g in d.instances)


@pytest.mark.parametrize("state", ["running", "paused"])
def test_a_vm_that_is_not_shut_off_is_never_moved_and_is_named(state: str) -> None:
    host_ = _host(SIX, {"n1": "shut off", "n2": state})
    with pytest.raises(ResolveError) as err:
        _layout(host_, _nodes(), REPACK)
    assert ("to make room, shut off n2 (a repack never moves a VM that is not shut off) so "
            "that the plan moves the slice of n2") in str(err.value)


@pytest.mark.parametrize("pin", ["placement", "mig_uuid"])
def test_pinned_slices_never_move_the_next_fewest_moves_are_taken(pin: str) -> None:
    shut = dict.fromkeys(SIX, "shut off")
    state = _host(SIX, shut)
    pinned = node("n2", "1g.5gb", placement=1) if pin == "placement" else \
        node("n2", mig_uuid="MIG-00000001-0000-0000-0000-000000000000")
    got = _layout(state, _nodes(n2=pinned), REPACK)
    assert got["n2"][:3] == ("1g.5gb", 1, None)
    moved = sorted(n for n, v in got.items() if v[3] == "n1")
    assert moved == ["n3", "n4"]  # 2g.10gb@2 is the next start two moves free
    assert got["n1"][:2] == ("2g.10gb", 2)


def test_the_choice_is_deterministic_whatever_the_order_of_the_requests() -> None:
    # 2g.10gb fits at @0 by moving n2 or at @2 by moving n3: equal cost, lower start wins
    starts = {"n1": 0, "n2": 1, "n3": 3, "n4": 4, "n5": 5, "n6": 6}
    state = _host(starts, dict.fromkeys(starts, "shut off"))
    slices = tuple(node(n, "2g.10gb" if n == "n1" else "1g.5gb") for n in starts)
    first = _layout(state, slices, REPACK)
    assert sorted(n for n, v in first.items() if v[3]) == ["n2"]
    for _ in range(3):
        assert _layout(state, tuple(reversed(slices)), REPACK) == first


def test_the_plan_shows_each_move_with_the_repack_reason() -> None:
    state = _host(SIX, {"n1": "shut off", "n2": "shut off"})
    plan = make(state, *_nodes(), policies=[REPACK])
    repack = {str(c.address): c.reason for c in plan.changes if c.reason_code == Reason.REPACK}
    old, new = f"gpu[{G17}].gi[1g.5gb@1]", f"gpu[{G17}].gi[1g.5gb@6]"
    assert set(repack) >= {old, f"{old}.ci[1g.5gb@0]", new, f"{new}.ci[1g.5gb@0]",
                           f"vgpu[{mdev_uuid('hpc/n2/gpu0')}]",
                           f"domain[n2].hostdev[{mdev_uuid('hpc/n2/gpu0')}]"}
    assert all("repack for n1" in r for r in repack.values())
    # the grown VM's own changes keep their own reasons
    own = {f"vgpu[{mdev_uuid('hpc/n1/gpu0')}]", f"domain[n1].hostdev[{mdev_uuid('hpc/n1/gpu0')}]"}
    assert own <= {str(c.address) for c in plan.changes}
    assert not own & set(repack)


def test_a_repack_is_the_last_resort_another_gpu_with_room_comes_first() -> None:
    one = _host(SIX, dict.fromkeys(SIX, "shut off"))
    state = host(*one.gpus, gpu(0x18, index=1), mdevs=one.mdevs, domains=one.domains)
    policy = replace(manage("model=*A100*"), repack="shut-off")
    res = resolve(Requests(policies=(policy,), slices=_nodes()), state)
    where = {g.owner.node: (g.gpu, g.start, g.moved_for) for d in res.gpus for g in d.instances}
    assert where["n1"] == (pci(0x18), 0, None)
    assert all(v[2] is None for v in where.values())


def test_layout_instances_and_unmanaged_gpus_are_named_as_blockers() -> None:
    with pytest.raises(ResolveError) as err:
        make(host(gpu(0x17)), node("a", "7g.40gb"), policies=[manage(G17, "3g.20gb@4")])
    assert ("legal starts blocked: @0 by global.gpus[0].layout (3g.20gb@4); moving the "
            "unpinned VMs' slices would not make room") in str(err.value)
    unlisted = host(gpu(0x17, instances=[gi("1g.5gb", 0)]))
    with pytest.raises(ResolveError) as err:
        make(unlisted, node("a", "7g.40gb"))
    assert ("@0 by 1g.5gb@0 unused, on a GPU global.gpus does not manage; aihow only adds "
            "instances on a GPU global.gpus does not manage") in str(err.value)
