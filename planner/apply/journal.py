"""The write-ahead journal of one apply (or rollback, or recovery), in the state directory.

``STATE_DIR/journal.jsonl`` exists exactly while an apply is unfinished. It is one JSON
record per line, each carrying ``seq`` (1, 2, ...) and ``crc`` (the first 16 hex digits
of the SHA-256 of the record's canonical JSON without ``crc``), written and fsynced
before the next step starts:

* ``begin``  — apply_id, command, host_uri, plan (the whole plan), plan_sha256,
  start_fingerprint, pid, started; created as a temporary file and renamed into place.
* ``intent`` — action_id, op (``do``, ``undo`` or ``redo``), address: about to act.
* ``done`` / ``failed`` — the outcome of that intent (``result`` / ``error``).
* ``note``   — free text (rollback started, recovery started, resource states on halt).
* ``end``    — outcome (``applied``, ``rolled-back``, ``recovered-back``,
  ``recovered-forward``, ``refused``) and the fingerprint after.

Writing ``end`` closes the journal: it is renamed (atomically) to
``STATE_DIR/journals/NNNNNN-<outcome>.jsonl``. A journal without ``end`` means an apply
was interrupted (crash) or stopped because an undo failed; ``aihow recover`` finishes it.
A torn last line (power loss mid-write, or a disk that filled mid-write) fails its crc
and is ignored: the step it described never got its outcome recorded, which the reader
reports as "begun". Before anything is appended to such a journal the torn bytes are
moved to ``journal.jsonl.torn`` (kept as evidence) and the journal is cut back to its
last whole record, so a torn tail never turns into corruption in the middle. A failed
append cuts the journal back the same way before it reports the error.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from planner.apply.fsutil import (
    NOFOLLOW,
    canonical_json,
    create_new,
    fsync_dir,
    real_dir,
    rename_durable,
    temp_name,
)
from planner.errors import AihowError

ACTIVE_NAME = "journal.jsonl"
MAX_BEGIN_BYTES = 256 * 1024 * 1024  # a begin record holds the plan (at most 128 MiB) twice
ARCHIVE_DIR = "journals"

Op = Literal["do", "undo", "redo"]
Status = Literal["pending", "begun", "done", "failed", "undo-begun", "undone", "undo-failed"]


# What to do about a journal that cannot be read (not a torn tail, which is repaired):
# ``aihow recover --from-host`` judges the host itself against the plan's start and goal.
DAMAGED_HINT = ("; the journal is damaged: `aihow recover --from-host` compares the host "
                "with where the apply started and where it was going, and sets it aside")


class JournalError(AihowError):
    """The journal is missing, corrupt, or in the way."""


def _crc(record: dict[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != "crc"}
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()[:16]


def active_path(state_dir: Path) -> Path:
    return Path(state_dir) / ACTIVE_NAME


class JournalWriter:
    """Appends records to the active journal; every append is fsynced before it returns."""

    def __init__(self, path: Path, fd: int, next_seq: int) -> None:
        self.path = path
        self._fd = fd
        self._seq = next_seq
        self.closed = False

    @classmethod
    def create(cls, state_dir: Path, begin: dict[str, Any]) -> JournalWriter:
        """Start a new journal whose first record is ``begin`` (refuses if one is open)."""
        path = active_path(state_dir)
        if os.path.lexists(path):
            raise JournalError(
                f"{path}: an earlier apply did not finish; run `aihow recover` first"
            )
        record = {"seq": 1, "type": "begin", **begin}
        record["crc"] = _crc(record)
        tmp = temp_name(path)
        try:
            fd = create_new(tmp)
            try:
                os.write(fd, (canonical_json(record) + "\n").encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, path)
            fsync_dir(path.parent)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise JournalError(f"{path}: cannot start the journal: {exc.strerror}") from None
        return cls.reopen(path, next_seq=2)

    @classmethod
    def reopen(cls, path: Path, next_seq: int) -> JournalWriter:
        """Continue a journal after its last whole record (a torn tail is cut off first)."""
        try:
            _cut_torn_tail(path)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | NOFOLLOW)
        except OSError as exc:
            raise JournalError(f"{path}: cannot write the journal: {exc.strerror}") from None
        return cls(path, fd, next_seq)

    def append(self, type_: str, *, durable: bool = True, **fields: Any) -> dict[str, Any]:
        """Append one record; fsynced before returning unless ``durable`` is False (then
        the caller calls ``sync`` before acting on it: one fsync for a batch)."""
        if self.closed:
            raise JournalError(f"{self.path}: journal already closed")
        record = {"seq": self._seq, "type": type_, **fields}
        record["crc"] = _crc(record)
        data = (canonical_json(record) + "\n").encode()
        size = os.fstat(self._fd).st_size
        try:
            written = 0
            while written < len(data):  # os.write may write less than asked
                written += os.write(self._fd, data[written:])
            if durable:
                os.fsync(self._fd)
        except OSError as exc:
            # Leave no torn record behind: the next append would follow it.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, size)
                os.fsync(self._fd)
            raise JournalError(f"{self.path}: cannot write the journal: {exc.strerror}") from exc
        self._seq += 1
        return record

    def intent(self, action_id: str, op: Op, address: str, *, durable: bool = True) -> None:
        self.append("intent", durable=durable, action_id=action_id, op=op, address=address)

    def done(self, action_id: str, op: Op, result: dict[str, Any] | None = None, *,
             durable: bool = True) -> None:
        self.append("done", durable=durable, action_id=action_id, op=op, result=result or {})

    def failed(self, action_id: str, op: Op, error: str, *, durable: bool = True) -> None:
        self.append("failed", durable=durable, action_id=action_id, op=op, error=error)

    def sync(self) -> None:
        """Make the records appended so far durable (after a batch of non-durable ones)."""
        try:
            os.fsync(self._fd)
        except OSError as exc:
            raise JournalError(f"{self.path}: cannot write the journal: {exc.strerror}") from exc

    def note(self, message: str, **fields: Any) -> None:
        self.append("note", message=message, **fields)

    def release(self) -> None:
        """Stop writing but leave the journal open on disk (for `aihow recover`)."""
        if not self.closed:
            os.close(self._fd)
            self.closed = True

    def end(self, outcome: str, fingerprint: str | None = None) -> Path:
        """Write ``end`` and archive the journal; returns where it went."""
        self.append("end", outcome=outcome, fingerprint=fingerprint, ended=time.time())
        self.release()
        return set_aside(self.path, outcome)


def set_aside(path: Path, label: str) -> Path:
    """Move a journal into ``journals/`` as the next ``NNNNNN-<label>.jsonl``."""
    archive = real_dir(path.parent / ARCHIVE_DIR, create=True)
    fsync_dir(path.parent)
    number = 1 + max((_archive_number(p) for p in archive.glob("*.jsonl")), default=0)
    target = archive / f"{number:06d}-{label}.jsonl"
    rename_durable(path, target)
    return target


def salvage_begin(path: Path) -> dict[str, Any] | None:
    """The begin record of a journal that cannot be read as a whole, when its first
    line is still whole, valid and holds the plan; else None."""
    try:
        fd = os.open(path, os.O_RDONLY | NOFOLLOW)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        with open(fd, "rb", closefd=False) as fh:
            line = fh.readline(MAX_BEGIN_BYTES)
    finally:
        os.close(fd)
    if not _is_record(line):
        return None
    record: dict[str, Any] = json.loads(line)
    if record.get("type") != "begin" or not isinstance(record.get("plan"), dict):
        return None
    return record


def _is_record(line: bytes) -> bool:
    try:
        record = json.loads(line) if line.endswith(b"\n") else None
    except ValueError:
        return False
    return isinstance(record, dict) and record.get("crc") == _crc(record)


def _whole_records_end(data: bytes) -> int:
    """Byte offset just past the last whole, valid record before the first bad line."""
    end = 0
    for line in data.splitlines(keepends=True):
        if not _is_record(line):
            break
        end += len(line)
    return end


def _cut_torn_tail(path: Path) -> None:
    """Move whatever follows the last whole record to ``PATH.torn`` and cut it off.

    Only a tail is cut: bad bytes followed by good records are corruption, which
    read_journal reports, and are left as they are."""
    data = path.read_bytes()
    end = _whole_records_end(data)
    if end == len(data) or any(map(_is_record, data[end:].splitlines(keepends=True))):
        return
    torn = path.with_name(path.name + ".torn")
    fd = os.open(torn, os.O_WRONLY | os.O_CREAT | os.O_APPEND | NOFOLLOW, 0o600)
    try:
        os.write(fd, data[end:] + (b"" if data.endswith(b"\n") else b"\n"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.truncate(path, end)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _archive_number(path: Path) -> int:
    head = path.name.split("-", 1)[0]
    return int(head) if head.isdigit() else 0


@dataclass
class ActionRecord:
    """What the journal says happened to one action."""

    action_id: str
    address: str = ""
    status: Status = "pending"
    error: str | None = None
    result: dict[str, Any] = field(default_factory=dict)
    redone: bool = False  # recover --forward did it


@dataclass
class JournalView:
    """A journal read back: the plan it ran and where each action got to."""

    path: Path
    records: list[dict[str, Any]]
    begin: dict[str, Any]
    actions: dict[str, ActionRecord]
    order: list[str]  # action ids in the order their first intent was written
    end: dict[str, Any] | None
    torn_tail: bool  # the last line was incomplete or failed its crc

    @property
    def finished(self) -> bool:
        return self.end is not None

    @property
    def next_seq(self) -> int:
        return (self.records[-1]["seq"] + 1) if self.records else 1

    def with_status(self, *statuses: Status) -> list[ActionRecord]:
        return [self.actions[a] for a in self.order if self.actions[a].status in statuses]

    def notes(self) -> list[str]:
        return [r["message"] for r in self.records if r["type"] == "note"]


def iter_records(path: Path) -> Iterator[tuple[dict[str, Any] | None, int]]:
    """Yield (record or None if unreadable, line number)."""
    try:
        fd = os.open(path, os.O_RDONLY | NOFOLLOW)
    except OSError as exc:
        raise JournalError(f"{path}: cannot read the journal: {exc.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise JournalError(f"{path}: is not a regular file; aihow keeps its journal there "
                           "(move it away)")
    fh = open(fd, encoding="utf-8", errors="replace")  # noqa: SIM115
    with fh:
        for lineno, line in enumerate(fh, 1):
            try:
                record = json.loads(line) if line.endswith("\n") else None
            except ValueError:
                record = None
            if not isinstance(record, dict) or record.get("crc") != _crc(record):
                yield None, lineno
            else:
                yield record, lineno


def read_journal(path: Path) -> JournalView:
    """Read a journal and reconstruct which actions were begun, completed and undone."""
    records: list[dict[str, Any]] = []
    bad: list[int] = []
    for record, lineno in iter_records(path):
        if record is None:
            bad.append(lineno)
        else:
            if bad:  # a bad line followed by good ones is corruption, not a torn write
                raise JournalError(f"{path}:{bad[0]}: journal record is corrupt{DAMAGED_HINT}")
            records.append(record)
    if not records or records[0].get("type") != "begin":
        raise JournalError(f"{path}:1: journal has no begin record{DAMAGED_HINT}")
    if not isinstance(records[0].get("plan"), dict):
        raise JournalError(f"{path}:1: the begin record holds no plan{DAMAGED_HINT}")
    for expected, record in enumerate(records, 1):
        if record.get("seq") != expected:
            raise JournalError(f"{path}:{expected}: journal records out of sequence"
                               f"{DAMAGED_HINT}")
    actions: dict[str, ActionRecord] = {}
    order: list[str] = []
    end = None
    for record in records[1:]:
        kind = record["type"]
        if kind == "end":
            end = record
            continue
        if kind not in ("intent", "done", "failed"):
            continue
        aid = record["action_id"]
        if aid not in actions:
            actions[aid] = ActionRecord(aid)
            order.append(aid)
        act = actions[aid]
        op = record["op"]
        if kind == "intent":
            act.address = record.get("address", act.address)
            act.status = "undo-begun" if op == "undo" else "begun"
        elif kind == "done":
            act.status = "undone" if op == "undo" else "done"
            act.redone = act.redone or op == "redo"
            if op != "undo":
                act.result = record.get("result") or {}
            act.error = None
        else:
            act.status = "undo-failed" if op == "undo" else "failed"
            act.error = record.get("error")
    return JournalView(path, records, records[0], actions, order, end, bool(bad))


def open_journal(state_dir: Path) -> JournalView | None:
    """The unfinished journal of this state directory, or None if there is none."""
    path = active_path(state_dir)
    if not os.path.lexists(path):
        return None
    return read_journal(path)


def archived_journals(state_dir: Path) -> list[Path]:
    archive = Path(state_dir) / ARCHIVE_DIR
    return sorted(archive.glob("*.jsonl")) if archive.is_dir() else []
