"""The state directory: the host's (the Environment's ``state_dir()``) unless overridden,
created with mode 0700."""

from __future__ import annotations

from pathlib import Path

import pytest

from planner.apply.state_dir import resolve_state_dir
from planner.errors import AihowError


def test_override_wins_and_is_created(tmp_path: Path) -> None:
    chosen = resolve_state_dir(Path("/var/lib/aihow"), tmp_path / "mine")
    assert chosen == tmp_path / "mine" and chosen.is_dir()


def test_default_is_created_private(tmp_path: Path) -> None:
    chosen = resolve_state_dir(tmp_path / "a" / "state")
    assert chosen.is_dir() and chosen.stat().st_mode & 0o777 == 0o700


def test_a_file_in_the_way_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("")
    with pytest.raises(AihowError, match="state"):
        resolve_state_dir(tmp_path / "state")
