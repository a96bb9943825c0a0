"""Making an mdev (mdev-backend vGPU) persistent: mdevctl, or libvirt's node-device API.

Creating an mdev (writing its UUID to the type's ``create`` file) makes it live until the
next reboot. A *definition* records uuid, parent and type so that tools see the device
as configured and can start it again. Two ways exist; both are here behind one small
interface, and aihow uses mdevctl:

- ``Mdevctl``: ``mdevctl define -u UUID -p PARENT -t TYPE`` writes
  ``/etc/mdevctl.d/PARENT/UUID``. It needs no daemon, works while libvirtd is down (the
  boot unit runs early), and accepts a parent that does not exist yet (VFs appear only
  after ``sriov-manage -e``).
- ``LibvirtNodedev``: ``virNodeDeviceDefineXML`` (libvirt >= 7.3) with an ``mdev``
  capability. libvirt implements it by calling mdevctl itself, requires the parent to be
  a node device libvirt already enumerated through udev, and needs the node-device
  driver running. Its gain is remote management through the libvirt URI.

Definitions are made *manual* (no ``--auto``): mdevctl would auto-start a device when
its parent VF appears at boot, before ``aihow-apply.service`` has re-created the GPU
instance a MIG-backed type needs, so the start would fail. aihow's boot apply starts the
devices itself, in order.
"""

from __future__ import annotations

import json
import subprocess
import uuid as uuidlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from xml.etree import ElementTree as ET

from planner.errors import AihowError
from planner.lang.pci import normalize_pci

if TYPE_CHECKING:
    import libvirt


class MdevPersistError(AihowError):
    """Defining or undefining a persistent mdev failed."""


@dataclass(frozen=True, order=True)
class MdevDefinition:
    uuid: str
    parent: str  # the parent's PCI address (the VF on SR-IOV GPUs)
    type_id: str  # "nvidia-474"
    auto: bool = False

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "uuid", str(uuidlib.UUID(self.uuid)))
            object.__setattr__(self, "parent", normalize_pci(self.parent))
        except ValueError as exc:
            raise MdevPersistError(f"invalid mdev definition: {exc}") from None
        if not self.type_id or any(c.isspace() or c == "/" for c in self.type_id):
            raise MdevPersistError(f"invalid mdev type {self.type_id!r}")


class MdevPersistence(Protocol):
    """An mdev definition store (the Environment's ``mdev_store`` port)."""

    label: str  # how the journal names the store: "mdevctl", ...

    def define(self, d: MdevDefinition) -> None: ...
    def undefine(self, mdev_uuid: str) -> None: ...
    def list_defined(self) -> tuple[MdevDefinition, ...]: ...


Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


def _run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=False, timeout=60)


class Mdevctl:
    """Persistence through the mdevctl command (aihow's choice)."""

    label = "mdevctl"

    def __init__(self, binary: str = "mdevctl", run: Runner = _run) -> None:
        self.binary = binary
        self._run = run

    def _call(self, *args: str) -> str:
        argv = [self.binary, *args]
        try:
            res = self._run(argv)
        except FileNotFoundError:
            raise MdevPersistError(
                f"{self.binary} is not installed (Debian package mdevctl)"
            ) from None
        except subprocess.TimeoutExpired:
            raise MdevPersistError(f"{' '.join(argv)}: timed out") from None
        if res.returncode != 0:
            why = (res.stderr or res.stdout).strip().splitlines()
            raise MdevPersistError(
                f"{' '.join(argv)}: {why[0] if why else f'exit {res.returncode}'}"
            )
        return res.stdout

    def define(self, d: MdevDefinition) -> None:
        args = ["define", "-u", d.uuid, "-p", d.parent, "-t", d.type_id]
        self._call(*args, *(["--auto"] if d.auto else []))

    def undefine(self, mdev_uuid: str) -> None:
        self._call("undefine", "-u", str(uuidlib.UUID(mdev_uuid)))

    def list_defined(self) -> tuple[MdevDefinition, ...]:
        text = self._call("list", "--defined", "--dumpjson").strip()
        if not text:
            return ()
        try:
            doc: Any = json.loads(text)
            out = [
                MdevDefinition(uid, parent, info["mdev_type"], info.get("start") == "auto")
                for entry in doc
                for parent, devices in entry.items()
                for dev in devices
                for uid, info in dev.items()
            ]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise MdevPersistError(f"mdevctl list --dumpjson: unexpected output: {exc}") from None
        return tuple(sorted(out))


def nodedev_xml(d: MdevDefinition) -> str:
    """The node-device XML libvirt's ``nodeDeviceDefineXML`` takes for ``d``."""
    root = ET.Element("device")
    ET.SubElement(root, "name").text = "mdev_" + d.uuid.replace("-", "_")
    ET.SubElement(root, "parent").text = "pci_" + d.parent.replace(":", "_").replace(".", "_")
    cap = ET.SubElement(root, "capability", type="mdev")
    ET.SubElement(cap, "type", id=d.type_id)
    ET.SubElement(cap, "uuid").text = d.uuid
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


class LibvirtNodedev:
    """Persistence through libvirt's node-device API (kept possible, not the default)."""

    label = "libvirt node device"

    def __init__(self, conn: libvirt.virConnect) -> None:
        self.conn = conn

    def _error(self, what: str, exc: Any) -> MdevPersistError:
        import libvirt  # a heavy C binding: loaded at first use, not at start-up

        if exc.get_error_code() == libvirt.VIR_ERR_NO_SUPPORT:
            return MdevPersistError(
                f"{what}: this libvirt driver cannot define node devices "
                "(needs libvirtd >= 7.3 with the node-device driver and mdevctl)"
            )
        return MdevPersistError(f"{what}: {exc.get_error_message()}")

    def define(self, d: MdevDefinition) -> None:
        import libvirt  # a heavy C binding: loaded at first use, not at start-up

        try:
            dev = self.conn.nodeDeviceDefineXML(nodedev_xml(d), 0)
            dev.setAutostart(1 if d.auto else 0)
        except libvirt.libvirtError as exc:
            raise self._error(f"define mdev {d.uuid} on {d.parent}", exc) from None

    def _devices(self) -> list[Any]:
        import libvirt  # a heavy C binding: loaded at first use, not at start-up

        flags = libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_MDEV
        flags |= libvirt.VIR_CONNECT_LIST_NODE_DEVICES_INACTIVE
        try:
            return list(self.conn.listAllDevices(flags))
        except libvirt.libvirtError as exc:
            raise self._error("list mdev node devices", exc) from None

    def list_defined(self) -> tuple[MdevDefinition, ...]:
        out = []
        for dev in self._devices():
            if not dev.isPersistent():
                continue
            root = ET.fromstring(dev.XMLDesc(0))
            cap = root.find("./capability[@type='mdev']")
            parent = (root.findtext("parent") or "").removeprefix("pci_")
            if cap is None or not parent:
                continue
            pci = parent.replace("_", ":", 2).replace("_", ".", 1)
            type_elem = cap.find("type")
            out.append(
                MdevDefinition(
                    cap.findtext("uuid") or "",
                    pci,
                    type_elem.get("id", "") if type_elem is not None else "",
                    bool(dev.autostart()),
                )
            )
        return tuple(sorted(out))

    def undefine(self, mdev_uuid: str) -> None:
        import libvirt  # a heavy C binding: loaded at first use, not at start-up

        wanted = str(uuidlib.UUID(mdev_uuid))
        for dev in self._devices():
            cap = ET.fromstring(dev.XMLDesc(0)).find("./capability[@type='mdev']")
            if cap is not None and cap.findtext("uuid") == wanted:
                try:
                    dev.undefine()
                except libvirt.libvirtError as exc:
                    raise self._error(f"undefine mdev {wanted}", exc) from None
                return
        raise MdevPersistError(f"mdev {wanted} is not defined in libvirt")


def is_defined(store: MdevPersistence, mdev_uuid: str) -> bool:
    wanted = str(uuidlib.UUID(mdev_uuid))
    return any(d.uuid == wanted for d in store.list_defined())
