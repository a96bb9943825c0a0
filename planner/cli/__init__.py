"""The ``aihow`` command line. The cli package is the only place that prints or exits.

Each module here registers one group of commands on ``app``; heavy imports (networkx,
libvirt, pynvml, jinja2) happen inside the command functions so ``aihow --help`` and
``aihow validate`` start fast.

``app`` has every command. ``main`` (the ``aihow`` script) builds an app with only the
module that owns the command named on the command line when it knows that name: typer
turns every registered command into a click command on each run, and a run needs one.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import os
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
import typer.core

from planner import __version__
from planner.cli import output
from planner.cli.errors import print_error
from planner.errors import AihowError

_MODULES = ("config_cmds", "sim_cmds", "probe_cmds", "plan_cmds", "apply_cmds",
            "export_cmds")
# Which module registers each top-level command or group. Only a shortcut: a name not
# here, or no longer registered by its module, gets the app with every command.
_HOME = {
    "validate": "config_cmds", "schema": "config_cmds",
    "sim": "sim_cmds",
    "probe": "probe_cmds",
    "plan": "plan_cmds", "show": "plan_cmds", "graph": "plan_cmds",
    "apply": "apply_cmds", "recover": "apply_cmds", "generations": "apply_cmds",
    "rollback": "apply_cmds",
    "export": "export_cmds",
}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"aihow {__version__}")
        raise typer.Exit()


def _root(
    version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    no_color: Annotated[bool, typer.Option(
        "--no-color", help="No ANSI colour (also when NO_COLOR is set or stdout is not a "
        "terminal).")] = False,
    verbose: Annotated[bool, typer.Option(
        "-v", "--verbose", help="More detail (probe: the full listing).")] = False,
    quiet: Annotated[bool, typer.Option(
        "-q", "--quiet", help="Only results and errors: no progress or notes.")] = False,
    log_file: Annotated[Path | None, typer.Option(
        "--log-file", metavar="FILE", help="Append a timestamped record of this run "
        "(messages, progress events, errors) to FILE.")] = None,
) -> None:
    """aihow plans and applies MIG layouts, vGPU devices and libvirt domains."""
    output.configure(no_color=no_color, verbose=verbose, quiet=quiet, log_file=log_file)


def _flag_type(self: typer.core.TyperOption, ctx: Any) -> str | None:
    """The help's type column: nothing for a flag (a ``<bool>`` there says nothing)."""
    if self.is_flag:
        return None
    return _option_type(self, ctx)


_option_type = typer.core.TyperOption.display_type_rich
typer.core.TyperOption.display_type_rich = _flag_type  # type: ignore[method-assign]


def _build(modules: tuple[str, ...], completion: bool = True) -> typer.Typer:
    """The root app with the commands of ``modules`` (``planner.cli.<name>``).
    ``completion``: offer ``--install-completion``/``--show-completion`` (typer then sets
    up its completion classes, which a run of one named command does not need)."""
    new = typer.Typer(
        name="aihow",
        help="Declarative plan/apply compiler for NVIDIA MIG slices handed to libvirt VMs.",
        no_args_is_help=True,
        add_completion=completion,
        pretty_exceptions_enable=False,
    )
    new.callback()(_root)
    for name in modules:
        importlib.import_module(f"planner.cli.{name}").register(new)
    return new


def _names(built: typer.Typer) -> set[str | None]:
    return {c.name for c in built.registered_commands} | {
        g.name for g in built.registered_groups}


def _app_for(argv: list[str]) -> typer.Typer:
    """An app that runs ``argv`` exactly as ``app`` would."""
    name = _command_name(argv)
    home = _HOME.get(name) if name is not None else None
    if home is not None:
        narrow = _build((home,), completion=False)
        if name in _names(narrow):
            # only that command: the module's others would be built for nothing
            narrow.registered_commands = [
                c for c in narrow.registered_commands if c.name == name]
            narrow.registered_groups = [
                g for g in narrow.registered_groups if g.name == name]
            return narrow
    return _build(_MODULES)


def _command_name(argv: list[str]) -> str | None:
    """The command word of ``argv``, past the root's options (``aihow -q plan ...``)."""
    rest = argv[1:]
    while rest and rest[0].startswith("-"):
        takes_value = rest[0] == "--log-file"
        rest = rest[2:] if takes_value else rest[1:]
    return rest[0] if rest else None


_GLOBAL_FLAGS = frozenset({"--no-color", "-v", "--verbose", "-q", "--quiet"})


def hoist_global_options(argv: list[str]) -> list[str]:
    """``aihow plan X -q`` as ``aihow -q plan X``: the root's printing options are taken
    after the command too (click only knows them before it). Stops at ``--``."""
    head, rest = argv[:1], argv[1:]
    lead: list[str] = []
    while rest and rest[0].startswith("-"):  # already before the command
        take = 2 if rest[0] == "--log-file" else 1
        lead += rest[:take]
        rest = rest[take:]
    if not rest:
        return argv
    moved: list[str] = []
    kept: list[str] = [rest[0]]
    i = 1
    while i < len(rest):
        arg = rest[i]
        if arg == "--":
            kept += rest[i:]
            break
        if arg in _GLOBAL_FLAGS or arg.startswith("--log-file="):
            moved.append(arg)
        elif arg == "--log-file" and i + 1 < len(rest):
            moved += rest[i:i + 2]
            i += 1
        else:
            kept.append(arg)
        i += 1
    return head + lead + moved + kept


def __getattr__(name: str) -> Any:
    if name == "app":  # built on first use: ``main`` does not need it
        built = globals()["app"] = _build(_MODULES)
        return built
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    # A run is short and what it allocates while starting (modules, pydantic schemas)
    # lives to the end: move what exists to the permanent generation and collect less
    # often, instead of traversing it again and again (about 5 ms of a plan run).
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)
    output.TYPED_ARGV[:] = sys.argv
    sys.argv = hoist_global_options(sys.argv)
    try:
        _app_for(sys.argv)()
    except AihowError as exc:
        print_error(exc)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        # An apply handles SIGINT itself while it changes the host (and reports what it
        # left); reaching here means the command stopped before or outside that.
        typer.echo("interrupted; if an apply or recover was under way, `aihow recover` "
                   "finishes it (it says \"Nothing to recover\" otherwise)", err=True)
        sys.exit(130)
    except OSError as exc:  # a file or stream the command could not write or read
        _os_error(exc)


def _os_error(exc: OSError) -> NoReturn:
    """One line naming the file (or stdout) and the reason, then exit 1; stdout is
    pointed at /dev/null so the interpreter's final flush cannot fail again."""
    where = exc.filename
    if where is None and _from_echo(exc):
        where = "stdout"
    reason = exc.strerror or type(exc).__name__
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    typer.echo(f"error: {where}: cannot write: {reason}" if where == "stdout"
               else f"error: {where}: {reason}" if where else f"error: {reason}", err=True)
    sys.exit(1)


def _from_echo(exc: OSError) -> bool:
    """Whether the error came from writing the command's output (click's echo, print):
    such a write names no file."""
    import traceback

    return any(frame.name in ("echo", "secho", "print", "flush")
               for frame in traceback.extract_tb(exc.__traceback__))
