"""The checks before an apply changes anything: a stale plan, handlers' preflight."""

from __future__ import annotations

from typing import TYPE_CHECKING

from planner.apply import plan_api
from planner.apply.handler_table import handler_for
from planner.apply.handlers import ApplyContext
from planner.apply.results import PlanRefused
from planner.host.state import HostState
from planner.vocab.plan import Plan

if TYPE_CHECKING:
    from planner.config.models import ClusterConfig


def check_not_stale(plan: Plan, host: HostState, config: ClusterConfig) -> None:
    """Refuse (PlanRefused) when the host no longer has the fingerprint the plan was made
    against, listing what changed."""
    current = plan_api.fingerprint(host, config)
    planned = plan_api.plan_fingerprint(plan)
    if current == planned:
        return
    lines = plan_api.drift(plan, host, config) or [
        "(a part of the host the plan does not act on: GPUs it does not touch, domains, "
        "processes on a GPU whose mode it changes, or a MIG UUID the config names)"]
    detail = "\n".join(f"  {line}" for line in lines)
    raise PlanRefused(
        f"{host.uri}: the plan is stale: the host changed since it was made "
        f"(fingerprint {planned[:12]} in the plan, {current[:12]} now); nothing was changed.\n"
        f"What changed on the host since the plan:\n{detail}\n"
        "Make a new plan with `aihow plan` and review it."
    )


def preflight(plan: Plan, host: HostState, ctx: ApplyContext) -> list[str]:
    problems: list[str] = []
    for change in plan.changes:
        problems.extend(handler_for(change).preflight(host, change, ctx))
    return problems
