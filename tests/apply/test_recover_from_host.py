"""A journal damaged beyond a torn tail (issue 16, item 1): plain `recover` says what
to do in one line; `recover --from-host` sets the journal aside and brings the host to
the plan's start (or goal) judged from the host as it is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from planner.apply.journal import ARCHIVE_DIR, active_path
from tests.apply.simhost import SimHost, write_config
from tests.clirun import aihow

G0 = "0000:17:00.0"
LAYOUT_A = "3g.40gb@4 + 2*1g.10gb"
LAYOUT_B = "4g.40gb@0 + 2g.20gb@4"


@pytest.fixture()
def crashed(tmp_path: Path) -> tuple[SimHost, Path, Path, object]:
    """A host with LAYOUT_A applied, then an apply of LAYOUT_B killed after 3 steps."""
    host = SimHost.create(tmp_path / "h", [("h100-80gb", G0, True)])
    cfg0 = write_config(tmp_path / "a.yaml", {G0: LAYOUT_A})
    assert host.apply(host.plan(cfg0), cfg0).outcome == "applied"
    start = host.layout()
    cfg = write_config(tmp_path / "b.yaml", {G0: LAYOUT_B})
    plan = tmp_path / "plan.json"
    assert aihow("plan", str(cfg), "--host", host.uri, "-o", str(plan)).returncode == 0
    killed = aihow("apply", str(plan), "--auto-approve", "--allow-reset",
                   env={"AIHOW_TEST_CRASH_AFTER": "3"})
    assert killed.returncode == -9, killed.stdout + killed.stderr
    assert host.layout() != start
    return host, cfg, plan, start


def _damage(journal: Path, line: int) -> None:
    lines = journal.read_bytes().splitlines(keepends=True)
    assert len(lines) > line
    lines[line - 1] = lines[line - 1].replace(b'"', b"'", 3)  # still a whole line, not JSON
    journal.write_bytes(b"".join(lines))


def _damaged_kept(host: SimHost) -> list[Path]:
    return sorted((host.state_dir / ARCHIVE_DIR).glob("*-damaged.jsonl"))


def test_a_damaged_journal_says_what_to_do(crashed: tuple) -> None:
    host, _, plan, _ = crashed
    journal = active_path(host.state_dir)
    _damage(journal, 2)
    for args in (("recover", "--host", host.uri), ("apply", str(plan), "--auto-approve")):
        res = aihow(*args)
        assert res.returncode == 1, res.stdout + res.stderr
        assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr, res.stderr
        assert f"{journal}:2: journal record is corrupt" in res.stderr
        assert "aihow recover --from-host" in res.stderr


def test_recover_from_host_returns_to_the_start(crashed: tuple) -> None:
    host, _, _, start = crashed
    _damage(active_path(host.state_dir), 2)
    res = aihow("recover", "--from-host", "--host", host.uri)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "The damaged journal is kept at" in res.stdout
    assert "Recovered: the host is at the state before the interrupted apply" in res.stdout
    assert host.layout() == start
    assert not active_path(host.state_dir).exists()
    (kept,) = _damaged_kept(host)
    assert b"'" in kept.read_bytes()  # the evidence, as it was
    assert aihow("recover", "--host", host.uri).stdout.startswith("Nothing to recover")


def test_recover_from_host_forward_reaches_the_goal(crashed: tuple) -> None:
    host, cfg, _, _ = crashed
    _damage(active_path(host.state_dir), 3)
    res = aihow("recover", "--from-host", "--forward", "--host", host.uri, "--allow-reset")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "the plan's end state" in res.stdout
    assert aihow("plan", str(cfg), "--host", host.uri, "--detailed-exitcode").returncode == 0


def test_a_lost_begin_record_needs_the_plan_file(crashed: tuple) -> None:
    host, _, plan, start = crashed
    journal = active_path(host.state_dir)
    _damage(journal, 1)
    res = aihow("recover", "--from-host", "--host", host.uri)
    assert res.returncode == 1 and res.stderr.count("\n") == 1, res.stderr
    assert f"{journal}: the journal is damaged and its begin record is lost" in res.stderr
    assert "--plan PLAN.json" in res.stderr
    assert journal.exists() and not _damaged_kept(host)  # nothing moved, nothing changed
    res = aihow("recover", "--from-host", "--plan", str(plan), "--host", host.uri)
    assert res.returncode == 0, res.stdout + res.stderr
    assert host.layout() == start
    assert len(_damaged_kept(host)) == 1


def test_from_host_is_refused_for_a_readable_journal(crashed: tuple) -> None:
    host, _, _, _ = crashed
    res = aihow("recover", "--from-host", "--host", host.uri)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "the journal is readable; run `aihow recover`" in res.stderr
    assert active_path(host.state_dir).exists() and not _damaged_kept(host)
    assert json.loads(active_path(host.state_dir).read_text().splitlines()[0])["type"] == "begin"
