"""A finished apply is never turned into a failure and undone by a fault after its last
step (issue 16 item 3): a transient or lasting read fault while verifying, a corrupt old
generation, no space left while recording the generation or closing the journal."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import pytest

from planner.apply import executor, generations
from planner.apply.events import Event
from planner.apply.generations import list_generations
from planner.apply.journal import JournalError, JournalWriter, active_path, archived_journals
from planner.apply.recovery import recover
from planner.cli.host_opts import open_environment
from planner.sim import faults
from planner.sim.state import SimStore
from tests.apply.simhost import SimHost, write_config
from tests.clirun import aihow

G0 = "0000:17:00.0"


def _host(tmp_path: Path) -> tuple[SimHost, Path]:
    host = SimHost.create(tmp_path / "host", [("h100-80gb", G0, True)])
    return host, write_config(tmp_path / "c.yaml", {G0: "2*2g.20gb"})


def _arm_after_last_step(host: SimHost, total: int, op: str, times: int) -> Any:
    """An event sink that arms ``times`` one-shot faults on ``op`` when the last step is
    done, so they hit the verification's probe (its first NVML call is nvmlInit)."""
    done = []

    def sink(event: Event) -> None:
        if event.type == "action-done":
            done.append(event)
            if len(done) == total:
                with SimStore(host.dir).transaction() as state:
                    for n in range(1, times + 1):
                        faults.arm(state, op, n)
    return sink


def _apply(host: SimHost, cfg: Path, sink: Any) -> Any:
    from planner.apply.executor import ApplyInput, apply_plan
    from planner.apply.state_dir import resolve_state_dir
    from planner.apply.steps import plan_steps
    from planner.config import load_config

    plan = host.plan(cfg)
    env = open_environment(host.uri)
    return plan, len(plan_steps(plan)), lambda s: apply_plan(
        ApplyInput(plan, plan.to_json(), load_config(cfg), cfg.read_text(), str(cfg),
                   allow_reset=True), env, resolve_state_dir(env.state_dir()), s)


def test_a_transient_read_fault_while_verifying_is_retried(tmp_path: Path) -> None:
    host, cfg = _host(tmp_path)
    _, total, run = _apply(host, cfg, None)
    result = run(_arm_after_last_step(host, total, "nvmlInit", 1))
    assert result.outcome == "applied" and not result.bookkeeping, result
    assert not active_path(host.state_dir).exists()
    assert [g.number for g in list_generations(host.state_dir)] == [1]


def test_a_host_that_cannot_be_read_back_is_not_undone(tmp_path: Path) -> None:
    host, cfg = _host(tmp_path)
    _, total, run = _apply(host, cfg, None)
    result = run(_arm_after_last_step(host, total, "nvmlInit", 3))
    assert result.outcome == "applied-unverified", result
    assert result.verify_error and "NVML" in result.verify_error
    assert result.undone == [] and len(result.done) == total
    # the journal is closed on the work done, and the host keeps it
    assert not active_path(host.state_dir).exists()
    assert archived_journals(host.state_dir)[-1].name.endswith("-applied-unverified.jsonl")
    assert host.plan(cfg).changes == []  # nothing left to do: the apply had landed


def test_a_corrupt_old_generation_does_not_fail_the_apply(tmp_path: Path) -> None:
    host, cfg = _host(tmp_path)
    old = host.state_dir / "generations" / "1"
    old.mkdir(parents=True)
    (old / "meta.json").write_text("{not json")
    _, _, run = _apply(host, cfg, None)
    result = run(lambda e: None)
    assert result.outcome == "applied" and not result.bookkeeping, result
    assert result.generation is not None and result.generation.number == 2


def test_no_space_for_the_generation_is_a_bookkeeping_failure(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    host, cfg = _host(tmp_path)

    def full(path: Path, text: str) -> None:  # injected: the disk is full
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(generations, "write_atomic", full)
    _, total, run = _apply(host, cfg, None)
    result = run(lambda e: None)
    assert result.outcome == "applied" and result.generation is None
    assert result.undone == [] and len(result.done) == total
    assert any("No space left on device" in p for p in result.bookkeeping)
    assert not active_path(host.state_dir).exists()  # the journal was closed first
    assert host.plan(cfg).changes == []


def test_recover_closes_a_finished_apply_without_undoing_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The journal's end cannot be written (disk full): the apply says so, and the
    default `recover` (back) sees every step done and the host at the plan's end, closes
    the journal and undoes nothing."""
    host, cfg = _host(tmp_path)

    def full(self: JournalWriter, outcome: str, fingerprint: str | None = None) -> Path:
        raise JournalError(f"{self.path}: cannot write the journal: No space left on device")

    monkeypatch.setattr(executor.JournalWriter, "end", full)
    _, total, run = _apply(host, cfg, None)
    result = run(lambda e: None)
    assert result.outcome == "applied" and result.undone == []
    assert any("recover" in p and "without undoing" in p for p in result.bookkeeping)
    assert active_path(host.state_dir).exists()
    monkeypatch.undo()
    layout = host.layout()
    back = recover(open_environment(host.uri), host.state_dir)
    assert back.outcome == "finished" and back.reached
    assert host.layout() == layout  # nothing undone
    assert not active_path(host.state_dir).exists()
    assert archived_journals(host.state_dir)[-1].name.endswith("-applied.jsonl")
    assert host.plan(cfg).changes == []


def test_cli_exit_code_of_an_unverified_apply(tmp_path: Path) -> None:
    """Through the CLI: exit 3 and a message that says what happened (faults armed on
    the verification's probe only: the plan's own probe and the apply's re-probe come
    first, two nvmlInit calls each of which the faults skip)."""
    host, cfg = _host(tmp_path)
    plan = tmp_path / "plan.json"
    assert aihow("plan", str(cfg), "--host", host.uri, "-o", str(plan)).returncode == 0
    with SimStore(host.dir).transaction() as state:
        # the apply's calls of nvmlInit: its re-probe (1), the handlers' NVML (2), then
        # verification (3, 4, 5: every try fails)
        for n in (3, 4, 5):
            faults.arm(state, "nvmlInit", n)
    out = aihow("apply", str(plan), "--host", host.uri, "--auto-approve", "--allow-reset")
    assert out.returncode == 3, out.stderr
    assert "could not be read back to verify" in out.stderr
    assert "Nothing was undone" in out.stderr
    assert not active_path(host.state_dir).exists()
