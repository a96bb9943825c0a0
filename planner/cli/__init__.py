"""The ``aihow`` command line. The cli package is the only place that prints or exits.

Each module here registers one group of commands on ``app``; heavy imports (networkx,
libvirt, pynvml, jinja2) happen inside the command functions so ``aihow --help`` and
``aihow validate`` start fast.
"""

from __future__ import annotations

import sys

import typer

from planner import __version__
from planner.errors import AihowError

app = typer.Typer(
    name="aihow",
    help="Declarative plan/apply compiler for NVIDIA MIG slices handed to libvirt VMs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"aihow {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """aihow plans and applies MIG layouts, vGPU devices and libvirt domains."""


def _register_all() -> None:
    from planner.cli import apply_cmds, config_cmds, plan_cmds, probe_cmds, sim_cmds

    for module in (config_cmds, sim_cmds, probe_cmds, plan_cmds, apply_cmds):
        module.register(app)


_register_all()


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print a one-line error to stderr and return the Exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def main() -> None:
    try:
        app()
    except AihowError as exc:
        for line in str(exc).splitlines() or [type(exc).__name__]:
            typer.echo(line if ":" in line.split(" ", 1)[0] else f"error: {line}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
