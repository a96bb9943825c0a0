"""Where aihow keeps its lock, journal and generations for a host: the Environment's
``state_dir()`` (``/var/lib/aihow``; ``DIR/state`` for ``sim:DIR``, so a simulated host
carries its own history), or ``--state-dir``.
"""

from __future__ import annotations

from pathlib import Path

from planner.errors import AihowError
from planner.host.ledger import LEDGER_NAME

__all__ = ["LEDGER_NAME", "resolve_state_dir"]


def resolve_state_dir(default: Path, override: str | Path | None = None) -> Path:
    """``override`` if given, else the host's ``default``; created if missing (mode 0700:
    it records host changes)."""
    path = Path(override) if override is not None else default
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise AihowError(f"{path}: cannot create the state directory: {exc.strerror}") from exc
    if not path.is_dir():
        raise AihowError(f"{path}: the state directory is not a directory")
    return path
