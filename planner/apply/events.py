"""Progress of an apply or a recover, reported to the caller (the CLI prints it)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from planner.errors import AihowError


@dataclass(frozen=True)
class Event:
    """One progress report; always in plan order."""

    type: Literal["action-start", "action-done", "action-failed",
                  "undo-start", "undo-done", "undo-failed", "note",
                  "hook-start", "hook-done", "hook-failed"]
    message: str
    action_id: int | None = None
    address: str | None = None
    index: int = 0  # 1-based position of the action in the plan
    total: int = 0
    hook: dict[str, Any] | None = None  # hook events: phase, index, command, status, ...


EventSink = Callable[[Event], None]


def error_text(exc: BaseException) -> str:
    """A failure as reported and journaled: our own errors by their message, anything
    else with its type (a bare message of a library error often says too little)."""
    if isinstance(exc, AihowError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
