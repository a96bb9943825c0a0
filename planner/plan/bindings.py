"""Who uses what on a probed host: which domains use which GPU instance (through an
mdev or a vfio-vf VF) and which GPU each vGPU parent belongs to."""

from __future__ import annotations

from planner.host.state import GpuInstance, HostState


class Bindings:
    """Which domains use which GPU instance, through an mdev or a vfio-vf VF."""

    def __init__(self, host: HostState) -> None:
        self.parents = {p.pci: p for p in host.vgpu_parents}
        users: dict[str, set[str]] = {}
        for dom in host.domains:
            for hd in dom.hostdevs:
                users.setdefault(hd.key, set()).add(dom.name)
        self.users = users
        by_gi: dict[tuple[str, int], set[str]] = {}
        self.gi_of_mdev: dict[str, tuple[str, int]] = {}
        for mdev in host.mdevs:
            gpu = self.gpu_of_parent(mdev.parent)
            if mdev.gi_id is None:
                continue
            self.gi_of_mdev[mdev.uuid] = (gpu, mdev.gi_id)
            by_gi.setdefault((gpu, mdev.gi_id), set()).update(users.get(mdev.uuid, ()))
        for p in host.vgpu_parents:
            if p.backend == "vfio-vf" and p.current_type and p.gi_id is not None:
                by_gi.setdefault((self.gpu_of_parent(p.pci), p.gi_id), set()).update(
                    users.get(p.pci, ()))
        self.by_gi = by_gi
        mdev_gpu = {m.uuid: self.gpu_of_parent(m.parent) for m in host.mdevs}
        gpu_users: dict[str, set[str]] = {}
        for (gpu, _), names in by_gi.items():
            gpu_users.setdefault(gpu, set()).update(names)
        for dom in host.domains:
            for hd in dom.hostdevs:
                if hd.type == "mdev" and hd.uuid in mdev_gpu:
                    gpu_users.setdefault(mdev_gpu[hd.uuid], set()).add(dom.name)
                elif hd.pci:  # the GPU itself (passthrough) or one of its VFs
                    gpu_users.setdefault(self.gpu_of_parent(hd.pci), set()).add(dom.name)
        self.gpu_users = gpu_users
        self.mdev_by_uuid = {m.uuid: m for m in host.mdevs}

    def gpu_of_parent(self, parent_pci: str) -> str:
        p = self.parents.get(parent_pci)
        return (p.physfn or p.pci) if p is not None else parent_pci

    def domains_of(self, gpu: str, gi: GpuInstance) -> frozenset[str]:
        return frozenset(self.by_gi.get((gpu, gi.gi_id), ()))

    def domains_on_gpu(self, gpu: str) -> set[str]:
        """Domains that use the GPU: by passthrough, or through a vGPU device on it."""
        return set(self.gpu_users.get(gpu, ()))
