"""State directory defaults: /var/lib/aihow for local, DIR/state for sim:DIR."""

from __future__ import annotations

from pathlib import Path

from planner.apply.state_dir import LOCAL_STATE_DIR, default_state_dir, resolve_state_dir


def test_defaults_follow_the_host_uri(tmp_path: Path) -> None:
    assert default_state_dir("local") == LOCAL_STATE_DIR == Path("/var/lib/aihow")
    assert default_state_dir(f"sim:{tmp_path}") == tmp_path / "state"


def test_override_wins_and_is_created(tmp_path: Path) -> None:
    chosen = resolve_state_dir("local", tmp_path / "mine")
    assert chosen == tmp_path / "mine" and chosen.is_dir()
