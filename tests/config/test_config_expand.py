"""``${VAR}`` expansion as ai-how (expandvars, nounset) does it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from planner.config.expand import ExpandError, config_environment, expand, repo_root

ENV = {"A": "alpha", "EMPTY": "", "HOME": "/home/u"}


@pytest.mark.parametrize(
    ("text", "out"),
    [
        ("plain", "plain"),
        ("${A}", "alpha"),
        ("$A/x", "alpha/x"),
        ("${HOME}/.cache", "/home/u/.cache"),
        ("${NOPE:-dflt}", "dflt"),
        ("${EMPTY:-dflt}", "dflt"),
        ("${EMPTY-dflt}", ""),
        ("${NOPE-dflt}", "dflt"),
        ("${A:-dflt}", "alpha"),
        ("${NOPE:=set}", "set"),
        ("${A:+alt}", "alt"),
        ("${NOPE:+alt}", ""),
        ("${NOPE:-${A}}", "alpha"),
        ("${NOPE:-${ALSO_NOPE:-deep}}/x", "deep/x"),
        ("${A:?must be set}", "alpha"),
        ("cost: 5$", "cost: 5$"),
        ("a $ b", "a $ b"),
        (r"\$A", "$A"),
        ("$$", str(os.getpid())),
    ],
)
def test_forms(text: str, out: str) -> None:
    assert expand(text, ENV) == out


@pytest.mark.parametrize(
    ("text", "offset", "message"),
    [
        ("x/${NOPE}", 2, "${NOPE}: unbound variable (give a default: ${NOPE:-...})"),
        ("$NOPE", 0, "$NOPE: unbound variable"),
        ("ab${NOPE:?set NOPE first}", 2, "NOPE: set NOPE first"),
        ("${EMPTY:?}", 0, "EMPTY: parameter null or not set"),
        ("${A", 0, "unterminated '${': missing '}'"),
        ("${}", 0, "bad substitution: expected a variable name after '${'"),
        ("${A:0:2}", 0, "bad substitution in '${A': unsupported operator"),
    ],
)
def test_errors(text: str, offset: int, message: str) -> None:
    with pytest.raises(ExpandError) as info:
        expand(text, ENV)
    assert (info.value.offset, str(info.value)) == (offset, message)


def test_tot_walks_up_to_git(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    assert repo_root(deep) == tmp_path.resolve()
    env = config_environment(deep / "c.yaml", {"TOT": "ignored", "X": "1"})
    assert env["TOT"] == str(tmp_path.resolve())
    assert env["PWD"] == os.getcwd() and env["X"] == "1"


def test_tot_without_git(tmp_path: Path) -> None:
    assert repo_root(tmp_path) == tmp_path.resolve()
