"""HostState: everything the probe read from a host, as frozen values.

This is the only view of the host that plan-making sees. It is produced by
``planner.host.probe`` from NVML (pynvml), sysfs and libvirt, or from the simulator
through the same adapters. Lists are kept in a canonical order (GPUs by PCI address,
instances by placement) so equal hosts give equal values.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ComputeInstance(_Frozen):
    ci_id: int  # assigned by the driver; never meaningful across re-creation
    profile_id: int  # NVML CI profile id (== CI profile enum)
    placement_start: int  # compute slices within the GI
    placement_size: int
    mig_uuid: str | None = None  # "MIG-<uuid>" of the MIG device (GI + CI)


class GpuInstance(_Frozen):
    gi_id: int  # assigned by the driver from the size-class range; never infer placement
    profile_id: int  # nvidia-smi's ID column, e.g. 19 for 1g.5gb on A100
    profile_name: str  # "1g.5gb" as the driver names it (without "MIG ")
    placement_start: int  # memory slices (12-unit grid on RTX PRO 6000)
    placement_size: int
    compute_instances: tuple[ComputeInstance, ...] = ()


class GpuProcess(_Frozen):
    """Something holding the GPU: a compute process, or a known service such as
    nvidia-persistenced, dcgm or nvidia-fabricmanager."""

    pid: int
    name: str


class Gpu(_Frozen):
    index: int
    pci: str  # normalised dddd:bb:dd.f
    uuid: str  # "GPU-<uuid>"
    name: str  # product name as NVML reports it, e.g. "NVIDIA A100-SXM4-40GB"
    model: str | None = None  # catalog id ("a100-40gb") or None when unknown
    pci_device_id: str | None = None  # "20b0" (lowercase hex, device part only)
    mig_capable: bool = False
    mig_current: bool = False
    mig_pending: bool = False
    driver: str | None = None  # kernel driver bound in sysfs: nvidia, vfio-pci, ...
    gpu_instances: tuple[GpuInstance, ...] = ()
    processes: tuple[GpuProcess, ...] = ()

    @property
    def mig_change_pending(self) -> bool:
        return self.mig_current != self.mig_pending


# How the GI behind a vGPU is known: NVML's vGPU instance (its VM runs), or the binding
# apply recorded when it created the vGPU (planner.host.vgpu_bindings).
GiSource = Literal["nvml", "recorded"]


class VgpuType(_Frozen):
    type_id: str  # mdev: "nvidia-474"; vfio-vf: the numeric id as a string, "1414"
    name: str  # "NVIDIA A100-1-5C"
    available_instances: int
    gi_profile_id: int | None = None  # the GI profile a MIG-backed type needs; None if not MIG


class VgpuParent(_Frozen):
    """A device that can hold vGPUs: an SR-IOV VF (or PF on old releases)."""

    pci: str
    physfn: str | None  # the PF's address for a VF
    backend: Literal["mdev", "vfio-vf"]
    types: tuple[VgpuType, ...] = ()
    current_type: str | None = None  # vfio-vf only: the assigned type id, None when free
    gi_id: int | None = None  # vfio-vf only: the GI backing the assigned type
    gi_from: GiSource | None = None  # how gi_id is known


class Mdev(_Frozen):
    uuid: str
    parent: str  # the parent device's PCI address
    type_id: str
    gi_id: int | None = None  # the GI backing it
    gi_from: GiSource | None = None  # how gi_id is known
    persistent: bool = False  # defined (mdevctl / libvirt node device), survives reboot


class Hostdev(_Frozen):
    type: Literal["mdev", "pci"]
    uuid: str | None = None  # mdev
    pci: str | None = None  # pci (a VF or a whole GPU)

    @property
    def key(self) -> str:
        return str(self.uuid) if self.type == "mdev" else str(self.pci)


class Domain(_Frozen):
    name: str
    uuid: str
    state: str  # "running", "shut off", "paused", ...
    persistent: bool = True
    hostdevs: tuple[Hostdev, ...] = ()
    autostart: bool = False  # libvirt starts it with the host

    @property
    def running(self) -> bool:
        return self.state in ("running", "paused", "blocked")


class DhcpHost(_Frozen):
    """A static DHCP lease of a libvirt network."""

    mac: str
    name: str
    ip: str


class Network(_Frozen):
    """A libvirt network: its bridge, its IPv4 address and prefix, its static leases."""

    name: str
    bridge: str | None = None
    address: str | None = None  # the host's address on it, e.g. 192.168.100.1
    prefix: int | None = None
    active: bool = False
    hosts: tuple[DhcpHost, ...] = ()


class Volume(_Frozen):
    name: str
    path: str
    capacity: int  # bytes
    backing: str | None = None


class Pool(_Frozen):
    """A libvirt storage pool and its volumes (listed only while it is active)."""

    name: str
    type: str
    path: str | None = None
    active: bool = False
    volumes: tuple[Volume, ...] = ()


class HostState(_Frozen):
    uri: str
    driver_version: str | None = None
    vgpu_backend: Literal["mdev", "vfio-vf"] | None = None
    gpus: tuple[Gpu, ...] = ()
    vgpu_parents: tuple[VgpuParent, ...] = ()
    mdevs: tuple[Mdev, ...] = ()
    domains: tuple[Domain, ...] = ()
    networks: tuple[Network, ...] = ()
    pools: tuple[Pool, ...] = ()

    def gpu(self, pci: str) -> Gpu | None:
        return next((g for g in self.gpus if g.pci == pci), None)
