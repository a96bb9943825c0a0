"""The command line's machine-readable and printing surface: JSON lines of apply and
recover, validate --format json, NO_COLOR / --no-color, -q, --log-file, --lock-timeout,
shell completion, and a help without ``<bool>`` after every flag. Real CLI runs against
simulated hosts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import typer

from planner.cli import hoist_global_options
from planner.cli.host_opts import parse_duration

ROOT = Path(__file__).resolve().parents[1]
AIHOW = str(Path(sys.executable).parent / "aihow")
EXAMPLE = "config/example-mig-cluster.yaml"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    full.update({"COLUMNS": "120", **(env or {})})
    return subprocess.run([AIHOW, *args], capture_output=True, text=True, cwd=ROOT, env=full,
                          check=False)


@pytest.fixture
def host(tmp_path: Path) -> Path:
    d = tmp_path / "host"
    assert run("sim", "init", str(d), "--spec", "config/sim-a100.toml").returncode == 0
    return d


def lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def test_apply_prints_json_lines_plan_events_result(host: Path) -> None:
    res = run("apply", EXAMPLE, "--host", f"sim:{host}", "--allow-reset", "--auto-approve",
              "--format", "json")
    assert res.returncode == 0, res.stderr
    events = lines(res.stdout)
    assert events[0]["type"] == "plan" and events[0]["has_changes"] is True
    assert {e["schema"] for e in events} == {1}
    total = len(events[0]["actions"])
    starts = [e for e in events if e["type"] == "action-start"]
    done = [e for e in events if e["type"] == "action-done"]
    assert len(starts) == len(done) == total and all(e["total"] == total for e in done)
    assert events[-1]["type"] == "result" and events[-1]["outcome"] == "applied"
    assert events[-1]["generation"] == 1 and events[-1]["ok"] is True
    again = run("apply", EXAMPLE, "--host", f"sim:{host}", "--format", "json")
    assert [e["type"] for e in lines(again.stdout)] == ["plan", "result"]
    assert lines(again.stdout)[-1]["outcome"] == "no-changes"


def test_an_error_is_one_json_line_and_the_same_exit(host: Path, tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    assert run("plan", EXAMPLE, "--host", f"sim:{host}", "-o", str(plan)).returncode == 0
    subprocess.run([str(host / "bin" / "nvidia-smi"), "-i", "0", "-mig", "1"], check=True,
                   capture_output=True)  # the host changes: the plan is stale
    res = run("apply", str(plan), "--auto-approve", "--allow-reset", "--format", "json")
    assert res.returncode == 1
    plan_event, event = lines(res.stdout)
    assert plan_event["type"] == "plan" and event["type"] == "error" and "stale" in event["message"]
    assert event["exit_code"] == 1 and res.stderr.startswith("error: ")


def test_recover_json_with_nothing_to_recover(host: Path) -> None:
    res = run("recover", "--host", f"sim:{host}", "--format", "json")
    assert res.returncode == 0, res.stderr
    first, last = lines(res.stdout)
    assert first["type"] == "recover" and first["direction"] == "back"
    assert last == {**last, "type": "result", "outcome": "nothing", "ok": True}


def test_validate_json(host: Path, tmp_path: Path) -> None:
    res = run("validate", EXAMPLE, "--host", f"sim:{host}", "--format", "json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["valid"] and doc["vms"] == 9 and doc["mig_slices"]["by_profile"] == {"1g.5gb": 7}
    assert doc["host"]["ok"] and {c["status"] for c in doc["host"]["checks"]} <= {"ok", "warn"}
    bad = tmp_path / "bad.yaml"
    bad.write_text('version: "1.0"\nmetadata: {name: x}\n')
    res = run("validate", str(bad), "--format", "json")
    doc = json.loads(res.stdout)
    assert res.returncode == 1 and doc["valid"] is False and doc["errors"]
    assert doc["errors"][0]["file"] == str(bad) and doc["errors"][0]["line"] >= 1


def test_colour_follows_no_color_and_the_flag(host: Path) -> None:
    # a terminal is needed for colour at all: `script` gives the command one
    if not any((Path(p) / "script").exists() for p in ("/usr/bin", "/bin")):
        pytest.skip("util-linux script(1) not installed")
    cmd = f"{AIHOW} plan {EXAMPLE} --host sim:{host}"

    def on_tty(command: str, **env: str) -> str:
        full = {k: v for k, v in os.environ.items() if k != "NO_COLOR"} | env
        return subprocess.run(["script", "-qec", command, "/dev/null"], capture_output=True,
                              text=True, cwd=ROOT, env=full, check=False, timeout=120).stdout

    assert "\x1b[" in on_tty(cmd)
    assert "\x1b[" not in on_tty(cmd, NO_COLOR="1")
    assert "\x1b[" not in on_tty(cmd + " --no-color")


def test_quiet_keeps_the_result_and_the_log_file_keeps_everything(host: Path,
                                                                  tmp_path: Path) -> None:
    log = tmp_path / "aihow.log"
    res = run("apply", EXAMPLE, "--host", f"sim:{host}", "--allow-reset", "--auto-approve",
              "-q", "--log-file", str(log))
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [
        "Apply complete: 60 of 60 action(s) done, host verified. Generation 1 recorded."]
    text = log.read_text()
    assert "run: aihow apply" in text and "Plan: 59 to create, 1 to update" in text
    assert "[1/60] update gpu[0000:17:00.0].mig" in text and "Apply complete" in text
    assert all(line[:4].isdigit() and "Z " in line for line in text.splitlines())


def test_lock_timeout_waits_for_a_running_apply(host: Path) -> None:
    state = host / "state"
    state.mkdir(exist_ok=True)
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from planner.apply.lock import HostLock
        with HostLock(Path({str(state)!r}), "aihow apply other.json"):
            print("held", flush=True)
            sys.stdin.readline()
        """)
    holder = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    args = [AIHOW, "apply", EXAMPLE, "--host", f"sim:{host}", "--allow-reset",
            "--auto-approve"]
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        at_once = run(*args[1:])
        assert at_once.returncode == 1 and "locked by" in at_once.stderr
        assert "--lock-timeout" in at_once.stderr
        waiter = subprocess.Popen([*args, "--lock-timeout", "2m"], cwd=ROOT, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert waiter.stdout is not None
        for line in waiter.stdout:  # the plan is shown before the lock is taken
            if line.startswith("Plan:"):
                break
        time.sleep(1)  # it is now waiting for the lock (without the timeout: failed)
        assert waiter.poll() is None
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.close()
        rest, err = waiter.communicate(timeout=120)
        assert waiter.returncode == 0, err
        assert "Apply complete" in rest
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait(timeout=60)
    bad = run("apply", EXAMPLE, "--host", f"sim:{host}", "--lock-timeout", "soon")
    assert bad.returncode == 2 and "not a duration" in bad.stderr


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("30s", 30), ("500ms", 0.5),
                                               ("5m", 300), ("1h", 3600), ("1m30s", 90)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "5 m", "1m30", "-1s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(typer.BadParameter):
        parse_duration(text)


def test_global_options_are_taken_after_the_command() -> None:
    assert hoist_global_options(["aihow", "plan", "x.yaml", "-q", "--log-file", "f",
                                 "--format", "json"]) == [
        "aihow", "-q", "--log-file", "f", "plan", "x.yaml", "--format", "json"]
    assert hoist_global_options(["aihow", "--no-color", "show", "p.json", "--", "-q"]) == [
        "aihow", "--no-color", "show", "p.json", "--", "-q"]


def test_help_has_no_bool_after_flags_and_offers_completion() -> None:
    for args in (("--help",), ("apply", "--help"), ("plan", "--help")):
        res = run(*args)
        assert res.returncode == 0 and "<bool>" not in res.stdout, res.stdout
    assert "--install-completion" in run("--help").stdout
    shown = run("--show-completion", "bash", env={"_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION":
                                                  "1"})
    assert shown.returncode == 0 and "_AIHOW_COMPLETE" in shown.stdout, shown.stdout + shown.stderr
    done = subprocess.run([AIHOW], capture_output=True, text=True, cwd=ROOT, check=False,
                          env={**os.environ, "_AIHOW_COMPLETE": "complete_bash",
                               "COMP_WORDS": "aihow gen", "COMP_CWORD": "1"})
    assert "generations" in done.stdout, done.stdout + done.stderr
