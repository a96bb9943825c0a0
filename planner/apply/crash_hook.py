"""Test hook: make an apply die (or pause) at a chosen step.

``AIHOW_TEST_CRASH_AFTER=N[:point[:pause]]`` makes the process SIGKILL itself at the
N-th action, at ``point`` = ``intent`` (journaled, not yet done), ``acted`` (done, not
yet journaled) or ``outcome`` (done and journaled, the default). With ``:pause`` it
instead creates ``STATE_DIR/test-paused`` and waits (holding the lock) until that file is
removed. Used by the crash and concurrency tests; unset, it has no effect.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

CRASH_ENV = "AIHOW_TEST_CRASH_AFTER"


@dataclass
class CrashHook:
    after: int | None
    point: str
    pause_file: Path | None = None
    seen: int = 0

    @classmethod
    def from_env(cls, state_dir: Path) -> CrashHook:
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
