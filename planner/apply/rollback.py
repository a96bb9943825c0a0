"""Undoing a failed apply: the failed steps that left a trace, then the completed ones
in reverse; then say whether the host is back at the plan's start."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from planner.apply import plan_api
from planner.apply.control import RunControl, run_with_deadline
from planner.apply.events import Event, EventSink, error_text
from planner.apply.handler_table import handler_for
from planner.apply.handlers import ApplyContext
from planner.apply.journal import JournalWriter
from planner.apply.results import ApplyResult
from planner.apply.steps import Step
from planner.apply.verify import observe_step, resource_states
from planner.host.environment import Environment
from planner.vocab.plan import Plan

if TYPE_CHECKING:
    from planner.config.models import ClusterConfig


def roll_back(access: Environment, ctx: ApplyContext, writer: JournalWriter,
              plan: Plan, config: ClusterConfig, actions: list[Step],
              completed: list[int], failed: list[int], result: ApplyResult,
              start_fp: str, on_event: EventSink,
              control: RunControl | None = None,
              before_readback: Callable[[], None] | None = None) -> ApplyResult:
    """Undo and fill in ``result``: "rolled-back" (journal closed) or, when an undo
    fails, "rollback-failed" (journal kept, every resource's state described). After a
    stop request the rollback runs only while the stop grace lasts (and not at all after
    a second signal); cut short, it is "interrupted" and the journal stays for
    ``aihow recover``. A VM the apply shut down is started again by the undo of its
    ``running`` step. ``before_readback`` runs then whatever became of the undo (the
    post_reset hooks: what they start again must run even when the host is not back)."""
    control = control or RunControl()
    total = len(actions)
    host = access.probe()
    to_undo = [i for i in reversed(failed) if observe_step(host, actions[i]) != "before"]
    to_undo += list(reversed(completed))
    writer.note("rollback started")
    on_event(Event("note", f"rolling back {len(to_undo)} action(s)"))
    undo_error = None
    cut_short = False
    for i in to_undo:
        a = actions[i]
        if control.stopped and (control.grace_left() <= 0 or control.stop_now.is_set()):
            cut_short = True
            break
        writer.intent(str(a.id), "undo", a.address)
        on_event(Event("undo-start", handler_for(a).inverse(a), a.id, a.address, i + 1, total))
        try:
            run_with_deadline(partial(handler_for(a).ensure, ctx, a, "before"),
                              control.step_timeout, f"undo {a.address}", control.stop_now)
        except Exception as exc:  # noqa: BLE001 - any failure stops the rollback
            undo_error = error_text(exc)
            writer.failed(str(a.id), "undo", undo_error)
            on_event(Event("undo-failed", undo_error, a.id, a.address, i + 1, total))
            break
        writer.done(str(a.id), "undo")
        result.undone.append(a.address)
        on_event(Event("undo-done", handler_for(a).inverse(a), a.id, a.address, i + 1, total))
    if before_readback is not None:
        before_readback()
    host = access.probe()
    fp = plan_api.fingerprint(host, config)
    result.fingerprint_after = fp
    result.back_at_start = fp == start_fp
    if cut_short:
        result.outcome = "interrupted"
        result.resource_states = resource_states(host, plan.changes, writer.path)
        writer.note("rollback cut short by the stop request", states=result.resource_states)
        return result
    if undo_error is not None:
        result.outcome = "rollback-failed"
        result.resource_states = resource_states(host, plan.changes, writer.path)
        writer.note("rollback stopped: an undo failed", states=result.resource_states)
        return result
    result.outcome = "rolled-back"
    archived = writer.end("rolled-back", fp)
    result.journal_path = None
    if not result.back_at_start:
        # The journal is closed and archived: nothing is left for `aihow recover`.
        result.resource_states = [
            *resource_states(host, plan.changes, None),
            f"the journal is archived at {archived} (nothing is left to recover); make a "
            "new plan with `aihow plan` to bring the host to the config",
        ]
    return result
