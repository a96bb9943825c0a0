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
from planner.host.libvirt_objects import read_networks, read_pools
from planner.host.libvirt_read import read_domains, read_running_domains_by_uuid
from planner.host.nvml import ActiveVgpu, NvmlHost, VgpuTypeInfo, nvml_message
from planner.host.procfs import device_holders, process_name
from planner.host.state import (
    Domain,
    Gpu,
    GpuProcess,
    HostState,
    Mdev,
    VgpuParent,
    VgpuType,
)
from planner.host.sysfs import read_vgpu
from planner.host.vgpu_bindings import Binding, read_bindings
from planner.lang.pci import normalize_pci

if TYPE_CHECKING:
    from planner.host.environment import Environment


def probe(env: Environment, gpu: str | None = None) -> HostState:
    """Read the whole host through the environment's read-only ports.

    With ``gpu`` (a PF's PCI address) the state holds only that GPU, its VFs and the vGPUs
    on them, and of the domains only the running ones that NVML names as the VMs of that
    GPU's vGPUs (which tell whose vGPU instance is whose), and no networks or pools: what
    a step on one GPU needs to check, in time that does not grow with the number of GPUs
    or domains (apply reads a GPU back twice for each vGPU it creates). Plans are never
    made from such a partial state."""
    only = normalize_pci(gpu) if gpu is not None else None
    nvml = env.nvml_readonly()
    sysfs = env.sysfs_readonly()
    with NvmlHost(nvml) as host:
        try:
            driver_version = host.driver_version()
            read: list[Gpu] = []
            active: dict[str, tuple[ActiveVgpu, ...]] = {}
            types: dict[str, dict[int, VgpuTypeInfo]] = {}
            minors: dict[int, str] = {}
            for index, handle in host.handles():
                pci = host.pci_of(handle)
                if only is not None and pci != only:
                    continue
                read.append(host.read_gpu(index, handle))
                active[pci] = host.active_vgpus(handle)
                types[pci] = host.vgpu_types(handle)
                minor = host.minor_number(handle)
                # Without an answer, assume minor = index, as on most hosts.
                minors[index if minor is None else minor] = pci
        except nvml.NVMLError as err:
            raise HostError(f"{env.host_uri}: reading the GPUs through NVML failed: "
                            f"{nvml_message(err)}") from err
    holders = device_holders(sysfs.root, minors)
    gpus = tuple(
        g.model_copy(update={
            "driver": sysfs.pci_driver(g.pci),
            "processes": _processes(g, holders.get(g.pci, set()), sysfs.root),
        })
        for g in sorted(read, key=lambda g: g.pci)
    )
    vgpu = read_vgpu(sysfs, only)
    parents = tuple(_with_profiles(p, gpus, types) for p in vgpu.parents)
    with env.libvirt(read_only=True) as session:
        if only is None:
            domains = read_domains(session.conn, session.autostart)
        else:
            vms = {a.vm_uuid for a in active.get(only, ()) if a.vm_uuid}
            domains = read_running_domains_by_uuid(session.conn, vms, session.autostart)
        networks = read_networks(session.conn) if only is None else ()
        pools = read_pools(session.conn) if only is None else ()
    known = _GiKnowledge(gpus, active, domains, _recorded(env))
    parents = tuple(known.parent(p) for p in parents)
    mdevs = tuple(known.mdev(m, parents) for m in vgpu.mdevs)
    return HostState(
        uri=env.host_uri,
        driver_version=driver_version,
        vgpu_backend=vgpu.backend,
        gpus=gpus,
        vgpu_parents=parents,
        mdevs=mdevs,
        domains=domains,
        networks=networks,
        pools=pools,
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


def _recorded(env: Environment) -> dict[str, Binding]:
    try:
        state_dir = env.state_dir()
    except HostError:
        return {}
    return read_bindings(state_dir)


class _GiKnowledge:
    """Which GI backs each vGPU: NVML's vGPU instance while its VM runs (matched by mdev
    UUID, or by the VM's UUID and the VF it holds), else the binding apply recorded, if
    that GI still exists where it was (docs/reference/vgpu-on-mig.md sections 2.3-2.4)."""

    def __init__(self, gpus: tuple[Gpu, ...], active: dict[str, tuple[ActiveVgpu, ...]],
                 domains: tuple[Domain, ...], recorded: dict[str, Binding]) -> None:
        self.gis = {(g.pci, gi.gi_id): gi for g in gpus for gi in g.gpu_instances}
        self.by_mdev: dict[str, int] = {}
        self.by_vm: dict[tuple[str, str], list[int]] = {}  # (PF, VM uuid) -> GI ids
        for pci, found in active.items():
            for a in found:
                if a.gi_id is None:
                    continue
                if a.mdev_uuid:
                    self.by_mdev[a.mdev_uuid] = a.gi_id
                elif a.vm_uuid:
                    self.by_vm.setdefault((pci, a.vm_uuid), []).append(a.gi_id)
        self.vm_of = {hd.key.lower(): d.uuid.lower() for d in domains if d.running
                      for hd in d.hostdevs}
        self.recorded = recorded

    def _record(self, key: str, gpu: str | None) -> int | None:
        b = self.recorded.get(key.lower())
        if b is None or b.gpu != gpu:
            return None
        gi = self.gis.get((b.gpu, b.gi_id))
        ok = gi is not None and gi.profile_id == b.profile_id and gi.placement_start == b.start
        return b.gi_id if ok else None

    def parent(self, p: VgpuParent) -> VgpuParent:
        if p.backend != "vfio-vf" or p.current_type is None:
            return p
        vm = self.vm_of.get(p.pci)
        gis = self.by_vm.get((p.physfn or "", vm), []) if vm else []
        if len(gis) == 1:  # one vGPU of that VM on the GPU: it is this VF's
            return p.model_copy(update={"gi_id": gis[0], "gi_from": "nvml"})
        gi = self._record(p.pci, p.physfn)
        return p.model_copy(update={"gi_id": gi, "gi_from": "recorded" if gi is not None
                                    else None})

    def mdev(self, m: Mdev, parents: tuple[VgpuParent, ...]) -> Mdev:
        gi = self.by_mdev.get(m.uuid)
        if gi is not None:
            return m.model_copy(update={"gi_id": gi, "gi_from": "nvml"})
        parent = next((p for p in parents if p.pci == m.parent), None)
        gi = self._record(m.uuid, parent.physfn if parent else None)
        return m.model_copy(update={"gi_id": gi, "gi_from": "recorded" if gi is not None
                                    else None})


def _with_profiles(parent: VgpuParent, gpus: tuple[Gpu, ...],
                   types: dict[str, dict[int, VgpuTypeInfo]]) -> VgpuParent:
    """Fill in each vGPU type's GI profile: as the driver maps it through NVML (by type
    id), else, where the driver answers no vGPU query, from the catalog by name."""
    pf = next((g for g in gpus if g.pci in (parent.physfn, parent.pci)), None)
    if pf is None:
        return parent
    by_id = types.get(pf.pci, {})
    model = get_model(pf.model) if pf.model else None
    out = tuple(_typed(t, by_id, model) for t in parent.types)
    return parent.model_copy(update={"types": out})


def type_number(type_id: str) -> int | None:
    """The driver's type id in a sysfs type name: "nvidia-474" -> 474, "1414" -> 1414."""
    text = type_id.removeprefix("nvidia-")
    return int(text) if text.isdigit() else None


def _typed(vtype: VgpuType, by_id: dict[int, VgpuTypeInfo], model: GpuModel | None
           ) -> VgpuType:
    number = type_number(vtype.type_id)
    if by_id:
        info = by_id.get(number) if number is not None else None
        profile = info.gi_profile_id if info is not None else None
    else:
        found = lookup_vgpu_type(vtype.name, (model,)) if model is not None else None
        profile = found[1].id if found is not None else None
    return vtype if profile is None else vtype.model_copy(update={"gi_profile_id": profile})
