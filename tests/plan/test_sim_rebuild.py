"""On a simulated host: apply, reboot (instances and vGPUs vanish), apply again; the host
is rebuilt to the same layout, so its fingerprint is the same and a re-plan is empty."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from test_plans_current import REGEN

from planner.cli.host_opts import open_environment
from planner.config import load_config
from planner.plan.fingerprint import fingerprint

ROOT = Path(__file__).resolve().parents[2]
AIHOW = str(Path(sys.executable).with_name("aihow"))


def _apply_fresh_plan(scenario, uri: str):  # type: ignore[no-untyped-def]
    plan = REGEN._plan(scenario, uri)
    REGEN._apply(scenario, uri, plan.model_copy(
        update={"host": plan.host.model_copy(update={"uri": uri})}).sealed())
    return plan


def test_rebuilt_host_has_the_same_fingerprint(tmp_path: Path) -> None:
    scenario = REGEN.SCENARIOS[0]
    uri = str(REGEN._prepare(scenario, tmp_path / "host"))
    cfg = load_config(ROOT / scenario.config)
    _apply_fresh_plan(scenario, uri)
    built = fingerprint(open_environment(uri).probe(), cfg)
    subprocess.run([AIHOW, "sim", "reboot", uri.removeprefix("sim:")], check=True,
                   capture_output=True)
    lost = open_environment(uri).probe()
    assert lost.gpus[0].gpu_instances == () and fingerprint(lost, cfg) != built
    again = _apply_fresh_plan(scenario, uri)
    assert again.summary["create"] > 0 and again.summary["delete"] == 0
    assert fingerprint(open_environment(uri).probe(), cfg) == built
    assert not REGEN._plan(scenario, uri).has_changes
