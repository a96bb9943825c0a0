"""Finishing an interrupted apply from its journal (``aihow recover``)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, Literal

from planner.apply import plan_api
from planner.apply.bookkeeping import maybe_generation, record_claims
from planner.apply.control import RunControl, run_with_deadline
from planner.apply.events import Event, EventSink, error_text
from planner.apply.handler_table import handler_for
from planner.apply.handlers import ApplyContext
from planner.apply.hooks import HookRunner, plan_env
from planner.apply.journal import JournalView, JournalWriter, open_journal
from planner.apply.lock import HostLock
from planner.apply.results import ApplyInput, RecoverResult
from planner.apply.steps import Side, Step, expand, plan_steps
from planner.apply.verify import not_at, resource_states
from planner.errors import AihowError
from planner.host.environment import Environment
from planner.host.libvirt_objects import DEFAULT_SHUTDOWN_TIMEOUT
from planner.vocab import MIG_KINDS, Action
from planner.vocab.plan import Plan


def recover(access: Environment, state_dir: Path, *, forward: bool = False,
            allow_reset: bool = False, command: str = "aihow recover",
            on_event: EventSink = lambda e: None, lock_timeout: float = 0.0) -> RecoverResult:
    """Finish an interrupted apply from its journal: bring every resource of its plan
    back to its ``before`` side, or with ``forward`` to its ``after`` side (see
    ``recovery_steps`` for the order). Handlers are idempotent, so it does not matter
    whether the interrupted step had landed, and recover may itself be interrupted and
    run again. After a power loss the driver has forgotten GPU and compute instances
    (and, on Hopper, MIG mode); the plan's no-op entries record the MIG resources the
    apply meant to keep, so those are restored too."""
    with HostLock(state_dir, command, lock_timeout):
        view = open_journal(state_dir)
        if view is None:
            return RecoverResult("nothing")
        begin = view.begin
        if begin.get("host_uri") != access.host_uri:
            raise AihowError(f"{view.path}: the interrupted apply was on host "
                             f"{begin.get('host_uri')!r}, not {access.host_uri!r}")
        if begin.get("libvirt_uri") and access.libvirt_uri is None:
            access = access.with_libvirt_uri(str(begin["libvirt_uri"]))
        plan = plan_api.plan_from_dict(begin["plan"])
        changes = plan.changes
        ctx = ApplyContext(access, allow_reset=allow_reset or bool(begin.get("allow_reset")),
                           shutdown_timeout=float(begin.get("shutdown_timeout",
                                                            DEFAULT_SHUTDOWN_TIMEOUT)))
        ctx.done.update({int(r.action_id): r.result for r in view.actions.values()
                         if r.result and r.action_id.isdigit()})
        writer = JournalWriter.reopen(view.path, view.next_seq)
        writer.note("recover started", forward=forward, torn_tail=view.torn_tail)
        result = RecoverResult("failed", journal_path=view.path)
        control = RunControl()
        side: Side = "after" if forward else "before"
        op: Literal["redo", "undo"] = "redo" if forward else "undo"
        todo = recovery_steps(plan, side)
        hooks = _owed_hooks(view, plan, state_dir, writer, on_event)

        def restart_held(outcome: str) -> None:
            """post_reset, when the apply ran pre_reset and not post_reset: before the
            host is read back, so what pre_reset stopped counts as running again."""
            if hooks is not None:
                hooks.finish_reset(outcome)
                result.hooks = list(hooks.runs)

        try:
            if not forward and _steps_all_done(view, plan):
                finished = _close_finished(access, state_dir, writer, plan, begin, command,
                                           result, restart_held)
                if finished is not None:
                    return finished
            for i, a in todo:
                writer.intent(str(a.id), op, a.address)
                on_event(Event("undo-start" if op == "undo" else "action-start",
                               a.describe(), a.id, a.address, i + 1, len(todo)))
                try:
                    info = run_with_deadline(partial(handler_for(a).ensure, ctx, a, side),
                                             control.step_timeout, f"{op} {a.address}")
                except Exception as exc:  # noqa: BLE001 - stop, keep the journal
                    result.error = f"{a.address}: {error_text(exc)}"
                    writer.failed(str(a.id), op, result.error)
                    restart_held("failed")
                    host = access.probe()
                    result.resource_states = resource_states(host, changes, view.path)
                    return result
                writer.done(str(a.id), op, info)
                if not info.get("already"):
                    result.steps.append(f"{'undid' if op == 'undo' else 'did'} {a.describe()}")
                on_event(Event("undo-done" if op == "undo" else "action-done",
                               a.describe(), a.id, a.address, i + 1, len(todo)))
            restart_held("recovered-forward" if forward else "recovered-back")
            host = access.probe()
            config = plan_api.config_from_text(begin.get("config_text", ""),
                                               begin.get("config_path", ""))
            fp = plan_api.fingerprint(host, config) if config is not None else None
            if forward:
                wrong = not_at(host, changes, "after")
                result.reached = not wrong
                if wrong:
                    result.resource_states = resource_states(host, changes, None)
                result.outcome = "recovered-forward"
                if result.reached and config is not None:
                    inp = ApplyInput(plan, begin.get("plan_text", ""), config,
                                     begin.get("config_text", ""), begin.get("config_path", ""),
                                     command=command)
                    result.generation = maybe_generation(inp, state_dir, host, str(fp),
                                                         access.host_uri, force=True)
                    result.warnings = record_claims(state_dir, host, config, plan)
            else:
                result.reached = (fp == begin.get("start_fingerprint")) if fp else \
                    not not_at(host, changes, "before")
                if not result.reached:
                    result.resource_states = resource_states(host, changes, None)
                result.outcome = "recovered-back"
            writer.end(result.outcome, fp)
            result.journal_path = None
            return result
        finally:
            if hooks is not None:  # a post_reset that failed is reported, whatever the path
                result.warnings += hooks.warnings
            ctx.close()
            writer.release()


def _owed_hooks(view: JournalView, plan: Plan, state_dir: Path, writer: JournalWriter,
                on_event: EventSink) -> HookRunner | None:
    """A runner owing the plan's post_reset hooks when the journal shows pre_reset begun
    and post_reset not run to its end (the apply stopped between them); else None.
    Recover runs no other hook: pre_apply and pre_reset belong to an apply starting,
    post_apply and on_failure to its end, which the operator sees in recover's report."""
    hook_records = [r for r in view.records if r.get("type") == "hook"]
    began = any(r.get("phase") == "pre-reset" for r in hook_records)
    finished = sum(1 for r in hook_records
                   if r.get("phase") == "post-reset" and r.get("status") != "started")
    if not began or finished >= len(plan.hooks.post_reset):
        return None
    begin = view.begin
    env = plan_env(plan, plan_file=str(begin.get("plan_path", "")),
                   config_path=str(begin.get("config_path", "")),
                   host_uri=str(begin.get("host_uri", "")), state_dir=str(state_dir),
                   apply_id=str(begin.get("apply_id", "")))
    return HookRunner(plan.hooks, env, writer.append, on_event, resets=True, reset_owed=True)


def _steps_all_done(view: JournalView, plan: Plan) -> bool:
    """Whether the journal shows every step of the plan done and no rollback begun: the
    apply had finished its work when it stopped (during verification or bookkeeping)."""
    if "rollback started" in view.notes():
        return False
    return all(view.actions.get(str(s.id)) is not None
               and view.actions[str(s.id)].status == "done" for s in plan_steps(plan))


def _close_finished(access: Environment, state_dir: Path, writer: JournalWriter, plan: Plan,
                    begin: dict[str, Any], command: str, result: RecoverResult,
                    restart_held: Callable[[str], None]) -> RecoverResult | None:
    """Close the journal of an apply that had done every step, when the host is at the
    plan's end: such an apply is finished and verified now, and recover never undoes it.
    None when the host is elsewhere (then recover goes back as usual)."""
    host = access.probe()
    if not_at(host, plan.changes, "after"):
        return None
    restart_held("finished")
    config = plan_api.config_from_text(begin.get("config_text", ""),
                                       begin.get("config_path", ""))
    fp = plan_api.fingerprint(host, config) if config is not None else None
    writer.note("the apply had finished every step and the host is at its end: closed")
    writer.end("applied", fp)
    result.outcome = "finished"
    result.reached = True
    result.journal_path = None
    if config is not None:
        inp = ApplyInput(plan, begin.get("plan_text", ""), config, begin.get("config_text", ""),
                         begin.get("config_path", ""), command=command)
        try:
            result.generation = maybe_generation(inp, state_dir, host, str(fp),
                                                 access.host_uri, force=True)
        except (AihowError, OSError) as exc:
            result.warnings.append(f"the generation was not recorded: {exc}")
        result.warnings += record_claims(state_dir, host, config, plan)
    return result


def recovery_steps(plan: Plan, side: Side) -> list[tuple[int, Step]]:
    """(position, step) pairs that bring every resource of the plan to ``side``: first
    remove what must be absent there (dependants first), then make what must be present
    (dependencies first, by kind). The plan's no-op changes of MIG kinds are included, so
    resources the plan kept are made again if a power loss took them. A replace takes
    part as its two steps: back to "before" removes the new resource and makes the old
    one; forward to "after" the reverse."""
    kept = [c for c in plan.actions if c.action is Action.NO_OP and c.kind in MIG_KINDS]
    steps = sorted([s for c in plan.changes for s in expand(c)] +
                   [s for c in kept for s in expand(c)], key=lambda s: s.id)
    indexed = list(enumerate(steps))
    gone = [p for p in indexed if p[1].state(side) is None]
    made = [p for p in indexed if p[1].state(side) is not None]
    # The plan makes things in dependency order and deletes dependants first, so its
    # creations undone in reverse, and its deletions redone in order, remove dependants
    # first.
    gone.sort(key=lambda p: p[0], reverse=(side == "before"))
    made.sort(key=lambda p: (p[1].kind.rank, p[0] if side == "after" else -p[0]))
    return gone + made
