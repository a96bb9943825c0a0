"""How the command line reports an ``AihowError``: the one error printer.

A config's diagnostics are printed as they are (each already ``FILE:LINE:COL: ...``);
any other error is one ``error: MESSAGE`` line, followed by its detail lines (a stale
plan's drift) as they are. Lines go through ``cli.output`` (stderr and the log file).
The exit status is the error's ``exit_code``. A command printing JSON lines of events
also gets one ``error`` event on stdout.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, NoReturn, TypeVar

import typer

from planner.cli import json_events, output
from planner.errors import AihowError, ConfigError


def print_error(exc: AihowError) -> None:
    lines = str(exc).splitlines() or [type(exc).__name__]
    if not isinstance(exc, ConfigError):
        lines[0] = f"error: {lines[0]}"
    for line in lines:
        output.error(line)


def fail(exc: AihowError, as_json: bool = False) -> NoReturn:
    """Print ``exc`` (and with ``as_json`` one ``error`` event) and end the command with
    its exit status."""
    print_error(exc)
    if as_json:
        json_events.emit(json_events.error_record(str(exc), exc.exit_code))
    raise typer.Exit(exc.exit_code)


F = TypeVar("F", bound=Callable[..., None])


def reports_errors(fn: F, *, events: bool = False) -> F:
    """A command that ends with ``fail`` on an AihowError instead of raising it (so it
    reports the same when run through typer's test runner as through ``main``). With
    ``events``, the command prints JSON lines when its ``fmt`` is json, so its error is
    an event too."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except AihowError as exc:
            fail(exc, events and str(kwargs.get("fmt")) == "json")

    return wrapper  # type: ignore[return-value]
