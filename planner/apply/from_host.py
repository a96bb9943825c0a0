"""``aihow recover --from-host``: the way out when the journal itself is damaged.

A torn last line is normal after a crash and plain ``recover`` repairs it. A journal
damaged in the middle (a bad disk, an edit) cannot say which steps ran; but recovery
never needed that: every handler is idempotent and ``recover`` brings each resource of
the plan to the plan's start (or with ``--forward`` its goal) whatever state it is in,
judging the host as it is. What recovery does need is the plan, and its start and goal.

So this takes the plan from the damaged journal's begin record when that first line is
still whole (else from ``--plan FILE``, the plan file the apply ran, its digest
checked), sets the damaged journal aside as ``journals/NNNNNN-damaged.jsonl`` (kept as
evidence, never deleted), writes a fresh journal holding only that begin record, and
hands over to the ordinary ``recover``, which probes the host and reports whether it
reached the plan's start fingerprint (or every resource of its goal).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from planner.apply.journal import (
    JournalError,
    JournalWriter,
    active_path,
    open_journal,
    salvage_begin,
    set_aside,
)
from planner.apply.lock import HostLock
from planner.errors import AihowError
from planner.host.environment import Environment


def rebuild_journal(access: Environment, state_dir: Path, *, plan_file: Path | None,
                    command: str) -> Path | None:
    """Replace a damaged journal with a fresh one holding its plan; returns where the
    damaged one was set aside (None when there is no journal at all). Refuses when the
    journal is readable (plain ``recover`` is the way) or no plan can be found."""
    with HostLock(state_dir, command):
        path = active_path(state_dir)
        try:
            view = open_journal(state_dir)
        except JournalError as exc:
            damage = str(exc).split("; the journal is damaged", 1)[0]
        else:
            if view is None:
                return None
            raise AihowError(f"{view.path}: the journal is readable; run `aihow recover` "
                             "(or `aihow recover --forward`), not --from-host")
        begin = salvage_begin(path)
        if begin is None:
            if plan_file is None:
                raise AihowError(f"{path}: the journal is damaged and its begin record is "
                                 "lost too; give the plan the apply ran: "
                                 "`aihow recover --from-host --plan PLAN.json`")
            begin = _begin_from_plan(plan_file)
        if begin.get("host_uri") != access.host_uri:
            raise AihowError(f"{path}: the interrupted apply was on host "
                             f"{begin.get('host_uri')!r}, not {access.host_uri!r}")
        kept = set_aside(path, "damaged")
        fields = {k: v for k, v in begin.items() if k not in ("seq", "type", "crc")}
        fields.update(rebuilt_from=str(kept), damage=damage, rebuilt=time.time())
        writer = JournalWriter.create(state_dir, fields)
        writer.note("journal rebuilt from its begin record; recovery judges the host as it is",
                    damaged=str(kept))
        writer.release()
        return kept


def _begin_from_plan(plan_file: Path) -> dict[str, Any]:
    """A begin record made from the plan file the apply ran (digest checked); the config
    text comes along when the config the plan names still has the plan's digest."""
    from planner.apply.plan_api import plan_to_dict
    from planner.config.digest import config_digest, read_config_text
    from planner.plan.model import load_plan

    plan = load_plan(plan_file)
    try:
        text = read_config_text(plan.config.path)
    except (OSError, ValueError):
        text = ""
    if text and config_digest(text) != plan.config.sha256:
        text = ""
    return {"host_uri": plan.host.uri, "plan": plan_to_dict(plan), "plan_text": plan.to_json(),
            "plan_sha256": plan.plan_sha256, "config_text": text,
            "config_path": plan.config.path, "start_fingerprint": plan.host.fingerprint,
            "command": f"(rebuilt from {plan_file})"}
