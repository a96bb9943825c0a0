"""Plan-making: resolve, graph, diff, the plan file and its renderings.

Pure given a HostState: nothing here touches the host or imports an adapter.
"""

from planner.plan.fingerprint import fingerprint
from planner.plan.make import make_plan, plan_requests
from planner.plan.model import Change, Plan, PlanFileError, dump_plan, load_plan, parse_plan
from planner.plan.render import render_markdown, render_text
from planner.plan.resolve import ResolveError, resolve

__all__ = [
    "Change",
    "Plan",
    "PlanFileError",
    "ResolveError",
    "dump_plan",
    "fingerprint",
    "load_plan",
    "make_plan",
    "parse_plan",
    "plan_requests",
    "render_markdown",
    "render_text",
    "resolve",
]
