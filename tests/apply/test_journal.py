"""The write-ahead journal: records survive, torn tails are ignored, states reconstruct."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from planner.apply.journal import (
    JournalError,
    JournalWriter,
    active_path,
    archived_journals,
    open_journal,
    read_journal,
)


def _begin() -> dict[str, object]:
    return {"apply_id": "x", "plan": {"actions": []}, "start_fingerprint": "f0"}


def test_reader_reconstructs_begun_done_and_undone(tmp_path: Path) -> None:
    w = JournalWriter.create(tmp_path, _begin())
    w.intent("a1", "do", "gpu[0000:17:00.0].gi[1g.5gb@0]")
    w.done("a1", "do", {"gi_id": 9})
    w.intent("a2", "do", "gpu[0000:17:00.0].gi[1g.5gb@1]")
    w.failed("a2", "do", "Insufficient Resources")
    w.intent("a1", "undo", "gpu[0000:17:00.0].gi[1g.5gb@0]")
    w.done("a1", "undo")
    w.intent("a3", "do", "gpu[0000:65:00.0].mig")
    w.release()

    view = open_journal(tmp_path)
    assert view is not None and not view.finished
    assert view.order == ["a1", "a2", "a3"]
    assert [view.actions[a].status for a in view.order] == ["undone", "failed", "begun"]
    assert view.actions["a1"].result == {"gi_id": 9}
    assert view.actions["a2"].error == "Insufficient Resources"
    assert view.begin["start_fingerprint"] == "f0"
    assert view.next_seq == 9


def test_second_journal_refused_while_one_is_open(tmp_path: Path) -> None:
    JournalWriter.create(tmp_path, _begin()).release()
    with pytest.raises(JournalError, match="aihow recover"):
        JournalWriter.create(tmp_path, _begin())


def test_end_archives_with_an_atomic_rename(tmp_path: Path) -> None:
    w = JournalWriter.create(tmp_path, _begin())
    w.intent("a1", "do", "addr")
    w.done("a1", "do")
    first = w.end("applied", "f1")
    assert not active_path(tmp_path).exists()
    assert first.name == "000001-applied.jsonl"
    w2 = JournalWriter.create(tmp_path, _begin())
    second = w2.end("rolled-back")
    assert archived_journals(tmp_path) == [first, second]
    view = read_journal(first)
    assert view.finished and view.end is not None and view.end["fingerprint"] == "f1"


def test_torn_last_line_is_ignored(tmp_path: Path) -> None:
    w = JournalWriter.create(tmp_path, _begin())
    w.intent("a1", "do", "addr")
    w.release()
    path = active_path(tmp_path)
    with open(path, "a") as fh:
        fh.write('{"seq":3,"type":"done","action_id":"a1"')  # power lost mid-write
    view = read_journal(path)
    assert view.torn_tail
    assert view.actions["a1"].status == "begun"


def test_corrupt_record_in_the_middle_is_an_error(tmp_path: Path) -> None:
    w = JournalWriter.create(tmp_path, _begin())
    w.intent("a1", "do", "addr")
    w.done("a1", "do")
    w.release()
    path = active_path(tmp_path)
    lines = path.read_text().splitlines(keepends=True)
    record = json.loads(lines[1])
    record["action_id"] = "tampered"
    lines[1] = json.dumps(record) + "\n"
    path.write_text("".join(lines))
    with pytest.raises(JournalError, match=r"journal.jsonl:2: journal record is corrupt"):
        read_journal(path)


def test_reopened_writer_continues_the_sequence(tmp_path: Path) -> None:
    w = JournalWriter.create(tmp_path, _begin())
    w.intent("a1", "do", "addr")
    w.release()
    view = open_journal(tmp_path)
    assert view is not None
    w2 = JournalWriter.reopen(view.path, view.next_seq)
    w2.done("a1", "do")
    w2.release()
    again = read_journal(view.path)
    assert again.actions["a1"].status == "done"
    assert [r["seq"] for r in again.records] == [1, 2, 3]


def test_reopen_after_a_torn_tail_keeps_the_journal_readable(tmp_path: Path) -> None:
    """A crash mid-write, then recover appends: the torn bytes move aside, and the journal
    stays readable (before the fix, the appended records made the torn line 'corrupt')."""
    w = JournalWriter.create(tmp_path, _begin())
    w.intent("a1", "do", "addr")
    w.release()
    path = active_path(tmp_path)
    torn = '{"seq":3,"type":"done","action_id":"a1"'
    with open(path, "a") as fh:
        fh.write(torn)
    view = read_journal(path)
    w2 = JournalWriter.reopen(view.path, view.next_seq)
    w2.note("recover started")
    w2.done("a1", "do")
    w2.release()
    again = read_journal(path)
    assert not again.torn_tail
    assert again.actions["a1"].status == "done"
    assert [r["seq"] for r in again.records] == [1, 2, 3, 4]
    assert path.with_name("journal.jsonl.torn").read_text() == torn + "\n"


def test_reopen_leaves_corruption_in_the_middle_for_the_reader(tmp_path: Path) -> None:
    w = JournalWriter.create(tmp_path, _begin())
    w.intent("a1", "do", "addr")
    w.done("a1", "do")
    w.release()
    path = active_path(tmp_path)
    lines = path.read_text().splitlines(keepends=True)
    lines[1] = "garbage\n"
    path.write_text("".join(lines))
    before = path.read_bytes()
    JournalWriter.reopen(path, 4).release()
    assert path.read_bytes() == before
    assert not path.with_name("journal.jsonl.torn").exists()
    with pytest.raises(JournalError, match=r"journal.jsonl:2: journal record is corrupt"):
        read_journal(path)


def test_a_failed_append_leaves_no_torn_record(tmp_path: Path) -> None:
    """A write that stops part-way (file size limit, as a full disk would): the writer cuts
    the journal back to its last whole record, and the next append continues cleanly.
    Run in a child process, since the limit applies to the whole process."""
    script = f"""
import resource, signal, sys
from pathlib import Path
from planner.apply.journal import JournalError, JournalWriter, active_path
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
w = JournalWriter.create(Path({str(tmp_path)!r}), {{"apply_id": "x", "plan": {{}}}})
w.intent("a1", "do", "addr")
size = active_path(Path({str(tmp_path)!r})).stat().st_size
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 10, hard))
try:
    w.done("a1", "do")
except JournalError as exc:
    print("refused:", exc)
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
print("size kept:", active_path(Path({str(tmp_path)!r})).stat().st_size == size)
w.done("a1", "do")
w.release()
"""
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60, check=True)
    assert "refused:" in res.stdout and "cannot write the journal" in res.stdout
    assert "size kept: True" in res.stdout
    view = read_journal(active_path(tmp_path))
    assert not view.torn_tail
    assert view.actions["a1"].status == "done" and view.next_seq == 4
