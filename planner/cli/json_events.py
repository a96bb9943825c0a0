"""``--format json`` for apply, rollback and recover: JSON lines on stdout, one object per
event, each with a ``type`` (schema in docs/reference/json-output.md).

A run prints ``plan`` (apply, rollback) or ``recover`` first, then the executor's progress
events in plan order, then exactly one ``result``; a refusal or other error prints one
``error`` line instead of ``result`` (the exit status says the same as in text). Every
line is a complete JSON object with sorted keys, flushed as it happens, so a tool can
follow a long apply as it runs.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

from planner.cli import output

if TYPE_CHECKING:
    from planner.apply.events import Event
    from planner.apply.results import ApplyResult, RecoverResult
    from planner.vocab.plan import Plan

SCHEMA_VERSION = 1


def emit(record: dict[str, Any]) -> None:
    line = json.dumps({"schema": SCHEMA_VERSION, **record}, sort_keys=True)
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
    output.log(line)


def plan_record(plan: Plan, *, command: str) -> dict[str, Any]:
    return {
        "type": "plan",
        "command": command,
        "plan_sha256": str(plan.plan_sha256),
        "host_uri": str(plan.host.uri),
        "has_changes": plan.has_changes,
        "summary": dict(plan.summary),
        "actions": [{"id": a.id, "action": str(a.action), "address": str(a.address),
                     "destructive": a.destructive, "needs_reset": a.needs_reset}
                    for a in plan.actions],
        **({} if plan.hooks.empty else {"hooks": plan.hooks.model_dump(mode="json")}),
    }


def event_record(event: Event) -> dict[str, Any]:
    record: dict[str, Any] = {
        "type": event.type, "message": event.message, "action_id": event.action_id,
        "address": event.address, "index": event.index, "total": event.total}
    if event.hook is not None:
        record["hook"] = event.hook
    return record


def apply_result_record(result: ApplyResult) -> dict[str, Any]:
    return {
        "type": "result",
        "outcome": result.outcome,
        "ok": result.ok,
        "total": result.total,
        "done": list(result.done),
        "failed": [{"address": a, "error": e} for a, e in result.failed],
        "undone": list(result.undone),
        "back_at_start": result.back_at_start,
        "fingerprint_after": result.fingerprint_after,
        "generation": result.generation.number if result.generation else None,
        "resource_states": list(result.resource_states),
        "warnings": list(result.warnings),
        "hooks": [run.record() for run in result.hooks],
    }


def recover_result_record(result: RecoverResult, forward: bool) -> dict[str, Any]:
    return {
        "type": "result",
        "outcome": result.outcome,
        "ok": result.outcome == "nothing" or (result.outcome != "failed" and
                                              bool(result.reached)),
        "direction": "forward" if forward else "back",
        "steps": list(result.steps),
        "reached": result.reached,
        "error": result.error,
        "generation": result.generation.number if result.generation else None,
        "resource_states": list(result.resource_states),
        "warnings": list(result.warnings),
        "hooks": [run.record() for run in result.hooks],
    }


def error_record(message: str, exit_code: int) -> dict[str, Any]:
    return {"type": "error", "message": message, "exit_code": exit_code}
