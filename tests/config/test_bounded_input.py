"""Oversized and hostile input through the CLI: each case is one line naming the file,
exit 1, no traceback, and it ends quickly (a bound, not a crash or an out-of-memory)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from planner.config.limits import MAX_CONFIG_BYTES, MAX_TEMPLATE_COUNT
from planner.config.yamlevents import MAX_DEPTH
from tests.clirun import aihow

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = (ROOT / "config" / "example-mig-cluster.yaml").read_text()


def one_line_error(run: subprocess.CompletedProcess[str], name: str) -> str:
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr
    lines = run.stderr.splitlines()
    assert len(lines) == 1, lines
    assert name in lines[0]
    return lines[0]


def _edit(old: str, new: str) -> str:
    assert old in EXAMPLE
    return EXAMPLE.replace(old, new, 1)


CONFIGS = {
    "count": (
        _edit("    worker_nodes:\n      - cpu_cores: 4",
              "    worker_nodes:\n      count: 1000000000\n      ip: DHCP\n      cpu_cores: 4\n"
              "      memory_gb: 16\n      disk_gb: 100\n    old_workers:\n      - cpu_cores: 4"),
        f"worker_nodes.count: must be at most {MAX_TEMPLATE_COUNT}, got 1000000000",
    ),
    "layout repeat": (
        _edit("      mig: enabled",
              '      mig: enabled\n      layout: "99999999999999999999*1g.5gb"'),
        "global.gpus[0].layout: invalid layout '99999999999999999999*1g.5gb': at column 1, "
        "expected a count of at most 64",
    ),
    "flow nesting": ("a: " + "[" * 300 + "]" * 300 + "\n",
                     f"nested deeper than {MAX_DEPTH} levels"),
    "block nesting": (
        "".join(" " * i + f"k{i}:\n" for i in range(300)) + " " * 300 + "v: 1\n",
        f"nested deeper than {MAX_DEPTH} levels",
    ),
    "deep flow nesting": ("a: " + "[" * 200_000 + "]" * 200_000 + "\n",
                          f"nested deeper than {MAX_DEPTH} levels"),
    "nesting after an anchor (the round-trip loader's side)": (
        "a: &x 1\nb: " + "[" * 300 + "]" * 300 + "\n", f"nested deeper than {MAX_DEPTH} levels"),
    "5000-digit integer": (
        _edit("cpu_cores: 4", "cpu_cores: " + "9" * 5000),
        "clusters.hpc.controller.cpu_cores: integer literal too long",
    ),
    "oversized comment": ("# " + "x" * MAX_CONFIG_BYTES + "\n", "config larger than 8 MiB"),
    "oversized line": ("a: " + "x" * MAX_CONFIG_BYTES + "\n", "config larger than 8 MiB"),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_hostile_config(tmp_path: Path, name: str) -> None:
    text, expected = CONFIGS[name]
    path = tmp_path / "c.yaml"
    path.write_text(text)
    line = one_line_error(aihow("validate", str(path)), str(path))
    assert expected in line


def test_config_from_dev_zero() -> None:
    line = one_line_error(aihow("validate", "/dev/zero"), "/dev/zero")
    assert line == "error: /dev/zero: config larger than 8 MiB (aihow's limit)"


def test_a_deep_document_under_the_limit_still_loads(tmp_path: Path) -> None:
    """The bound is on nesting, not on size: a config nested as deep as allowed is read."""
    path = tmp_path / "c.yaml"
    path.write_text(EXAMPLE.replace('description: "HPC', 'x: ' + "[" * (MAX_DEPTH - 2)
                                    + "]" * (MAX_DEPTH - 2) + '\n  description: "HPC', 1))
    run = aihow("validate", str(path))  # metadata takes extra keys, as ai-how's does
    assert run.returncode == 0, run.stderr


def _plan(tmp_path: Path) -> str:
    sim = tmp_path / "host"
    assert aihow("sim", "init", str(sim), "--spec", "config/sim-a100.toml").returncode == 0
    out = tmp_path / "good.json"
    run = aihow("plan", "config/example-mig-cluster.yaml", "--host", f"sim:{sim}", "-o", str(out))
    assert out.exists(), run.stderr
    return out.read_text()


PLANS = {
    "empty": (lambda good: "", "empty file, not an aihow plan"),
    "non-JSON": (lambda good: "hello: world\n", ":1:1: not JSON: Expecting value"),
    "truncated": (lambda good: good[: len(good) // 2], ": not JSON: "),
    "nested 100k deep": (lambda good: "[" * 100_000 + "]" * 100_000,
                         "not an aihow plan (JSON nested too deeply)"),
    "nested 100k deep in a field": (
        lambda good: good.replace('"actions": [', '"x": ' + "[" * 100_000 + "]" * 100_000
                                  + ', "actions": [', 1),
        "not an aihow plan (JSON nested too deeply)",
    ),
}


@pytest.mark.parametrize("command", ["show", "apply"])
def test_damaged_plans(tmp_path: Path, command: str) -> None:
    good = _plan(tmp_path)
    json.loads(good)
    for name, (make, expected) in PLANS.items():
        path = tmp_path / f"{name.replace(' ', '-')}.json"
        path.write_text(make(good))
        args = [command, str(path)] + (["--auto-approve"] if command == "apply" else [])
        line = one_line_error(aihow(*args), str(path))
        assert expected in line, (name, line)
        assert "config" not in line.split(str(path), 1)[1], (name, line)


def test_plan_without_json_suffix_starting_with_brace(tmp_path: Path) -> None:
    path = tmp_path / "plan.out"
    path.write_text('{"format_version": ')
    line = one_line_error(aihow("apply", str(path), "--auto-approve"), str(path))
    assert "not JSON" in line


def test_plan_from_dev_zero() -> None:
    line = one_line_error(aihow("show", "/dev/zero"), "/dev/zero")
    assert line == "error: /dev/zero: plan larger than 128 MiB (aihow's limit)"
