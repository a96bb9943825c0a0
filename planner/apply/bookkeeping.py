"""What an apply writes down after the host change: a generation and the ledger."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from planner.apply import plan_api
from planner.apply.allocator import record_applied
from planner.apply.generations import Generation, list_generations, record_generation
from planner.apply.results import ApplyInput
from planner.errors import AihowError
from planner.host.state import HostState
from planner.vocab import Action, DomainAttrs, Kind
from planner.vocab.plan import Plan

if TYPE_CHECKING:
    from planner.config.models import ClusterConfig


def record_claims(state_dir: Path, host: HostState, config: ClusterConfig,
                  plan: Plan | None = None) -> list[str]:
    """Record in the ledger what each node of ``config`` holds on the verified ``host``,
    releasing the claims of the clusters whose domains the plan undefined as dropped.
    The host change is done and journaled by then, so a ledger that refuses (another
    cluster's claim) is reported as a warning, not as a failed apply."""
    released = {c.before.cluster for c in (plan.changes if plan else ())
                if c.kind is Kind.DOMAIN and c.action is Action.DELETE
                and isinstance(c.before, DomainAttrs) and c.before.cluster}
    try:
        record_applied(state_dir, host, config, released)
    except (AihowError, OSError) as exc:
        return [f"the allocation ledger was not updated: {exc}"]
    return []


def maybe_generation(inp: ApplyInput, state_dir: Path, host: HostState, fp: str,
                     host_uri: str, *, force: bool) -> Generation | None:
    """Record a generation; a no-op apply records one only when its config differs from
    the latest generation's (so `rollback` can return to it exactly)."""
    if not force:
        gens = list_generations(state_dir)
        if gens and gens[-1].config_text() == inp.config_text:
            return None
    return record_generation(
        state_dir,
        config_text=inp.config_text,
        config_path=inp.config_path,
        plan_text=inp.plan_text,
        plan_sha256=inp.plan.plan_sha256,
        state_json=host.model_dump_json(indent=2) + "\n",
        host_uri=host_uri,
        fingerprint=fp,
        command=inp.command,
        summary=plan_api.plan_summary(inp.plan),
    )
