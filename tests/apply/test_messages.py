"""Issue 10 defect 8: every message that names a file or a next command is true.

Each test drives the CLI into the situation a message describes, then checks the file it
names exists (or not) and the command it names does what the message says."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

from planner.apply.journal import active_path
from tests.apply.simhost import IMAGE, SimHost, write_config
from tests.clirun import AIHOW, aihow

G0 = "0000:17:00.0"


def _host(tmp_path: Path) -> SimHost:
    out = aihow("sim", "init", str(tmp_path / "host"), "--gpu", f"h100-80gb@{G0}", "--image", IMAGE)
    assert out.returncode == 0, out.stderr
    host = SimHost(tmp_path / "host")
    smi = subprocess.run([str(host.dir / "bin" / "nvidia-smi"), "-i", "0", "-mig", "1"],
                         capture_output=True, text=True, check=False)
    assert smi.returncode == 0, smi.stdout + smi.stderr
    return host


def _plan(host: SimHost, cfg: Path, out: Path) -> Path:
    res = aihow("plan", str(cfg), "--host", host.uri, "-o", str(out))
    assert res.returncode == 0, res.stderr
    return out


def _named_file(text: str, before: str) -> Path:
    m = re.search(re.escape(before) + r" (\S+?)[;:]? ", text)
    assert m, text
    return Path(m[1])


def test_a_rollback_short_of_the_start_names_the_archived_journal_and_a_true_next_step(
        tmp_path: Path) -> None:
    """A hand-made instance appears while the apply runs; the apply then fails and rolls
    back what it did, which leaves the hand-made one: not at the start. The journal is
    archived, so the message must not send the operator to `aihow recover`."""
    host = _host(tmp_path)
    cfg = write_config(tmp_path / "a.yaml", {G0: "2*1g.10gb"})
    plan = _plan(host, cfg, tmp_path / "plan.json")
    assert aihow("sim", "fail", str(host.dir), "--op",
                 "nvmlGpuInstanceCreateComputeInstanceWithPlacement", "--at", "2").returncode == 0
    env = dict(os.environ, AIHOW_TEST_CRASH_AFTER="1:outcome:pause")
    apply = subprocess.Popen([AIHOW, "apply", str(plan), "--auto-approve"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             stdin=subprocess.DEVNULL)
    paused = host.state_dir / "test-paused"
    try:
        deadline = time.monotonic() + 60
        while not paused.exists():
            assert apply.poll() is None, apply.communicate()
            assert time.monotonic() < deadline, "the apply never reached its pause"
            time.sleep(0.05)
        by_hand = subprocess.run([str(host.dir / "bin" / "nvidia-smi"), "mig", "-i", "0",
                                  "-cgi", "3g.40gb"], capture_output=True, text=True,
                                 check=False)
        assert by_hand.returncode == 0, by_hand.stdout + by_hand.stderr
    finally:
        paused.unlink(missing_ok=True)
        out, err = apply.communicate(timeout=120)
    assert apply.returncode == 1, out + err
    assert "NOT back at the plan's starting state" in err, err
    assert "aihow recover" not in err
    archived = _named_file(err, "the journal is archived at")
    assert archived.is_file() and archived.parent.name != "" and not active_path(
        host.state_dir).exists()
    assert "make a new plan with `aihow plan`" in err
    recover = aihow("recover", "--host", host.uri)
    assert recover.returncode == 0 and "Nothing to recover" in recover.stdout
    again = aihow("plan", str(cfg), "--host", host.uri, "--detailed-exitcode")
    assert again.returncode == 2, again.stdout + again.stderr  # the plan says what to do


def test_a_failed_undo_keeps_the_journal_it_names_and_recover_finishes(tmp_path: Path) -> None:
    host = _host(tmp_path)
    start = host.layout()
    cfg = write_config(tmp_path / "a.yaml", {G0: "2*1g.10gb"})
    plan = _plan(host, cfg, tmp_path / "plan.json")
    for op, at in (("nvmlGpuInstanceCreateComputeInstanceWithPlacement", "2"),
                   ("nvmlGpuInstanceDestroy", "1")):
        assert aihow("sim", "fail", str(host.dir), "--op", op, "--at", at).returncode == 0
    failed = aihow("apply", str(plan), "--auto-approve")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "the rollback stopped because an undo failed" in failed.stderr
    kept = _named_file(failed.stderr, "journal kept at")
    assert kept.is_file() and kept == active_path(host.state_dir)
    assert "run `aihow recover`" in failed.stderr
    blocked = aihow("apply", str(plan), "--auto-approve")
    assert blocked.returncode == 1 and f"{kept}: an earlier apply did not finish" in \
        blocked.stderr and "run `aihow recover`" in blocked.stderr
    recover = aihow("recover", "--host", host.uri)
    assert recover.returncode == 0, recover.stdout + recover.stderr
    assert "Recovered: the host is at the state before the interrupted apply" in recover.stdout
    assert host.layout() == start and not kept.exists()
