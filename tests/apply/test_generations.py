"""Generations are numbered, complete, and listed in order."""

from __future__ import annotations

from pathlib import Path

import pytest

from planner.apply.generations import list_generations, load_generation, record_generation
from planner.errors import AihowError


def _record(state: Path, n: int) -> None:
    record_generation(
        state,
        config_text=f"config {n}\n",
        config_path=f"/c{n}.yaml",
        plan_text=f'{{"n": {n}}}\n',
        plan_sha256=f"sha{n}",
        state_json="{}\n",
        host_uri="sim:/x",
        fingerprint=f"fp{n}",
        command="aihow apply",
        summary={"create": n},
    )


def test_generations_are_numbered_and_loadable(tmp_path: Path) -> None:
    assert list_generations(tmp_path) == []
    for n in (1, 2, 3):
        _record(tmp_path, n)
    gens = list_generations(tmp_path)
    assert [g.number for g in gens] == [1, 2, 3]
    two = load_generation(tmp_path, 2)
    assert two.config_text() == "config 2\n"
    assert two.plan_file.read_text() == '{"n": 2}\n'
    assert two.fingerprint == "fp2" and two.summary == {"create": 2}
    assert not any(p.name.startswith(".tmp") for p in (tmp_path / "generations").iterdir())


def test_missing_generation_names_the_ones_that_exist(tmp_path: Path) -> None:
    _record(tmp_path, 1)
    with pytest.raises(AihowError, match=r"no generation 7 \(have: 1\)"):
        load_generation(tmp_path, 7)


def test_half_written_generation_is_not_listed(tmp_path: Path) -> None:
    _record(tmp_path, 1)
    (tmp_path / "generations" / ".tmp-2-99").mkdir()
    (tmp_path / "generations" / "2").mkdir()  # no meta.json: never completed
    assert [g.number for g in list_generations(tmp_path)] == [1]
