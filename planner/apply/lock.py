"""The host lock: an exclusive ``flock`` on ``STATE_DIR/lock`` held for a whole apply.

The file holds the holder's pid, start time and command so that a second apply can fail
at once naming who holds it, or, given a ``timeout``, wait up to that long for it
(``aihow apply --lock-timeout 5m``: a boot unit and a cron job that meet wait their
turn). The kernel drops a ``flock`` when its holder dies, so a lock file left by a
killed apply is never "held": the next holder takes it and learns from
:attr:`HostLock.previous` that the last holder did not release it cleanly (the journal
then says whether anything was left half-done).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from planner.apply.fsutil import check_state_layout
from planner.errors import AihowError

LOCK_NAME = "lock"


class LockHeld(AihowError):
    """Another process holds the host lock."""

    def __init__(self, path: Path, holder: LockInfo | None, waited: float = 0.0) -> None:
        self.path = path
        self.holder = holder
        if holder is None:
            who = "another process (it has not written its pid yet)"
        else:
            who = holder.describe()
            if not pid_alive(holder.pid):
                who += " — that pid is gone, so a process it started still holds the lock"
        after = f" (waited {waited:g}s)" if waited else ""
        super().__init__(f"{path}: the host is locked by {who}{after}; try again when it "
                         "finishes, or wait for it with --lock-timeout DURATION")


@dataclass(frozen=True)
class LockInfo:
    pid: int
    started: float  # seconds since the epoch
    command: str
    released: bool = False

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.started))
        return f"pid {self.pid} (started {when}, command: {self.command})"

    def to_json(self) -> str:
        return json.dumps(
            {"pid": self.pid, "started": self.started, "command": self.command,
             "released": self.released},
            sort_keys=True,
        )

    @staticmethod
    def parse(text: str) -> LockInfo | None:
        try:
            data = json.loads(text)
            return LockInfo(int(data["pid"]), float(data["started"]), str(data["command"]),
                            bool(data.get("released", False)))
        except (ValueError, KeyError, TypeError):
            return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# How often a waiting apply tries the lock again: flock has no timeout of its own, and a
# blocking flock under an alarm would not be safe beside the apply's threads.
POLL_SECONDS = 0.1


class HostLock:
    """``with HostLock(state_dir, "aihow apply plan.json"):`` — fails at once if held, or
    after ``timeout`` seconds of trying when one is given."""

    def __init__(self, state_dir: Path, command: str, timeout: float = 0.0) -> None:
        self.path = Path(state_dir) / LOCK_NAME
        self.command = command
        self.timeout = max(0.0, timeout)
        self.previous: LockInfo | None = None  # what the file said before we took it
        self._fd: int | None = None

    @property
    def stale_previous(self) -> bool:
        """True when the last holder died (kill -9, power loss) without releasing."""
        return self.previous is not None and not self.previous.released

    def acquire(self) -> HostLock:
        fd, created = self._open()
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(min(POLL_SECONDS, max(0.0, deadline - time.monotonic())))
                    continue
                holder = LockInfo.parse(_read_fd(fd))
                os.close(fd)
                raise LockHeld(self.path, holder, self.timeout) from None
            except OSError as exc:
                os.close(fd)
                raise AihowError(f"{self.path}: cannot lock: {exc.strerror}") from exc
        self.previous = LockInfo.parse(_read_fd(fd))
        self._fd = fd
        try:
            check_state_layout(self.path.parent)  # the lock guards the whole directory
            self._write(LockInfo(os.getpid(), time.time(), self.command))
        except AihowError:
            self._drop(created)
            raise
        except OSError as exc:  # a full or failing disk: leave things as they were
            self._drop(created)
            raise AihowError(f"{self.path}: cannot write the lock: {exc.strerror}; "
                             "nothing was changed") from None
        return self

    def _drop(self, created: bool) -> None:
        """Give the lock up after a failed acquire, leaving the directory as it was."""
        assert self._fd is not None
        if created:
            self.path.unlink(missing_ok=True)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def _open(self) -> tuple[int, bool]:
        """The lock file's fd, and whether this call created it. Never through a
        symbolic link (one planted at the name would have its target truncated), and
        only a regular file."""
        flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            try:
                fd, created = os.open(self.path, flags), False
            except FileNotFoundError:
                fd, created = os.open(self.path, flags | os.O_CREAT | os.O_EXCL, 0o600), True
        except OSError as exc:
            reason = ("is a symbolic link; aihow never follows one there (remove it)"
                      if exc.errno == errno.ELOOP else exc.strerror)
            raise AihowError(f"{self.path}: cannot take the host lock: {reason}") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise AihowError(f"{self.path}: cannot take the host lock: not a regular file")
        return fd, created

    def release(self) -> None:
        if self._fd is None:
            return
        info = LockInfo.parse(_read_fd(self._fd))
        if info is not None:
            self._write(LockInfo(info.pid, info.started, info.command, released=True))
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def _write(self, info: LockInfo) -> None:
        assert self._fd is not None
        data = (info.to_json() + "\n").encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)
        os.fsync(self._fd)

    def __enter__(self) -> HostLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def read_lock_info(state_dir: Path) -> LockInfo | None:
    """What the lock file says (for messages); None when absent or unreadable."""
    try:
        return LockInfo.parse((Path(state_dir) / LOCK_NAME).read_text())
    except OSError:
        return None


def _read_fd(fd: int) -> str:
    chunks = []
    offset = 0
    while True:
        chunk = os.pread(fd, 4096, offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks).decode(errors="replace")
