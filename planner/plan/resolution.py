"""What resolve decides: the desired MIG instances per GPU and the vGPU devices, as
values the resources, the diff and the fingerprint read."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from planner.errors import AihowError
from planner.hardware.model import CiProfile, GiProfile, GpuModel
from planner.host.state import Gpu, GpuInstance, HostState
from planner.plan.bindings import Bindings
from planner.plan.request import GpuPolicy, Requests, SliceRequest


class ResolveError(AihowError):
    """A request that cannot be met on this host."""


@dataclass(frozen=True)
class PlannedGi:
    """One GPU instance of the desired state, with its one compute instance."""

    gpu: str
    profile: GiProfile
    start: int
    ci: CiProfile
    ci_start: int
    owner: SliceRequest
    existing: GpuInstance | None  # the instance kept, None when it is to be created
    # A repack moves a shut-off VM's slice to make room for another node's slice:
    # the start it leaves and the node it makes room for (None: not moved).
    moved_from: int | None = None
    moved_for: str | None = None


@dataclass(frozen=True)
class PlannedVgpu:
    backend: str  # "mdev" | "vfio-vf"
    key: str  # mdev UUID, or the VF's PCI address for vfio-vf
    parent: str  # the VF (or PF) the device lives on
    type_id: str | None  # None where the VFs are still to be enabled: apply looks it up by name
    type_name: str
    node: str
    gi: PlannedGi
    enables_vfs: bool = False  # its parent is a VF that the plan enables first


@dataclass(frozen=True)
class GpuDecision:
    gpu: Gpu
    model: GpuModel | None
    policy: GpuPolicy | None
    instances: tuple[PlannedGi, ...] = ()

    @property
    def managed(self) -> bool:
        return self.policy is not None

    @property
    def want_mig(self) -> bool | None:
        """The MIG mode the config asks for; None where aihow leaves the mode alone."""
        return None if self.policy is None else self.policy.mig == "enabled"

    @property
    def touched(self) -> bool:
        return self.managed or bool(self.instances)


@dataclass(frozen=True)
class Resolution:
    host: HostState
    requests: Requests
    gpus: tuple[GpuDecision, ...]
    vgpus: tuple[PlannedVgpu, ...]
    bindings: Bindings = field(compare=False, repr=False)
    held: Mapping[tuple[str, str], str] = field(default_factory=dict, compare=False, repr=False)

    def gpu(self, pci: str) -> GpuDecision | None:
        return next((g for g in self.gpus if g.gpu.pci == pci), None)
