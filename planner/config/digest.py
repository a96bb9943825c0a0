"""The config digest a plan records (``config.sha256``), defined once.

A config is read as text (UTF-8, universal newlines: CRLF and CR become LF, as the
loader reads it), and its digest is the SHA-256 of that text encoded as UTF-8. `plan`,
`apply`, `rollback` and the journal all use these two functions, so a config with CRLF
line ends plans and applies like any other, and the text kept in a generation has the
digest of the file it came from.
"""

from __future__ import annotations

import hashlib
import os

from planner.config.limits import MAX_CONFIG_BYTES, read_text_limited

__all__ = ["config_digest", "read_config_text"]


def read_config_text(path: str | os.PathLike[str]) -> str:
    """The config's text as the loader reads it (InputTooLarge, OSError or
    UnicodeDecodeError as ``read_text_limited`` raises them)."""
    return read_text_limited(path, MAX_CONFIG_BYTES, "config", encoding="utf-8")


def config_digest(text: str) -> str:
    """SHA-256 (hex) of a config's text as ``read_config_text`` returns it."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
