"""Running a plan's steps forward: each step starts as soon as the schedule allows
(``schedule.Schedule``), in a thread of its own with a deadline (``control``); its
intent is journaled before it starts and its outcome when it ends.

The journal and the events are written by this (the calling) thread only, in the order
things happen; which of two independent steps comes first in them depends on timing.
After a failure, a timeout or a stop request nothing new starts; the steps already
running are waited for (those past their deadline, or past the stop grace, are
abandoned and count as failed), then the caller rolls back.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from planner.apply.control import RunControl
from planner.apply.crash_hook import CrashHook
from planner.apply.events import Event, EventSink, error_text
from planner.apply.handler_table import handler_for
from planner.apply.handlers import ApplyContext
from planner.apply.journal import JournalWriter
from planner.apply.results import ApplyResult
from planner.apply.schedule import Schedule
from planner.apply.steps import Step


@dataclass
class ForwardRun:
    """Indexes of the steps that completed (in the order their outcome was journaled),
    failed, or were abandoned (no answer; they may yet land)."""

    completed: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    abandoned: list[int] = field(default_factory=list)
    interrupted: bool = False


def run_forward(ctx: ApplyContext, writer: JournalWriter, actions: list[Step],
                result: ApplyResult, crash: CrashHook, *, parallel: bool,
                on_event: EventSink, control: RunControl | None = None) -> ForwardRun:
    """Run ``actions`` until all are done, one fails, or a stop is requested."""
    control = control or RunControl()
    total = len(actions)
    sched = Schedule(actions, parallel=parallel)
    outcomes: queue.Queue[tuple[int, bool, dict[str, Any]]] = queue.Queue()
    deadline: dict[int, float] = {}
    run = ForwardRun()

    def one(i: int) -> None:
        a = actions[i]
        try:
            outcomes.put((i, True, handler_for(a).ensure(ctx, a, "after")))
        except Exception as exc:  # noqa: BLE001 - reported, journaled, rolled back
            outcomes.put((i, False, {"error": error_text(exc)}))

    def record(i: int, ok: bool, info: dict[str, Any]) -> None:
        """Journal an outcome (made durable by the batch's ``sync``)."""
        a = actions[i]
        sched.finish(i)
        if ok:
            ctx.done[a.id] = info
            writer.done(str(a.id), "do", info, durable=False)
            run.completed.append(i)
            result.done.append(a.address)
            on_event(Event("action-done", a.describe(), a.id, a.address, i + 1, total))
        else:
            writer.failed(str(a.id), "do", str(info["error"]), durable=False)
            run.failed.append(i)
            result.failed.append((a.address, str(info["error"])))
            on_event(Event("action-failed", str(info["error"]), a.id, a.address, i + 1, total))

    while True:
        if control.stopped and not run.interrupted:
            run.interrupted = True
            writer.note("stop requested", signal=control.signal_name)
            on_event(Event("note", f"{control.signal_name or 'stop'} received: no new step "
                                   "starts; waiting for the running ones"))
        if not run.failed and not run.interrupted:
            # Every intent of the batch is durable (one fsync) before any of them starts.
            starting = sched.ready()
            for i in starting:
                a = actions[i]
                writer.intent(str(a.id), "do", a.address, durable=False)
            if starting:
                writer.sync()
            for i in starting:
                a = actions[i]
                crash.seen += 1
                crash.at("intent", crash.seen)
                on_event(Event("action-start", a.describe(), a.id, a.address, i + 1, total))
                sched.start(i)
                deadline[i] = time.monotonic() + control.step_timeout
                threading.Thread(target=one, args=(i,), name=f"aihow step {a.id}",
                                 daemon=True).start()
        if not deadline:
            break
        wait = min(min(deadline.values()) - time.monotonic(), 0.2)
        try:
            answers = [outcomes.get(timeout=max(wait, 0.0))]
        except queue.Empty:
            _abandon_late(actions, deadline, control, run, record)
            writer.sync()
            continue
        while True:  # whatever else has finished meanwhile joins the batch
            try:
                answers.append(outcomes.get_nowait())
            except queue.Empty:
                break
        answers = [x for x in answers if x[0] in deadline]  # an abandoned step's late
        if not answers:                                     # answer: the rollback judges it
            continue
        crash.at("acted", crash.seen)
        for i, ok, info in sorted(answers):
            del deadline[i]
            record(i, ok, info)
        writer.sync()
        crash.at("outcome", len(run.completed) + len(run.failed))
    return run


def _abandon_late(actions: list[Step], deadline: dict[int, float], control: RunControl,
                  run: ForwardRun, record: Any) -> None:
    """Give up on steps past their deadline, or on every running step once the stop
    grace is over: each fails with a message saying so."""
    now = time.monotonic()
    grace_over = run.interrupted and (control.grace_left() <= 0 or control.stop_now.is_set())
    for i in sorted(deadline):
        expired = now >= deadline[i]
        if not expired and not grace_over:
            continue
        del deadline[i]
        run.abandoned.append(i)
        why = (f"no answer after {control.step_timeout:g} s; abandoned (it may still "
               "finish on the host)") if expired else \
            "still running when the stop grace ended; abandoned (it may still finish)"
        record(i, False, {"error": f"{actions[i].address}: {why}"})
