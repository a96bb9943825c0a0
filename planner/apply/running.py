"""The running domains a plan stops, and the operator's gate on that.

A plan shuts a running domain down as its own step: the delete of
``domain[NAME].running`` before the domain is undefined, or its replace around a change
to a slice the running domain uses (shut down first, started again after the new slice
is attached; ``planner.plan.diff``). Those steps carry out ``--restart-running-vms``:
apply refuses a plan with any of them unless the operator passed the flag, and a failed
apply restarts what it stopped by undoing them (rollback, or ``aihow recover``).
"""

from __future__ import annotations

from planner.vocab import Action, Kind
from planner.vocab.plan import Plan

RESTART_FLAG = "--restart-running-vms"


def stopped_domains(plan: Plan) -> dict[str, list[str]]:
    """Running domain the plan shuts down -> the addresses of the steps that wait for
    its shutdown (what is taken from it, in plan order)."""
    out: dict[str, list[str]] = {}
    for change in plan.changes:
        if change.kind is not Kind.RUNNING or change.before is None:
            continue
        if change.action is Action.DELETE:
            stop = change.id
        elif change.action is Action.REPLACE and change.delete_step is not None:
            stop = change.delete_step.id
        else:
            continue
        out[str(change.address.domain_name)] = [
            str(c.address) for c in plan.changes
            if c.address != change.address and stop in c.depends_on
            or (c.delete_step is not None and stop in c.delete_step.depends_on)]
    return dict(sorted(out.items()))


def refusal(stopped: dict[str, list[str]]) -> str:
    lines = [f"{len(stopped)} running VM(s) use what this plan deletes or replaces:"]
    for name, addresses in stopped.items():
        lines.append(f"  {name}: {', '.join(addresses)}")
    lines.append(f"rerun with {RESTART_FLAG} to shut them down (ACPI, destroyed after "
                 "--shutdown-timeout seconds), change the slices and start again those that "
                 "stay; nothing was changed")
    return "\n".join(lines)
