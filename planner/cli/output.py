"""How this run prints: the global options of the root command (``--no-color``,
``-v/--verbose``, ``-q/--quiet``, ``--log-file``) and the helpers every command prints
through. Light on purpose: it is imported by every command.

Colour follows the convention of https://no-color.org: off when ``NO_COLOR`` is set to
anything non-empty, or with ``--no-color``, or when stdout is not a terminal.
``--quiet`` keeps what a command is asked for (the plan, the table, the JSON) and the
final result, and drops progress and notes; ``--verbose`` adds detail (probe prints its
full listing). ``--log-file FILE`` appends one timestamped line per message, progress
event and error, whatever the verbosity, so a boot unit or a cron job keeps a record.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import typer


@dataclass
class Settings:
    no_color: bool = False
    verbosity: int = 0  # -1 quiet, 0 normal, 1 verbose
    log_file: Path | None = None


SETTINGS = Settings()
# The command line as typed (``main`` moves the global options before the command).
TYPED_ARGV: list[str] = []


def command_line() -> str:
    """``aihow ARGS...`` as the user typed it (for the log, the lock and generations)."""
    return " ".join(["aihow", *(TYPED_ARGV or sys.argv)[1:]])


def configure(*, no_color: bool = False, verbose: bool = False, quiet: bool = False,
              log_file: Path | None = None) -> None:
    """Set this run's printing options (the root callback calls it once)."""
    if verbose and quiet:
        raise typer.BadParameter("--verbose and --quiet exclude each other")
    SETTINGS.no_color = no_color
    SETTINGS.verbosity = 1 if verbose else -1 if quiet else 0
    SETTINGS.log_file = log_file
    if no_color:
        os.environ["NO_COLOR"] = "1"  # rich (the help) and any child process follow it
    if log_file is not None:
        try:
            with open(log_file, "a", encoding="utf-8"):
                pass
        except OSError as exc:
            raise typer.BadParameter(f"{log_file}: cannot open: {exc.strerror}",
                                     param_hint="--log-file") from None
        log("run: " + command_line())


def colour() -> bool:
    """Whether stdout gets ANSI colour."""
    if SETTINGS.no_color or os.environ.get("NO_COLOR"):
        return False
    return sys.stdout.isatty()


def quiet() -> bool:
    return SETTINGS.verbosity < 0


def verbose() -> bool:
    return SETTINGS.verbosity > 0


def log(line: str) -> None:
    """Append ``line`` to the log file, if any (never fails the command)."""
    if SETTINGS.log_file is None:
        return
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    try:
        with open(SETTINGS.log_file, "a", encoding="utf-8") as f:
            for part in line.splitlines() or [""]:
                f.write(f"{stamp} {part}\n")
    except OSError:
        pass


def say(text: str = "", *, err: bool = False, nl: bool = True) -> None:
    """A result line: always printed (stdout, or stderr with ``err``) and logged."""
    typer.echo(text, err=err, nl=nl)
    log(text)


def note(text: str, *, err: bool = False) -> None:
    """Progress and commentary: dropped by ``--quiet``, always logged."""
    log(text)
    if not quiet():
        typer.echo(text, err=err)


def error(text: str) -> None:
    """An error line on stderr (``error: ...`` as given), logged."""
    typer.echo(text, err=True)
    log(text)
