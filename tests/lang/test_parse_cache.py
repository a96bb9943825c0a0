"""The on-disk cache of built parsers: same results as a fresh build, and never in the way."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from planner import diskcache
from planner.lang import LangError, parse_layout, parse_profile, parse_selector
from planner.lang import parse as parse_mod

CASES = ["3g.40gb@4 + 2*1g.10gb", "7g.80gb", "2 * 1g.10gb+me"]
BAD = ["3g.40gb@ + x", "2*", "1g.10gb +", "3g.40gb@4 +* 1g"]


def _outcomes() -> list[str]:
    out = [str(parse_layout(text)) for text in CASES]
    out += [str(parse_profile("MIG 1g.10gb+me")), str(parse_selector("model=*H100*"))]
    for text in BAD:
        with pytest.raises(LangError) as err:
            parse_layout(text)
        out.append(str(err.value))
    return out


@pytest.fixture
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.delenv("AIHOW_NO_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    parse_mod._parser.cache_clear()
    yield tmp_path / "aihow"
    parse_mod._parser.cache_clear()


def test_cached_parsers_parse_and_fail_like_fresh_ones(
    cache_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIHOW_NO_CACHE", "1")
    fresh = _outcomes()
    assert not cache_home.exists()
    monkeypatch.delenv("AIHOW_NO_CACHE")
    parse_mod._parser.cache_clear()
    assert _outcomes() == fresh  # builds and writes the cache
    files = sorted(cache_home.glob("lark-*.pickle"))
    assert len(files) == 3  # profile, layout, selector
    assert not list(cache_home.glob("*.tmp"))
    parse_mod._parser.cache_clear()
    stamps = [f.stat().st_mtime_ns for f in files]
    assert _outcomes() == fresh  # loads from the cache
    assert [f.stat().st_mtime_ns for f in files] == stamps


def test_a_corrupt_cache_file_is_rebuilt(cache_home: Path) -> None:
    expected = _outcomes()
    for f in cache_home.glob("lark-*.pickle"):
        f.write_bytes(b"not a pickle")
    parse_mod._parser.cache_clear()
    assert _outcomes() == expected
    assert all(f.read_bytes() != b"not a pickle" for f in cache_home.glob("lark-*.pickle"))


def test_an_unusable_cache_directory_is_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache directory would go")
    monkeypatch.delenv("AIHOW_NO_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    parse_mod._parser.cache_clear()
    try:
        assert str(parse_layout("2*1g.10gb")) == "2*1g.10gb"
    finally:
        parse_mod._parser.cache_clear()
    assert blocker.read_text().startswith("a file")


def test_a_relative_cache_home_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", "relative")
    assert diskcache.entry_path("lark", "start: \"a\"") is None
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert diskcache.entry_path("lark", "start: \"a\"") is not None
    monkeypatch.setenv("AIHOW_NO_CACHE", "1")
    assert diskcache.entry_path("lark", "start: \"a\"") is None
