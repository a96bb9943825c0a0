"""Durable file operations: every write the journal and generations rely on is fsynced,
and files appear under their final name only by an atomic rename."""

from __future__ import annotations

import json
import os
import secrets
import stat
from pathlib import Path
from typing import Any

from planner.errors import AihowError

# Every file aihow writes in its state directory is opened with these: never through a
# symbolic link (a link planted at the name would redirect the write), never inherited.
NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafePath(AihowError):
    """A name in the state directory that aihow will not write through."""


def real_dir(path: Path, *, create: bool = False) -> Path:
    """``path`` as a real directory (created with mode 0700 when ``create``); UnsafePath
    when it is a symbolic link or not a directory, so nothing is written outside the
    state directory by way of a planted link."""
    if create:
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            raise UnsafePath(f"{path}: cannot create the directory: {exc.strerror}") from None
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise UnsafePath(f"{path}: {exc.strerror}") from None
    if stat.S_ISLNK(st.st_mode):
        raise UnsafePath(f"{path}: is a symbolic link; aihow writes only into real "
                         "directories (remove the link)")
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafePath(f"{path}: is not a directory")
    return path


# The names aihow writes in a state directory: each must be a real directory or a
# regular file (or absent), never a symbolic link that would carry a write elsewhere.
STATE_DIRS = ("generations", "journals")
STATE_FILES = ("journal.jsonl", "journal.jsonl.torn", "allocations.json")


def check_state_layout(state_dir: Path) -> None:
    """UnsafePath naming the first entry of the state directory that is a symbolic link
    or of the wrong type; called under the host lock, before anything is written."""
    for name in STATE_DIRS:
        path = Path(state_dir) / name
        if os.path.lexists(path):
            real_dir(path)
    for name in STATE_FILES:
        path = Path(state_dir) / name
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(st.st_mode):
            raise UnsafePath(f"{path}: is a symbolic link; aihow never writes through one "
                             "(remove the link)")


def temp_name(path: Path) -> Path:
    """A fresh, unpredictable temporary name beside ``path``."""
    return path.with_name(f".{path.name}.tmp-{secrets.token_hex(8)}")


def create_new(path: Path, mode: int = 0o600) -> int:
    """Open a file that must not exist yet (never through a link); its fd."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW, mode)


def canonical_json(value: Any) -> str:
    """Sorted keys, no spaces: the same value always gives the same text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write ``path`` through a temporary file, fsync it, rename it, fsync the directory."""
    raw = data.encode() if isinstance(data, str) else data
    tmp = temp_name(path)
    fd = create_new(tmp)
    try:
        try:
            written = 0
            while written < len(raw):
                written += os.write(fd, raw[written:])
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def rename_durable(src: Path, dst: Path) -> None:
    os.replace(src, dst)
    fsync_dir(dst.parent)
    if src.parent != dst.parent:
        fsync_dir(src.parent)
