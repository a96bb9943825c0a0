"""In which order and with what parallelism the steps of a plan run."""

from __future__ import annotations

from collections.abc import Sequence

from planner.apply.steps import Step


def waves(actions: Sequence[Step]) -> list[list[int]]:
    """Group step indexes into waves. Steps of one branch stay in plan order in
    successive waves; a step without a branch waits for everything before it and
    everything after it waits for it; ``depends_on`` is always honoured."""
    wave_of: dict[int, int] = {}
    last_in_branch: dict[str, int] = {}
    barrier = -1
    highest = -1
    out: list[list[int]] = []
    for index, action in enumerate(actions):
        branch = getattr(action, "branch", None)
        deps = [wave_of[d] for d in (getattr(action, "depends_on", None) or ()) if d in wave_of]
        if branch is None:
            w = highest + 1
            barrier = w
        else:
            w = max([barrier + 1, last_in_branch.get(branch, -1) + 1, *(d + 1 for d in deps)])
            last_in_branch[branch] = w
        wave_of[action.id] = w
        highest = max(highest, w)
        while len(out) <= w:
            out.append([])
        out[w].append(index)
    return [sorted(w) for w in out if w]
