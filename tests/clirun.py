"""The one way tests run the real ``aihow`` command: its console script in a subprocess,
with no terminal (no prompts, no progress bar), no standard input and a time bound."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AIHOW = str(Path(sys.executable).with_name("aihow"))


def aihow(*args: str | Path, env: dict[str, str] | None = None, cwd: Path | None = ROOT,
          timeout: float = 120, ok: bool = False) -> subprocess.CompletedProcess[str]:
    """``aihow ARGS`` (``env`` added to the environment, without the crash test hook unless
    given); ``ok`` asserts it exited 0, showing its output otherwise."""
    full_env = dict(os.environ)
    full_env.pop("AIHOW_TEST_CRASH_AFTER", None)
    full_env.update(env or {})
    res = subprocess.run([AIHOW, *map(str, args)], capture_output=True, text=True,
                         env=full_env, cwd=cwd, timeout=timeout, stdin=subprocess.DEVNULL,
                         check=False)
    if ok:
        assert res.returncode == 0, f"aihow {' '.join(map(str, args))}:\n{res.stdout}{res.stderr}"
    return res
