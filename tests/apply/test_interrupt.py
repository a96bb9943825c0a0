"""SIGINT and SIGTERM stop an apply within seconds (issue 12 item 5, issue 16 item 8): a
real `aihow apply` subprocess on a simulated host with the realistic latency model gets
the signal while steps run; no new step starts, what finished is rolled back, the exit
status says which signal, the message says what state the host is in and what to run,
and `aihow recover` completes whatever is left."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from planner.apply.journal import active_path
from planner.sim.latency import write_model
from tests.apply.simhost import SimHost, write_config
from tests.clirun import AIHOW, aihow

G0, G1 = "0000:17:00.0", "0000:31:00.0"


def _running_apply(tmp_path: Path) -> tuple[SimHost, object, subprocess.Popen[str]]:
    """Start an apply of two A100s (MIG off: a mode change, then 7 slices each) and
    return once its journal shows a finished step."""
    host = SimHost.create(tmp_path / "host", [("a100-40gb", G0, False), ("a100-40gb", G1, False)])
    write_model(host.dir, "realistic")
    cfg = write_config(tmp_path / "c.yaml", {G0: "7*1g.5gb", G1: "7*1g.5gb"})
    plan = tmp_path / "plan.json"
    assert aihow("plan", str(cfg), "--host", host.uri, "-o", str(plan)).returncode == 0
    start = host.layout()
    env = {k: v for k, v in os.environ.items() if k != "AIHOW_TEST_CRASH_AFTER"}
    proc = subprocess.Popen([AIHOW, "apply", str(plan), "--host", host.uri, "--auto-approve",
                             "--allow-reset"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    journal = active_path(host.state_dir)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if journal.exists() and '"type":"done"' in journal.read_text().replace(" ", ""):
            break
        if proc.poll() is not None:
            pytest.fail(f"the apply ended before the signal: {proc.communicate()}")
        time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("no step finished within 60 s")
    return host, start, proc


def _finish_and_check(host: SimHost, start: object, proc: subprocess.Popen[str],
                      signals: list[signal.Signals], code: int) -> str:
    for n, sig in enumerate(signals):
        if n:
            time.sleep(0.3)
        proc.send_signal(sig)
    sent = time.monotonic()
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the apply did not stop within 60 s of the signal")
    stopped_after = time.monotonic() - sent
    assert proc.returncode == code, err
    assert f"Apply interrupted by {signals[0].name}" in err, err
    assert "Traceback" not in err
    # No new step after the signal, and the rest well within the stop grace (10 s) plus
    # the rollback's (10 s) on a machine shared with other work.
    assert stopped_after < 40, stopped_after
    if active_path(host.state_dir).exists():
        assert "aihow recover" in err, err
        out = aihow("recover", "--host", host.uri)
        assert out.returncode == 0, out.stderr
        assert "Recovered" in out.stdout
    else:
        assert "back at the plan's starting state" in err, err
    assert host.layout() == start
    assert not active_path(host.state_dir).exists()
    return err


def test_sigterm_stops_the_apply_and_rolls_back(tmp_path: Path) -> None:
    host, start, proc = _running_apply(tmp_path)
    _finish_and_check(host, start, proc, [signal.SIGTERM], 143)


def test_a_second_sigint_stops_the_rollback_and_recover_finishes_it(tmp_path: Path) -> None:
    host, start, proc = _running_apply(tmp_path)
    _finish_and_check(host, start, proc, [signal.SIGINT, signal.SIGINT], 130)
