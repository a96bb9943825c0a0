"""The example plans kept in plans/ are what the planner makes today (byte for byte)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _regen():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("plans_regen", ROOT / "plans" / "regen.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["plans_regen"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


REGEN = _regen()


@pytest.mark.parametrize("scenario", REGEN.SCENARIOS, ids=lambda s: s.name)
def test_committed_plan_is_up_to_date(scenario) -> None:  # type: ignore[no-untyped-def]
    for name, text in REGEN.render(scenario).items():
        path = ROOT / "plans" / name
        assert path.exists(), f"plans/{name} is missing: run .venv/bin/python plans/regen.py"
        assert path.read_text() == text, (
            f"plans/{name} is out of date: run .venv/bin/python plans/regen.py and commit the diff"
        )


def test_committed_plans_load_and_verify() -> None:
    from planner.plan import load_plan

    for path in sorted((ROOT / "plans").glob("*.json")):
        plan = load_plan(path)
        assert plan.host.uri.startswith("sim:/tmp/aihow-")
