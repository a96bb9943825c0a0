"""What the config asks of the GPUs, flattened: management entries and slice requests.

The resolver works on these small values rather than on the config IR directly, so it
can be exercised with a HostState and a handful of requests; ``requests_from_config``
is the one place that reads the IR (contract 1: ``global.gpus`` and ``expand_vms``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal

from planner.config.vms import expand_vms
from planner.lang import GpuSelector, Layout, MigProfile
from planner.vm.vm_factory import domain_attrs
from planner.vocab import VmAttrs
from planner.vocab.plan import HOOK_PHASES, Hook, Hooks

if TYPE_CHECKING:
    from planner.config import ClusterConfig

# Fixed namespace for aihow's content-derived identities (mdev UUIDs). Never change it:
# every mdev UUID aihow ever created derives from it.
AIHOW_NAMESPACE = uuid.UUID("8f4f2a62-5b1c-5d6e-9a3b-6169686f7721")

HOST_OWNER = "host"


@lru_cache(maxsize=65536)
def mdev_uuid(stable_name: str) -> str:
    """The mdev UUID of a vGPU device: uuid5 of its stable name (``hpc/hpc-compute-01/gpu0``)."""
    return str(uuid.uuid5(AIHOW_NAMESPACE, stable_name))


@dataclass(frozen=True)
class GpuPolicy:
    """One management entry of ``global.gpus`` (an entry with ``select``)."""

    key: str  # "global.gpus[0]"
    select: GpuSelector
    mig: Literal["enabled", "disabled"] = "enabled"
    layout: Layout | None = None
    # "shut-off": slices of shut-off VMs may move so that a slice finds room (repack)
    repack: Literal["never", "shut-off"] = "never"
    # "host": aihow makes the default CI of a vGPU's GI before the vGPU exists; "guest":
    # it makes none. CIs inside a GI a vGPU holds are the guest's in both.
    vgpu_compute_instances: Literal["host", "guest"] = "host"


@dataclass(frozen=True)
class SliceRequest:
    """One MIG slice wanted: for a node (``node`` = domain name) or for the host (a layout item)."""

    key: str  # where it comes from: "clusters.hpc.compute_nodes[1]" or "global.gpus[0].layout"
    node: str  # domain name, or HOST_OWNER for layout instances
    profile: MigProfile | None = None
    mig_uuid: str | None = None  # "MIG-<uuid>": bind the existing MIG device with that UUID
    gpu: GpuSelector | None = None  # pin to GPUs this selects
    placement: int | None = None  # pin to this start slice
    vgpu_name: str | None = None  # stable name of its vGPU device; None for host instances

    @property
    def for_host(self) -> bool:
        return self.node == HOST_OWNER

    @property
    def owner(self) -> str:
        """The allocation ledger's owner: ``cluster/node`` (from the vGPU's stable name)."""
        if self.vgpu_name:
            return "/".join(self.vgpu_name.split("/")[:2])
        return f"{HOST_OWNER}/{self.node}"

    def describe(self) -> str:
        return f"{self.node} ({self.key})" if not self.for_host else self.key


@dataclass(frozen=True)
class VmRequest:
    """One VM the config declares: its libvirt domain, defined by aihow when missing."""

    name: str
    cluster: str
    key: str  # "clusters.hpc.compute_nodes[0]"
    attrs: VmAttrs | None = field(default=None, compare=False, hash=False)
    # What the VM's network, disk and power state are planned from (not compared).
    ip: str | None = field(default=None, compare=False, hash=False)  # None: DHCP
    auto_start: bool = field(default=True, compare=False, hash=False)
    subnet: str = field(default="", compare=False, hash=False)
    base_image_key: str = field(default="", compare=False, hash=False)

    @property
    def owner(self) -> str:
        return f"{self.cluster}/{self.name}"


@dataclass(frozen=True)
class Requests:
    policies: tuple[GpuPolicy, ...] = ()
    slices: tuple[SliceRequest, ...] = ()
    vgpu_backend: Literal["mdev", "vfio-vf"] = "mdev"
    named_mig_uuids: tuple[str, ...] = ()
    vms: tuple[VmRequest, ...] = ()  # empty: the caller plans no domains (slices only)
    clusters: tuple[str, ...] = ()  # the config's cluster names: it is the truth for them
    # The config's metadata.name: the domains aihow defined for it (their <aihow:config>)
    # are its own, even those of a cluster it no longer declares.
    config_name: str | None = None
    hooks: Hooks = Hooks()  # global.hooks, carried into the plan for review

    def __post_init__(self) -> None:
        if not self.named_mig_uuids:
            names = sorted({s.mig_uuid for s in self.slices if s.mig_uuid})
            object.__setattr__(self, "named_mig_uuids", tuple(names))


def requests_from_config(cfg: ClusterConfig) -> Requests:
    """Read management entries and MIG node slices from the config IR."""
    glob: Any = cfg.global_
    policies: list[GpuPolicy] = []
    for i, entry in enumerate(glob.gpus):
        if entry.select is None:
            continue  # an ai-how inventory record: planning ignores it
        policies.append(
            GpuPolicy(key=f"global.gpus[{i}]", select=entry.select, mig=entry.mig,
                      layout=entry.layout, repack=entry.repack,
                      vgpu_compute_instances=entry.vgpu_compute_instances)
        )
    config_name = str(cfg.metadata.name)

    slices: list[SliceRequest] = []
    vms: list[VmRequest] = []
    for vm in expand_vms(cfg):
        vms.append(VmRequest(name=vm.name, cluster=vm.cluster_name, key=vm.key_path,
                             attrs=domain_attrs(vm, config_name), ip=vm.ip,
                             auto_start=vm.auto_start, subnet=vm.subnet,
                             base_image_key=vm.base_image_key))
        gc = vm.gpu_config
        if gc is None or gc.mode != "mig":
            continue
        slices.append(
            SliceRequest(
                key=vm.key_path,
                node=vm.name,
                profile=gc.mig_profile,
                mig_uuid=gc.mig_uuid,
                gpu=gc.gpu,
                placement=gc.placement,
                vgpu_name=f"{vm.cluster_name}/{vm.name}/gpu0",
            )
        )
    backend: Literal["mdev", "vfio-vf"] = glob.host.vgpu_backend
    clusters = tuple(sorted({vm.cluster for vm in vms}))
    return Requests(policies=tuple(policies), slices=tuple(slices), vgpu_backend=backend,
                    vms=tuple(vms), clusters=clusters, config_name=config_name,
                    hooks=plan_hooks(glob.hooks))


def plan_hooks(hooks: Any) -> Hooks:
    """``global.hooks`` as the plan file writes them (argv and timeout per command)."""
    return Hooks(**{phase: tuple(Hook(command=h.command, timeout=float(h.timeout))
                                 for h in getattr(hooks, phase))
                    for phase in HOOK_PHASES})
