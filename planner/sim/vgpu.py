"""MIG-backed vGPU on the simulated host: type ids, availability and the backing GI.

What is real and what is assumed (docs/reference/vgpu-on-mig.md has the sources):

* Real: mdev type directories named ``nvidia-<N>`` under each SR-IOV VF, with ``name``
  ("NVIDIA A100-1-5C"), ``available_instances``, ``device_api`` (vfio-pci), ``description``,
  ``create`` and ``devices/``; one vGPU per VF; MIG-backed types need a free GPU instance of
  the matching profile and MIG mode on. Vendor VFIO: ``nvidia/creatable_vgpu_types`` lines
  "``<id> : <name>``" and ``nvidia/current_vgpu_type`` (0 = free).
* Assumed: the type numbers (board-specific on real hosts; here derived from the model id,
  one per MIG profile, so never hard-code them); the ``description`` text; the header line of
  ``creatable_vgpu_types``; that ``available_instances`` is 0 with MIG disabled.
* The driver's choice of backing GI (docs/reference/vgpu-on-mig.md section 2.3, from the
  open kernel driver's ``kvgpumgrGetSwizzId`` in releases 550 and 595): at create time (mdev
  ``create`` or a ``current_vgpu_type`` write) the GI of the type's profile with the LOWEST
  GI ID that no vGPU holds yet; GI ids being permuted per GPU, not always the lowest
  placement. The binding lasts until the vGPU is removed.
* Reading it back: only through NVML's vGPU instance calls (``nvmlDeviceGetActiveVgpus`` ->
  ``nvmlVgpuInstanceGetGpuInstanceId``), and only for an *active* vGPU, i.e. one whose VM
  is running (section 2.4: strongly indicated by the header, the driver source and the
  guides; ASSUMED until seen on hardware). No sysfs file tells it.
* vGPU instance ids (``nvmlVgpuInstance_t``) are driver-assigned handles; here a stable
  hash of the device key (ASSUMED; callers never keep them).
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass

from planner.hardware.model import GiProfile, GpuModel
from planner.sim import driver, ids
from planner.sim.models import vgpu_type_name
from planner.sim.state import SimGi, SimGpu, SimState


@dataclass(frozen=True)
class VgpuTypeDef:
    number: int  # mdev: "nvidia-<number>"; vendor VFIO: the numeric id
    name: str  # "NVIDIA A100-1-5C"
    profile: GiProfile

    @property
    def mdev_id(self) -> str:
        return f"nvidia-{self.number}"


def total_vfs(model: GpuModel) -> int:
    """sriov_totalvfs (ASSUMED: 16 on Ampere, 32 on Hopper and later)."""
    return 16 if model.architecture == "ampere" else 32


def vgpu_types(state: SimState, gpu: SimGpu) -> list[VgpuTypeDef]:
    model = driver.model_of(gpu)
    base = _base(model)
    offered = {p.id for p in driver.offered_gi_profiles(state, gpu)}
    out = []
    for i, p in enumerate(model.gi_profiles):
        name = vgpu_type_name(model, p)
        if name and p.id in offered:
            out.append(VgpuTypeDef(base + i, name, p))
    return out


def supported_types(gpu: SimGpu) -> list[VgpuTypeDef]:
    """Every MIG-backed type the board supports, MIG on or off (``nvmlDeviceGetSupportedVgpus``
    lists them with MIG mode off: vgpu-on-mig.md section 1.2)."""
    model = driver.model_of(gpu)
    base = _base(model)
    return [VgpuTypeDef(base + i, name, p) for i, p in enumerate(model.gi_profiles)
            if (name := vgpu_type_name(model, p))]


def type_by_number(state: SimState, number: int) -> VgpuTypeDef | None:
    """A type id is global to the driver (it takes no device handle)."""
    for gpu in state.gpus:
        for t in supported_types(gpu):
            if t.number == number:
                return t
    return None


def _base(model: GpuModel) -> int:
    return 400 + zlib.crc32(model.id.encode()) % 600


def find_type(state: SimState, gpu: SimGpu, type_id: str | int) -> VgpuTypeDef | None:
    text = str(type_id)
    for t in vgpu_types(state, gpu):
        if text in (t.mdev_id, str(t.number)):
            return t
    return None


def vfs(gpu: SimGpu) -> list[str]:
    return [ids.vf_address(gpu.pci, k) for k in range(gpu.num_vfs)]


def vf_owner(state: SimState, vf: str) -> SimGpu | None:
    return next((g for g in state.gpus if vf in vfs(g)), None)


def vf_busy(state: SimState, gpu: SimGpu, vf: str) -> bool:
    return vf in gpu.vf_vgpus or any(m.parent == vf for m in state.mdevs)


def free_gis(state: SimState, gpu: SimGpu, profile: GiProfile) -> list[SimGi]:
    return sorted(
        (
            gi
            for gi in gpu.gpu_instances
            if gi.profile_id == profile.id and not driver.gi_vgpu_users(state, gpu, gi)
        ),
        key=lambda gi: gi.gi_id,
    )


def available(state: SimState, gpu: SimGpu, vf: str, t: VgpuTypeDef) -> int:
    if not gpu.mig_current or vf_busy(state, gpu, vf):
        return 0
    return min(1, len(free_gis(state, gpu, t.profile)))


def backing_gi(state: SimState, gpu: SimGpu, t: VgpuTypeDef) -> SimGi | None:
    """The driver's choice (simulator rule, see the module doc): lowest free GI id."""
    gis = free_gis(state, gpu, t.profile)
    return gis[0] if gis else None


@dataclass(frozen=True)
class ActiveVgpu:
    """A vGPU whose VM runs, as NVML reports it."""

    instance: int  # nvmlVgpuInstance_t
    key: str  # the mdev UUID, or the VF's address
    mdev_uuid: str | None
    type_number: int
    gi: SimGi | None
    vm_uuid: str


def instance_id(key: str) -> int:
    """A stable, non-zero vGPU instance handle for a device key (ASSUMED numbering)."""
    return (zlib.crc32(key.encode()) & 0x7FFFFFFF) or 1


def active_vgpus(state: SimState, gpu: SimGpu, running: Mapping[str, str]) -> list[ActiveVgpu]:
    """The vGPUs of ``gpu`` that a running VM uses; ``running``: device key -> VM UUID."""
    out = []
    for m in state.mdevs:
        if m.gpu == gpu.pci and m.uuid in running:
            t = find_type(state, gpu, m.type_id)
            out.append(ActiveVgpu(instance_id(m.uuid), m.uuid, m.uuid,
                                  t.number if t else 0, _gi(gpu, m.gi_serial), running[m.uuid]))
    for vf, v in sorted(gpu.vf_vgpus.items()):
        if vf in running:
            out.append(ActiveVgpu(instance_id(vf), vf, None, v.type_id,
                                  _gi(gpu, v.gi_serial), running[vf]))
    return sorted(out, key=lambda a: a.instance)


def _gi(gpu: SimGpu, serial: int | None) -> SimGi | None:
    return driver.find_gi_serial(gpu, serial) if serial is not None else None
