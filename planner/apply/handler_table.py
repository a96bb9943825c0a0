"""The apply handler of every resource ``Kind``: one explicit table, no registration
by import side effect. A new kind gets its handler here (a test checks every ``Kind``
has one)."""

from __future__ import annotations

from planner.apply.domain_handlers import DomainHandler, HostdevHandler
from planner.apply.handlers import ActionHandler
from planner.apply.mig_handlers import (
    ComputeInstanceHandler,
    GpuInstanceHandler,
    MigModeHandler,
)
from planner.apply.steps import Side, Step
from planner.apply.vgpu_handlers import SriovHandler, VgpuHandler
from planner.apply.vm_side_handlers import (
    NetworkHandler,
    PoolHandler,
    RunningHandler,
    VolumeHandler,
)
from planner.errors import AihowError
from planner.host.state import HostState
from planner.vocab import Kind
from planner.vocab.plan import Change

HANDLERS: dict[Kind, ActionHandler] = {
    Kind.MIG_MODE: MigModeHandler(),
    Kind.GPU_INSTANCE: GpuInstanceHandler(),
    Kind.COMPUTE_INSTANCE: ComputeInstanceHandler(),
    Kind.SRIOV: SriovHandler(),
    Kind.VGPU: VgpuHandler(),
    Kind.DOMAIN: DomainHandler(),
    Kind.HOSTDEV: HostdevHandler(),
    Kind.NETWORK: NetworkHandler(),
    Kind.POOL: PoolHandler(),
    Kind.VOLUME: VolumeHandler(),
    Kind.RUNNING: RunningHandler(),
}


def handler_for(item: Step | Change) -> ActionHandler:
    handler = HANDLERS.get(item.kind)
    if handler is None:
        known = ", ".join(sorted(HANDLERS)) or "none"
        raise AihowError(
            f"{item.address}: no apply handler for kind {item.kind!r} (known kinds: {known})"
        )
    return handler


def observe(host: HostState, step: Step) -> Side | None:
    """Which side of ``step`` the host is at ("after" when both sides look alike)."""
    handler = handler_for(step)
    if handler.matches(host, step.address, step.after):
        return "after"
    if handler.matches(host, step.address, step.before):
        return "before"
    return None
