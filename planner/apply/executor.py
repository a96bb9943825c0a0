"""Apply a plan to a host: checks, write-ahead journal, branch-parallel execution,
rollback on failure, verification and a generation on success.

Order of an apply:
1. the plan's digest was verified when it was loaded (``load_plan``);
2. take the host lock (a second apply fails at once naming the holder);
3. refuse if an earlier apply left an unfinished journal (``aihow recover`` first);
4. re-probe and refuse a stale plan (host fingerprint differs), showing what changed;
   then refuse any change the config does not justify on this host (``apply.vet``: the
   plan is made again from its config and must be the same);
5. each handler's preflight (e.g. a MIG mode change that needs a GPU reset without
   ``--allow-reset``, or a GPU held by processes or domains) — still nothing changed;
6. journal ``begin``, then run the actions in waves: a wave holds at most one action per
   branch (independent GPUs) and runs them in threads; intents of a wave are journaled
   in plan order before it starts and outcomes in plan order after it ends, so the
   journal and the output are the same whatever the threads' timing;
7. on failure undo the completed actions in reverse, re-probe and say whether the host
   is back at the plan's starting fingerprint; if an undo fails, stop and keep the
   journal, describing every resource's state;
8. on success re-probe, check every resource reached its planned state, record a
   generation, close the journal, and record in the allocation ledger
   (``STATE_DIR/allocations.json``) what each node of the config holds now, read back
   from the probed host (a no-op apply and ``recover --forward`` record it too).

Test hook: ``AIHOW_TEST_CRASH_AFTER=N[:point[:pause]]`` makes the process SIGKILL itself
at the N-th action, at ``point`` = ``intent`` (journaled, not yet done), ``acted`` (done,
not yet journaled) or ``outcome`` (done and journaled, the default). With ``:pause`` it
instead creates ``STATE_DIR/test-paused`` and waits (holding the lock) until that file is
removed. Used by the crash and concurrency tests; unset, it has no effect.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from planner.apply import plan_api
from planner.apply.allocator import record_applied
from planner.apply.generations import Generation, list_generations, record_generation
from planner.apply.handler_table import handler_for, observe
from planner.apply.handlers import ActionHandler, ApplyContext, Side
from planner.apply.journal import JournalError, JournalWriter, open_journal
from planner.apply.lock import HostLock
from planner.apply.steps import Step, expand, plan_steps
from planner.apply.vet import vet_plan
from planner.errors import AihowError
from planner.host.environment import Environment
from planner.host.state import HostState
from planner.vocab import MIG_KINDS, Action
from planner.vocab.plan import Change, Plan

if TYPE_CHECKING:
    from planner.config.models import ClusterConfig

Outcome = Literal["applied", "no-changes", "rolled-back", "rollback-failed"]
CRASH_ENV = "AIHOW_TEST_CRASH_AFTER"


class PlanRefused(AihowError):
    """The apply was refused before anything on the host changed."""


@dataclass(frozen=True)
class Event:
    """Progress reported to the caller (the CLI prints it); always in plan order."""

    type: Literal["action-start", "action-done", "action-failed",
                  "undo-start", "undo-done", "undo-failed", "note"]
    message: str
    action_id: int | None = None
    address: str | None = None
    index: int = 0  # 1-based position of the action in the plan
    total: int = 0


EventSink = Callable[[Event], None]


@dataclass
class ApplyResult:
    outcome: Outcome
    total: int
    done: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (address, error)
    undone: list[str] = field(default_factory=list)
    back_at_start: bool | None = None
    resource_states: list[str] = field(default_factory=list)
    generation: Generation | None = None
    journal_path: Path | None = None
    fingerprint_after: str | None = None
    start_fingerprint: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.outcome in ("applied", "no-changes")


@dataclass
class ApplyInput:
    plan: Plan
    plan_text: str
    config: ClusterConfig  # the config the plan was made from (for the fingerprint)
    config_text: str
    config_path: str
    command: str = "aihow apply"
    allow_reset: bool = False
    parallel: bool = True
    lock_timeout: float = 0.0  # seconds to wait for a held host lock (0: fail at once)


# --- waves ----------------------------------------------------------------------------


def waves(actions: Sequence[Step]) -> list[list[int]]:
    """Group step indexes into waves. Steps of one branch stay in plan order in
    successive waves; a step without a branch waits for everything before it and
    everything after it waits for it; ``depends_on`` is always honoured."""
    wave_of: dict[int, int] = {}
    last_in_branch: dict[str, int] = {}
    barrier = -1
    highest = -1
    out: list[list[int]] = []
    for index, action in enumerate(actions):
        branch = getattr(action, "branch", None)
        deps = [wave_of[d] for d in (getattr(action, "depends_on", None) or ()) if d in wave_of]
        if branch is None:
            w = highest + 1
            barrier = w
        else:
            w = max([barrier + 1, last_in_branch.get(branch, -1) + 1, *(d + 1 for d in deps)])
            last_in_branch[branch] = w
        wave_of[action.id] = w
        highest = max(highest, w)
        while len(out) <= w:
            out.append([])
        out[w].append(index)
    return [sorted(w) for w in out if w]


# --- crash hook -----------------------------------------------------------------------


@dataclass
class _CrashHook:
    after: int | None
    point: str
    pause_file: Path | None = None
    seen: int = 0

    @classmethod
    def from_env(cls, state_dir: Path) -> _CrashHook:
        raw = os.environ.get(CRASH_ENV, "").strip()
        if not raw:
            return cls(None, "outcome")
        count, _, rest = raw.partition(":")
        point, _, mode = rest.partition(":")
        pause = Path(state_dir) / "test-paused" if mode == "pause" else None
        return cls(int(count), point or "outcome", pause)

    def at(self, point: str, count: int) -> None:
        if self.after is None or point != self.point or count < self.after:
            return
        pause = self.pause_file
        if pause is None:
            os.kill(os.getpid(), signal.SIGKILL)
            return
        self.after = None  # pause once
        pause.write_text(f"{os.getpid()}\n")
        deadline = time.monotonic() + 120
        while pause.exists() and time.monotonic() < deadline:
            time.sleep(0.02)


# --- the executor ---------------------------------------------------------------------


def _fingerprint(host: HostState, config: ClusterConfig) -> str:
    return plan_api.fingerprint(host, config)


def check_not_stale(plan: Plan, host: HostState, config: ClusterConfig) -> None:
    """Refuse (PlanRefused) when the host no longer has the fingerprint the plan was made
    against, listing what changed."""
    current = _fingerprint(host, config)
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
        ctx = ApplyContext(access, allow_reset=inp.allow_reset)
        problems = preflight(plan, host, ctx)
        if problems:
            raise PlanRefused("\n".join([*problems, "nothing was changed"]))
        start_fp = plan_api.plan_fingerprint(plan)
        actions = plan_steps(plan)
        if not actions:
            gen = _maybe_generation(inp, state_dir, host, start_fp, access.host_uri, force=False)
            return ApplyResult("no-changes", 0, generation=gen, fingerprint_after=start_fp,
                               start_fingerprint=start_fp,
                               warnings=_record_claims(state_dir, host, inp.config))
        writer = JournalWriter.create(state_dir, {
            "apply_id": str(uuid.uuid4()),
            "command": inp.command,
            "host_uri": access.host_uri,
            "libvirt_uri": access.libvirt_uri,
            "plan": plan_api.plan_to_dict(plan),
            "plan_text": inp.plan_text,
            "plan_sha256": plan.plan_sha256,
            "config_text": inp.config_text,
            "config_path": inp.config_path,
            "start_fingerprint": start_fp,
            "allow_reset": inp.allow_reset,
            "pid": os.getpid(),
            "started": time.time(),
        })
        try:
            return _run(inp, access, ctx, writer, actions, start_fp, state_dir, on_event)
        finally:
            ctx.close()
            writer.release()


def _run(inp: ApplyInput, access: Environment, ctx: ApplyContext, writer: JournalWriter,
         actions: list[Step], start_fp: str, state_dir: Path,
         on_event: EventSink) -> ApplyResult:
    total = len(actions)
    result = ApplyResult("applied", total, journal_path=writer.path, start_fingerprint=start_fp)
    crash = _CrashHook.from_env(state_dir)
    completed: list[int] = []  # indexes in the order their outcome was journaled
    failed: list[int] = []
    pool = ThreadPoolExecutor(max_workers=8) if inp.parallel else None
    try:
        for wave in waves(actions):
            for i in wave:
                a = actions[i]
                writer.intent(str(a.id), "do", a.address)
                crash.seen += 1
                crash.at("intent", crash.seen)
                on_event(Event("action-start", _describe(a), a.id, a.address, i + 1, total))
            outcomes = _run_wave(ctx, [actions[i] for i in wave], "after", pool)
            crash.at("acted", crash.seen)
            for i, (ok, info) in zip(wave, outcomes, strict=True):
                a = actions[i]
                if ok:
                    writer.done(str(a.id), "do", info)
                    completed.append(i)
                    result.done.append(a.address)
                    on_event(Event("action-done", _describe(a), a.id, a.address, i + 1, total))
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

    if not failed:
        host = access.probe()
        wrong = _not_at(host, inp.plan.changes, "after")
        if not wrong:
            fp = _fingerprint(host, inp.config)
            result.fingerprint_after = fp
            result.generation = _maybe_generation(inp, state_dir, host, fp, access.host_uri,
                                                  force=True)
            writer.end("applied", fp)
            result.journal_path = None
            result.warnings = _record_claims(state_dir, host, inp.config)
            return result
        for address in wrong:
            result.failed.append((address, "not in its planned state after the apply"))
        writer.note("verification failed", resources=wrong)
        on_event(Event("note", "verification failed: " + ", ".join(wrong)))

    # Roll back: undo the failed actions that left a trace, then the completed ones.
    host = access.probe()
    to_undo = [i for i in reversed(failed) if _observe(host, actions[i]) != "before"]
    to_undo += list(reversed(completed))
    writer.note("rollback started")
    on_event(Event("note", f"rolling back {len(to_undo)} action(s)"))
    undo_error = None
    for i in to_undo:
        a = actions[i]
        writer.intent(str(a.id), "undo", a.address)
        on_event(Event("undo-start", handler_for(a).inverse(a), a.id, a.address, i + 1, total))
        try:
            handler_for(a).ensure(ctx, a, "before")
        except Exception as exc:  # noqa: BLE001 - any failure stops the rollback
            undo_error = _error_text(exc)
            writer.failed(str(a.id), "undo", undo_error)
            on_event(Event("undo-failed", undo_error, a.id, a.address, i + 1, total))
            break
        writer.done(str(a.id), "undo")
        result.undone.append(a.address)
        on_event(Event("undo-done", handler_for(a).inverse(a), a.id, a.address, i + 1, total))
    host = access.probe()
    fp = _fingerprint(host, inp.config)
    result.fingerprint_after = fp
    result.back_at_start = fp == start_fp
    if undo_error is not None:
        result.outcome = "rollback-failed"
        result.resource_states = resource_states(host, inp.plan.changes, writer.path)
        writer.note("rollback stopped: an undo failed", states=result.resource_states)
        return result
    result.outcome = "rolled-back"
    if not result.back_at_start:
        result.resource_states = resource_states(host, inp.plan.changes, writer.path)
    writer.end("rolled-back", fp)
    result.journal_path = None
    return result


def _run_wave(ctx: ApplyContext, wave: list[Step], side: Side,
              pool: ThreadPoolExecutor | None) -> list[tuple[bool, dict[str, Any]]]:
    def one(action: Step) -> tuple[bool, dict[str, Any]]:
        try:
            return True, handler_for(action).ensure(ctx, action, side)
        except Exception as exc:  # noqa: BLE001 - reported, journaled, rolled back
            return False, {"error": _error_text(exc)}

    if pool is None or len(wave) == 1:
        return [one(a) for a in wave]
    return list(pool.map(one, wave))


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, AihowError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _describe(step: Step) -> str:
    return step.describe()


def _observe(host: HostState, step: Step) -> Side | None:
    try:
        return observe(host, step)
    except AihowError:
        return None


def _at(host: HostState, change: Change, side: Side) -> bool:
    """Whether the host has the change's resource as the change's ``side`` says: each
    address is judged once, a replace by its final state (not by its delete step)."""
    try:
        handler = handler_for(change)
        return handler.matches(host, change.address,
                               change.before if side == "before" else change.after)
    except AihowError:
        return False


def _not_at(host: HostState, changes: Sequence[Change], side: Side) -> list[str]:
    return [str(c.address) for c in changes if not _at(host, c, side)]


def resource_states(host: HostState, changes: Sequence[Change],
                    journal: Path | None) -> list[str]:
    """One line per planned resource: where the probed host has it."""
    lines = []
    for c in changes:
        where = "as the plan wanted" if _at(host, c, "after") else \
            "as before the apply" if _at(host, c, "before") else "neither"
        lines.append(f"{c.address}: {where} ({c.action} planned)")
    if journal is not None:
        lines.append(f"journal kept at {journal}; run `aihow recover` when the cause is fixed")
    return lines


def _record_claims(state_dir: Path, host: HostState, config: ClusterConfig) -> list[str]:
    """Record in the ledger what each node of ``config`` holds on the verified ``host``.
    The host change is done and journaled by then, so a ledger that refuses (another
    cluster's claim) is reported as a warning, not as a failed apply."""
    try:
        record_applied(state_dir, host, config)
    except (AihowError, OSError) as exc:
        return [f"the allocation ledger was not updated: {exc}"]
    return []


def _maybe_generation(inp: ApplyInput, state_dir: Path, host: HostState, fp: str,
                      host_uri: str, *, force: bool) -> Generation | None:
    """Record a generation; a no-op apply records one only when its config differs from
    the latest generation's (so `rollback` can return to it exactly)."""
    if not force:
        gens = list_generations(state_dir)
        if gens and gens[-1].config_text() == inp.config_text:
            return None
    return record_generation(
        state_dir,
        config_text=inp.config_text,
        config_path=inp.config_path,
        plan_text=inp.plan_text,
        plan_sha256=inp.plan.plan_sha256,
        state_json=host.model_dump_json(indent=2) + "\n",
        host_uri=host_uri,
        fingerprint=fp,
        command=inp.command,
        summary=plan_api.plan_summary(inp.plan),
    )


# --- recovery -------------------------------------------------------------------------


@dataclass
class RecoverResult:
    outcome: Literal["nothing", "recovered-back", "recovered-forward", "failed"]
    steps: list[str] = field(default_factory=list)
    reached: bool | None = None  # host at the start (back) / planned end (forward)
    resource_states: list[str] = field(default_factory=list)
    error: str | None = None
    generation: Generation | None = None
    journal_path: Path | None = None
    warnings: list[str] = field(default_factory=list)


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
        ctx = ApplyContext(access, allow_reset=allow_reset or bool(begin.get("allow_reset")))
        writer = JournalWriter.reopen(view.path, view.next_seq)
        writer.note("recover started", forward=forward, torn_tail=view.torn_tail)
        result = RecoverResult("failed", journal_path=view.path)
        side: Side = "after" if forward else "before"
        op: Literal["redo", "undo"] = "redo" if forward else "undo"
        todo = recovery_steps(plan, side)
        try:
            for i, a in todo:
                writer.intent(str(a.id), op, a.address)
                on_event(Event("undo-start" if op == "undo" else "action-start",
                               _describe(a), a.id, a.address, i + 1, len(todo)))
                try:
                    info = handler_for(a).ensure(ctx, a, side)
                except Exception as exc:  # noqa: BLE001 - stop, keep the journal
                    result.error = f"{a.address}: {_error_text(exc)}"
                    writer.failed(str(a.id), op, result.error)
                    host = access.probe()
                    result.resource_states = resource_states(host, changes, view.path)
                    return result
                writer.done(str(a.id), op, info)
                if not info.get("already"):
                    result.steps.append(f"{'undid' if op == 'undo' else 'did'} {_describe(a)}")
                on_event(Event("undo-done" if op == "undo" else "action-done",
                               _describe(a), a.id, a.address, i + 1, len(todo)))
            host = access.probe()
            config = plan_api.config_from_text(begin.get("config_text", ""),
                                               begin.get("config_path", ""))
            fp = _fingerprint(host, config) if config is not None else None
            if forward:
                wrong = _not_at(host, changes, "after")
                result.reached = not wrong
                if wrong:
                    result.resource_states = resource_states(host, changes, None)
                result.outcome = "recovered-forward"
                if result.reached and config is not None:
                    inp = ApplyInput(plan, begin.get("plan_text", ""), config,
                                     begin.get("config_text", ""), begin.get("config_path", ""),
                                     command=command)
                    result.generation = _maybe_generation(inp, state_dir, host, str(fp),
                                                          access.host_uri, force=True)
                    result.warnings = _record_claims(state_dir, host, config)
            else:
                result.reached = (fp == begin.get("start_fingerprint")) if fp else \
                    not _not_at(host, changes, "before")
                if not result.reached:
                    result.resource_states = resource_states(host, changes, None)
                result.outcome = "recovered-back"
            writer.end(result.outcome, fp)
            result.journal_path = None
            return result
        finally:
            ctx.close()
            writer.release()


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


def journal_status(state_dir: Path) -> list[str]:
    """A summary of an unfinished journal, for messages (empty when there is none)."""
    try:
        view = open_journal(state_dir)
    except JournalError as exc:
        return [str(exc)]
    if view is None:
        return []
    return [f"{view.actions[a].address}: {view.actions[a].status}" for a in view.order]


def handlers_for(steps: Sequence[Step]) -> list[ActionHandler]:
    return [handler_for(a) for a in steps]
