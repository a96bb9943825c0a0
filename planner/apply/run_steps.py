"""Running a plan's steps forward: journal each intent, carry it out, journal the
outcome, wave by wave (``schedule.waves``), branches of a wave in threads."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from planner.apply.crash_hook import CrashHook
from planner.apply.events import Event, EventSink, error_text
from planner.apply.handler_table import handler_for
from planner.apply.handlers import ApplyContext
from planner.apply.journal import JournalWriter
from planner.apply.results import ApplyResult
from planner.apply.schedule import waves
from planner.apply.steps import Side, Step


def run_forward(ctx: ApplyContext, writer: JournalWriter, actions: list[Step],
                result: ApplyResult, crash: CrashHook, *, parallel: bool,
                on_event: EventSink) -> tuple[list[int], list[int]]:
    """Run ``actions`` until one fails. Returns the indexes of the completed steps (in
    the order their outcome was journaled) and of the failed ones."""
    total = len(actions)
    completed: list[int] = []
    failed: list[int] = []
    pool = ThreadPoolExecutor(max_workers=8) if parallel else None
    try:
        for wave in waves(actions):
            for i in wave:
                a = actions[i]
                writer.intent(str(a.id), "do", a.address)
                crash.seen += 1
                crash.at("intent", crash.seen)
                on_event(Event("action-start", a.describe(), a.id, a.address, i + 1, total))
            outcomes = _run_wave(ctx, [actions[i] for i in wave], "after", pool)
            crash.at("acted", crash.seen)
            for i, (ok, info) in zip(wave, outcomes, strict=True):
                a = actions[i]
                if ok:
                    writer.done(str(a.id), "do", info)
                    completed.append(i)
                    result.done.append(a.address)
                    on_event(Event("action-done", a.describe(), a.id, a.address, i + 1, total))
                else:
                    writer.failed(str(a.id), "do", str(info["error"]))
                    failed.append(i)
                    result.failed.append((a.address, str(info["error"])))
                    on_event(Event("action-failed", str(info["error"]), a.id, a.address,
                                   i + 1, total))
            crash.at("outcome", len(completed) + len(failed))
            if failed:
                break
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
    return completed, failed


def _run_wave(ctx: ApplyContext, wave: list[Step], side: Side,
              pool: ThreadPoolExecutor | None) -> list[tuple[bool, dict[str, Any]]]:
    def one(action: Step) -> tuple[bool, dict[str, Any]]:
        try:
            return True, handler_for(action).ensure(ctx, action, side)
        except Exception as exc:  # noqa: BLE001 - reported, journaled, rolled back
            return False, {"error": error_text(exc)}

    if pool is None or len(wave) == 1:
        return [one(a) for a in wave]
    return list(pool.map(one, wave))
