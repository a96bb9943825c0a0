"""Each case of the hostile-input campaign as a test: a one-line error naming where,
a non-zero exit, no traceback, nothing changed (see ``tests/campaign/cases.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.campaign.cases import CASES, Case, execute


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_case_is_refused_cleanly(case: Case, tmp_path: Path) -> None:
    verdict = execute(case, tmp_path / "case")
    assert verdict.clean, f"{case.issue_words}: {'; '.join(verdict.problems)}\n{verdict.stderr}"


def test_the_campaign_covers_the_issue_list() -> None:
    words = " ".join(c.issue_words for c in CASES)
    for item in ("300+ levels", "5,000-digit", "100k deep", "missing directory",
                 "to a directory", "/dev/full", "read-only", "full --state-dir",
                 "journal.jsonl being a directory", "lock being a directory",
                 "generations/N/config.yaml", "begin record without its plan", "truncated",
                 "empty plan", "non-JSON", "duplicate action ids", "cycles", "missing ids",
                 "VM names", "bridge name", "1e40", "1e17", "--profiles",
                 "sim reboot", "duplicate-key"):
        assert item in words, item


def test_listing_generations_of_a_missing_host_creates_nothing(tmp_path: Path) -> None:
    """``generations --host sim:/nonexistent`` lists none and creates no directory."""
    from tests.clirun import aihow

    missing = tmp_path / "nonexistent"
    res = aihow("generations", "--host", f"sim:{missing}")
    assert res.returncode == 0 and "No generations" in res.stdout, res.stderr
    assert not missing.exists()
