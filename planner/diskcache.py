"""A small on-disk cache for work every process would otherwise redo at start-up (the lark
parser tables, the parsed GPU catalog).

Entries live in the user's cache directory (``$XDG_CACHE_HOME/aihow``, else
``~/.cache/aihow``) under a name that carries a digest of everything they depend on, so a
changed input simply misses. The cache is only an optimisation: an absent, unreadable or
stale entry means doing the work again, a failed write is ignored, and ``AIHOW_NO_CACHE=1``
turns it off. A leaf module: it imports nothing of the project.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO


def entry_path(kind: str, *inputs: str) -> Path | None:
    """The file for ``kind`` given its inputs (Python's version is always one), or None when
    caching is off or no absolute cache directory is known."""
    if os.environ.get("AIHOW_NO_CACHE"):
        return None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    if not os.path.isabs(base):
        return None
    key = "\0".join((*inputs, str(sys.version_info[:2])))
    digest = hashlib.sha256(key.encode()).hexdigest()[:24]
    return Path(base) / "aihow" / f"{kind}-{digest}.pickle"


def store(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write an entry atomically (temporary file, rename) so a concurrent reader never sees
    half of one; any OS error is ignored."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("wb") as f:
            write(f)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
