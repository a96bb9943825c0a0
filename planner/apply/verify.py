"""Judging a probed host against a plan: is each resource at its before or after side."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from planner.apply.handler_table import handler_for, observe
from planner.apply.steps import Side, Step
from planner.errors import AihowError
from planner.host.state import HostState
from planner.vocab.plan import Change


def observe_step(host: HostState, step: Step) -> Side | None:
    """The side of ``step`` the host is at; None when neither, or when it cannot tell."""
    try:
        return observe(host, step)
    except AihowError:
        return None


def at_side(host: HostState, change: Change, side: Side) -> bool:
    """Whether the host has the change's resource as the change's ``side`` says: each
    address is judged once, a replace by its final state (not by its delete step)."""
    try:
        handler = handler_for(change)
        return handler.matches(host, change.address,
                               change.before if side == "before" else change.after)
    except AihowError:
        return False


def not_at(host: HostState, changes: Sequence[Change], side: Side) -> list[str]:
    """The addresses of the changes whose resource is not at ``side``."""
    return [str(c.address) for c in changes if not at_side(host, c, side)]


def resource_states(host: HostState, changes: Sequence[Change],
                    journal: Path | None) -> list[str]:
    """One line per planned resource: where the probed host has it."""
    lines = []
    for c in changes:
        where = "as the plan wanted" if at_side(host, c, "after") else \
            "as before the apply" if at_side(host, c, "before") else "neither"
        lines.append(f"{c.address}: {where} ({c.action} planned)")
    if journal is not None:
        lines.append(f"journal kept at {journal}; run `aihow recover` when the cause is fixed")
    return lines
