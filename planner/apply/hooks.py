"""Running the plan's hooks (``global.hooks``): the operator's commands around an apply.

A GPU reset fails while anything holds the GPU open (nvidia-persistenced, DCGM, an
nvidia_drm user, a kubelet device plugin); only the operator knows how to stop those on
their host, so the config names commands and apply runs them at fixed points:

* ``pre_apply``   after every check passed (lock, staleness, vetting), before any change;
* ``pre_reset``   next, when the plan resets a GPU (``AIHOW_RESET_GPUS`` lists them);
* ``post_reset``  once the apply's fate is settled (verified, or rolled back as far as it
  goes), whenever ``pre_reset`` began, success or not, so what it stopped starts again;
* ``post_apply``  after a successful apply; ``on_failure`` after any other outcome.

A command runs with its argv (no shell), stdin closed, its output captured (the tail is
kept), in a session of its own so that at its timeout the whole process group is killed
(SIGTERM, then SIGKILL); a timeout, a non-zero exit or a program that cannot start is a
failure. In the pre phases the first failure stops the phase and the apply (nothing was
changed); in the others every command runs and failures become warnings.

The executor owns the order; this module runs commands, journals them (``hook`` records
with ``status`` started / ok / failed / timed-out) and reports them as events.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from planner.apply.events import Event, EventSink
from planner.errors import AihowError
from planner.vocab.plan import Hook, Hooks, Plan, summarize

Status = Literal["ok", "failed", "timed-out"]
OUTPUT_TAIL = 2000  # characters of a hook's output kept in the journal and events
KILL_GRACE = 2.0  # seconds between SIGTERM and SIGKILL for a hook past its timeout
RESET_PHASES = ("pre_reset", "post_reset")


def phase_label(phase: str) -> str:
    """``pre_reset`` as users read it: ``pre-reset``."""
    return phase.replace("_", "-")


@dataclass(frozen=True)
class HookRun:
    """What one hook command did."""

    phase: str
    index: int
    hook: Hook
    status: Status
    returncode: int | None
    seconds: float
    output: str  # the tail of stdout and stderr together

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def name(self) -> str:
        return f"{phase_label(self.phase)}[{self.index}]"

    def describe(self) -> str:
        """One line: which hook, what it ran, how it ended."""
        if self.ok:
            return f"{self.name} hook done in {self.seconds:.1f}s"
        head = f"{self.name} hook `{self.hook.describe()}`"
        if self.status == "timed-out":
            why = f"timed out after {self.hook.timeout:g}s and was killed"
        elif self.returncode is None:
            why = "could not be started"
        else:
            why = f"failed (exit {self.returncode})"
        last = next((ln.strip() for ln in reversed(self.output.splitlines()) if ln.strip()), "")
        return f"{head} {why}" + (f": {last}" if last else "")

    def record(self) -> dict[str, Any]:
        """The fields of its journal record and its event (``docs/reference/json-output.md``)."""
        return {"phase": phase_label(self.phase), "index": self.index,
                "command": list(self.hook.command), "timeout": self.hook.timeout,
                "status": self.status, "returncode": self.returncode,
                "seconds": round(self.seconds, 3), "output": self.output}


def run_hook(hook: Hook, env: Mapping[str, str], phase: str, index: int) -> HookRun:
    """Run one command to its end or its timeout (then kill its process group)."""
    start = time.monotonic()
    with tempfile.TemporaryFile() as out:  # a file, not a pipe: a daemon it starts may
        try:                               # keep the descriptor open long after it exits
            proc = subprocess.Popen(list(hook.command), stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, env=dict(env),
                                    start_new_session=True, close_fds=True)
        except OSError as exc:
            return HookRun(phase, index, hook, "failed", None, time.monotonic() - start,
                           f"{hook.command[0]}: {exc.strerror or exc}")
        status: Status
        try:
            code: int | None = proc.wait(timeout=hook.timeout)
            status = "ok" if code == 0 else "failed"
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            code, status = proc.returncode, "timed-out"
        except BaseException:  # Ctrl-C while waiting: its session does not get the signal
            _kill_group(proc)
            raise
        seconds = time.monotonic() - start
        out.seek(0, os.SEEK_END)
        size = out.tell()
        out.seek(max(0, size - OUTPUT_TAIL * 4))
        text = out.read().decode("utf-8", errors="replace")[-OUTPUT_TAIL:]
    return HookRun(phase, index, hook, status, code, seconds, text)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the hook's process group, SIGKILL after a grace; reaps the hook."""
    for sig, wait in ((signal.SIGTERM, KILL_GRACE), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def reset_gpus(plan: Plan) -> list[str]:
    """The GPUs (PCI addresses) whose changes need a reset, sorted."""
    return sorted({str(c.address.pci) for c in plan.changes if c.needs_reset and c.address.pci})


def plan_env(plan: Plan, *, plan_file: str, config_path: str, host_uri: str, state_dir: str,
             apply_id: str) -> dict[str, str]:
    """The variables every hook of this plan sees (besides aihow's own environment)."""
    counts = summarize(plan.changes)
    env = {
        "AIHOW_PLAN_FILE": plan_file,
        "AIHOW_PLAN_SHA256": str(plan.plan_sha256),
        "AIHOW_CONFIG": config_path,
        "AIHOW_HOST_URI": host_uri,
        "AIHOW_STATE_DIR": state_dir,
        "AIHOW_APPLY_ID": apply_id,
        "AIHOW_RESET_GPUS": " ".join(reset_gpus(plan)),
        "AIHOW_CHANGES": str(len(plan.changes)),
    }
    for action in ("create", "update", "replace", "delete"):
        env[f"AIHOW_{action.upper()}"] = str(counts[action])
    return env


Journal = Callable[..., Any]  # JournalWriter.append, or a stand-in that records nothing


@dataclass
class HookRunner:
    """The hooks of one apply (or recover): runs phases, remembers whether a
    ``post_reset`` is owed, journals and reports each command."""

    hooks: Hooks
    env: dict[str, str]
    journal: Journal
    on_event: EventSink = lambda e: None
    resets: bool = False  # the plan resets a GPU: the reset phases run
    reset_owed: bool = False  # pre_reset began and post_reset has not run yet
    runs: list[HookRun] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # failures of the later phases
    ended: bool = False  # post_apply or on_failure ran

    def run_phase(self, phase: str, *, stop_at_failure: bool, **extra: str) -> HookRun | None:
        """Run every command of ``phase``; the first failure, or None. With
        ``stop_at_failure`` the phase ends at that failure."""
        hooks = self.hooks.phase(phase)
        if phase in RESET_PHASES and not self.resets:
            return None
        if phase == "pre_reset" and hooks:
            self.reset_owed = True
        if phase == "post_reset":
            self.reset_owed = False
        first: HookRun | None = None
        for index, hook in enumerate(hooks):
            env = {**os.environ, **self.env, **extra,
                   "AIHOW_HOOK_PHASE": phase_label(phase), "AIHOW_HOOK_INDEX": str(index)}
            name = f"{phase_label(phase)}[{index}]"
            self._journal(phase=phase_label(phase), index=index, command=list(hook.command),
                          timeout=hook.timeout, status="started")
            self.on_event(Event("hook-start", f"{name} hook `{hook.describe()}`",
                                hook={"phase": phase_label(phase), "index": index,
                                      "command": list(hook.command), "timeout": hook.timeout,
                                      "status": "started"}))
            run = run_hook(hook, env, phase, index)
            self.runs.append(run)
            self._journal(**run.record())
            self.on_event(Event("hook-done" if run.ok else "hook-failed", run.describe(),
                                hook=run.record()))
            if not run.ok and first is None:
                first = run
                if stop_at_failure:
                    break
        return first

    def finish_reset(self, outcome: str) -> None:
        """Run ``post_reset`` if ``pre_reset`` began and it has not run since."""
        if self.reset_owed:
            self._all("post_reset", AIHOW_OUTCOME=outcome)

    def after(self, outcome: str, ok: bool, **extra: str) -> None:
        """``post_apply`` (``ok``) or ``on_failure``, once."""
        if not self.ended:
            self.ended = True
            self._all("post_apply" if ok else "on_failure", AIHOW_OUTCOME=outcome, **extra)

    def _all(self, phase: str, **extra: str) -> None:
        """Every command of ``phase``; each failure becomes a warning."""
        start = len(self.runs)
        self.run_phase(phase, stop_at_failure=False, **extra)
        self.warnings += [r.describe() for r in self.runs[start:] if not r.ok]

    def _journal(self, **fields: Any) -> None:
        # A hook that ran must not be lost for a journal that cannot be written, nor must
        # that stop the restart of what pre_reset stopped: the write error is reported
        # by the next record the executor itself writes.
        with contextlib.suppress(AihowError, OSError):
            self.journal("hook", **fields)

