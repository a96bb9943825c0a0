"""``aihow export``: a config for what a host has, so an operator adopts a host by
reviewing a file instead of copying MIG UUIDs from ``nvidia-smi -L``.

What it writes plans to no changes on the same host:

- each MIG-capable GPU, by PCI address, with its current MIG mode; the GPU instances no
  VM holds become the GPU's ``layout``, pinned at their placements (``1g.5gb@3``);
- each domain aihow defined (its ``<aihow:vm>`` mark names the cluster and role), as a
  node of its cluster, with ``gpu_config: {mode: mig, mig_uuid: ...}`` pinning the slice
  its vGPU device or VF carries; CPUs and memory from the domain XML.

- ``hardware.acceleration.enable_kvm: false`` for a cluster whose domains are all
  ``type='qemu'``;
- each cluster's network (``{cluster}-network``: bridge, subnet, each node's static
  lease as its ``ip``), each VM's disk size and base image (its volume in
  ``{cluster}-pool`` and the volume's backing file), and ``auto_start: false`` for a
  node whose domain is shut off.

What the host does not record (a network or volume that is missing) is written as a
marked placeholder: planning never redefines an existing domain, so they matter only if
a VM is ever defined again from this file. Domains aihow
cannot describe (not defined by aihow, a whole GPU passed through, a name the config's
naming cannot produce) are listed in comments. Pure: HostState and records in, text out.
"""

from __future__ import annotations

import ipaddress
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field

from planner.host.overview import slices_by_domain
from planner.host.records import AIHOW_VM_NS, HostRecords
from planner.host.state import Gpu, HostState, Network, Volume

PLACEHOLDER = "# placeholder: not recorded on the host"
_HPC_ROLES = ("controller", "compute")
_CLOUD_ROLES = ("control-plane", "worker")


@dataclass
class _Vm:
    name: str
    role: str
    cpu_cores: int
    memory_gb: int
    mig_uuid: str | None
    emulated: bool = False  # <domain type='qemu'>: the cluster's enable_kvm is false
    running: bool = True
    volume: Volume | None = None  # its disk in the cluster's pool, when the host has it
    ip: str | None = None  # its static lease on the cluster's network


@dataclass
class _Cluster:
    kind: str  # hpc | cloud
    name: str
    vms: dict[str, _Vm] = field(default_factory=dict)
    network: Network | None = None

    def base_image(self) -> str | None:
        """The backing file most of the cluster's disks share (its base_image_path)."""
        images = [vm.volume.backing for vm in self.vms.values()
                  if vm.volume is not None and vm.volume.backing]
        return max(sorted(set(images)), key=images.count) if images else None


def _q(text: str) -> str:
    return json.dumps(text)  # a YAML double-quoted scalar


def _vm_of(name: str, xml: str, mig_uuid: str | None) -> _Vm | None:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    role = (root.findtext(f"./metadata/{{{AIHOW_VM_NS}}}vm/{{{AIHOW_VM_NS}}}role") or "").strip()
    vcpu = (root.findtext("vcpu") or "").strip()
    mem = root.find("memory")
    if not vcpu.isdigit() or mem is None or not (mem.text or "").strip().isdigit():
        return None
    to_kib = {"KiB": 1, "k": 1, "MiB": 1024, "M": 1024, "GiB": 1024 ** 2, "G": 1024 ** 2}
    kib = int((mem.text or "0").strip()) * to_kib.get(mem.get("unit", "KiB"), 1)
    return _Vm(name, role, int(vcpu), max(1, round(kib / 1024 ** 2)), mig_uuid,
               emulated=root.get("type") == "qemu")


def _numbered(cluster: _Cluster, prefix: str, skipped: list[str]) -> list[_Vm]:
    """The VMs named PREFIX-01, -02, ... without a gap (what a node list expands to)."""
    pattern = re.compile(re.escape(prefix) + r"-(\d{2,})$")
    found = {int(m[1]): vm for name, vm in cluster.vms.items()
             if (m := pattern.match(name))}
    out = []
    n = 1
    while n in found:
        out.append(found.pop(n))
        n += 1
    skipped += [f"{vm.name}: a gap before it in the {prefix}-NN numbering"
                for vm in found.values()]
    return out


def _node(vm: _Vm, c: _Cluster, indent: str, ip_key: str, ip: str, *,
          list_node: bool) -> list[str]:
    lines = [f"{indent}cpu_cores: {vm.cpu_cores}", f"{indent}memory_gb: {vm.memory_gb}"]
    if vm.volume is not None:
        lines.append(f"{indent}disk_gb: {-(-vm.volume.capacity // 2**30)}")
    else:
        lines.append(f"{indent}disk_gb: 20  {PLACEHOLDER}")
    if vm.ip is not None:
        lines.append(f"{indent}{ip_key}: {_q(vm.ip)}")
    else:
        lines.append(f"{indent}{ip_key}: {_q(ip)}" + ("" if ip == "DHCP" else f"  {PLACEHOLDER}"))
    backing = vm.volume.backing if vm.volume is not None else None
    if backing and backing != c.base_image():
        lines.append(f"{indent}base_image_path: {_q(backing)}")
    if not vm.running:
        lines.append(f"{indent}auto_start: false" if list_node else
                     f"{indent}# shut off on the host: a plan of this file starts it")
    if vm.mig_uuid:
        lines.append(f"{indent}gpu_config: {{mode: mig, mig_uuid: {vm.mig_uuid}}}")
    return lines


def _network(c: _Cluster, number: int) -> list[str]:
    n = c.network
    if n is not None and n.bridge and n.address and n.prefix is not None:
        subnet = str(ipaddress.IPv4Interface(f"{n.address}/{n.prefix}").network)
        lines = ["    network:", f"      subnet: {_q(subnet)}", f"      bridge: {_q(n.bridge)}"]
    else:
        lines = ["    network:",
                 f"      subnet: \"192.168.{number}.0/24\"  {PLACEHOLDER}",
                 f"      bridge: {_q('virbr' + str(number))}  {PLACEHOLDER}"]
    if (image := c.base_image()) is not None:
        lines.append(f"    base_image_path: {_q(image)}")
    if c.vms and all(vm.emulated for vm in c.vms.values()):
        lines.append("    hardware: {acceleration: {enable_kvm: false}}")
    return lines


def _hpc(c: _Cluster, skipped: list[str]) -> list[str]:
    controller = c.vms.get(f"{c.name}-controller")
    if controller is None:
        skipped += [f"{n}: its cluster {c.name} has no {c.name}-controller" for n in c.vms]
        return []
    nodes = _numbered(c, f"{c.name}-compute", skipped)
    lines = ["  hpc:", f"    name: {_q(c.name)}", *_network(c, 100),
             "    controller:", *_node(controller, c, "      ", "ip_address", "192.168.100.10",
                                  list_node=False)]
    lines.append("    compute_nodes:" + ("" if nodes else " []"))
    for vm in nodes:
        body = _node(vm, c, "        ", "ip", "DHCP", list_node=True)
        lines += ["      - " + body[0].strip(), *body[1:]]
    lines += ["    slurm_config:", "      partitions: [\"gpu\"]  " + PLACEHOLDER,
              "      default_partition: \"gpu\""]
    return lines


def _cloud(c: _Cluster, skipped: list[str]) -> list[str]:
    plane = c.vms.get(f"{c.name}-control-plane")
    if plane is None:
        skipped += [f"{n}: its cluster {c.name} has no {c.name}-control-plane" for n in c.vms]
        return []
    nodes = _numbered(c, f"{c.name}-cpu-worker", skipped)
    skipped += [f"{n}: a worker with a whole GPU (pcie_passthrough) is not exported"
                for n in c.vms if n.startswith(f"{c.name}-gpu-worker-")]
    lines = ["  cloud:", f"    name: {_q(c.name)}", *_network(c, 200),
             "    control_plane:", *_node(plane, c, "      ", "ip_address", "192.168.200.10",
                                  list_node=False)]
    lines.append("    worker_nodes:" + ("" if nodes else " []"))
    for vm in nodes:
        body = _node(vm, c, "        ", "ip", "DHCP", list_node=True)
        lines += ["      - " + body[0].strip(), *body[1:]]
    lines += ["    kubernetes_config: {cni: \"calico\", ingress: \"nginx\", "
              "storage_class: \"local-path\"}  " + PLACEHOLDER]
    return lines


def _layout(gpu: Gpu, held: set[tuple[str, int]]) -> str:
    spare = [gi for gi in sorted(gpu.gpu_instances, key=lambda g: g.placement_start)
             if (gpu.pci, gi.gi_id) not in held]
    return " + ".join(f"{gi.profile_name}@{gi.placement_start}" for gi in spare)


def has_clusters(text: str) -> bool:
    """Whether an exported config declares a cluster (else it needs one added)."""
    return "\nclusters: {}\n" not in text


def export_config(state: HostState, records: HostRecords, *, version: str,
                  config_path: Callable[[str], str] = str) -> str:
    """The config YAML for ``state`` (see the module docstring). ``config_path``: a host
    path (a disk's backing file) as a config names it (``Environment.config_path``)."""
    by_domain = slices_by_domain(state)
    whole = {h.pci for d in state.domains for h in d.hostdevs if h.type == "pci"
             and any(g.pci == h.pci for g in state.gpus)}
    skipped: list[str] = []
    clusters: dict[str, _Cluster] = {}
    networks = {n.name: n for n in state.networks}
    volumes = {(p.name, v.name): v for p in state.pools for v in p.volumes}
    for d in state.domains:
        found = records.defined.get(d.name)
        if found is None:
            skipped.append(f"{d.name}: not defined by aihow (no <aihow:vm> mark)")
            continue
        if any(h.type == "pci" and h.pci in whole for h in d.hostdevs):
            skipped.append(f"{d.name}: holds a whole GPU (pcie_passthrough is not exported)")
            continue
        held = by_domain.get(d.name)
        mig_uuid = None
        if held is not None:
            gpu, gi = held
            mig_uuid = next((ci.mig_uuid for ci in gi.compute_instances if ci.mig_uuid), None)
        vm = _vm_of(d.name, found.xml, mig_uuid)
        if vm is None or vm.role not in (*_HPC_ROLES, *_CLOUD_ROLES):
            skipped.append(f"{d.name}: its XML has no role, vcpu or memory aihow can read")
            continue
        kind = "hpc" if vm.role in _HPC_ROLES else "cloud"
        c = clusters.setdefault(kind + "/" + found.cluster, _Cluster(
            kind, found.cluster, network=networks.get(f"{found.cluster}-network")))
        vm.running = d.running
        vol = volumes.get((f"{found.cluster}-pool", f"{d.name}.qcow2"))
        if vol is not None and vol.backing:
            vol = vol.model_copy(update={"backing": config_path(vol.backing)})
        vm.volume = vol
        if c.network is not None:
            vm.ip = next((h.ip for h in c.network.hosts if h.name == d.name), None)
        c.vms[d.name] = vm
    hpc = [c for c in clusters.values() if c.kind == "hpc"]
    cloud = [c for c in clusters.values() if c.kind == "cloud"]
    for extra in hpc[1:] + cloud[1:]:  # a config has one cluster of each kind
        skipped += [f"{n}: a second {extra.kind} cluster ({extra.name})" for n in extra.vms]

    held_gis = {(gpu.pci, gi.gi_id) for gpu, gi in by_domain.values()}
    lines = [f"# Written by aihow {version} export from {state.uri}: what the host has,",
             "# as a config that plans to no changes there. Lines marked 'placeholder'",
             "# hold values the host does not record; review them before reuse.",
             'version: "1.0"',
             "metadata:",
             f"  name: {_q('exported')}",
             f"  description: {_q('exported by aihow from ' + state.uri)}",
             "global:"]
    if state.vgpu_backend:
        lines += ["  host:", f"    vgpu_backend: {state.vgpu_backend}"]
    gpu_lines: list[str] = []
    for gpu in state.gpus:
        if not gpu.mig_capable or gpu.pci in whole:
            why = "not MIG-capable" if not gpu.mig_capable else "given whole to a VM"
            lines.append(f"  # GPU {gpu.pci} ({gpu.name}): {why}, not managed")
            continue
        gpu_lines += [f"    - select: {_q(gpu.pci)}  # {gpu.name}, {gpu.uuid}",
                      f"      mig: {'enabled' if gpu.mig_current else 'disabled'}"]
        layout = _layout(gpu, held_gis) if gpu.mig_current else ""
        if layout:
            gpu_lines.append(f"      layout: {_q(layout)}  # instances no VM holds")
    lines += ["  gpus:" + ("" if gpu_lines else " []"), *gpu_lines]
    body: list[str] = []
    if hpc:
        body += _hpc(hpc[0], skipped)
    if cloud:
        body += _cloud(cloud[0], skipped)
    if body:
        lines += ["clusters:", *body]
    else:
        lines += ["# No domain aihow defined is on this host, and a config needs a cluster:",
                  "# add clusters.hpc or clusters.cloud (docs/config-reference.md) before",
                  "# planning; the GPUs above are what the host has.",
                  "clusters: {}"]
    if skipped:
        lines += ["", "# Domains not exported:"] + [f"#   {s}" for s in sorted(skipped)]
    return "\n".join(lines) + "\n"
