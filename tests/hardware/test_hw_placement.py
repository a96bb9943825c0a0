"""Placement math: fits, free_starts, maximal_layouts, place_preserving."""

from __future__ import annotations

import dataclasses
import itertools
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from planner.hardware.catalog import all_models, get_model
from planner.hardware.model import GiProfile, GpuModel
from planner.hardware.placement import (
    Placement,
    fits,
    free_starts,
    maximal_layouts,
    place_preserving,
    why_not_fits,
)

A100 = get_model("a100-40gb")
A30 = get_model("a30")
RTX = get_model("rtx-pro-6000")
MODELS = {m.id: m for m in all_models()}


def P(model: GpuModel, name: str) -> GiProfile:
    p = model.profile(name)
    assert p is not None, name
    return p


def brute_fits(model: GpuModel, instances: list[tuple[GiProfile, int]]) -> bool:
    """The rules of nvml.h (docs/reference/mig-hardware.md 2.1) checked the slow way,
    with slice sets."""
    taken: list[int] = []
    for p, s in instances:
        if s not in p.placements:
            return False
        taken += range(s, s + p.placement_size)
    if len(taken) != len(set(taken)) or len(instances) > model.max_instances:
        return False
    per_profile = Counter(p.name for p, _ in instances)
    if any(n > model.profile(name).instance_count for name, n in per_profile.items()):  # type: ignore[union-attr]
        return False
    names = [p.name for p, _ in instances]
    if sum(n.endswith("+me") for n in names) > 1:
        return False
    if any(n.endswith("+me.all") for n in names) and len(names) > 1:
        others = [n for n in names if not n.endswith("+me.all")]
        if len(others) != len(names) - 1 or not all(n.endswith("-me") for n in others):
            return False
    return True


# ---------------------------------------------------------------- fits / free_starts

def test_fits_basic_rules() -> None:
    one = P(A100, "1g.5gb")
    assert fits(A100, [(one, s) for s in range(7)])
    assert not fits(A100, [(one, 7)])  # slice 7 is no legal start for a 1g
    assert not fits(A100, [(P(A100, "3g.20gb"), 2)])  # 3g starts at 0 or 4 only
    assert not fits(A100, [(P(A100, "3g.20gb"), 4), (one, 5)])  # overlap
    assert fits(A100, [(P(A100, "4g.20gb"), 0), (P(A100, "3g.20gb"), 4)])
    assert not fits(A100, [(P(A100, "1g.10gb"), s) for s in (0, 2, 4, 6)] + [(one, 1)])
    me = P(A100, "1g.5gb+me")
    assert fits(A100, [(me, 0)] + [(one, s) for s in range(1, 7)])
    reason = why_not_fits(A100, [(me, 0), (me, 1)])
    assert reason is not None and "+me" in reason


def test_only_one_media_engine_instance_on_a30() -> None:
    assert not fits(A30, [(P(A30, "1g.6gb+me"), 0), (P(A30, "2g.12gb+me"), 2)])
    assert fits(A30, [(P(A30, "1g.6gb+me"), 0), (P(A30, "2g.12gb"), 2)])


def test_me_all_allows_only_no_me_profiles() -> None:
    all_me, no_me = P(RTX, "1g.24gb+me.all"), P(RTX, "1g.24gb-me")
    assert fits(RTX, [(all_me, 0), (no_me, 3), (no_me, 6), (no_me, 9)])
    for other in ("1g.24gb", "1g.24gb+gfx", "1g.24gb+me"):
        assert not fits(RTX, [(all_me, 0), (P(RTX, other), 3)]), other
        assert not fits(RTX, [(P(RTX, other), 3), (all_me, 0)]), other  # order-independent
    assert fits(RTX, [(P(RTX, "2g.48gb+me.all"), 0), (P(RTX, "2g.48gb-me"), 6)])
    assert not fits(RTX, [(P(RTX, "2g.48gb+me.all"), 0), (P(RTX, "1g.24gb+me.all"), 6)])


def test_max_instances_binds_when_the_grid_does_not() -> None:
    # On every real table the grid is the tighter limit; a model with a lower limit shows
    # that the per-GPU maximum is enforced on its own.
    small = dataclasses.replace(A100, max_instances=3)
    one = P(small, "1g.5gb")
    assert fits(small, [(one, 0), (one, 1), (one, 2)])
    reason = why_not_fits(small, [(one, 0), (one, 1), (one, 2), (one, 3)])
    assert reason is not None and "at most 3 GPU instances" in reason
    assert place_preserving(small, [], [(one, None)] * 4) is None
    assert free_starts(small, one, [(one, 0), (one, 1), (one, 2)]) == []


def test_foreign_profile_does_not_fit() -> None:
    assert not fits(A30, [(P(A100, "3g.20gb"), 0)])
    assert free_starts(A30, P(A100, "3g.20gb"), []) == []


def test_free_starts() -> None:
    one, three = P(A100, "1g.5gb"), P(A100, "3g.20gb")
    assert free_starts(A100, three, []) == [0, 4]
    assert free_starts(A100, three, [(one, 1)]) == [4]
    assert free_starts(A100, one, [(three, 4)]) == [0, 1, 2, 3]
    assert free_starts(A100, P(A100, "7g.40gb"), [(one, 6)]) == []


instances_strategy = st.sampled_from(sorted(MODELS)).flatmap(
    lambda mid: st.tuples(
        st.just(MODELS[mid]),
        st.lists(
            st.tuples(st.sampled_from(MODELS[mid].gi_profiles),
                      st.integers(0, MODELS[mid].memory_slices - 1)),
            max_size=8,
        ),
    )
)


@settings(max_examples=200, deadline=None)
@given(instances_strategy)
def test_fits_agrees_with_brute_force(case: tuple[GpuModel, list[tuple[GiProfile, int]]]) -> None:
    model, instances = case
    assert fits(model, instances) == brute_fits(model, instances)


@settings(max_examples=100, deadline=None)
@given(instances_strategy)
def test_free_starts_are_exactly_the_fitting_ones(
    case: tuple[GpuModel, list[tuple[GiProfile, int]]]
) -> None:
    model, instances = case
    for profile in model.gi_profiles:
        want = [s for s in profile.placements if brute_fits(model, instances + [(profile, s)])]
        if brute_fits(model, instances):
            assert free_starts(model, profile, instances) == sorted(want)


# ---------------------------------------------------------------- maximal layouts

CLASSIC = ["1g.5gb", "2g.10gb", "3g.20gb", "4g.20gb", "7g.40gb"]


def test_a100_classic_profiles_give_the_guides_19_configurations() -> None:
    layouts = maximal_layouts(A100, CLASSIC)
    assert len(layouts) == 19
    assert (("7g.40gb", 0),) in layouts
    assert tuple(("1g.5gb", s) for s in range(7)) in layouts
    assert (("3g.20gb", 0), ("3g.20gb", 4)) in layouts
    assert (("3g.20gb", 4), ("4g.20gb", 0)) in layouts
    # 4g + 3g + 1g would need 9 slices
    assert not any(len(lay) == 3 and {n for n, _ in lay} == {"4g.20gb", "3g.20gb", "1g.5gb"}
                   for lay in layouts)


def test_a100_layouts_with_every_profile() -> None:
    layouts = maximal_layouts(A100)
    assert tuple(("1g.10gb", s) for s in (0, 2, 4, 6)) in layouts
    assert tuple(sorted([("1g.5gb+me", 0)] + [("1g.5gb", s) for s in range(1, 7)])) in layouts
    assert len(layouts) == len(set(layouts))
    assert layouts == sorted(layouts, key=lambda lay: [(s, n) for n, s in lay])


def brute_maximal(model: GpuModel, names: list[str]) -> set[tuple[tuple[str, int], ...]]:
    cands = [(P(model, n), s) for n in names for s in P(model, n).placements]
    valid = [c for r in range(len(cands) + 1) for c in itertools.combinations(cands, r)
             if brute_fits(model, list(c))]
    out = set()
    for lay in valid:
        if not any(brute_fits(model, list(lay) + [c]) for c in cands if c not in lay):
            out.add(tuple(sorted((p.name, s) for p, s in lay)))
    return out


@pytest.mark.parametrize("model_id,names", [
    ("a30", None),
    ("a100-40gb", CLASSIC),
    ("rtx-pro-6000", ["1g.24gb", "1g.24gb+me.all", "1g.24gb-me", "2g.48gb", "2g.48gb-me"]),
])
def test_maximal_layouts_equal_brute_force(model_id: str, names: list[str] | None) -> None:
    model = MODELS[model_id]
    names = names or [p.name for p in model.gi_profiles]
    assert set(maximal_layouts(model, names)) == brute_maximal(model, names)


@pytest.mark.parametrize("model_id", sorted(MODELS))
def test_no_maximal_layout_can_take_another_instance(model_id: str) -> None:
    model = MODELS[model_id]
    layouts = maximal_layouts(model)
    assert layouts
    for lay in layouts:
        inst = [(P(model, n), s) for n, s in lay]
        assert fits(model, inst)
        for p in model.gi_profiles:
            assert free_starts(model, p, inst) == [], (lay, p.name)
    # the whole GPU as one instance is always a maximal layout
    full = max(model.gi_profiles, key=lambda p: (p.placement_size, -p.enum))
    assert ((full.name, 0),) in layouts


def test_unknown_profile_name_in_restriction() -> None:
    with pytest.raises(KeyError):
        maximal_layouts(A100, ["9g.99gb"])


# ---------------------------------------------------------------- place_preserving

def test_unchanged_layout_keeps_everything() -> None:
    existing = [(P(A100, "3g.20gb"), 4), (P(A100, "2g.10gb"), 0), (P(A100, "1g.5gb"), 2)]
    r = place_preserving(A100, existing, [(p, None) for p, _ in existing])
    assert r is not None
    assert r.keep == (0, 1, 2) and r.delete == () and r.create == ()
    assert r.assignment == (0, 1, 2)


def test_keeps_the_most_and_deletes_the_rest() -> None:
    one, three = P(A100, "1g.5gb"), P(A100, "3g.20gb")
    existing = [(one, s) for s in range(7)]
    r = place_preserving(A100, existing, [(three, None)] + [(one, None)] * 4)
    assert r is not None
    assert r.keep == (0, 1, 2, 3) and r.delete == (4, 5, 6)
    assert r.create == ((three, 4),)
    assert r.assignment == (("new", 0), 0, 1, 2, 3)


def test_pin_is_honoured_even_when_it_keeps_fewer() -> None:
    one, three = P(A100, "1g.5gb"), P(A100, "3g.20gb")
    existing = [(one, s) for s in range(7)]
    r = place_preserving(A100, existing, [(three, 0)] + [(one, None)] * 3)
    assert r is not None
    assert r.create == ((three, 0),) and r.keep == (4, 5, 6)


def test_impossible_requests_return_none() -> None:
    one, three, four = P(A100, "1g.5gb"), P(A100, "3g.20gb"), P(A100, "4g.20gb")
    assert place_preserving(A100, [], [(four, None), (three, None), (one, None)]) is None
    assert place_preserving(A100, [], [(three, 2)]) is None  # illegal pin
    assert place_preserving(A100, [], [(one, None)] * 8) is None
    assert place_preserving(A100, [], [(P(A30, "1g.6gb"), None)]) is None  # foreign


def test_driver_order_trap_is_avoided() -> None:
    """-cgi 19,19,14,9 fails when the driver places (docs/reference/mig-hardware.md 2.2);
    the math finds the one arrangement that fits."""
    one, two, three = P(A100, "1g.5gb"), P(A100, "2g.10gb"), P(A100, "3g.20gb")
    r = place_preserving(A100, [], [(one, None), (one, None), (two, None), (three, None)])
    assert r is not None
    assert fits(A100, r.create)
    assert (three, 4) in r.create


def test_resize_in_place_on_rtx() -> None:
    one, two = P(RTX, "1g.24gb"), P(RTX, "2g.48gb")
    existing = [(one, 0), (one, 3), (one, 6), (one, 9)]
    r = place_preserving(RTX, existing, [(two, None), (one, None), (one, None)])
    assert r is not None
    assert len(r.keep) == 2 and len(r.delete) == 2 and len(r.create) == 1


def brute_best_kept(model: GpuModel, existing: list[tuple[GiProfile, int]],
                    wanted: list[tuple[GiProfile, int | None]]) -> int | None:
    """Try every subset of existing instances to keep (largest first) and every start for
    the rest; the largest subset that can be completed is the optimum."""
    for size in range(min(len(existing), len(wanted)), -1, -1):
        for subset in itertools.combinations(range(len(existing)), size):
            kept = [existing[i] for i in subset]
            # match kept instances to wanted items of the same profile (and pin)
            for match in itertools.permutations(range(len(wanted)), size):
                if not all(wanted[w][0].id == kept[k][0].id
                           and wanted[w][1] in (None, kept[k][1])
                           for k, w in enumerate(match)):
                    continue
                rest = [wanted[w] for w in range(len(wanted)) if w not in match]
                options = [[pin] if pin is not None else list(p.placements) for p, pin in rest]
                for starts in itertools.product(*options):
                    layout = kept + [(p, s) for (p, _), s in zip(rest, starts, strict=True)]
                    if brute_fits(model, layout):
                        return size
    return None


small_case = st.sampled_from(["a30", "a100-40gb", "rtx-pro-6000"]).flatmap(
    lambda mid: st.tuples(
        st.just(MODELS[mid]),
        st.lists(st.tuples(st.sampled_from(MODELS[mid].gi_profiles),
                           st.integers(0, MODELS[mid].memory_slices - 1)), max_size=5),
        st.lists(st.tuples(st.sampled_from(MODELS[mid].gi_profiles),
                           st.one_of(st.none(), st.integers(0, MODELS[mid].memory_slices - 1))),
                 max_size=4),
    )
)


@settings(max_examples=120, deadline=None)
@given(small_case)
def test_place_preserving_is_optimal_and_valid(case: Any) -> None:
    model, raw_existing, wanted = case
    existing: list[tuple[GiProfile, int]] = []
    for inst in raw_existing:  # a real GPU only ever has a fitting set
        if brute_fits(model, existing + [inst]):
            existing.append(inst)
    r = place_preserving(model, existing, wanted)
    best = brute_best_kept(model, existing, wanted)
    if best is None:
        assert r is None
        return
    assert r is not None
    assert len(r.keep) == best
    assert sorted(r.keep + r.delete) == list(range(len(existing)))
    final: list[tuple[GiProfile, int]] = []
    for (p, pin), a in zip(wanted, r.assignment, strict=True):
        if isinstance(a, tuple):
            inst = r.create[a[1]]
        else:
            inst = existing[a]
            assert a in r.keep
        assert inst[0] == p and (pin is None or inst[1] == pin)
        final.append(inst)
    assert brute_fits(model, final)
    assert len(r.create) == len(wanted) - len(r.keep)
    # deterministic, and independent of the order the inputs come in
    assert place_preserving(model, existing, wanted) == r
    again = place_preserving(model, existing[::-1], wanted[::-1])
    assert again is not None
    assert sorted(final_layout(existing[::-1], again)) == sorted(final_layout(existing, r))


def final_layout(existing: list[tuple[GiProfile, int]], r: Placement) -> list[tuple[str, int]]:
    out = []
    for a in r.assignment:
        p, s = r.create[a[1]] if isinstance(a, tuple) else existing[a]
        out.append((p.name, s))
    return out
