"""``aihow --help`` and ``aihow validate`` must not import the heavy libraries: they run
in a fresh interpreter and report which modules ended up in ``sys.modules``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("networkx", "libvirt", "libvirtmod", "pynvml", "jinja2")

# argv[1]: a module to import first (to prove the check sees imports) or "-";
# argv[2]: the heavy top-level names, comma-separated; the rest: the aihow arguments.
RUNNER = """
import importlib, json, sys
if sys.argv[1] != "-":
    importlib.import_module(sys.argv[1])
from typer.testing import CliRunner
from planner.cli import app
HEAVY = sys.argv[2].split(",")
result = CliRunner().invoke(app, sys.argv[3:])
heavy = sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)
print(json.dumps({"exit": result.exit_code, "heavy": heavy, "output": result.output}))
"""


def run_cli(*args: str, preload: str = "-") -> dict:  # type: ignore[type-arg]
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, preload, ",".join(HEAVY), *args],
        capture_output=True, text=True, cwd=ROOT, check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    "args",
    [("--help",), ("validate", "config/example-mig-cluster.yaml"),
     ("validate", "tests/config/data/aihow-compact.yaml")],
    ids=["help", "validate-example", "validate-compact"],
)
def test_light_commands_import_no_heavy_module(args: tuple[str, ...]) -> None:
    report = run_cli(*args)
    assert report["exit"] == 0, report["output"]
    assert report["heavy"] == []


def test_the_check_sees_a_heavy_import() -> None:
    report = run_cli("--help", preload="jinja2")
    assert "jinja2" in report["heavy"]


def test_planning_against_a_snapshot_loads_neither_libvirt_nor_nvml(tmp_path: Path) -> None:
    """A saved probe needs no host: a PR bot plans with no libvirt or NVML to load."""
    from planner.cli.host_opts import open_environment
    from planner.host.snapshot import snapshot_json
    from planner.sim.host import GpuSpec, HostSpec, init_host

    init_host(tmp_path / "host", HostSpec(gpus=(GpuSpec("a100-40gb", "0000:17:00.0", True),)))
    env = open_environment(f"sim:{tmp_path / 'host'}")
    snap = tmp_path / "snap.json"
    snap.write_text(snapshot_json(env.probe(), env.records()))
    report = run_cli("plan", "config/example-mig-cluster.yaml", "--host", f"snapshot:{snap}")
    assert report["exit"] == 0, report["output"]
    assert not [m for m in report["heavy"] if m.split(".")[0] in ("libvirt", "libvirtmod",
                                                                   "pynvml")]
    assert "create" in report["output"]
