"""The write side of libvirt domains, each operation paired with its inverse.

Apply journals every step and undoes completed steps in reverse on failure, so each
operation here is a ``DomainOp`` value (JSON-serialisable for the journal) and
``run_op`` performs it and returns the op that undoes it, computed from what was really
there (the XML of an undefined domain, the exact ``<hostdev>`` element a detach removed,
guest address included).

Rules:
- A new domain is defined; an existing one (say ``hpc-compute-01`` made by ai-how) is
  never redefined by aihow: its hostdev is attached to or detached from the persistent
  configuration with ``VIR_DOMAIN_AFFECT_CONFIG`` only. On a running domain that takes
  effect at its next boot; nothing is hot-plugged.
- A running domain is never stopped unless the caller passes ``allow_stop=True`` (the
  plan said so and apply was confirmed).
- libvirt's test driver (used by ``sim:`` hosts) lacks ``attachDeviceFlags``; there the
  same change is made by editing the persistent XML and defining it again, which for
  the persistent config is the same thing.

Every function takes an open ``libvirt.virConnect`` (``planner.host.libvirt_conn``).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

from planner.errors import AihowError
from planner.host.state import Hostdev
from planner.lang.pci import normalize_pci

if TYPE_CHECKING:
    import libvirt

OpKind = Literal["define", "undefine", "attach_hostdev", "detach_hostdev", "start", "stop"]
_KINDS: tuple[str, ...] = (
    "define",
    "undefine",
    "attach_hostdev",
    "detach_hostdev",
    "start",
    "stop",
)


class DomainError(AihowError):
    """A libvirt domain operation that cannot be done as asked."""


class DomainRunningError(DomainError):
    """The operation would stop a running domain and stopping was not allowed."""


@dataclass(frozen=True)
class DomainOp:
    """One change to one domain. ``xml`` is the domain XML for ``define`` and the
    ``<hostdev>`` element for attach/detach; ``start`` on a define also starts it
    (the inverse of stopping and undefining a running domain)."""

    kind: OpKind
    domain: str
    xml: str = ""
    start: bool = False

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"unknown domain operation {self.kind!r}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DomainOp:
        return cls(data["kind"], data["domain"], data.get("xml", ""), bool(data.get("start")))

    def describe(self) -> str:
        if self.kind in ("attach_hostdev", "detach_hostdev"):
            kind, key = hostdev_key(ET.fromstring(self.xml))
            return f"{self.kind.replace('_', ' ')} {kind} {key} on domain {self.domain}"
        return f"{self.kind} domain {self.domain}"


# --- hostdev XML helpers ---------------------------------------------------------------


def hostdev_key(elem: ET.Element) -> tuple[Literal["mdev", "pci"], str]:
    """(type, key) of a ``<hostdev>`` element: the mdev UUID or the normalised host PCI
    address. Raises DomainError for any other hostdev (USB, SCSI, ...)."""
    kind = elem.get("type")
    addr = elem.find("./source/address")
    if elem.tag != "hostdev" or addr is None or kind not in ("mdev", "pci"):
        raise DomainError("expected a <hostdev type='mdev'|'pci'> element with a source address")
    if kind == "mdev":
        uuid = addr.get("uuid")
        if not uuid:
            raise DomainError("mdev <hostdev> has no source address uuid")
        return "mdev", uuid.lower()
    try:
        dom, bus, slot, fn = (
            int(addr.get(a) or "0", 0) for a in ("domain", "bus", "slot", "function")
        )
    except ValueError:
        raise DomainError("PCI <hostdev> has a malformed source address") from None
    return "pci", normalize_pci(f"{dom:04x}:{bus:02x}:{slot:02x}.{fn:x}")


def _hostdevs_of(root: ET.Element) -> list[tuple[ET.Element, tuple[Literal["mdev", "pci"], str]]]:
    devices = root.find("devices")
    if devices is None:
        return []
    out = []
    for elem in devices.findall("hostdev"):
        if elem.get("mode", "subsystem") == "subsystem" and elem.get("type") in ("mdev", "pci"):
            out.append((elem, hostdev_key(elem)))
    return out


def hostdevs_in_xml(domain_xml: str) -> tuple[Hostdev, ...]:
    """The mdev and PCI hostdevs of a domain XML, as HostState values, in XML order."""
    out = []
    for _elem, (kind, key) in _hostdevs_of(ET.fromstring(domain_xml)):
        out.append(
            Hostdev(type="mdev", uuid=key) if kind == "mdev" else Hostdev(type="pci", pci=key)
        )
    return tuple(out)


def _xml_text(elem: ET.Element) -> str:
    text = ET.tostring(elem, encoding="unicode")
    return text.strip() + "\n"


# --- libvirt access ----------------------------------------------------------------------


def _libvirt() -> Any:
    import libvirt  # a heavy C binding: loaded at first use, not at start-up

    return libvirt


def _lookup(conn: libvirt.virConnect, name: str) -> libvirt.virDomain | None:
    lv = _libvirt()
    try:
        return conn.lookupByName(name)
    except lv.libvirtError as exc:
        if exc.get_error_code() == lv.VIR_ERR_NO_DOMAIN:
            return None
        raise DomainError(f"domain {name}: lookup failed: {exc.get_error_message()}") from None


def _require(conn: libvirt.virConnect, name: str) -> libvirt.virDomain:
    dom = _lookup(conn, name)
    if dom is None:
        raise DomainError(f"domain {name} does not exist")
    return dom


def persistent_xml(conn: libvirt.virConnect, name: str) -> str:
    """The domain's persistent (next boot) definition, secrets included so that
    defining it again restores it exactly."""
    lv = _libvirt()
    dom = _require(conn, name)
    return dom.XMLDesc(lv.VIR_DOMAIN_XML_INACTIVE | lv.VIR_DOMAIN_XML_SECURE)


def domain_exists(conn: libvirt.virConnect, name: str) -> bool:
    return _lookup(conn, name) is not None


def persistent_hostdevs(conn: libvirt.virConnect, name: str) -> tuple[Hostdev, ...]:
    return hostdevs_in_xml(persistent_xml(conn, name))


def _fail(op: str, name: str, exc: Exception) -> DomainError:
    msg = exc.get_error_message() if hasattr(exc, "get_error_message") else str(exc)
    return DomainError(f"domain {name}: {op} failed: {msg}")


def _unsupported(exc: Any) -> bool:
    lv = _libvirt()
    return bool(exc.get_error_code() == lv.VIR_ERR_NO_SUPPORT)


# --- operations ------------------------------------------------------------------------


def define(conn: libvirt.virConnect, domain_xml: str) -> DomainOp:
    """Define a new domain; returns its inverse (undefine). Refuses an existing name:
    an existing domain gets hostdevs attached, never a new definition."""
    lv = _libvirt()
    try:
        name = ET.fromstring(domain_xml).findtext("name") or ""
    except ET.ParseError as exc:
        raise DomainError(f"domain XML does not parse: {exc}") from None
    if not name:
        raise DomainError("domain XML has no <name>")
    if domain_exists(conn, name):
        raise DomainError(
            f"domain {name} already exists; aihow attaches devices to an existing domain "
            "instead of redefining it"
        )
    try:
        conn.defineXML(domain_xml)
    except lv.libvirtError as exc:
        raise _fail("define", name, exc) from None
    return DomainOp("undefine", name)


def undefine(conn: libvirt.virConnect, name: str, *, allow_stop: bool = False) -> DomainOp:
    """Remove a domain's persistent definition; returns the define that restores it.
    A running domain is refused unless ``allow_stop``, which powers it off first (and
    the inverse starts it again)."""
    lv = _libvirt()
    dom = _require(conn, name)
    xml = persistent_xml(conn, name)
    running = bool(dom.isActive())
    if running and not allow_stop:
        raise DomainRunningError(
            f"domain {name} is running; undefining it needs stopping it, which was not allowed"
        )
    try:
        if running:
            dom.destroy()
        # Keep UEFI variables so the inverse define finds them again.
        flags = lv.VIR_DOMAIN_UNDEFINE_KEEP_NVRAM if "<nvram" in xml else 0
        dom.undefineFlags(flags)
    except lv.libvirtError as exc:
        raise _fail("undefine", name, exc) from None
    return DomainOp("define", name, xml, start=running)


# The fallback for drivers without attachDeviceFlags edits the XML text libvirt gave and
# leaves every other byte as it was (re-serialising through ElementTree would rename
# namespace prefixes in <metadata> and reformat the document).
_HOSTDEV_SPAN = re.compile(r"^[ \t]*<hostdev\b.*?</hostdev>[ \t]*\n", re.M | re.S)
_DEVICES_END = re.compile(r"^([ \t]*)</devices>", re.M)


def _with_hostdev_added(domain_xml: str, hostdev_xml: str) -> str:
    m = _DEVICES_END.search(domain_xml)
    if m is None:
        raise DomainError("domain XML has no <devices> section")
    indent = m.group(1) * 2 or "    "
    block = "".join(f"{indent}{line}\n" for line in hostdev_xml.strip().splitlines())
    return domain_xml[: m.start()] + block + domain_xml[m.start() :]


def _with_hostdev_removed(domain_xml: str, key: tuple[str, str]) -> str:
    for m in _HOSTDEV_SPAN.finditer(domain_xml):
        if hostdev_key(ET.fromstring(m.group(0).strip())) == key:
            return domain_xml[: m.start()] + domain_xml[m.end() :]
    raise DomainError(f"{key[0]} {key[1]} not found in the domain XML")


def _redefine(conn: libvirt.virConnect, xml: str, name: str, what: str) -> None:
    lv = _libvirt()
    try:
        conn.defineXML(xml)
    except lv.libvirtError as exc:
        raise _fail(what, name, exc) from None


_VM_NS = "https://aihow.invalid/schemas/vm/1"  # planner.host.records.AIHOW_VM_NS


def set_vm_metadata(conn: libvirt.virConnect, name: str, fields: dict[str, str | None]
                    ) -> None:
    """Set (or, for None, remove) child elements of the domain's persistent ``<aihow:vm>``
    metadata, creating the element if the domain has none (a domain ai-how defined)."""
    lv = _libvirt()
    dom = _require(conn, name)
    root = ET.fromstring(persistent_xml(conn, name))
    vm = root.find(f"./metadata/{{{_VM_NS}}}vm")
    if vm is None:
        vm = ET.Element(f"{{{_VM_NS}}}vm")
    for key, value in fields.items():
        old = vm.find(f"{{{_VM_NS}}}{key}")
        if old is not None:
            vm.remove(old)
        if value is not None:
            ET.SubElement(vm, f"{{{_VM_NS}}}{key}").text = value
    # libvirt puts the element into the namespace itself (under the key "aihow"): it
    # is given without one.
    plain = ET.Element("vm")
    for child in vm:
        ET.SubElement(plain, child.tag.rpartition("}")[2]).text = child.text
    text = ET.tostring(plain, encoding="unicode")
    try:
        dom.setMetadata(lv.VIR_DOMAIN_METADATA_ELEMENT, text, "aihow", _VM_NS,
                        lv.VIR_DOMAIN_AFFECT_CONFIG)
    except lv.libvirtError as exc:
        raise _fail("set the aihow metadata of", name, exc) from None


def attach_hostdev(conn: libvirt.virConnect, name: str, hostdev_xml: str) -> DomainOp:
    """Add a ``<hostdev>`` to the persistent config of domain ``name``; returns the
    detach that undoes it. A running domain keeps running and sees it at next boot."""
    lv = _libvirt()
    try:
        elem = ET.fromstring(hostdev_xml)
    except ET.ParseError as exc:
        raise DomainError(f"hostdev XML does not parse: {exc}") from None
    kind, key = hostdev_key(elem)
    dom = _require(conn, name)
    current = persistent_xml(conn, name)
    if any(k == (kind, key) for _e, k in _hostdevs_of(ET.fromstring(current))):
        raise DomainError(f"domain {name}: {kind} {key} is already in its configuration")
    try:
        dom.attachDeviceFlags(hostdev_xml, lv.VIR_DOMAIN_AFFECT_CONFIG)
    except lv.libvirtError as exc:
        if not _unsupported(exc):
            raise _fail(f"attach {kind} {key}", name, exc) from None
        _redefine(conn, _with_hostdev_added(current, hostdev_xml), name, f"attach {kind} {key}")
    return DomainOp("detach_hostdev", name, _xml_text(elem))


def detach_hostdev(conn: libvirt.virConnect, name: str, hostdev_xml: str) -> DomainOp:
    """Remove the hostdev with the same device (mdev UUID or host PCI address) from the
    persistent config of ``name``; returns the attach of the element exactly as it was."""
    lv = _libvirt()
    try:
        wanted = hostdev_key(ET.fromstring(hostdev_xml))
    except ET.ParseError as exc:
        raise DomainError(f"hostdev XML does not parse: {exc}") from None
    dom = _require(conn, name)
    domain_xml = persistent_xml(conn, name)
    found = next((e for e, k in _hostdevs_of(ET.fromstring(domain_xml)) if k == wanted), None)
    if found is None:
        raise DomainError(f"domain {name}: {wanted[0]} {wanted[1]} is not in its configuration")
    current = _xml_text(found)
    try:
        dom.detachDeviceFlags(current, lv.VIR_DOMAIN_AFFECT_CONFIG)
    except lv.libvirtError as exc:
        if not _unsupported(exc):
            raise _fail(f"detach {wanted[0]} {wanted[1]}", name, exc) from None
        _redefine(
            conn,
            _with_hostdev_removed(domain_xml, wanted),
            name,
            f"detach {wanted[0]} {wanted[1]}",
        )
    return DomainOp("attach_hostdev", name, current)


def holders_of(conn: libvirt.virConnect, name: str) -> list[tuple[str, str]]:
    """(other running domain, device key) for every hostdev of ``name``'s persistent
    definition that a running domain holds now. ai-how lets one passed-through device be
    defined into VMs of two clusters that run one at a time; only one may hold it."""
    wanted = {h.key for h in persistent_hostdevs(conn, name)}
    out: list[tuple[str, str]] = []
    if not wanted:
        return out
    for other in conn.listAllDomains():
        if other.name() == name or not other.isActive():
            continue
        for h in hostdevs_in_xml(other.XMLDesc(0)):
            if h.key in wanted:
                out.append((other.name(), h.key))
    return sorted(out)


def start(conn: libvirt.virConnect, name: str) -> DomainOp:
    """Start a defined domain; refused while another running domain holds one of its
    devices (a device shared by the VMs of two clusters)."""
    lv = _libvirt()
    dom = _require(conn, name)
    if dom.isActive():
        raise DomainError(f"domain {name} is already running")
    held = holders_of(conn, name)
    if held:
        who = ", ".join(f"{key} by {other}" for other, key in held)
        raise DomainError(f"domain {name} cannot start: its device is held ({who}); stop "
                          f"{held[0][0]} first")
    try:
        dom.create()
    except lv.libvirtError as exc:
        raise _fail("start", name, exc) from None
    return DomainOp("stop", name)


def stop(conn: libvirt.virConnect, name: str, *, allow_stop: bool = False) -> DomainOp:
    """Power a running domain off (hard). Only with ``allow_stop``."""
    lv = _libvirt()
    dom = _require(conn, name)
    if not allow_stop:
        raise DomainRunningError(f"domain {name}: stopping it was not allowed")
    if not dom.isActive():
        raise DomainError(f"domain {name} is not running")
    try:
        dom.destroy()
    except lv.libvirtError as exc:
        raise _fail("stop", name, exc) from None
    return DomainOp("start", name)


def run_op(conn: libvirt.virConnect, op: DomainOp, *, allow_stop: bool = False) -> DomainOp:
    """Perform ``op`` and return its inverse. Rollback runs the inverses it collected,
    newest first, passing ``allow_stop=True`` only to undo a start it made itself."""
    if op.kind == "define":
        inverse = define(conn, op.xml)
        if op.start:
            start(conn, op.domain)
            return DomainOp("undefine", op.domain)  # undefine(allow_stop) stops it too
        return inverse
    if op.kind == "undefine":
        return undefine(conn, op.domain, allow_stop=allow_stop)
    if op.kind == "attach_hostdev":
        return attach_hostdev(conn, op.domain, op.xml)
    if op.kind == "detach_hostdev":
        return detach_hostdev(conn, op.domain, op.xml)
    if op.kind == "start":
        return start(conn, op.domain)
    return stop(conn, op.domain, allow_stop=allow_stop)
