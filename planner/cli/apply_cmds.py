"""CLI commands: ``aihow apply``, ``aihow recover``, ``aihow generations``, ``aihow rollback``."""

from __future__ import annotations

import json
import locale
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from planner.cli import json_events, output
from planner.cli.errors import reports_errors
from planner.cli.host_opts import LibvirtOpt, LockTimeoutOpt, libvirt_uri_for, open_environment
from planner.errors import AihowError

if TYPE_CHECKING:
    from planner.apply.events import Event
    from planner.apply.generations import Generation
    from planner.apply.results import ApplyResult, RecoverResult
    from planner.config.models import ClusterConfig
    from planner.host.environment import Environment
    from planner.vocab.plan import Change, Plan

HostOpt = Annotated[
    str | None,
    typer.Option("--host", help="Host URI: 'local' or 'sim:DIR' (default: the plan's host, "
                 "else local)."),
]
StateDirOpt = Annotated[
    Path | None,
    typer.Option("--state-dir", help="Lock, journal and generations (default /var/lib/aihow; "
                 "DIR/state for sim:DIR)."),
]
AutoOpt = Annotated[
    bool, typer.Option("--auto-approve", help="Apply without asking. Needed when stdin is "
                       "not a terminal (scripts, CI, ssh without -t); on a terminal a plan "
                       "that deletes, replaces or resets asks first.")
]
ResetOpt = Annotated[
    bool, typer.Option("--allow-reset", help="Allow GPU resets that MIG mode changes need.")
]
StepTimeoutOpt = Annotated[
    float | None, typer.Option("--step-timeout", min=0.1, help="Seconds one step (or its "
                               "undo) may take before it is abandoned and the apply rolls "
                               "back (default 600, or $AIHOW_STEP_TIMEOUT).")
]
RestartOpt = Annotated[
    bool, typer.Option("--restart-running-vms", help="Allow the plan's steps that stop a "
                       "running VM: one the config drops, or one whose slice is deleted or "
                       "replaced. Each is shut down gracefully first (ACPI, then destroyed "
                       "after --shutdown-timeout) and, if it stays, started again after its "
                       "change (without it such a plan is refused).")
]
ShutdownTimeoutOpt = Annotated[
    float, typer.Option("--shutdown-timeout", min=1, help="Seconds to wait for each VM to "
                        "shut down (with --restart-running-vms).")
]




class ListFormat(StrEnum):
    text = "text"
    json = "json"


EventFormatOpt = Annotated[
    ListFormat,
    typer.Option("--format", help="text for people, or json: JSON lines of events (plan, "
                 "progress, one result or error; docs/reference/json-output.md)."),
]



def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.command("apply")(reports_errors(apply, events=True))
    app.command("recover")(reports_errors(recover, events=True))
    app.command("generations")(reports_errors(generations))
    app.command("rollback")(reports_errors(rollback, events=True))


# --- shared ---------------------------------------------------------------------------


def _is_plan_file(path: Path) -> bool:
    """Whether PATH is meant as a plan: a ``.json`` file, or one whose text starts with
    ``{`` (a YAML config never does in practice). A damaged plan then gets the plan
    loader's message, not the config parser's."""
    if path.suffix.lower() == ".json":
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    return head.lstrip()[:1] == b"{"


def _read(path: Path, limit: int, what: str) -> str:
    # here, not at the top: --help loads every command module (start-up time)
    from planner.config.limits import InputTooLarge, read_text_limited

    try:
        return read_text_limited(path, limit, what, encoding=locale.getpreferredencoding(False))
    except InputTooLarge as exc:
        raise AihowError(str(exc)) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise AihowError(f"{path}: cannot read: {reason}") from None


def _read_config(path: Path) -> str:
    from planner.config.digest import read_config_text
    from planner.config.limits import InputTooLarge

    try:
        return read_config_text(path)
    except InputTooLarge as exc:
        raise AihowError(str(exc)) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise AihowError(f"{path}: cannot read config: {reason}") from None


def _plan_and_config(path: Path, host: str | None, state_dir: Path | None,
                     libvirt_uri: str | None = None
                     ) -> tuple[Plan, str, ClusterConfig, str, str, Environment]:
    """(plan, plan text, config, config text, config path, the host's Environment) for
    PLAN (on ``host``, else the plan's host) or CONFIG (on ``host``, else local)."""
    # here, not at the top: --help loads every command module (start-up time)
    from planner.config import load_config
    from planner.config.digest import config_digest
    from planner.config.limits import MAX_PLAN_BYTES
    from planner.plan.model import load_plan

    if _is_plan_file(path):
        plan = load_plan(path)  # verifies plan_sha256: an edited plan stops here
        plan_text = _read(path, MAX_PLAN_BYTES, "plan")
        cfg_path = Path(str(plan.config.path))
        cfg_text = _read_config(cfg_path)
        digest = config_digest(cfg_text)
        if digest != plan.config.sha256:
            raise AihowError(
                f"{cfg_path}: the config changed since the plan was made "
                f"(sha256 {digest[:12]} now, {str(plan.config.sha256)[:12]} in the plan); "
                "make a new plan"
            )
        cfg = load_config(cfg_path)
        env = open_environment(host or str(plan.host.uri), libvirt_uri_for(cfg, libvirt_uri))
        return plan, plan_text, cfg, cfg_text, str(cfg_path), env
    cfg_text = _read_config(path)
    cfg = load_config(path)
    env = open_environment(host, libvirt_uri_for(cfg, libvirt_uri))
    plan = _make_plan(cfg, cfg_text, str(path), env, state_dir)
    return plan, plan.to_json(), cfg, cfg_text, str(path), env


def _make_plan(cfg: ClusterConfig, cfg_text: str, cfg_path: str, env: Environment,
               state_dir: Path | None = None) -> Plan:
    """The plan `aihow plan CFG --host URI [--libvirt-uri X]` would make (same probe, same
    host records; the ledger of ``state_dir``)."""
    # here, not at the top: --help loads every command module (start-up time)
    from planner.cli.host_opts import base_images
    from planner.config.digest import config_digest
    from planner.plan.make import make_plan

    host = env.probe()
    return make_plan(cfg, host, config_path=cfg_path,
                     config_sha256=config_digest(cfg_text),
                     host_uri=env.host_uri, records=env.records(state_dir),
                     images=base_images(env, cfg))


def _state_dir(env: Environment | None, override: Path | None) -> Path:
    """The state directory (created): ``--state-dir``, else the host's. ``env`` None: the
    local default (rollback looks there before it knows the generation's host). A
    snapshot has none, so apply, recover and rollback on one stop here."""
    # here, not at the top: --help loads every command module (start-up time)
    from planner.apply.state_dir import resolve_state_dir
    from planner.host.environment import LOCAL_STATE_DIR

    return resolve_state_dir(LOCAL_STATE_DIR if env is None else env.state_dir(), override)


def _show_plan(plan: Plan, as_json: bool, command: str) -> None:
    if as_json:
        json_events.emit(json_events.plan_record(plan, command=command))
        return
    # here, not at the top: --help loads every command module (start-up time)
    from planner.plan.render import render

    text = render(plan, "text", colour=output.colour())
    output.log(text)
    if not output.quiet():
        typer.echo(text, nl=False)


def needs_approval(plan: Plan) -> list[tuple[str, Change]]:
    """The changes apply asks about on a terminal (and the Ansible module refuses without
    auto_approve): deletes, replaces, destructive steps and GPU resets; each with how the
    prompt words it ("undefine" for a domain's delete, and its notes)."""
    from planner.vocab import Action, Kind

    out = []
    for a in plan.changes:
        if a.action not in (Action.DELETE, Action.REPLACE) and not a.destructive \
                and not a.needs_reset:
            continue
        verb = "undefine" if a.kind is Kind.DOMAIN and a.action is Action.DELETE \
            else str(a.action)
        notes = [n for n, on in (("GPU reset", a.needs_reset),
                                 ("used by a running VM", a.destructive)) if on]
        out.append((f"{verb} {a.address}" + (f" ({', '.join(notes)})" if notes else ""), a))
    return out


def _confirm(plan: Plan, auto_approve: bool, as_json: bool = False) -> None:
    """Terraform's rule: without --auto-approve, a plan with changes needs a terminal to
    answer on; there, one that deletes, replaces, undefines or resets asks, after a
    summary of exactly those changes (``needs_approval``)."""
    if auto_approve or not plan.has_changes:
        return
    if not sys.stdin.isatty():
        raise AihowError("stdin is not a terminal, so there is no one to approve this plan; "
                         "review the plan shown above and rerun with --auto-approve; "
                         "nothing was changed")
    risky = needs_approval(plan)
    if not risky:
        return
    if as_json:
        raise AihowError(f"{len(risky)} action(s) are destructive or reset a GPU: "
                         "--format json does not ask; add --auto-approve")
    typer.echo("")
    typer.echo(f"{len(risky)} change(s) delete, replace, undefine or reset:")
    for line, _ in risky:
        typer.echo(f"  {line}")
    if not typer.confirm("Apply this plan?", default=False):
        typer.echo("Apply cancelled; nothing was changed.", err=True)
        raise typer.Exit(1)


class _Progress:
    """A progress bar on a terminal; one line per event otherwise (deterministic); JSON
    lines with ``as_json``; nothing on the terminal with --quiet (the log file gets every
    event in any case)."""

    def __init__(self, total: int, as_json: bool = False) -> None:
        self.total = total
        self.as_json = as_json
        self.silent = as_json or output.quiet()
        self.tty = sys.stdout.isatty() and total > 0 and not self.silent
        self.bar: Any = None
        if self.tty:
            self.bar = typer.progressbar(length=total, label="Applying", show_pos=True)
            self.bar.__enter__()

    def __call__(self, event: Event) -> None:
        if self.as_json:
            json_events.emit(json_events.event_record(event))
            return
        where = f"[{event.index}/{event.total}] " if event.index else ""
        if self.tty and event.type in ("action-done", "action-failed"):
            self.bar.update(1)
        if self.tty and event.type in ("action-start", "action-done"):
            return
        labels = {
            "action-start": "...", "action-done": "done", "action-failed": "FAILED:",
            "undo-start": "undo:", "undo-done": "undone:", "undo-failed": "UNDO FAILED:",
        }
        if event.type == "note":
            self._line(f"-- {event.message}")
        elif event.type == "hook-start":
            self._line(f"-- running {event.message}")
        elif event.type in ("hook-done", "hook-failed"):
            self._line(f"-- {'' if event.type == 'hook-done' else 'HOOK FAILED: '}"
                       f"{event.message}")
        elif event.type == "action-start":
            self._line(f"{where}{event.message} ...")
        elif event.type in ("action-done",):
            self._line(f"{where}{event.message} done")
        else:
            self._line(f"{where}{event.address}: {labels[event.type]} {event.message}")

    def _line(self, text: str) -> None:
        output.log(text)
        if self.silent:
            return
        if self.tty:
            typer.echo("")  # leave the bar's line
        typer.echo(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


def _run_apply(plan: Plan, plan_text: str, cfg: ClusterConfig, cfg_text: str, cfg_path: str,
               env: Environment, sdir: Path, *, allow_reset: bool,
               command: str, lock_timeout: float = 0.0, as_json: bool = False,
               step_timeout: float | None = None, restart_running_vms: bool = False,
               shutdown_timeout: float = 120.0, plan_path: str = "") -> ApplyResult:
    # here, not at the top: --help loads every command module (start-up time)
    from planner.apply.executor import ApplyInput, apply_plan
    from planner.apply.steps import plan_steps

    progress = _Progress(len(plan_steps(plan)), as_json)
    try:
        result = apply_plan(
            ApplyInput(plan, plan_text, cfg, cfg_text, cfg_path, command=command,
                       allow_reset=allow_reset, lock_timeout=lock_timeout,
                       step_timeout=step_timeout, restart_running_vms=restart_running_vms,
                       shutdown_timeout=shutdown_timeout, plan_path=plan_path),
            env,
            sdir,
            progress,
        )
    finally:
        progress.close()
    _record_last_apply(sdir, result, command)
    return result


def _record_last_apply(sdir: Path, result: ApplyResult, command: str) -> None:
    """For the metrics: generations say only when an apply succeeded."""
    import time

    from planner.apply.last_apply import LastApply, record_last_apply

    try:
        record_last_apply(sdir, LastApply(
            time.time(), result.outcome, result.ok,
            result.generation.number if result.generation else None, command))
    except OSError as exc:
        output.error(f"warning: {sdir}: cannot record the last apply: {exc.strerror}")


# Exit codes of apply (and rollback) besides 0 and 1 (failed, rolled back or refused);
# documented in docs/guides/apply-and-recover.md.
EXIT_UNVERIFIED = 3  # every step done; the host could not be read back to verify it
EXIT_BOOKKEEPING = 4  # done and verified; the journal or generation could not be written
EXIT_SIGNAL = {"SIGINT": 130, "SIGTERM": 143}  # stopped by a signal (128 + its number)


def _exit_code(result: ApplyResult) -> int:
    """Apply's exit status for ``result`` (0 when it succeeded; see EXIT_*)."""
    if result.outcome == "applied-unverified":
        return EXIT_UNVERIFIED
    if result.outcome in ("applied", "no-changes") and result.bookkeeping:
        return EXIT_BOOKKEEPING
    if result.interrupted_by is not None and result.outcome != "applied":
        return EXIT_SIGNAL.get(result.interrupted_by, 130)
    return 0 if result.ok else 1


def _report(result: ApplyResult, as_json: bool = False) -> None:
    """The final summary; exits non-zero unless the apply succeeded (see EXIT_*)."""
    for warning in result.warnings:
        output.error(f"warning: {warning}")
    if as_json:
        json_events.emit(json_events.apply_result_record(result))
        if code := _exit_code(result):
            raise typer.Exit(code)
        return
    if result.outcome == "applied-unverified":
        output.error(f"Apply done: all {result.total} action(s) carried out, but the host "
                     f"could not be read back to verify them: {result.verify_error}")
        output.error("Nothing was undone. Check the host with `aihow plan` (no changes "
                     "means it is as planned).")
        for problem in result.bookkeeping:
            output.error(f"error: {problem}")
        raise typer.Exit(EXIT_UNVERIFIED)
    if result.outcome in ("applied", "no-changes") and result.bookkeeping:
        output.error(f"Apply complete: {len(result.done)} of {result.total} action(s) done, "
                     "host verified; but recording it failed:")
        for problem in result.bookkeeping:
            output.error(f"error: {problem}")
        raise typer.Exit(EXIT_BOOKKEEPING)
    if result.interrupted_by is not None and result.outcome != "applied":
        _report_interrupted(result)
    if result.outcome == "no-changes":
        output.say("No changes: the host already matches the plan.")
        if result.generation is not None:
            output.say(f"Generation {result.generation.number} recorded.")
        return
    if result.outcome == "applied":
        gen = f" Generation {result.generation.number} recorded." if result.generation else ""
        output.say(f"Apply complete: {len(result.done)} of {result.total} action(s) done, "
                   f"host verified.{gen}")
        return
    for address, error in result.failed:
        output.error(f"error: {_at(address, error)}")
    if result.outcome == "rolled-back":
        where = ("back at the plan's starting state" if result.back_at_start
                 else "NOT back at the plan's starting state")
        output.error(f"Apply failed; rolled back {len(result.undone)} action(s); the host is "
                     f"{where} (fingerprint {str(result.fingerprint_after)[:12]}).")
    else:
        output.error("Apply failed and the rollback stopped because an undo failed. "
                     "State of each resource:")
    for line in result.resource_states:
        output.error(f"  {line}")
    raise typer.Exit(1)


def _at(address: str, error: str) -> str:
    """``ADDRESS: error``, the address once even when the error already starts with it."""
    return _once(f"{address}: {error}")


def _once(text: str) -> str:
    """``X: X: rest`` as ``X: rest`` (an address that both the step and its error name)."""
    head, sep, rest = text.partition(": ")
    while sep and rest.startswith(head + ": "):
        rest = rest[len(head) + 2:]
    return f"{head}{sep}{rest}"


def _report_interrupted(result: ApplyResult) -> None:
    """An apply stopped by SIGINT or SIGTERM: what it left and what to run."""
    sig = result.interrupted_by or "a signal"
    code = EXIT_SIGNAL.get(sig, 130)
    done = f"{len(result.done)} of {result.total} action(s) had finished"
    if result.outcome == "rolled-back":
        where = ("back at the plan's starting state" if result.back_at_start
                 else "NOT back at the plan's starting state")
        typer.echo(f"Apply interrupted by {sig}: {done}; rolled back {len(result.undone)}; "
                   f"the host is {where}.", err=True)
        if not result.back_at_start:
            for line in result.resource_states:
                typer.echo(f"  {line}", err=True)
        raise typer.Exit(code)
    typer.echo(f"Apply interrupted by {sig}: {done}; the rollback did not finish "
               f"({len(result.undone)} undone). State of each resource:", err=True)
    for line in result.resource_states:
        typer.echo(f"  {line}", err=True)
    typer.echo("Run `aihow recover` to bring the host back to where the apply started "
               "(or `aihow recover --forward` to finish it).", err=True)
    raise typer.Exit(code)


def _command_line() -> str:
    return output.command_line()


# --- commands -------------------------------------------------------------------------


def apply(
    target: Annotated[Path | None, typer.Argument(
        help="A plan file (from `aihow plan -o`) or a config YAML (planned, shown, then "
        "applied). Leave out with --last-generation.")] = None,
    host: HostOpt = None,
    auto_approve: AutoOpt = False,
    allow_reset: ResetOpt = False,
    restart_running_vms: RestartOpt = False,
    shutdown_timeout: ShutdownTimeoutOpt = 120.0,
    state_dir: StateDirOpt = None,
    libvirt_uri: LibvirtOpt = None,
    key: Annotated[Path | None, typer.Option(
        "--key", envvar="AIHOW_PLAN_KEY_FILE",
        help="Apply a plan file only when PLAN.sig is its signature with this key file "
        "(from `aihow plan --sign-key`).")] = None,
    lock_timeout: LockTimeoutOpt = 0.0,
    last_generation: Annotated[bool, typer.Option(
        "--last-generation", help="Apply the config of the latest generation again (what "
        "the boot unit runs): plan it against the host as it is now and apply that. "
        "No generation yet: nothing to do, exit 0.")] = False,
    fmt: EventFormatOpt = ListFormat.text,
    step_timeout: StepTimeoutOpt = None,
) -> None:
    """Apply a plan to the host: lock, re-check, journal, roll back on failure."""
    as_json = fmt is ListFormat.json
    if last_generation:
        if target is not None:
            raise AihowError("give either a PLAN/CONFIG or --last-generation, not both")
        _apply_last_generation(host, auto_approve, allow_reset, state_dir, libvirt_uri,
                               lock_timeout, as_json, restart_running_vms=restart_running_vms,
                               shutdown_timeout=shutdown_timeout)
        return
    if target is None:
        raise AihowError("missing PLAN or CONFIG (or --last-generation)")
    plan, plan_text, cfg, cfg_text, cfg_path, env = _plan_and_config(
        target, host, state_dir, libvirt_uri)
    if key is not None and _is_plan_file(target):
        from planner.plan.signing import read_key, verify

        verify(target, plan.plan_sha256, read_key(key))  # of the plan as loaded
    sdir = _state_dir(env, state_dir)
    _show_plan(plan, as_json, _command_line())
    _confirm(plan, auto_approve, as_json)
    result = _run_apply(plan, plan_text, cfg, cfg_text, cfg_path, env, sdir,
                        allow_reset=allow_reset, command=_command_line(),
                        lock_timeout=lock_timeout, as_json=as_json, step_timeout=step_timeout,
                        restart_running_vms=restart_running_vms,
                        shutdown_timeout=shutdown_timeout,
                        plan_path=str(target.absolute()) if _is_plan_file(target) else "")
    _report(result, as_json)


def _apply_last_generation(host: str | None, auto_approve: bool, allow_reset: bool,
                           state_dir: Path | None, libvirt_uri: str | None,
                           lock_timeout: float, as_json: bool, *,
                           restart_running_vms: bool = False,
                           shutdown_timeout: float = 120.0) -> None:
    """``apply --last-generation``: the latest generation's own copy of its config, planned
    against the host now (as NixOS boots the current system, not a file that may have
    been edited since)."""
    from planner.apply.generations import list_generations

    env = open_environment(host) if host is not None else None
    sdir = _state_dir(env, state_dir)
    gens = list_generations(sdir)
    if not gens:
        message = f"{sdir}: no generation recorded yet; nothing to apply"
        if as_json:
            json_events.emit({"type": "result", "outcome": "no-generation", "ok": True,
                              "generation": None})
        output.note(message)
        return
    gen = gens[-1]
    _apply_generation(gen, f"Applying generation {gen.number} again", env, sdir, libvirt_uri,
                      auto_approve, allow_reset, lock_timeout, as_json,
                      restart_running_vms=restart_running_vms,
                      shutdown_timeout=shutdown_timeout)


def _apply_generation(gen: Generation, doing: str, env: Environment | None, sdir: Path,
                      libvirt_uri: str | None, auto_approve: bool, allow_reset: bool,
                      lock_timeout: float, as_json: bool, *,
                      restart_running_vms: bool = False,
                      shutdown_timeout: float = 120.0) -> None:
    """Plan generation ``gen``'s own config against its host (``env``, else the one it was
    applied to), show it, ask, apply it and report: ``apply --last-generation`` and
    ``rollback``."""
    from planner.config import load_config

    cfg_text = gen.config_text()
    cfg = load_config(gen.config_file)
    lv_uri = libvirt_uri_for(cfg, libvirt_uri)
    env = open_environment(gen.host_uri, lv_uri) if env is None else env.with_libvirt_uri(lv_uri)
    plan = _make_plan(cfg, cfg_text, str(gen.config_file), env, sdir)
    output.note(f"{doing} ({gen.created_text()}, config {gen.config_path}).", err=as_json)
    _show_plan(plan, as_json, _command_line())
    _confirm(plan, auto_approve, as_json)
    result = _run_apply(plan, plan.to_json(), cfg, cfg_text, str(gen.config_file), env,
                        sdir, allow_reset=allow_reset, command=_command_line(),
                        lock_timeout=lock_timeout, as_json=as_json,
                        restart_running_vms=restart_running_vms,
                        shutdown_timeout=shutdown_timeout)
    _report(result, as_json)


def recover(
    host: HostOpt = None,
    forward: Annotated[bool, typer.Option("--forward", help="Finish the interrupted apply "
                                          "instead of undoing it.")] = False,
    allow_reset: ResetOpt = False,
    state_dir: StateDirOpt = None,
    libvirt_uri: Annotated[
        str | None,
        typer.Option("--libvirt-uri", help="libvirt URI to use (default: the one the "
                     "interrupted apply used, else the host's)."),
    ] = None,
    from_host: Annotated[bool, typer.Option(
        "--from-host", help="The journal is damaged (not just torn): set it aside and "
        "recover from the host as it is, against the plan's start (or with --forward its "
        "goal).")] = False,
    plan_file: Annotated[Path | None, typer.Option(
        "--plan", help="With --from-host, when the journal lost even its begin record: "
        "the plan file the interrupted apply ran.")] = None,
    lock_timeout: LockTimeoutOpt = 0.0,
    fmt: EventFormatOpt = ListFormat.text,
) -> None:
    """Bring the host back to where an interrupted apply started (or forward to its end)."""
    # here, not at the top: --help loads every command module (start-up time)
    from planner.apply.recovery import recover as run_recover

    if plan_file is not None and not from_host:
        raise AihowError("--plan: only with --from-host")
    as_json = fmt is ListFormat.json
    env = open_environment(host, libvirt_uri)
    sdir = _state_dir(env, state_dir)
    if from_host:
        from planner.apply.from_host import rebuild_journal

        kept = rebuild_journal(env, sdir, plan_file=plan_file, command=_command_line())
        if kept is not None:
            output.note(f"The damaged journal is kept at {kept}; recovering from the host "
                        "as it is.", err=as_json)
    if as_json:
        json_events.emit({"type": "recover", "command": _command_line(),
                          "host_uri": env.host_uri,
                          "direction": "forward" if forward else "back"})
    progress = _Progress(0, as_json)
    result = run_recover(env, sdir, forward=forward,
                         allow_reset=allow_reset, command=_command_line(), on_event=progress,
                         lock_timeout=lock_timeout)
    if as_json:
        for warning in result.warnings:
            output.error(f"warning: {warning}")
        record = json_events.recover_result_record(result, forward)
        json_events.emit(record)
        if not record["ok"]:
            raise typer.Exit(1)
        return
    _report_recover(result, forward)


def _report_recover(result: RecoverResult, forward: bool) -> None:
    for warning in result.warnings:
        output.error(f"warning: {warning}")
    if result.outcome == "nothing":
        output.say("Nothing to recover: no interrupted apply.")
        return
    if result.outcome == "finished":
        gen = f" Generation {result.generation.number} recorded." if result.generation else ""
        typer.echo("The interrupted apply had finished every step and the host is at its "
                   f"planned state: journal closed, nothing undone.{gen}")
        return
    for step in result.steps:
        output.note(f"  {step}")
    if result.outcome == "failed":
        output.error(f"error: recovery stopped: {_once(str(result.error))}")
        for line in result.resource_states:
            output.error(f"  {line}")
        raise typer.Exit(1)
    target = "the plan's end state" if forward else "the state before the interrupted apply"
    if result.reached:
        gen = f" Generation {result.generation.number} recorded." if result.generation else ""
        output.say(f"Recovered: the host is at {target}.{gen}")
        return
    output.error(f"error: recovery finished but the host is not at {target}:")
    for line in result.resource_states:
        output.error(f"  {line}")
    raise typer.Exit(1)


def generations(
    host: HostOpt = None,
    state_dir: StateDirOpt = None,
    fmt: Annotated[ListFormat, typer.Option(
        "--format", help="text, or json: a list (oldest first) of number, created (Unix "
        "time), plan_sha256, host_uri, config_path, fingerprint, command, summary.")
    ] = ListFormat.text,
) -> None:
    """List the generations recorded by successful applies (newest last)."""
    # here, not at the top: --help loads every command module (start-up time)
    from planner.apply.generations import list_generations

    # Listing only reads: a state directory that is not there has no generations, and
    # is not created.
    sdir = state_dir if state_dir is not None else open_environment(host).state_dir()
    gens = list_generations(sdir)
    if fmt is ListFormat.json:
        typer.echo(json.dumps([_generation_record(g) for g in gens], indent=2, sort_keys=True))
        return
    if not gens:
        output.say(f"No generations in {sdir}.")
        return
    rows = []
    for g in gens:
        marker = "*" if g is gens[-1] else " "
        counts = ", ".join(f"{g.summary[k]} {k}" for k in ("create", "update", "replace", "delete")
                           if g.summary.get(k))
        rows.append((f"{g.number}{marker}", g.created_text(), g.plan_sha256[:12],
                     counts or "no changes", g.config_path))
    widths = [max(len(r[i]) for r in [("GEN", "CREATED", "PLAN", "CHANGES", ""), *rows])
              for i in range(4)]
    for row in [("GEN", "CREATED", "PLAN", "CHANGES", "CONFIG"), *rows]:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(row[:4], widths, strict=True))
                   + "  " + row[4])
    typer.echo("* = the latest generation")


def _generation_record(gen: Any) -> dict[str, Any]:
    return {"number": gen.number, "created": gen.created, "plan_sha256": gen.plan_sha256,
            "host_uri": gen.host_uri, "config_path": gen.config_path,
            "fingerprint": gen.fingerprint, "command": gen.command, "summary": gen.summary}


def rollback(
    to: Annotated[int | None, typer.Option("--to", help="Generation to return to "
                                           "(default: the one before the latest).")] = None,
    host: HostOpt = None,
    auto_approve: AutoOpt = False,
    allow_reset: ResetOpt = False,
    state_dir: StateDirOpt = None,
    libvirt_uri: LibvirtOpt = None,
    lock_timeout: LockTimeoutOpt = 0.0,
    fmt: EventFormatOpt = ListFormat.text,
    restart_running_vms: RestartOpt = False,
    shutdown_timeout: ShutdownTimeoutOpt = 120.0,
) -> None:
    """Plan from generation N's config against the current host, show it, and apply it."""
    # here, not at the top: --help loads every command module (start-up time)
    from planner.apply.generations import list_generations, load_generation

    # Without --host the generations are looked up on this machine and the rollback goes
    # to the host the generation was applied to.
    env = open_environment(host) if host is not None else None
    sdir = _state_dir(env, state_dir)
    if to is None:
        gens = list_generations(sdir)
        if len(gens) < 2:
            raise AihowError(f"{sdir}: no earlier generation to roll back to "
                             f"({len(gens)} recorded); use --to N")
        to = gens[-2].number
    gen = load_generation(sdir, to)
    _apply_generation(gen, f"Rolling back to generation {gen.number}", env, sdir, libvirt_uri,
                      auto_approve, allow_reset, lock_timeout, fmt is ListFormat.json,
                      restart_running_vms=restart_running_vms,
                      shutdown_timeout=shutdown_timeout)
