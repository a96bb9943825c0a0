"""``STATE_DIR/last-apply.json``: when the last apply (or rollback) on this host ended and
how. Generations record only successes; the metrics (``aihow probe --format prometheus``)
also need to say that the last run failed. Written by the CLI after each run that reached
the executor; a missing or damaged file reads as None."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from planner.apply.fsutil import canonical_json, write_atomic

LAST_APPLY = "last-apply.json"


@dataclass(frozen=True)
class LastApply:
    finished: float  # Unix time
    outcome: str  # applied, no-changes, rolled-back, rollback-failed
    ok: bool
    generation: int | None
    command: str


def record_last_apply(state_dir: Path, last: LastApply) -> None:
    write_atomic(Path(state_dir) / LAST_APPLY, canonical_json(
        {"finished": last.finished, "outcome": last.outcome, "ok": last.ok,
         "generation": last.generation, "command": last.command}))


def read_last_apply(state_dir: Path) -> LastApply | None:
    try:
        data = json.loads((Path(state_dir) / LAST_APPLY).read_text())
        return LastApply(float(data["finished"]), str(data["outcome"]), bool(data["ok"]),
                         None if data["generation"] is None else int(data["generation"]),
                         str(data["command"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
