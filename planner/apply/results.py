"""What an apply is given and what an apply or a recover ends with (values only)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from planner.apply.generations import Generation
from planner.apply.hooks import HookRun
from planner.errors import AihowError
from planner.host.libvirt_objects import DEFAULT_SHUTDOWN_TIMEOUT
from planner.vocab.plan import Plan

if TYPE_CHECKING:
    from planner.config.models import ClusterConfig

# "interrupted": a stop request (SIGINT, SIGTERM) cut the rollback short; the journal
# stays for `aihow recover`. A stop whose rollback finished is "rolled-back" with
# ``interrupted_by`` set.
# "applied-unverified": every step done, but the host could not be read back to check it
# (nothing is undone for that).
Outcome = Literal["applied", "applied-unverified", "no-changes", "rolled-back",
                  "rollback-failed", "interrupted"]


class PlanRefused(AihowError):
    """The apply was refused before anything on the host changed."""


@dataclass
class ApplyInput:
    plan: Plan
    plan_text: str
    config: ClusterConfig  # the config the plan was made from (for the fingerprint)
    config_text: str
    config_path: str
    command: str = "aihow apply"
    plan_path: str = ""  # the plan file applied ("" for a config planned on the spot)
    allow_reset: bool = False
    parallel: bool = True
    lock_timeout: float = 0.0  # seconds to wait for a held host lock (0: fail at once)
    step_timeout: float | None = None  # seconds; None: the default (control.py)
    # Shut down the running VMs whose slices the plan takes, and start them again after.
    restart_running_vms: bool = False
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT


@dataclass
class ApplyResult:
    outcome: Outcome
    total: int
    done: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (address, error)
    undone: list[str] = field(default_factory=list)
    back_at_start: bool | None = None
    resource_states: list[str] = field(default_factory=list)
    generation: Generation | None = None
    journal_path: Path | None = None
    fingerprint_after: str | None = None
    start_fingerprint: str | None = None
    warnings: list[str] = field(default_factory=list)
    interrupted_by: str | None = None  # the signal that stopped the apply
    verify_error: str | None = None  # why the host could not be read back
    # The host change is done and verified, but recording it failed (journal, generation)
    bookkeeping: list[str] = field(default_factory=list)
    hooks: list[HookRun] = field(default_factory=list)  # the hook commands that ran

    @property
    def ok(self) -> bool:
        return self.outcome in ("applied", "no-changes")


@dataclass
class RecoverResult:
    # "finished": the interrupted apply had done every step and the host is at its end:
    # the journal is closed as applied and nothing is undone.
    outcome: Literal["nothing", "recovered-back", "recovered-forward", "finished", "failed"]
    steps: list[str] = field(default_factory=list)
    reached: bool | None = None  # host at the start (back) / planned end (forward)
    resource_states: list[str] = field(default_factory=list)
    error: str | None = None
    generation: Generation | None = None
    journal_path: Path | None = None
    warnings: list[str] = field(default_factory=list)
    hooks: list[HookRun] = field(default_factory=list)  # post_reset owed by the apply
