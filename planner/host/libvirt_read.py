"""Read libvirt domains into HostState ``Domain`` values (name, UUID, state, hostdevs)."""

from __future__ import annotations

import functools
import uuid as uuidlib
import xml.etree.ElementTree as ET
from typing import Any

from planner.host.errors import HostError
from planner.host.state import Domain, Hostdev
from planner.lang.pci import normalize_pci
from planner.vocab import Address

# virDomainState -> the words virsh prints (BLOCKED as "blocked", which Domain.running knows).
STATE_NAMES = {
    0: "no state",
    1: "running",
    2: "blocked",
    3: "paused",
    4: "in shutdown",
    5: "shut off",
    6: "crashed",
    7: "pmsuspended",
}


@functools.lru_cache(maxsize=1024)
def parse_hostdevs(xml_text: str, where: str = "domain") -> tuple[Hostdev, ...]:
    """The mdev and PCI hostdevs of a domain XML, in document order. Cached by the text
    (the values are frozen): apply reads the running domains back after each vGPU step,
    and most of them have not changed since the last read."""
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as err:
        raise HostError(f"{where}: unreadable domain XML: {err}") from err
    found: list[Hostdev] = []
    for hd in root.iterfind("./devices/hostdev"):
        if hd.get("mode", "subsystem") != "subsystem":
            continue
        address = hd.find("./source/address")
        if address is None:
            continue
        kind = hd.get("type")
        if kind == "mdev" and address.get("uuid"):
            found.append(Hostdev(type="mdev", uuid=address.get("uuid", "").lower()))
        elif kind == "pci":
            found.append(Hostdev(type="pci", pci=_pci_address(address, where)))
    return tuple(found)


def _pci_address(address: ET.Element, where: str) -> str:
    try:
        domain = int(address.get("domain", "0"), 0)
        bus = int(address.get("bus", "0"), 0)
        slot = int(address.get("slot", "0"), 0)
        function = int(address.get("function", "0"), 0)
    except ValueError as err:
        raise HostError(f"{where}: bad PCI hostdev address: {err}") from err
    return normalize_pci(f"{domain:04x}:{bus:02x}:{slot:02x}.{function:x}")


def read_domain(dom: Any, autostart: dict[str, bool] | None = None) -> Domain:
    name = dom.name()
    state = int(dom.state()[0])
    return Domain(
        name=name,
        uuid=dom.UUIDString(),
        state=STATE_NAMES.get(state, f"state {state}"),
        persistent=bool(dom.isPersistent()),
        hostdevs=parse_hostdevs(dom.XMLDesc(0), str(Address.domain(name))),
        autostart=autostart.get(name, False) if autostart is not None
        else bool(dom.autostart()) if dom.isPersistent() else False,
    )


# virConnectListAllDomainsFlags: VIR_CONNECT_LIST_DOMAINS_ACTIVE = 1 << 0 (libvirt-domain.h;
# the binding is loaded only by the connection).
_LIST_ACTIVE = 1


def read_domains(conn: Any, autostart: dict[str, bool] | None = None, *,
                 running_only: bool = False) -> tuple[Domain, ...]:
    """Every domain on the connection (defined or running), or only the running ones,
    sorted by name."""
    found = conn.listAllDomains(_LIST_ACTIVE if running_only else 0)
    return tuple(sorted((read_domain(d, autostart) for d in found), key=lambda d: d.name))


def read_running_domains_by_uuid(conn: Any, uuids: set[str],
                                 autostart: dict[str, bool] | None = None
                                 ) -> tuple[Domain, ...]:
    """The running domains of those UUIDs (NVML's VM ids of a GPU's vGPUs on KVM), sorted
    by name; a UUID no domain has, or one that stopped meanwhile, is left out, and so is
    an id that is no UUID (NVML gives other kinds of VM id on other hypervisors). What a
    read of one GPU needs of libvirt, in time that does not grow with the number of VMs."""
    import libvirt  # a heavy C binding: loaded at first use, not at start-up

    found = []
    for uuid in sorted(uuids):
        try:
            uuidlib.UUID(uuid)
        except ValueError:
            continue  # libvirt would refuse it as an argument, not as an unknown domain
        try:
            dom = conn.lookupByUUIDString(uuid)
            if dom.isActive():
                found.append(read_domain(dom, autostart))
        except libvirt.libvirtError as err:
            if err.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise
    return tuple(sorted(found, key=lambda d: d.name))
