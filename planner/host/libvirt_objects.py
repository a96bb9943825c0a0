"""libvirt networks, storage pools and volumes, and a domain's power state: reading them
into HostState values and the few changes apply makes, each returning what undoes it.

Everything here takes a ``virConnect`` (a real libvirtd or the test driver); a libvirt
failure becomes one ``HostError`` line naming the object. A network, pool or volume is
removed only as the undo of aihow's own create: aihow adopts those ai-how made and never
removes one otherwise (see docs/ai-how-sharing.md).
"""

from __future__ import annotations

import ipaddress
import time
import xml.etree.ElementTree as ET
from typing import Any

from planner.host.errors import HostError
from planner.host.libvirt_domains import holders_of
from planner.host.state import DhcpHost, Network, Pool, Volume

# Seconds a guest gets to stop after the ACPI request (apply --shutdown-timeout); one
# still running then is destroyed (a power cut).
DEFAULT_SHUTDOWN_TIMEOUT = 120.0


def _lv() -> Any:
    import libvirt

    return libvirt


def _fail(what: str, exc: Any) -> HostError:
    text = exc.get_error_message() if hasattr(exc, "get_error_message") else str(exc)
    return HostError(f"{what}: {text}")


# --- reading -------------------------------------------------------------------------


def read_network(net: Any) -> Network:
    root = ET.fromstring(net.XMLDesc(0))
    bridge = root.find("./bridge")
    ip = root.find("./ip")
    prefix: int | None = None
    address = None
    hosts: list[DhcpHost] = []
    if ip is not None:
        address = ip.get("address")
        if ip.get("prefix"):
            prefix = int(ip.get("prefix", "0"))
        elif ip.get("netmask") and address:
            prefix = ipaddress.IPv4Network(f"0.0.0.0/{ip.get('netmask')}").prefixlen
        for h in ip.iterfind("./dhcp/host"):
            hosts.append(DhcpHost(mac=(h.get("mac") or "").lower(), name=h.get("name") or "",
                                  ip=h.get("ip") or ""))
    return Network(name=net.name(), bridge=bridge.get("name") if bridge is not None else None,
                   address=address, prefix=prefix, active=bool(net.isActive()),
                   hosts=tuple(sorted(hosts, key=lambda h: h.mac)))


def read_pool(pool: Any) -> Pool:
    root = ET.fromstring(pool.XMLDesc(0))
    active = bool(pool.isActive())
    volumes: list[Volume] = []
    if active:
        for vol in pool.listAllVolumes():
            vroot = ET.fromstring(vol.XMLDesc(0))
            backing = vroot.findtext("./backingStore/path")
            volumes.append(Volume(name=vol.name(), path=vol.path(),
                                  capacity=int(vroot.findtext("./capacity") or 0),
                                  backing=backing or None))
    return Pool(name=pool.name(), type=root.get("type") or "", path=root.findtext("./target/path"),
                active=active, volumes=tuple(sorted(volumes, key=lambda v: v.name)))


def read_networks(conn: Any) -> tuple[Network, ...]:
    return tuple(sorted((read_network(n) for n in conn.listAllNetworks()), key=lambda n: n.name))


def read_pools(conn: Any) -> tuple[Pool, ...]:
    return tuple(sorted((read_pool(p) for p in conn.listAllStoragePools()),
                        key=lambda p: p.name))


# --- rendering -----------------------------------------------------------------------


def network_xml(name: str, bridge: str, subnet: str,
                hosts: tuple[tuple[str, str, str], ...]) -> str:
    """A NAT network on ``bridge`` whose host address is the subnet's first, handing out
    the rest of the subnet by DHCP with a static lease per (MAC, name, IP)."""
    net = ipaddress.IPv4Network(subnet, strict=False)
    first, last = net.network_address + 1, net.broadcast_address - 1
    root = ET.Element("network")
    ET.SubElement(root, "name").text = name
    ET.SubElement(root, "forward", mode="nat")
    ET.SubElement(root, "bridge", name=bridge, stp="on", delay="0")
    ip = ET.SubElement(root, "ip", address=str(first), prefix=str(net.prefixlen))
    dhcp = ET.SubElement(ip, "dhcp")
    ET.SubElement(dhcp, "range", start=str(first + 1), end=str(last))
    for mac, host, addr in hosts:
        ET.SubElement(dhcp, "host", mac=mac, name=host, ip=addr)
    return ET.tostring(root, encoding="unicode")


def pool_xml(name: str, path: str) -> str:
    root = ET.Element("pool", type="dir")
    ET.SubElement(root, "name").text = name
    target = ET.SubElement(root, "target")
    ET.SubElement(target, "path").text = path
    return ET.tostring(root, encoding="unicode")


def volume_xml(name: str, capacity_gb: int, backing: str) -> str:
    """A qcow2 overlay whose reads fall through to ``backing`` (qcow2) until written."""
    root = ET.Element("volume", type="file")
    ET.SubElement(root, "name").text = name
    ET.SubElement(root, "capacity", unit="GiB").text = str(capacity_gb)
    ET.SubElement(root, "allocation").text = "0"  # an overlay grows as the guest writes
    target = ET.SubElement(root, "target")
    ET.SubElement(target, "format", type="qcow2")
    store = ET.SubElement(root, "backingStore")
    ET.SubElement(store, "path").text = backing
    ET.SubElement(store, "format", type="qcow2")
    return ET.tostring(root, encoding="unicode")


def dhcp_host_xml(mac: str, name: str, ip: str) -> str:
    return ET.tostring(ET.Element("host", mac=mac, name=name, ip=ip), encoding="unicode")


# --- changing ------------------------------------------------------------------------


def find_network(conn: Any, name: str) -> Any | None:
    lv = _lv()
    try:
        return conn.networkLookupByName(name)
    except lv.libvirtError:
        return None


def find_pool(conn: Any, name: str) -> Any | None:
    lv = _lv()
    try:
        return conn.storagePoolLookupByName(name)
    except lv.libvirtError:
        return None


def define_network(conn: Any, xml: str, name: str) -> None:
    lv = _lv()
    try:
        net = conn.networkDefineXML(xml)
        net.setAutostart(1)
        net.create()
    except lv.libvirtError as exc:
        raise _fail(f"network {name}: cannot define and start it", exc) from None


def start_network(conn: Any, name: str) -> None:
    lv = _lv()
    net = find_network(conn, name)
    if net is None:
        raise HostError(f"network {name} does not exist")
    try:
        if not net.isActive():
            net.create()
    except lv.libvirtError as exc:
        raise _fail(f"network {name}: cannot start it", exc) from None


def _stop_and_undefine(obj: Any, where: str) -> None:
    """A network's or pool's undo: stop it if active, then undefine it (a pool's files
    stay: aihow never deletes files)."""
    lv = _lv()
    if obj is None:
        return
    try:
        if obj.isActive():
            obj.destroy()
        obj.undefine()
    except lv.libvirtError as exc:
        raise _fail(f"{where}: cannot remove it", exc) from None


def remove_network(conn: Any, name: str) -> None:
    """Stop and undefine a network (only ever the undo of aihow's own define)."""
    _stop_and_undefine(find_network(conn, name), f"network {name}")


def _dhcp_update(conn: Any, name: str, host: tuple[str, str, str], add: bool) -> None:
    lv = _lv()
    net = find_network(conn, name)
    if net is None:
        raise HostError(f"network {name} does not exist")
    flags = lv.VIR_NETWORK_UPDATE_AFFECT_CONFIG
    if net.isActive():
        flags |= lv.VIR_NETWORK_UPDATE_AFFECT_LIVE
    command = lv.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST if add else \
        lv.VIR_NETWORK_UPDATE_COMMAND_DELETE
    try:
        net.update(command, lv.VIR_NETWORK_SECTION_IP_DHCP_HOST, -1, dhcp_host_xml(*host),
                   flags)
    except lv.libvirtError as exc:
        verb = "add" if add else "remove"
        raise _fail(f"network {name}: cannot {verb} the DHCP lease {host}", exc) from None


def add_dhcp_host(conn: Any, name: str, host: tuple[str, str, str]) -> None:
    _dhcp_update(conn, name, host, add=True)


def remove_dhcp_host(conn: Any, name: str, host: tuple[str, str, str]) -> None:
    _dhcp_update(conn, name, host, add=False)


def define_pool(conn: Any, xml: str, name: str) -> None:
    lv = _lv()
    try:
        pool = conn.storagePoolDefineXML(xml, 0)
        pool.build(0)  # a dir pool: makes the directory (idempotent when it exists)
        pool.setAutostart(1)
        pool.create(0)
    except lv.libvirtError as exc:
        raise _fail(f"pool {name}: cannot define and start it", exc) from None


def start_pool(conn: Any, name: str) -> None:
    lv = _lv()
    pool = find_pool(conn, name)
    if pool is None:
        raise HostError(f"pool {name} does not exist")
    try:
        if not pool.isActive():
            pool.create(0)
    except lv.libvirtError as exc:
        raise _fail(f"pool {name}: cannot start it", exc) from None


def stop_pool(conn: Any, name: str) -> None:
    lv = _lv()
    pool = find_pool(conn, name)
    if pool is None:
        return
    try:
        if pool.isActive():
            pool.destroy()
    except lv.libvirtError as exc:
        raise _fail(f"pool {name}: cannot stop it", exc) from None


def remove_pool(conn: Any, name: str) -> None:
    """Stop and undefine a pool, leaving its directory (the undo of aihow's define)."""
    _stop_and_undefine(find_pool(conn, name), f"pool {name}")


def volume_exists(conn: Any, pool: str, name: str) -> bool:
    lv = _lv()
    p = find_pool(conn, pool)
    if p is None or not p.isActive():
        return False
    try:
        p.storageVolLookupByName(name)
    except lv.libvirtError:
        return False
    return True


def create_volume(conn: Any, pool: str, xml: str, name: str) -> None:
    lv = _lv()
    p = find_pool(conn, pool)
    if p is None:
        raise HostError(f"volume {pool}/{name}: pool {pool} does not exist")
    try:
        p.createXML(xml, 0)
    except lv.libvirtError as exc:
        raise _fail(f"volume {pool}/{name}: cannot create it", exc) from None


def delete_volume(conn: Any, pool: str, name: str) -> None:
    """Delete a volume (only ever the undo of aihow's own create: an empty overlay)."""
    lv = _lv()
    p = find_pool(conn, pool)
    if p is None:
        return
    try:
        p.storageVolLookupByName(name).delete(0)
    except lv.libvirtError as exc:
        if exc.get_error_code() == lv.VIR_ERR_NO_STORAGE_VOL:
            return
        raise _fail(f"volume {pool}/{name}: cannot delete it", exc) from None


def _domain(conn: Any, name: str) -> Any:
    lv = _lv()
    try:
        return conn.lookupByName(name)
    except lv.libvirtError as exc:
        raise _fail(f"domain {name}", exc) from None


def start_domain(conn: Any, name: str, *, autostart: bool) -> None:
    """Start a defined domain (if it is not running) and set its libvirt autostart."""
    lv = _lv()
    dom = _domain(conn, name)
    held = [] if dom.isActive() else holders_of(conn, name)
    if held:
        who = ", ".join(f"{key} by {other}" for other, key in held)
        raise HostError(f"domain {name} cannot start: its device is held ({who}); stop "
                        f"{held[0][0]} first")
    try:
        if not dom.isActive():
            dom.create()
        dom.setAutostart(1 if autostart else 0)
    except lv.libvirtError as exc:
        raise HostError(f"domain {name} cannot start: {explain_start_failure(exc)}") from None


def autostart_of(conn: Any, name: str) -> bool:
    """Whether libvirt starts the domain at boot."""
    lv = _lv()
    try:
        return bool(_domain(conn, name).autostart())
    except lv.libvirtError as exc:
        raise _fail(f"domain {name}: cannot read autostart", exc) from None


def set_autostart(conn: Any, name: str, autostart: bool) -> None:
    lv = _lv()
    try:
        _domain(conn, name).setAutostart(1 if autostart else 0)
    except lv.libvirtError as exc:
        raise _fail(f"domain {name}: cannot set autostart", exc) from None


def shut_down_domain(conn: Any, name: str, *, timeout: float = DEFAULT_SHUTDOWN_TIMEOUT
                     ) -> str:
    """Stop a running domain: ACPI shutdown, and destroy if it is still running after
    ``timeout`` seconds. Returns how it stopped ("shutdown", "destroyed", "already": off,
    or no such domain, as when recovery undoes a start that never ran)."""
    lv = _lv()
    try:
        dom = conn.lookupByName(name)
    except lv.libvirtError as exc:
        if exc.get_error_code() == lv.VIR_ERR_NO_DOMAIN:
            return "already"
        raise _fail(f"domain {name}", exc) from None
    if not dom.isActive():
        return "already"
    try:  # a guest that ignores the request is destroyed below; a refused one is an error
        dom.shutdown()
    except lv.libvirtError as exc:
        raise _fail(f"domain {name}: cannot ask it to shut down", exc) from None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not dom.isActive():
            return "shutdown"
        time.sleep(0.2)
    try:
        if dom.isActive():
            dom.destroy()
    except lv.libvirtError as exc:
        raise _fail(f"domain {name}: cannot stop it", exc) from None
    return "destroyed"


def explain_start_failure(exc: Any) -> str:
    """libvirt's reason, said plainly where aihow knows what it means: a vGPU needs VFIO,
    which a host without an IOMMU or the vfio modules does not have."""
    text = exc.get_error_message() if hasattr(exc, "get_error_message") else str(exc)
    lowered = text.lower()
    if "vfio" in lowered or "mdev" in lowered or "iommu" in lowered:
        return (f"its vGPU cannot be used on this host: VFIO is not available (no IOMMU "
                f"or the vfio modules are not loaded); libvirt says: {text}")
    return text
