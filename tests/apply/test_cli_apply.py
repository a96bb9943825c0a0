"""`aihow apply`, `recover`, `generations`, `rollback` as real subprocesses on simulated hosts."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from planner.apply.journal import active_path
from tests.apply.simhost import IMAGE, SimHost, write_config
from tests.clirun import AIHOW, aihow

G0 = "0000:17:00.0"
LAYOUT_A = "3g.40gb@4 + 2*1g.10gb"
LAYOUT_B = "4g.40gb@0 + 2g.20gb@4"


def _host(tmp_path: Path, model: str = "h100-80gb", mig: bool = True) -> SimHost:
    out = aihow("sim", "init", str(tmp_path / "host"), "--gpu", f"{model}@{G0}", "--image", IMAGE)
    assert out.returncode == 0, out.stderr
    host = SimHost(tmp_path / "host")
    if mig:
        smi = subprocess.run([str(host.dir / "bin" / "nvidia-smi"), "-i", "0", "-mig", "1"],
                             capture_output=True, text=True, check=False)
        assert smi.returncode == 0, smi.stdout + smi.stderr
    return host


def _plan(host: SimHost, cfg: Path, out: Path) -> Path:
    res = aihow("plan", str(cfg), "--host", host.uri, "-o", str(out))
    assert res.returncode == 0, res.stderr
    return out


def test_apply_then_plan_reports_no_changes(tmp_path: Path) -> None:
    host = _host(tmp_path, "a100-40gb", mig=False)
    cfg = write_config(tmp_path / "a.yaml", {G0: "3g.20gb@4 + 2*1g.5gb"})
    plan = _plan(host, cfg, tmp_path / "plan.json")

    refused = aihow("apply", str(plan), "--auto-approve")  # A100 needs a GPU reset to enable MIG
    assert refused.returncode == 1
    assert "needs a GPU reset" in refused.stderr and "--allow-reset" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert host.layout()[G0][0] is False  # nothing changed

    done = aihow("apply", str(plan), "--auto-approve", "--allow-reset")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Apply complete" in done.stdout and "Generation 1 recorded" in done.stdout
    again = aihow("plan", str(cfg), "--host", host.uri, "--detailed-exitcode")
    assert again.returncode == 0, again.stdout + again.stderr
    gens = aihow("generations", "--host", host.uri)
    assert gens.returncode == 0 and gens.stdout.splitlines()[1].startswith("1* ")
    listed = aihow("generations", "--host", host.uri, "--format", "json")
    assert listed.returncode == 0, listed.stderr
    [gen] = json.loads(listed.stdout)
    made = json.loads(plan.read_text())
    assert gen["number"] == 1 and gen["plan_sha256"] == made["plan_sha256"]
    assert gen["summary"] == made["summary"] and gen["host_uri"] == host.uri
    assert gen["fingerprint"] == json.loads(aihow(
        "plan", str(cfg), "--host", host.uri, "--format", "json").stdout)["host"]["fingerprint"]
    assert json.loads(aihow("generations", "--host", "sim:" + str(tmp_path / "none"),
                            "--format", "json").stdout) == []


def test_apply_config_plans_shows_and_applies(tmp_path: Path) -> None:
    host = _host(tmp_path)
    cfg = write_config(tmp_path / "a.yaml", {G0: LAYOUT_A})
    res = aihow("apply", str(cfg), "--host", host.uri, "--auto-approve")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "gpu[0000:17:00.0].gi[3g.40gb@4]" in res.stdout  # the plan was shown first
    assert res.stdout.index("Plan:") < res.stdout.index("Apply complete")
    assert aihow("plan", str(cfg), "--host", host.uri, "--detailed-exitcode").returncode == 0


def test_edited_plan_is_refused_without_change(tmp_path: Path) -> None:
    host = _host(tmp_path)
    cfg = write_config(tmp_path / "a.yaml", {G0: LAYOUT_A})
    plan = _plan(host, cfg, tmp_path / "plan.json")
    data = json.loads(plan.read_text())
    for action in data["actions"]:
        if action["after"] and action["after"].get("start") == 4:
            action["after"]["start"] = 0  # someone "fixes" a placement by hand
    plan.write_text(json.dumps(data, indent=2))
    before = host.layout()
    res = aihow("apply", str(plan), "--auto-approve")
    assert res.returncode == 1
    assert "plan_sha256 does not match" in res.stderr and "Traceback" not in res.stderr
    assert host.layout() == before
    assert not active_path(host.state_dir).exists()


def test_plan_made_before_nvidia_smi_change_is_refused(tmp_path: Path) -> None:
    host = _host(tmp_path)
    cfg = write_config(tmp_path / "a.yaml", {G0: LAYOUT_A})
    plan = _plan(host, cfg, tmp_path / "plan.json")
    smi = subprocess.run([str(host.dir / "bin" / "nvidia-smi"), "mig", "-i", "0", "-cgi", "19",
                          "-C"], capture_output=True, text=True, check=False)
    assert smi.returncode == 0, smi.stdout
    before = host.layout()
    res = aihow("apply", str(plan), "--auto-approve")
    assert res.returncode == 1
    assert "the plan is stale" in res.stderr and "nothing was changed" in res.stderr
    # it says what changed: the GI someone created by hand, at the driver's placement
    assert "+ gpu[0000:17:00.0].gi[1g.10gb@6]: appeared" in res.stderr, res.stderr
    assert host.layout() == before


def test_two_concurrent_applies_one_runs_one_is_refused(tmp_path: Path) -> None:
    host = _host(tmp_path)
    cfg = write_config(tmp_path / "a.yaml", {G0: LAYOUT_A})
    plan = _plan(host, cfg, tmp_path / "plan.json")
    env = dict(os.environ, AIHOW_TEST_CRASH_AFTER="1:outcome:pause")
    first = subprocess.Popen([AIHOW, "apply", str(plan), "--auto-approve"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             stdin=subprocess.DEVNULL)
    paused = host.state_dir / "test-paused"
    try:
        deadline = time.monotonic() + 60
        while not paused.exists():
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the first apply never reached its pause"
            time.sleep(0.05)
        second = aihow("apply", str(plan), "--auto-approve")
        assert second.returncode == 1
        assert f"locked by pid {first.pid} (started " in second.stderr, second.stderr
        assert "aihow apply" in second.stderr and "Traceback" not in second.stderr
    finally:
        paused.unlink(missing_ok=True)
        out, err = first.communicate(timeout=120)
    assert first.returncode == 0, out + err
    assert aihow("plan", str(cfg), "--host", host.uri, "--detailed-exitcode").returncode == 0


CRASH_POINTS = ["1:intent", "2:acted", "3", "5:acted", "6:intent"]


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_sigkill_during_apply_then_recover_restores_the_start(tmp_path: Path,
                                                              point: str) -> None:
    host = _host(tmp_path)
    cfg0 = write_config(tmp_path / "a.yaml", {G0: LAYOUT_A})
    host.apply(host.plan(cfg0), cfg0)
    cfg = write_config(tmp_path / "b.yaml", {G0: LAYOUT_B})
    plan = _plan(host, cfg, tmp_path / "plan.json")
    start_fp = json.loads(plan.read_text())["host"]["fingerprint"]
    start_layout = host.layout()
    killed = aihow("apply", str(plan), "--auto-approve",
                   env={"AIHOW_TEST_CRASH_AFTER": point})
    assert killed.returncode == -9, killed.stdout + killed.stderr
    assert active_path(host.state_dir).exists()  # the journal survived the kill

    blocked = aihow("apply", str(plan), "--auto-approve")
    assert blocked.returncode == 1 and "aihow recover" in blocked.stderr

    rec = aihow("recover", "--host", host.uri)
    assert rec.returncode == 0, rec.stdout + rec.stderr
    assert "Recovered: the host is at the state before the interrupted apply" in rec.stdout
    assert host.fingerprint(cfg) == start_fp
    assert host.layout() == start_layout
    assert not active_path(host.state_dir).exists()
    assert aihow("recover", "--host", host.uri).stdout.startswith("Nothing to recover")
    # and the plan can now be applied for real
    assert aihow("apply", str(plan), "--auto-approve").returncode == 0


@pytest.mark.parametrize("point", ["2:acted", "4"])
def test_sigkill_then_recover_forward_finishes_the_apply(tmp_path: Path, point: str) -> None:
    host = _host(tmp_path)
    cfg = write_config(tmp_path / "b.yaml", {G0: LAYOUT_B})
    plan = _plan(host, cfg, tmp_path / "plan.json")
    killed = aihow("apply", str(plan), "--auto-approve", env={"AIHOW_TEST_CRASH_AFTER": point})
    assert killed.returncode == -9
    rec = aihow("recover", "--host", host.uri, "--forward")
    assert rec.returncode == 0, rec.stdout + rec.stderr
    assert "the plan's end state" in rec.stdout and "Generation 1 recorded" in rec.stdout
    assert aihow("plan", str(cfg), "--host", host.uri, "--detailed-exitcode").returncode == 0


def test_rollback_returns_to_an_earlier_generation(tmp_path: Path) -> None:
    host = _host(tmp_path)
    cfg_a = write_config(tmp_path / "a.yaml", {G0: LAYOUT_A})
    cfg_b = write_config(tmp_path / "b.yaml", {G0: LAYOUT_B})
    assert aihow("apply", str(cfg_a), "--host", host.uri, "--auto-approve").returncode == 0
    layout_a = host.layout()
    assert aihow("apply", str(cfg_b), "--host", host.uri, "--auto-approve").returncode == 0
    assert host.layout() != layout_a
    cfg_a.write_text("# the file moved on; the generation keeps its own copy\n")

    res = aihow("rollback", "--host", host.uri, "--auto-approve")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Rolling back to generation 1" in res.stdout
    assert res.stdout.index("Plan:") < res.stdout.index("Apply complete")
    assert host.layout() == layout_a
    gens = aihow("generations", "--host", host.uri)
    rows = [line.split()[0] for line in gens.stdout.splitlines()[1:] if line[:1].isdigit()]
    assert rows == ["1", "2", "3*"]
    missing = aihow("rollback", "--host", host.uri, "--to", "9")
    assert missing.returncode == 1 and "no generation 9 (have: 1, 2, 3)" in missing.stderr


def _run_on_terminal(args: list[str], answer: str) -> tuple[int, str]:
    """Run the CLI with a pseudo-terminal as stdin/stdout, typing ``answer``."""
    import pty

    leader, follower = pty.openpty()
    env = dict(os.environ, COLUMNS="120")
    env.pop("AIHOW_TEST_CRASH_AFTER", None)
    proc = subprocess.Popen([AIHOW, *args], stdin=follower, stdout=follower,
                            stderr=follower, env=env, close_fds=True)
    os.close(follower)
    output = b""
    answered = False
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
        if not answered and b"Apply this plan?" in output:
            os.write(leader, answer.encode() + b"\n")
            answered = True
    os.close(leader)
    return proc.wait(timeout=120), output.decode(errors="replace")


def test_terminal_asks_before_a_gpu_reset_and_no_cancels(tmp_path: Path) -> None:
    host = _host(tmp_path, "a100-40gb", mig=False)
    cfg = write_config(tmp_path / "a.yaml", {G0: "7g.40gb"})
    plan = _plan(host, cfg, tmp_path / "plan.json")
    code, out = _run_on_terminal(["apply", str(plan), "--allow-reset"], "n")
    assert code == 1, out
    assert "gpu[0000:17:00.0].mig (GPU reset)" in out
    assert "Apply cancelled; nothing was changed." in out
    assert host.layout()[G0][0] is False
    code, out = _run_on_terminal(["apply", str(plan), "--allow-reset"], "y")
    assert code == 0, out
    assert "Applying" in out and "Apply complete" in out  # the progress bar, then the summary


@pytest.mark.parametrize("model,layout_a,layout_b", [
    ("a100-40gb", "3g.20gb@4 + 2*1g.5gb", "4g.20gb@0 + 2g.10gb@4"),
    ("h100-80gb", LAYOUT_A, LAYOUT_B),
])
def test_power_loss_mid_apply_then_recover(tmp_path: Path, model: str, layout_a: str,
                                           layout_b: str) -> None:
    """kill -9 and a reboot (the driver forgets every instance; Hopper forgets MIG mode):
    recover rebuilds the starting layout, kept instances included."""
    host = _host(tmp_path, model)
    cfg0 = write_config(tmp_path / "a.yaml", {G0: layout_a})
    assert host.apply(host.plan(cfg0), cfg0, allow_reset=True).outcome == "applied"
    start_layout = host.layout()
    cfg = write_config(tmp_path / "b.yaml", {G0: layout_b})
    plan = _plan(host, cfg, tmp_path / "plan.json")
    killed = aihow("apply", str(plan), "--auto-approve", "--allow-reset",
                   env={"AIHOW_TEST_CRASH_AFTER": "3"})
    assert killed.returncode == -9
    assert aihow("sim", "reboot", str(host.dir)).returncode == 0
    assert host.layout() != start_layout
    rec = aihow("recover", "--host", host.uri, "--allow-reset")
    assert rec.returncode == 0, rec.stdout + rec.stderr
    assert host.layout() == start_layout
    assert aihow("plan", str(cfg0), "--host", host.uri, "--detailed-exitcode").returncode == 0
