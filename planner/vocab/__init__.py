"""The plan vocabulary: kinds, actions, reason codes, resource addresses, the attribute
model of each kind and the plan file's models. A leaf package: it imports nothing of
aihow, so every layer (plan-making, apply, the CLI, the host adapters' messages) speaks
it without an import cycle."""

from planner.vocab.address import Address, AddressError, Slot
from planner.vocab.attrs import (
    Attrs,
    AttrsError,
    ComputeInstanceAttrs,
    DomainAttrs,
    GpuInstanceAttrs,
    HostdevAttrs,
    MigModeAttrs,
    NetworkAttrs,
    PoolAttrs,
    RunningAttrs,
    SriovAttrs,
    VgpuAttrs,
    VmAttrs,
    VolumeAttrs,
    attrs_as,
    attrs_from_json,
)
from planner.vocab.kinds import MIG_KINDS, Action, Kind
from planner.vocab.reasons import Reason

__all__ = [
    "MIG_KINDS",
    "Action",
    "Address",
    "AddressError",
    "Attrs",
    "AttrsError",
    "ComputeInstanceAttrs",
    "DomainAttrs",
    "GpuInstanceAttrs",
    "HostdevAttrs",
    "Kind",
    "MigModeAttrs",
    "NetworkAttrs",
    "PoolAttrs",
    "RunningAttrs",
    "Reason",
    "Slot",
    "SriovAttrs",
    "VgpuAttrs",
    "VmAttrs",
    "VolumeAttrs",
    "attrs_as",
    "attrs_from_json",
]
