"""Run the hostile-input campaign and print a table: cases, clean, failures.

    .venv/bin/python -m tests.campaign.run [-k SUBSTRING] [-v]

Exits 1 when any case is not clean. The cases are in ``tests/campaign/cases.py``;
``tests/campaign/test_hostile.py`` runs the same cases under pytest.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.campaign.cases import CASES, execute  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", default="", help="run only cases whose name contains this")
    parser.add_argument("-v", action="store_true", help="print each case's stderr")
    args = parser.parse_args(argv)
    cases = [c for c in CASES if args.k in c.name]
    verdicts = []
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="aihow-campaign-") as tmp:
        for n, case in enumerate(cases):
            v = execute(case, Path(tmp) / f"{n:03d}-{case.name}")
            verdicts.append(v)
            mark = "clean" if v.clean else "FAIL "
            print(f"{mark}  {case.name:34} {'; '.join(v.problems)}")
            if args.v and v.stderr:
                print("       " + v.stderr.rstrip().replace("\n", "\n       "))
    clean = sum(v.clean for v in verdicts)
    print()
    print(f"{'cases':>8} {'clean':>8} {'failures':>8}   seconds")
    print(f"{len(verdicts):>8} {clean:>8} {len(verdicts) - clean:>8}   "
          f"{time.monotonic() - start:.1f}")
    return 0 if clean == len(verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
