"""Apply a plan to a host: checks, write-ahead journal, branch-parallel execution,
rollback on failure, verification and a generation on success.

Order of an apply:
1. the plan's digest was verified when it was loaded (``load_plan``);
2. take the host lock (a second apply fails at once naming the holder);
3. refuse if an earlier apply left an unfinished journal (``aihow recover`` first);
4. re-probe and refuse a stale plan (host fingerprint differs), showing what changed
   (``checks``); then refuse any change the config does not justify on this host
   (``apply.vet``: the plan is made again from its config and must be the same);
5. each handler's preflight (e.g. a MIG mode change that needs a GPU reset without
   ``--allow-reset``, or a GPU held by processes or domains) — still nothing changed;
   with hooks (``global.hooks``, ``hooks``) the journal ``begin`` comes first, then the
   ``pre_apply`` and ``pre_reset`` hooks, then the preflight on the host as they left it
   (a failure of either refuses the apply, after ``post_reset`` and ``on_failure``);
6. journal ``begin``, then run the steps (``run_steps``): each starts as soon as what it
   depends on is done, one at a time per GPU and per domain (``schedule``), each with a
   deadline (``control``);
7. on failure undo the completed actions in reverse (``rollback``), re-probe and say
   whether the host is back at the plan's starting fingerprint; if an undo fails, stop
   and keep the journal, describing every resource's state;
8. when every step is done: re-probe (a failed read is retried), check every resource
   reached its planned state (``verify``), close the journal, record a generation, and
   record in the allocation ledger (``STATE_DIR/allocations.json``) what each node of
   the config holds now, read back from the probed host (``bookkeeping``; a no-op apply
   and ``recover --forward`` record it too). Finished work is never undone for a fault
   after it: a host that cannot be read back ends "applied-unverified", a journal or
   generation that cannot be written is reported in ``bookkeeping``;
9. with hooks: ``post_reset`` once the outcome is settled (before the journal closes, or
   after the rollback's undos), then ``post_apply`` or ``on_failure``.

SIGINT and SIGTERM during the steps stop the apply (``control``): nothing new starts,
what finished is rolled back while the stop grace lasts, the rest is left to
``aihow recover``.

Recovery from an interrupted apply is ``recovery``; the crash test hook ``crash_hook``.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from planner.apply import plan_api
from planner.apply.bookkeeping import maybe_generation, record_claims
from planner.apply.checks import check_not_stale, preflight
from planner.apply.control import RunControl, run_with_deadline
from planner.apply.crash_hook import CrashHook
from planner.apply.events import Event, EventSink
from planner.apply.handlers import ApplyContext
from planner.apply.hooks import HookRunner, plan_env, reset_gpus
from planner.apply.journal import JournalWriter, open_journal
from planner.apply.lock import HostLock
from planner.apply.results import ApplyInput, ApplyResult, PlanRefused
from planner.apply.rollback import roll_back
from planner.apply.run_steps import run_forward
from planner.apply.running import refusal, stopped_domains
from planner.apply.steps import Step, plan_steps
from planner.apply.verify import not_at
from planner.apply.vet import vet_plan
from planner.errors import AihowError
from planner.host.environment import Environment
from planner.host.state import HostState
from planner.vocab.plan import Plan

__all__ = ["ApplyInput", "ApplyResult", "Event", "EventSink", "PlanRefused", "apply_plan"]


def apply_plan(
    inp: ApplyInput,
    access: Environment,
    state_dir: Path,
    on_event: EventSink = lambda e: None,
) -> ApplyResult:
    """Carry out a plan (see the module docstring). Raises PlanRefused when it refuses."""
    plan = inp.plan
    plan_uri = plan_api.plan_host_uri(plan)
    if plan_uri != access.host_uri:
        raise PlanRefused(f"the plan was made for host {plan_uri!r}, not {access.host_uri!r}; "
                          "nothing was changed")
    with HostLock(state_dir, inp.command, inp.lock_timeout):
        journal = open_journal(state_dir)
        if journal is not None:
            raise PlanRefused(
                f"{journal.path}: an earlier apply did not finish; run `aihow recover` "
                "(back to where it started) or `aihow recover --forward`; nothing was changed"
            )
        host = access.probe()
        check_not_stale(plan, host, inp.config)
        vet_plan(plan, host, inp.config, access.records(state_dir))
        stopped = stopped_domains(plan)
        if stopped and not inp.restart_running_vms:
            raise PlanRefused(refusal(stopped))
        ctx = ApplyContext(access, allow_reset=inp.allow_reset,
                           restart_running_vms=inp.restart_running_vms,
                           shutdown_timeout=inp.shutdown_timeout)
        actions = plan_steps(plan)
        # With hooks, the preflight runs after the pre hooks: they stop what holds a GPU.
        with_hooks = bool(actions) and not plan.hooks.empty
        if not with_hooks:
            problems = preflight(plan, host, ctx)
            if problems:
                raise PlanRefused("\n".join([*problems, "nothing was changed"]))
        start_fp = plan_api.plan_fingerprint(plan)
        if not actions:
            result = ApplyResult("no-changes", 0, fingerprint_after=start_fp,
                                 start_fingerprint=start_fp)
            try:
                result.generation = maybe_generation(inp, state_dir, host, start_fp,
                                                     access.host_uri, force=False)
            except (AihowError, OSError) as exc:
                result.bookkeeping.append(f"the generation was not recorded: {exc}")
            result.warnings = record_claims(state_dir, host, inp.config, inp.plan)
            return result
        control = RunControl() if inp.step_timeout is None else \
            RunControl(step_timeout=inp.step_timeout)
        apply_id = str(uuid.uuid4())
        writer = JournalWriter.create(state_dir, {
            "apply_id": apply_id,
            "command": inp.command,
            "host_uri": access.host_uri,
            "libvirt_uri": access.libvirt_uri,
            "plan": plan_api.plan_to_dict(plan),
            "plan_text": inp.plan_text,
            "plan_path": inp.plan_path,
            "plan_sha256": plan.plan_sha256,
            "config_text": inp.config_text,
            "config_path": inp.config_path,
            "start_fingerprint": start_fp,
            "allow_reset": inp.allow_reset,
            "shutdown_timeout": inp.shutdown_timeout,
            "pid": os.getpid(),
            "started": time.time(),
        })
        hooks = HookRunner(plan.hooks, plan_env(plan, plan_file=inp.plan_path,
                                                config_path=inp.config_path,
                                                host_uri=access.host_uri,
                                                state_dir=str(state_dir), apply_id=apply_id),
                           writer.append, on_event, resets=bool(reset_gpus(plan)))
        try:
            if with_hooks:
                _before_changes(plan, access, ctx, writer, hooks)
            with control.stop_on_signals():
                result = _run(inp, access, ctx, writer, actions, start_fp, state_dir, on_event,
                              control, hooks)
        except BaseException:
            # Whatever went wrong, what pre_reset stopped starts again and on_failure runs
            # (both at most once: a refusal by a hook has run them already).
            hooks.finish_reset("failed")
            hooks.after("failed", ok=False)
            raise
        finally:
            ctx.close()
            writer.release()
        hooks.finish_reset(result.outcome)  # when _run returned before the reset phase
        ok = result.outcome in ("applied", "applied-unverified")
        generation = str(result.generation.number) if result.generation else ""
        hooks.after(result.outcome, ok, AIHOW_GENERATION=generation)
        result.hooks = list(hooks.runs)
        result.warnings += hooks.warnings
        return result


def _before_changes(plan: Plan, access: Environment, ctx: ApplyContext, writer: JournalWriter,
                    hooks: HookRunner) -> None:
    """The pre hooks, then the preflight on the host as they left it. A failing hook or
    preflight refuses the apply before any change: post_reset restarts what pre_reset
    stopped, on_failure runs, the journal ends "refused", and PlanRefused names the hook."""
    failed = hooks.run_phase("pre_apply", stop_at_failure=True)
    if failed is None:
        failed = hooks.run_phase("pre_reset", stop_at_failure=True)
    problems = [failed.describe()] if failed is not None else \
        preflight(plan, access.probe(), ctx)
    if not problems:
        return
    hooks.finish_reset("refused")
    hooks.after("refused", False,
                **({"AIHOW_FAILED_HOOK": failed.name} if failed is not None else {}))
    writer.note("refused before any change", problems=problems)
    writer.end("refused", None)
    if failed is not None:
        raise PlanRefused("; ".join([problems[0], "nothing was changed", *hooks.warnings]))
    raise PlanRefused("\n".join([*problems, *hooks.warnings, "nothing was changed"]))


def _run(inp: ApplyInput, access: Environment, ctx: ApplyContext, writer: JournalWriter,
         actions: list[Step], start_fp: str, state_dir: Path,
         on_event: EventSink, control: RunControl,
         hooks: HookRunner | None = None) -> ApplyResult:
    result = ApplyResult("applied", len(actions), journal_path=writer.path,
                         start_fingerprint=start_fp)

    def reset_done(outcome: str) -> None:  # what pre_reset stopped starts again
        if hooks is not None:
            hooks.finish_reset(outcome)

    crash = CrashHook.from_env(state_dir)
    fwd = run_forward(ctx, writer, actions, result, crash, parallel=inp.parallel,
                      on_event=on_event, control=control)
    result.interrupted_by = control.signal_name
    if len(fwd.completed) == len(actions):  # every step done: never undone for a stop
        finished = _finish(inp, access, writer, result, state_dir, on_event, control,
                           before_close=reset_done)
        if finished is not None:
            return finished
    # post_reset waits for the rollback: undoing a MIG mode change resets the GPU again
    return roll_back(access, ctx, writer, inp.plan, inp.config, actions, fwd.completed,
                     fwd.failed, result, start_fp, on_event, control,
                     before_readback=lambda: reset_done("failed"))


def _finish(inp: ApplyInput, access: Environment, writer: JournalWriter, result: ApplyResult,
            state_dir: Path, on_event: EventSink, control: RunControl,
            before_close: Callable[[str], None] = lambda outcome: None) -> ApplyResult | None:
    """After every step is done: verify, close the journal, record the generation and
    the ledger. None when verification found a resource not in its planned state (the
    caller rolls back). A host that cannot be read back, or bookkeeping that fails, does
    not undo finished work: the result says which ("applied-unverified", or
    ``bookkeeping`` problems) and the journal is closed on the work done."""
    try:
        writer.note("steps finished")
    except AihowError as exc:
        result.bookkeeping.append(str(exc))
    try:
        host = _probe_with_retries(access, control.step_timeout)
    except (AihowError, OSError) as exc:
        result.outcome = "applied-unverified"
        result.verify_error = str(exc)
        on_event(Event("note", f"verification could not read the host: {exc}"))
        before_close("applied-unverified")
        _close(writer, "applied-unverified", None, result)
        return result
    wrong = not_at(host, inp.plan.changes, "after")
    if wrong:
        for address in wrong:
            result.failed.append((address, "not in its planned state after the apply"))
        writer.note("verification failed", resources=wrong)
        on_event(Event("note", "verification failed: " + ", ".join(wrong)))
        return None
    fp = plan_api.fingerprint(host, inp.config)
    result.fingerprint_after = fp
    before_close("applied")
    _close(writer, "applied", fp, result)
    try:
        result.generation = maybe_generation(inp, state_dir, host, fp, access.host_uri,
                                             force=True)
    except (AihowError, OSError) as exc:
        result.bookkeeping.append(f"the generation was not recorded: {exc}")
    result.warnings = record_claims(state_dir, host, inp.config, inp.plan)
    return result


def _close(writer: JournalWriter, outcome: str, fp: str | None, result: ApplyResult) -> None:
    """End the journal on finished work; if that cannot be written, say so: `aihow
    recover` closes such a journal without undoing anything (it sees every step done
    and the host at the plan's end)."""
    try:
        writer.end(outcome, fp)
        result.journal_path = None
    except (AihowError, OSError) as exc:
        result.bookkeeping.append(f"the journal could not be closed: {exc}; `aihow recover` "
                                  "closes it without undoing the apply")


def _probe_with_retries(access: Environment, timeout: float, tries: int = 3,
                        pause: float = 0.5) -> HostState:
    """Re-probe for verification, each try within ``timeout``; a read that fails is tried
    again (a transient fault must not turn a finished apply into a failed one)."""
    for attempt in range(tries):
        try:
            return run_with_deadline(access.probe, timeout, f"{access.host_uri}: probe")
        except (AihowError, OSError):
            if attempt == tries - 1:
                raise
            time.sleep(pause)
    raise AssertionError("unreachable")
