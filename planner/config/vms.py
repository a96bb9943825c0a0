"""The VMs a config declares, named exactly as ai-how names them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from planner.config.models import (
    CloudCluster,
    ClusterConfig,
    ControllerNode,
    GpuConfig,
    HpcCluster,
    ListNode,
    NodeTemplate,
    PciDevice,
    VirtioFsMount,
    VmSpec,
)


class VmDecl(BaseModel):
    """One VM as the config asks for it.

    ``index`` is the node's 0-based position in its group (0 for a controller; for a
    template, the k-th VM it makes). ``ip`` None means DHCP. ``pcie_devices`` holds the
    node's passthrough devices only when ``pcie_passthrough.enabled`` is true.
    ``key_path`` is where the node is written, e.g. ``clusters.hpc.compute_nodes[2]``
    (a template's VMs all share the template's path, ``clusters.hpc.compute_nodes``).
    """

    model_config = ConfigDict(frozen=True)

    name: str
    cluster_type: Literal["hpc", "cloud"]
    cluster_name: str
    role: Literal["controller", "compute", "control-plane", "worker"]
    index: int
    cpu_cores: int
    memory_gb: int
    disk_gb: int
    ip: str | None
    auto_start: bool
    base_image_path: str | None
    bridge: str
    subnet: str
    pcie_devices: tuple[PciDevice, ...]
    gpu_config: GpuConfig | None
    virtio_fs_mounts: tuple[VirtioFsMount, ...]
    key_path: str
    base_image_key: str = ""  # where base_image_path is written (the node's or the cluster's)
    enable_kvm: bool = True  # the cluster's hardware.acceleration.enable_kvm (False: TCG)


def expand_vms(cfg: ClusterConfig) -> tuple[VmDecl, ...]:
    """Every VM: hpc controller, hpc compute nodes, cloud control plane, cloud workers."""
    out: list[VmDecl] = []
    hpc = cfg.clusters.hpc
    if hpc is not None:
        base = "clusters.hpc"
        out.append(_vm(hpc, "hpc", f"{hpc.name}-controller", "controller", 0, hpc.controller,
                       f"{base}.controller"))
        for i, (node, path) in enumerate(_nodes(hpc.compute_nodes, f"{base}.compute_nodes")):
            name = f"{hpc.name}-compute-{i + 1:02d}"
            out.append(_vm(hpc, "hpc", name, "compute", i, node, path))
    cloud = cfg.clusters.cloud
    if cloud is not None:
        base = "clusters.cloud"
        out.append(_vm(cloud, "cloud", f"{cloud.name}-control-plane", "control-plane", 0,
                       cloud.control_plane, f"{base}.control_plane"))
        counters = {"cpu": 0, "gpu": 0}
        for i, (node, path) in enumerate(_nodes(cloud.worker_nodes, f"{base}.worker_nodes")):
            # ai-how's has_gpu_passthrough decides the kind; counters are separate.
            kind = "gpu" if node.pcie_passthrough is not None and node.pcie_passthrough.has_gpu \
                else "cpu"
            counters[kind] += 1
            name = f"{cloud.name}-{kind}-worker-{counters[kind]:02d}"
            out.append(_vm(cloud, "cloud", name, "worker", i, node, path))
    return tuple(out)


def _nodes(group: tuple[ListNode, ...] | NodeTemplate, path: str) -> list[tuple[VmSpec, str]]:
    if isinstance(group, NodeTemplate):
        return [(group, path)] * group.count
    return [(node, f"{path}[{i}]") for i, node in enumerate(group)]


def _vm(
    cluster: HpcCluster | CloudCluster,
    cluster_type: Literal["hpc", "cloud"],
    name: str,
    role: Literal["controller", "compute", "control-plane", "worker"],
    index: int,
    node: ControllerNode | VmSpec,
    path: str,
) -> VmDecl:
    ip: str | None
    devices: tuple[PciDevice, ...]
    if isinstance(node, ControllerNode):
        # ai-how gives a controller a fixed address, no passthrough, and always starts it.
        ip, auto_start, devices = node.ip_address, True, ()
    else:
        node_ip = getattr(node, "ip", "DHCP")
        ip = None if node_ip == "DHCP" else node_ip
        auto_start = node.auto_start if isinstance(node, ListNode) else True
        passthrough = node.pcie_passthrough
        devices = passthrough.devices if passthrough is not None and passthrough.enabled else ()
    return VmDecl(
        name=name, cluster_type=cluster_type, cluster_name=cluster.name, role=role, index=index,
        cpu_cores=node.cpu_cores, memory_gb=node.memory_gb, disk_gb=node.disk_gb,
        ip=ip, auto_start=auto_start,
        base_image_path=node.base_image_path or cluster.base_image_path,
        bridge=cluster.network.bridge, subnet=cluster.network.subnet, pcie_devices=devices,
        gpu_config=node.gpu_config, virtio_fs_mounts=node.virtio_fs_mounts, key_path=path,
        base_image_key=f"{path}.base_image_path" if node.base_image_path
        else f"clusters.{cluster_type}.base_image_path",
        enable_kvm=cluster.hardware is None or cluster.hardware.acceleration is None
        or cluster.hardware.acceleration.enable_kvm,
    )
