"""On every layout transition the plan's instance creates + deletes equal the minimum."""

from __future__ import annotations

import random
import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from planner.hardware.catalog import all_models

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
from transitions import minimum, planned_cost, rebuild_cost, transition  # noqa: E402


@settings(max_examples=150, deadline=None)
@given(model=st.sampled_from(all_models()), seed=st.integers(0, 2**32 - 1))
def test_planned_instance_changes_are_minimal(model, seed) -> None:  # type: ignore[no-untyped-def]
    before, after = transition(model, random.Random(seed))
    best = minimum(model, before, after)
    assert planned_cost(model, before, after) == best
    assert best <= rebuild_cost(before, after)


def test_a_known_transition_keeps_the_instances_that_can_stay() -> None:
    model = next(m for m in all_models() if m.id == "a100-40gb")
    p = {q.name: q for q in model.gi_profiles}
    before = [(p["3g.20gb"], 0), (p["2g.10gb"], 4), (p["1g.5gb"], 6)]
    after = [p["3g.20gb"], p["1g.5gb"], p["1g.5gb"], p["1g.5gb"]]
    # keep 3g@0 and 1g@6, delete 2g@4, create two 1g: 3 operations; mig-parted needs 7
    assert minimum(model, before, after) == planned_cost(model, before, after) == 3
    assert rebuild_cost(before, after) == 7
