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
* The driver's choice of backing GI is not documented. The simulator takes the free GI
  (no vGPU on it) of the type's profile with the LOWEST GI ID, which, GI ids being permuted
  per GPU, is not always the lowest placement. Callers must read it back: the simulator
  writes it to ``nvidia/gpu_instance_id`` under the mdev (mdev) or the VF (vendor VFIO).
  That file is a simulator stand-in (ASSUMED) for ``nvmlVgpuInstanceGetGpuInstanceId`` /
  ``nvidia-smi vgpu -q``, which real hosts use.
"""

from __future__ import annotations

import zlib
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
    base = 400 + zlib.crc32(model.id.encode()) % 600
    offered = {p.id for p in driver.offered_gi_profiles(state, gpu)}
    out = []
    for i, p in enumerate(model.gi_profiles):
        name = vgpu_type_name(model, p)
        if name and p.id in offered:
            out.append(VgpuTypeDef(base + i, name, p))
    return out


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
