"""A plan as ``aihow show`` reads it: everything but the changes typed, the changes as
their plan-file values (``change_json``), checked.

Building a typed ``Change`` costs more than parsing its JSON, and a review only prints
the values. A plan file whose changes are all in canonical form (as aihow writes them:
``planner.vocab.canonical``) is checked in pydantic-core as it is parsed, and its
changes are kept as parsed; such a file is one ``parse_plan`` accepts, with the same
values. Any other file (malformed, edited, reformatted) is read by ``parse_plan``,
which refuses it with its one-line error or accepts it, and its typed changes are
turned into their values. Either way the renderings (``planner.plan.render``) see the
same values, so there is one renderer and one set of error messages.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from planner.plan.model import (
    Plan,
    digest_matches,
    parse_plan,
    read_plan_text,
    supported_version,
)
from planner.vocab.canonical import plan_validator
from planner.vocab.kinds import Action
from planner.vocab.plan import (
    _without_empty_snapshot,
    change_json,
    plan_text,
    summarize_json,
)

__all__ = ["PlanReview", "load_review", "parse_review"]


@dataclass(frozen=True, slots=True)
class PlanReview:
    """``plan`` without its actions (host, config, summary, notes, hooks, digest), and
    ``actions``: each change's values, in the plan's order."""

    plan: Plan
    actions: list[dict[str, Any]]

    @classmethod
    def of(cls, plan: Plan) -> PlanReview:
        return cls(plan.model_copy(update={"actions": ()}),
                   [change_json(a) for a in plan.actions])

    @property
    def changes(self) -> list[dict[str, Any]]:
        """The changes apply carries out (no-op entries are for review only)."""
        return [a for a in self.actions if a["action"] != Action.NO_OP]

    @property
    def has_changes(self) -> bool:
        return any(a["action"] != Action.NO_OP for a in self.actions)

    def to_json(self) -> str:
        """The plan file's canonical text (``Plan.to_json`` of the typed plan)."""
        rest = _without_empty_snapshot(self.plan.model_dump(mode="json", exclude={"actions"}))
        return plan_text({**rest, "actions": self.actions})


def load_review(path: str | Path) -> PlanReview:
    """Read a plan file for review; PlanFileError as ``load_plan`` says it."""
    return parse_review(read_plan_text(path), str(Path(path)))


def parse_review(text: str, where: str = "plan") -> PlanReview:
    # tens of thousands of acyclic values: the cyclic collector would walk them for nothing
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        review = _as_written(text)
        return review if review is not None else PlanReview.of(parse_plan(text, where))
    finally:
        if was_enabled:
            gc.enable()


def _as_written(text: str) -> PlanReview | None:
    """The review of a plan whose changes are in canonical form and which passes every
    check of ``parse_plan``; None for any other text (``parse_plan`` then decides)."""
    try:
        data = plan_validator().validate_json(text)
    except ValidationError:
        return None
    if "format_version" not in data or not supported_version(data):
        return None
    actions: list[dict[str, Any]] = data["actions"]
    try:
        plan = Plan.model_validate({**data, "actions": ()})
    except ValidationError:
        return None
    if not _steps_in_order(actions) or not digest_matches(text, data, plan.plan_sha256):
        return None
    if dict(plan.summary) != summarize_json(actions):
        return None
    return PlanReview(plan, actions)


def _steps_in_order(actions: list[dict[str, Any]]) -> bool:
    """Whether the steps pass ``Plan``'s graph check and ``Change``'s replace check for
    the simplest reason: ids unique, each ``depends_on`` a smaller id of a step of the
    plan (ids number the steps in execution order, so a plan aihow made has only such
    dependencies, and they can form no cycle), a delete_step on the replaces alone."""
    replaces = [a for a in actions if a["delete_step"] is not None]
    if len(replaces) != sum(a["action"] == Action.REPLACE for a in replaces) or len(
            replaces) != sum(a["action"] == Action.REPLACE for a in actions):
        return False
    ids = {a["id"] for a in actions}
    ids.update(a["delete_step"]["id"] for a in replaces)
    if len(ids) != len(actions) + len(replaces):
        return False
    waits = [(a["id"], a["depends_on"]) for a in actions if a["depends_on"]]
    waits += [(a["delete_step"]["id"], a["delete_step"]["depends_on"]) for a in replaces]
    return all(dep < sid and dep in ids for sid, deps in waits for dep in deps)
