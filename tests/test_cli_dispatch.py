"""``aihow`` builds an app with only the module of the command it runs; it must behave as
the app with every command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import planner.cli as cli

ROOT = Path(__file__).resolve().parents[1]


def _main(*args: str) -> subprocess.CompletedProcess[str]:
    code = "import sys; sys.argv[0] = 'aihow'; from planner.cli import main; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                          text=True, cwd=ROOT, env={"COLUMNS": "100", "PATH": ""}, check=False)


def test_every_shortcut_names_a_command_of_its_module() -> None:
    every = cli._names(cli.app)
    assert set(cli._HOME) == every  # a new command must be added to _HOME (or is slower)
    for name, module in cli._HOME.items():
        assert name in cli._names(cli._build((module,)))


@pytest.mark.parametrize("argv, expected", [
    (["aihow", "plan", "x.yaml"], {"plan"}),
    (["aihow", "show", "x.json"], {"show"}),
    (["aihow", "sim", "init"], {"sim"}),
    (["aihow"], None),
    (["aihow", "--version"], None),
    (["aihow", "no-such-command"], None),
])
def test_the_app_for_a_command_line(argv: list[str], expected: set[str] | None) -> None:
    names = cli._names(cli._app_for(argv))
    assert names == (expected if expected is not None else cli._names(cli.app))


@pytest.mark.parametrize("args", [
    ("plan", "--help"), ("validate", "--nope"), ("no-such-command",), ("--version",),
    ("show", "missing-plan.json"),
])
def test_main_prints_what_the_full_app_prints(args: tuple[str, ...]) -> None:
    from typer.testing import CliRunner

    done = _main(*args)
    full = CliRunner().invoke(cli.app, list(args), prog_name="aihow",
                              env={"COLUMNS": "100"})
    assert done.returncode == full.exit_code
    assert done.stdout == full.stdout
