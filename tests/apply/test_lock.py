"""The host lock: one holder at a time, the second told who holds it, dead holders ignored."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from planner.apply.lock import HostLock, LockHeld, read_lock_info


def test_second_holder_fails_at_once_naming_the_first(tmp_path: Path) -> None:
    with HostLock(tmp_path, "aihow apply one.json"), pytest.raises(LockHeld) as info:
        HostLock(tmp_path, "aihow apply two.json").acquire()
    message = str(info.value)
    assert f"pid {os.getpid()}" in message
    assert "started 20" in message and "UTC" in message
    assert "aihow apply one.json" in message


def test_lock_is_free_again_after_release(tmp_path: Path) -> None:
    with HostLock(tmp_path, "first"):
        pass
    with HostLock(tmp_path, "second") as lock:
        assert lock.previous is not None and lock.previous.released
        assert not lock.stale_previous
    info = read_lock_info(tmp_path)
    assert info is not None and info.command == "second" and info.released


def test_lock_left_by_a_killed_process_is_taken_and_reported_stale(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from planner.apply.lock import HostLock
        HostLock(Path({str(tmp_path)!r}), "doomed").acquire()
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], check=False)
    assert proc.returncode == -9
    dead = read_lock_info(tmp_path)
    assert dead is not None and dead.command == "doomed" and not dead.released
    with HostLock(tmp_path, "next") as lock:
        assert lock.stale_previous
        assert lock.previous is not None and lock.previous.pid == dead.pid


def test_holder_in_another_process_is_named(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from planner.apply.lock import HostLock
        with HostLock(Path({str(tmp_path)!r}), "aihow apply held.json"):
            print("held", flush=True)
            sys.stdin.readline()
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        with pytest.raises(LockHeld, match=f"pid {proc.pid} .*aihow apply held.json"):
            HostLock(tmp_path, "me").acquire()
    finally:
        assert proc.stdin is not None
        proc.stdin.write("\n")
        proc.stdin.close()
        proc.wait()
    with HostLock(tmp_path, "me"):
        pass


def _holder(tmp_path: Path, seconds: float) -> subprocess.Popen[str]:
    """Another process holding the lock for ``seconds``, once it prints 'held'."""
    script = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from planner.apply.lock import HostLock
        with HostLock(Path({str(tmp_path)!r}), "aihow apply held.json"):
            print("held", flush=True)
            time.sleep({seconds})
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_timeout_waits_for_the_holder_to_finish(tmp_path: Path) -> None:
    proc = _holder(tmp_path, 0.5)
    try:
        with HostLock(tmp_path, "waiter", timeout=30) as lock:
            # it got the lock only once the holder had released it
            assert lock.previous is not None and lock.previous.released
            assert lock.previous.command == "aihow apply held.json"
    finally:
        proc.wait(timeout=30)


def test_a_timeout_that_runs_out_names_the_holder_and_the_wait(tmp_path: Path) -> None:
    proc = _holder(tmp_path, 30)
    try:
        with pytest.raises(LockHeld, match=r"held\.json\) \(waited 0\.3s\).*--lock-timeout"):
            HostLock(tmp_path, "waiter", timeout=0.3).acquire()
    finally:
        proc.kill()
        proc.wait(timeout=30)
