"""Whether anything in a few directories changed since a watch began: Linux inotify
through libc, so that a cache of files read from them (the simulated libvirt store) is
checked with one read(2) instead of a stat(2) of every file.

``DirWatch.start(dirs)`` watches the directories that exist (None when inotify is not
available: another platform, or the per-user limit of inotify instances is reached; the
caller then checks the files itself). ``changed()`` is sticky: once anything was seen
(a file created, written, renamed, removed or its metadata changed, a watched directory
removed or moved, the kernel's event queue overflowed) it stays True, for every thread,
and the caller starts a new watch. Events on the names in ``ignore`` (a lock file that
is opened for writing to be locked) do not count.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import struct
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

# <sys/inotify.h>
_IN_MODIFY = 0x2
_IN_ATTRIB = 0x4
_IN_CLOSE_WRITE = 0x8
_IN_MOVED_FROM = 0x40
_IN_MOVED_TO = 0x80
_IN_CREATE = 0x100
_IN_DELETE = 0x200
_IN_DELETE_SELF = 0x400
_IN_MOVE_SELF = 0x800
_IN_ONLYDIR = 0x01000000
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC
_MASK = (_IN_MODIFY | _IN_ATTRIB | _IN_CLOSE_WRITE | _IN_MOVED_FROM | _IN_MOVED_TO
         | _IN_CREATE | _IN_DELETE | _IN_DELETE_SELF | _IN_MOVE_SELF | _IN_ONLYDIR)
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of name

_libc: ctypes.CDLL | None = None
_libc_lock = threading.Lock()


def _inotify() -> ctypes.CDLL | None:
    global _libc
    with _libc_lock:
        if _libc is None:
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                libc.inotify_init1.argtypes = [ctypes.c_int]
                libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p,
                                                   ctypes.c_uint32]
            except (OSError, AttributeError):
                return None
            _libc = libc
        return _libc


class DirWatch:
    def __init__(self, fd: int, ignore: frozenset[bytes]) -> None:
        self._fd: int | None = fd
        self._ignore = ignore
        self._changed = False
        self._lock = threading.Lock()

    @classmethod
    def start(cls, dirs: Sequence[Path], ignore: Iterable[str] = ()) -> DirWatch | None:
        """A watch on each of ``dirs`` that exists now (the caller watches a directory's
        parent to learn that it appeared); None without inotify."""
        libc = _inotify()
        if libc is None:
            return None
        fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:
            return None  # EMFILE (the user's limit of instances), ENOSYS...
        watch = cls(fd, frozenset(os.fsencode(n) for n in ignore))
        for d in dirs:
            if libc.inotify_add_watch(fd, os.fsencode(d), _MASK) < 0:
                code = ctypes.get_errno()
                if code not in (errno.ENOENT, errno.ENOTDIR):
                    watch.close()
                    return None  # ENOSPC (the limit of watches) and the like
        return watch

    def changed(self) -> bool:
        """Whether anything was seen since the watch began (sticky)."""
        with self._lock:
            if self._changed or self._fd is None:
                return True
            while True:
                try:
                    buf = os.read(self._fd, 65536)
                except BlockingIOError:
                    return False
                except OSError:
                    self._changed = True
                    return True
                if self._relevant(buf):
                    self._changed = True
                    return True

    def _relevant(self, buf: bytes) -> bool:
        off = 0
        while off + _EVENT.size <= len(buf):
            _wd, _mask, _cookie, length = _EVENT.unpack_from(buf, off)
            name = buf[off + _EVENT.size:off + _EVENT.size + length].rstrip(b"\0")
            off += _EVENT.size + length
            if name not in self._ignore:
                return True  # (a nameless event is about a watched directory itself)
        return False

    def close(self) -> None:
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
