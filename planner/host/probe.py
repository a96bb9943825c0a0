"""The probe: one read-only pass over NVML, sysfs and libvirt that yields a HostState.

Read-only by construction: it uses only the Environment's read-only ports: NVML through
``ReadOnlyNvml`` (query functions only), sysfs opened without write access, and libvirt
with ``virConnectOpenReadOnly``. Nothing on this path can change the host, which makes the
probe safe to run on production GPUs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from planner.hardware.catalog import get_model
from planner.hardware.model import GpuModel
from planner.hardware.vgpu import lookup_vgpu_type
from planner.host.errors import HostError
from planner.host.libvirt_read import read_domains
from planner.host.nvml import NvmlHost, nvml_message
from planner.host.procfs import device_holders, process_name
from planner.host.state import Gpu, GpuProcess, HostState, Mdev, VgpuParent, VgpuType
from planner.host.sysfs import read_vgpu

if TYPE_CHECKING:
    from planner.host.environment import Environment


def probe(env: Environment) -> HostState:
    """Read the whole host through the environment's read-only ports."""
    nvml = env.nvml_readonly()
    sysfs = env.sysfs_readonly()
    with NvmlHost(nvml) as host:
        try:
            driver_version = host.driver_version()
            gpus = host.read_gpus()
            vgpu_gis: dict[str, int] = {}
            minors: dict[int, str] = {}
            for index, handle in host.handles():
                vgpu_gis.update(host.vgpu_gpu_instances(handle))
                minor = host.minor_number(handle)
                # Without an answer, assume minor = index, as on most hosts.
                minors[index if minor is None else minor] = host.pci_of(handle)
        except nvml.NVMLError as err:
            raise HostError(f"{env.host_uri}: reading the GPUs through NVML failed: "
                            f"{nvml_message(err)}") from err
    holders = device_holders(sysfs.root, minors)
    gpus = tuple(
        g.model_copy(update={
            "driver": sysfs.pci_driver(g.pci),
            "processes": _processes(g, holders.get(g.pci, set()), sysfs.root),
        })
        for g in gpus
    )
    vgpu = read_vgpu(sysfs)
    parents = tuple(_with_profiles(p, gpus) for p in vgpu.parents)
    mdevs = tuple(_with_gi(m, vgpu_gis) for m in vgpu.mdevs)
    with env.libvirt(read_only=True) as session:
        domains = read_domains(session.conn)
    return HostState(
        uri=env.host_uri,
        driver_version=driver_version,
        vgpu_backend=vgpu.backend,
        gpus=gpus,
        vgpu_parents=parents,
        mdevs=mdevs,
        domains=domains,
    )


def _processes(gpu: Gpu, holders: set[int], root: Path) -> tuple[GpuProcess, ...]:
    """NVML's compute processes plus every other process holding the GPU's device node;
    names from NVML, else from /proc."""
    names = {p.pid: p.name for p in gpu.processes}
    for pid in holders:
        names.setdefault(pid, "")
    return tuple(
        GpuProcess(pid=pid, name=names[pid] or process_name(root, pid) or "")
        for pid in sorted(names)
    )


def _with_gi(mdev: Mdev, vgpu_gis: dict[str, int]) -> Mdev:
    """NVML's answer (nvmlVgpuInstanceGetGpuInstanceId) wins over what sysfs showed."""
    gi_id = vgpu_gis.get(mdev.uuid)
    return mdev if gi_id is None else mdev.model_copy(update={"gi_id": gi_id})


def _with_profiles(parent: VgpuParent, gpus: tuple[Gpu, ...]) -> VgpuParent:
    """Fill in each vGPU type's GI profile from the catalog of the parent's PF."""
    pf = next((g for g in gpus if g.pci in (parent.physfn, parent.pci)), None)
    if pf is None or pf.model is None:
        return parent
    model = get_model(pf.model)
    types = tuple(_typed(t, model) for t in parent.types)
    return parent.model_copy(update={"types": types})


def _typed(vtype: VgpuType, model: GpuModel) -> VgpuType:
    found = lookup_vgpu_type(vtype.name, (model,))  # None for time-sliced types
    if found is None:
        return vtype
    return vtype.model_copy(update={"gi_profile_id": found[1].id})
