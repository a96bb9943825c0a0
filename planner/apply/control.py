"""How long a step may run, and stopping an apply on SIGINT or SIGTERM.

Every step runs in a worker thread with a deadline (``run_with_deadline``): libvirt's and
NVML's calls take no timeout of their own, so the only way not to wait forever on a stuck
one is to stop waiting. A step past its deadline fails like any other and is rolled back;
its thread is a daemon thread, abandoned where it hangs (Python cannot cancel a call
blocked in C), so the process can still exit. What an abandoned call does later (it may
still finish) is judged from the host afterwards: the rollback probes the host before it
undoes anything, and the journal stays for ``aihow recover`` when the host is not back at
its start.

While an apply runs, SIGINT (Ctrl-C) and SIGTERM do not raise anywhere (so no library
code, a ``__del__`` for instance, can swallow them); the handler only sets the stop
request. The executor then starts no new step, gives the running ones ``stop_grace``
seconds, and rolls back what finished for at most ``stop_grace`` seconds more; what is
left stays in the journal for ``aihow recover``. A second signal stops the rollback too.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import TypeVar

from planner.errors import AihowError

T = TypeVar("T")

# Defaults, overridable per run (the CLI's --step-timeout) or by the environment (tests).
STEP_TIMEOUT_ENV = "AIHOW_STEP_TIMEOUT"
DEFAULT_STEP_TIMEOUT = 600.0  # a MIG mode change with a GPU reset, on a slow machine
DEFAULT_STOP_GRACE = 10.0


class StepTimedOut(AihowError):
    """A step (or an undo) gave no answer before its deadline and was abandoned."""


def _env_timeout() -> float:
    raw = os.environ.get(STEP_TIMEOUT_ENV, "").strip()
    try:
        return float(raw) if raw else DEFAULT_STEP_TIMEOUT
    except ValueError:
        return DEFAULT_STEP_TIMEOUT


@dataclass
class RunControl:
    """Deadlines and the stop request of one apply or recover."""

    step_timeout: float = field(default_factory=_env_timeout)
    stop_grace: float = DEFAULT_STOP_GRACE
    stop: threading.Event = field(default_factory=threading.Event)
    stop_now: threading.Event = field(default_factory=threading.Event)  # a second signal
    signal_name: str | None = None
    stop_requested_at: float | None = None

    def request_stop(self, name: str) -> None:
        if self.stop.is_set():
            self.stop_now.set()
            return
        self.signal_name = name
        self.stop_requested_at = time.monotonic()
        self.stop.set()

    @property
    def stopped(self) -> bool:
        return self.stop.is_set()

    def grace_left(self) -> float:
        """Seconds left of the grace since the stop request (infinite when none)."""
        if self.stop_requested_at is None:
            return float("inf")
        return self.stop_grace - (time.monotonic() - self.stop_requested_at)

    @contextmanager
    def stop_on_signals(self) -> Iterator[None]:
        """Turn SIGINT and SIGTERM into a stop request while the block runs (only in the
        main thread, where Python delivers signals; elsewhere nothing changes)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: FrameType | None) -> None:
            self.request_stop(signal.Signals(signum).name)

        old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)


def run_with_deadline(fn: Callable[[], T], seconds: float, what: str,
                      stop_now: threading.Event | None = None) -> T:
    """``fn()`` in a daemon thread; StepTimedOut when it has not returned after
    ``seconds`` (or as soon as ``stop_now`` is set). Its exception, if any, is re-raised."""
    box: dict[str, object] = {}
    done = threading.Event()

    def work() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=work, name=f"aihow: {what}", daemon=True).start()
    end = time.monotonic() + seconds
    while not done.wait(min(0.1, max(0.0, end - time.monotonic()))):
        if time.monotonic() >= end:
            raise StepTimedOut(f"{what}: no answer after {seconds:g} s; abandoned "
                               "(the call may still finish on the host)")
        if stop_now is not None and stop_now.is_set():
            raise StepTimedOut(f"{what}: abandoned on a second stop request")
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]
