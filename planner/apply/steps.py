"""What apply runs: a plan's changes expanded into steps.

A create, update or delete is one step. A replace is one change with a before and an
after (Terraform's DeleteThenCreate); the executor runs it as two steps: its delete
step (``before`` -> absent, numbered and ordered by the change's ``delete_step``) and
its create step (absent -> ``after``, the change's own id). Undoing a step brings its
resource back to the step's ``before``, so a replace rolls back as: remove the new one,
then make the old one again. Verification and recovery judge each change once, by its
address, against the change's own ``before`` and ``after``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from planner.vocab import Action, Address, Attrs, Kind
from planner.vocab.plan import Change, Plan

Side = Literal["before", "after"]


@dataclass(frozen=True)
class Step:
    """One step: ``before`` and ``after`` are the resource's states around it (None:
    absent). ``phase`` is what the step does: create, delete or update (a no-op change
    kept for recovery is a step of phase no-op)."""

    id: int
    change: Change
    phase: Action
    before: Attrs | None
    after: Attrs | None
    depends_on: tuple[int, ...]

    @property
    def address(self) -> Address:
        return self.change.address

    @property
    def kind(self) -> Kind:
        return self.change.kind

    @property
    def branch(self) -> str:
        return self.change.branch

    def state(self, side: Side) -> Attrs | None:
        return self.before if side == "before" else self.after

    def describe(self) -> str:
        if self.change.kind is Kind.RUNNING and self.phase is not Action.UPDATE:
            # a VM's power state: said as what happens to the VM
            what = "shut down" if self.phase is Action.DELETE else "start"
            return f"{what} {self.address.domain_name} ({self.address})"
        if self.change.action is Action.REPLACE:
            half = "delete the old" if self.phase is Action.DELETE else "create the new"
            return f"replace {self.address} ({half})"
        return f"{self.phase} {self.address}"


def expand(change: Change) -> list[Step]:
    """The steps of one change, in the order they run."""
    c = change
    if c.action is Action.REPLACE:
        assert c.delete_step is not None  # the plan model checks it
        return [Step(c.delete_step.id, c, Action.DELETE, c.before, None,
                     c.delete_step.depends_on),
                Step(c.id, c, Action.CREATE, None, c.after, c.depends_on)]
    return [Step(c.id, c, c.action, c.before, c.after, c.depends_on)]


def plan_steps(plan: Plan) -> list[Step]:
    """Every step that changes something, in execution order (by id)."""
    steps = [s for c in plan.changes for s in expand(c)]
    return sorted(steps, key=lambda s: s.id)
