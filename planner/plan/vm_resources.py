"""What a VM needs around its domain, as resources: the cluster's network (with a static
DHCP lease per node ``ip``), the cluster's storage pool, the VM's disk volume (a qcow2
overlay of its base image) and the domain's running state.

Names follow ai-how (``{cluster}-network``, ``{cluster}-pool``, ``{vm}.qcow2``), so what
ai-how already made is found and adopted rather than made twice. Pure: reads requests
and the HostState, never the host.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

from planner.host.state import HostState
from planner.plan.request import VmRequest
from planner.plan.resolution import ResolveError
from planner.plan.resources import HOST_BRANCH, Resource
from planner.vocab import (
    Address,
    Kind,
    NetworkAttrs,
    PoolAttrs,
    RunningAttrs,
    VolumeAttrs,
)

# Where aihow puts a cluster's pool when it makes one (a host path; on sim:DIR under DIR).
POOL_ROOT = "/var/lib/libvirt/images"


def cluster_key(vm: VmRequest) -> str:
    """``clusters.hpc`` of ``clusters.hpc.compute_nodes[0]``."""
    return ".".join(vm.key.split(".")[:2])


def network_name(cluster: str) -> str:
    return f"{cluster}-network"


def pool_name(cluster: str) -> str:
    return f"{cluster}-pool"


def volume_name(vm: str) -> str:
    return f"{vm}.qcow2"


def _run_state(vm: VmRequest, running: set[str], held: Mapping[str, str]) -> bool | None:
    """The libvirt autostart a VM's running state is planned with, or None for no
    running state planned:

    - ``auto_start``: running with autostart, unless a device passed through to it is
      held by another running domain (ai-how's clusters that share a GPU take turns:
      starting it would fail, and the operator chose who runs);
    - no ``auto_start`` but running (started by hand): kept running, without autostart;
    - otherwise none: a shut-off VM stays off."""
    if not vm.auto_start:
        return False if vm.name in running else None
    passthrough = vm.attrs.passthrough if vm.attrs is not None else ()
    if any(held.get(pci, vm.name) != vm.name for pci, _role in passthrough):
        return None
    return True


def desired_vm_resources(vms: tuple[VmRequest, ...], mac_of: Mapping[str, str],
                         host: HostState) -> dict[Address, Resource]:
    """Network, pool and volume of every declared VM, and its running state
    (``_run_state``). The domain's own dependencies are added by the caller."""
    running = {d.name for d in host.domains if d.running}
    held = {h.key: d.name for d in host.domains if d.running for h in d.hostdevs}
    out: dict[Address, Resource] = {}
    leases: dict[str, list[tuple[str, str, str]]] = {}
    for vm in vms:
        if vm.attrs is None:
            continue
        if vm.ip is not None:
            leases.setdefault(vm.cluster, []).append((mac_of[vm.name], vm.name, vm.ip))
    for vm in vms:
        a = vm.attrs
        if a is None:
            continue
        where = cluster_key(vm)
        na = Address.network(network_name(vm.cluster))
        if na not in out:
            hosts = tuple(sorted(leases.get(vm.cluster, ())))
            _check_leases(hosts, vm.subnet, f"{where}.network")
            out[na] = Resource(na, Kind.NETWORK,
                               NetworkAttrs(network_name(vm.cluster), a.bridge, vm.subnet,
                                            True, hosts),
                               owner="host", key=f"{where}.network")
        pa = Address.pool(pool_name(vm.cluster))
        if pa not in out:
            out[pa] = Resource(pa, Kind.POOL,
                               PoolAttrs(pool_name(vm.cluster),
                                         f"{POOL_ROOT}/{pool_name(vm.cluster)}", True),
                               owner="host", key=where)
        va = pa.volume(volume_name(vm.name))
        out[va] = Resource(va, Kind.VOLUME,
                           VolumeAttrs(pool_name(vm.cluster), volume_name(vm.name),
                                       a.disk_gb, a.base_image_path),
                           deps=(pa,), owner=vm.name, key=vm.base_image_key or vm.key)
        autostart = _run_state(vm, running, held)
        if autostart is not None:
            ra = Address.domain(vm.name).running()
            out[ra] = Resource(ra, Kind.RUNNING, RunningAttrs(vm.name, autostart),
                               deps=(Address.domain(vm.name),), owner=vm.name,
                               key=f"{vm.key}.auto_start")
    return out


def _check_leases(hosts: tuple[tuple[str, str, str], ...], subnet: str, where: str) -> None:
    if not hosts:
        return
    net = ipaddress.IPv4Network(subnet, strict=False)
    for _mac, name, ip in hosts:
        addr = ipaddress.IPv4Address(ip)
        if addr not in net or addr in (net.network_address, net.broadcast_address,
                                       net.network_address + 1):
            raise ResolveError(f"{where}: {name}'s ip {ip} is not a guest address of subnet "
                               f"{subnet} (the first address is the host's)")


def actual_vm_resources(host: HostState) -> dict[Address, Resource]:
    """The host's networks, pools, volumes and running domains as resources."""
    out: dict[Address, Resource] = {}
    for n in host.networks:
        na = Address.network(n.name)
        subnet = f"{ipaddress.IPv4Interface(f'{n.address}/{n.prefix}').network}" \
            if n.address and n.prefix is not None else ""
        out[na] = Resource(na, Kind.NETWORK,
                           NetworkAttrs(n.name, n.bridge or "", subnet, n.active,
                                        tuple((h.mac, h.name, h.ip) for h in n.hosts)))
    for p in host.pools:
        pa = Address.pool(p.name)
        out[pa] = Resource(pa, Kind.POOL, PoolAttrs(p.name, p.path or "", p.active))
        for v in p.volumes:
            va = pa.volume(v.name)
            out[va] = Resource(va, Kind.VOLUME,
                               # where its backing lies is the host's business: not shown
                               VolumeAttrs(p.name, v.name, -(-v.capacity // 2**30)),
                               deps=(pa,))
    for d in host.domains:
        if d.running:
            da = Address.domain(d.name)
            ra = da.running()
            deps = (da, *(da.hostdev(h.key) for h in d.hostdevs))
            out[ra] = Resource(ra, Kind.RUNNING, RunningAttrs(d.name, d.autostart),
                               deps=deps, branch=HOST_BRANCH, users=(d.name,))
    return out


def merged_hosts(want: NetworkAttrs, have: NetworkAttrs, where: str
                 ) -> tuple[tuple[str, str, str], ...]:
    """The leases a network must hold. The config is the truth for the leases of its
    cluster's VMs (named ``{cluster}-...``, as every VM name of the cluster is): those
    it no longer declares go (a node removed or renamed by position), the rest of the
    network's leases stay. A lease of the config that a remaining lease contradicts
    (same MAC or same IP, other partner) is an error naming both."""
    prefix = want.name.removesuffix("-network") + "-"
    kept = [h for h in have.hosts if not h[1].startswith(prefix)]
    for mac, name, ip in want.hosts:
        for hmac, hname, hip in kept:
            if hmac == mac or hip == ip:
                raise ResolveError(
                    f"{where}: network {want.name} already leases {hip} to {hmac} ({hname}); "
                    f"the config wants {ip} for {mac} ({name})")
    return tuple(sorted(set(kept) | set(want.hosts)))


def check_network(want: NetworkAttrs, have: NetworkAttrs, where: str) -> None:
    """A network found on the host must be the one the config describes: aihow adopts it,
    never redefines it."""
    problems = []
    if have.bridge != want.bridge:
        problems.append(f"bridge {have.bridge or '(none)'}, the config says {want.bridge}")
    if ipaddress.IPv4Network(want.subnet, strict=False) != (
            ipaddress.IPv4Network(have.subnet) if have.subnet else None):
        problems.append(f"subnet {have.subnet or '(none)'}, the config says {want.subnet}")
    if problems:
        raise ResolveError(f"{where}: network {want.name} exists on the host with "
                           f"{'; '.join(problems)}; aihow reuses a network only when it "
                           "matches: fix the config or remove the network (virsh "
                           "net-undefine)")


def check_base_images(desired: dict[Address, Resource], actual: dict[Address, Resource],
                      images: Mapping[str, bool]) -> None:
    """Every volume aihow must create needs its base image on the host: one line per
    config key that names a missing image (or none), with the VMs whose disks need it."""
    missing: dict[tuple[str, str | None], list[str]] = {}
    for addr, res in sorted(desired.items()):
        a = res.attrs
        if not isinstance(a, VolumeAttrs) or addr in actual:
            continue
        if a.backing is None or not images.get(a.backing, False):
            missing.setdefault((res.key or "", a.backing), []).append(res.owner or a.name)
    lines = []
    for (key, backing), owners in missing.items():
        what = "is not set" if backing is None else \
            f"names {backing}, which does not exist on the host"
        lines.append(f"{key}: the base image {what}; the disks of {', '.join(owners)} are "
                     "made as copy-on-write overlays of it")
    if lines:
        raise ResolveError("\n".join(lines))
