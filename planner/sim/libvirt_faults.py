"""Injected libvirt faults on a simulated host (``aihow sim fail DIR --op virDomainCreate
...``): the connection and its domains stay libvirt's own objects, given subclasses whose
changing methods first ask ``planner.sim.faults.check`` and raise a ``libvirtError`` with
the armed error code when a fault fires."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from planner.sim import latency
from planner.sim.faults import check

# libvirt-python method -> the simulator's operation name (planner.sim.faults.LIBVIRT_OPS).
_CONN_FAULT_OPS = {
    "defineXML": "virDomainDefineXML",
    "defineXMLFlags": "virDomainDefineXML",
    "nodeDeviceCreateXML": "virNodeDeviceCreateXML",
    "networkDefineXML": "virNetworkDefineXML",
    "storagePoolDefineXML": "virStoragePoolDefineXML",
}
_DOMAIN_FAULT_OPS = {
    "create": "virDomainCreate",
    "createWithFlags": "virDomainCreate",
    "shutdown": "virDomainShutdown",
    "shutdownFlags": "virDomainShutdown",
    "destroy": "virDomainDestroy",
    "destroyFlags": "virDomainDestroy",
    "undefine": "virDomainUndefine",
    "undefineFlags": "virDomainUndefine",
    "attachDevice": "virDomainAttachDeviceFlags",
    "attachDeviceFlags": "virDomainAttachDeviceFlags",
    "detachDevice": "virDomainDetachDeviceFlags",
    "detachDeviceFlags": "virDomainDetachDeviceFlags",
}
# A volume is made through its pool object (virStorageVolCreateXML).
_POOL_FAULT_OPS = {
    "createXML": "virStorageVolCreateXML",
}
_RETURNS_POOL = ("storagePoolLookupByName", "storagePoolLookupByUUIDString",
                 "listAllStoragePools")
# A network's static DHCP leases change through the network object (virNetworkUpdate).
_NETWORK_FAULT_OPS = {
    "update": "virNetworkUpdate",
}
_RETURNS_NETWORK = ("networkLookupByName", "networkLookupByUUIDString", "listAllNetworks")
_RETURNS_DOMAIN = ("lookupByName", "lookupByUUIDString", "lookupByUUID", "lookupByID",
                   "defineXML", "defineXMLFlags", "createXML")


def _fault_error(libvirt: Any, op: str, error: str) -> Exception:
    libvirt.virResetLastError()
    message = f"{op}: injected fault ({error})"
    err = libvirt.libvirtError(message)
    err.args = (message,)
    err.err = (getattr(libvirt, error), libvirt.VIR_FROM_DOMAIN, message, libvirt.VIR_ERR_ERROR,
               None, None, None, -1, -1)
    return err


def _no_vfio_error(libvirt: Any, dom: Any, sim_dir: Path) -> Exception | None:
    """What QEMU's libvirt says when a domain with a vGPU (an mdev or a VF, both through
    vfio) starts on a host without the vfio modules: libvirt's test driver does not
    check it, the simulated host does (its ``sys/module/vfio_pci``). The text is ASSUMED
    (libvirt's "host doesn't support VFIO PCI passthrough"); aihow's explanation only
    looks for "vfio" in it, as it does on a real libvirtd (tests/integration)."""
    if (sim_dir / "sys" / "module" / "vfio_pci").is_dir():
        return None
    xml = dom.XMLDesc(0)
    if "<hostdev" not in xml:
        return None
    libvirt.virResetLastError()
    message = "unsupported configuration: host doesn't support VFIO PCI passthrough"
    err = libvirt.libvirtError(message)
    err.args = (message,)
    err.err = (libvirt.VIR_ERR_CONFIG_UNSUPPORTED, libvirt.VIR_FROM_QEMU, message,
               libvirt.VIR_ERR_ERROR, None, None, None, -1, -1)
    return err


def _checked(libvirt: Any, method: Any, op: str) -> Any:
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        with latency.lasting(self._aihow_sim_dir, op):
            error = check(self._aihow_sim_dir, op)
            if error is not None:
                raise _fault_error(libvirt, op, error)
            if op == "virDomainCreate":
                refused = _no_vfio_error(libvirt, self, self._aihow_sim_dir)
                if refused is not None:
                    raise refused
            return _adopt(method(self, *args, **kwargs), self._aihow_sim_dir)

    call.__name__ = method.__name__
    return call


def _returning_domains(method: Any) -> Any:
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        return _adopt(method(self, *args, **kwargs), self._aihow_sim_dir)

    call.__name__ = method.__name__
    return call


_CLASSES: dict[str, Any] = {}


def _sim_classes(libvirt: Any) -> tuple[Any, Any]:
    """Subclasses of virConnect and virDomain whose changing calls check for faults."""
    if not _CLASSES:
        conn_attrs: dict[str, Any] = {}
        for name in _RETURNS_DOMAIN:
            conn_attrs[name] = _returning_domains(getattr(libvirt.virConnect, name))
        conn_attrs["listAllDomains"] = _returning_domains(libvirt.virConnect.listAllDomains)
        for name in (*_RETURNS_POOL, *_RETURNS_NETWORK):
            conn_attrs[name] = _returning_domains(getattr(libvirt.virConnect, name))
        for name, op in _CONN_FAULT_OPS.items():
            conn_attrs[name] = _checked(libvirt, getattr(libvirt.virConnect, name), op)
        dom_attrs = {name: _checked(libvirt, getattr(libvirt.virDomain, name), op)
                     for name, op in _DOMAIN_FAULT_OPS.items()}
        _CLASSES["conn"] = type("SimVirConnect", (libvirt.virConnect,), conn_attrs)
        _CLASSES["domain"] = type("SimVirDomain", (libvirt.virDomain,), dom_attrs)
        pool_attrs = {name: _checked(libvirt, getattr(libvirt.virStoragePool, name), op)
                      for name, op in _POOL_FAULT_OPS.items()}
        _CLASSES["pool"] = type("SimVirStoragePool", (libvirt.virStoragePool,), pool_attrs)
        net_attrs = {name: _checked(libvirt, getattr(libvirt.virNetwork, name), op)
                     for name, op in _NETWORK_FAULT_OPS.items()}
        _CLASSES["network"] = type("SimVirNetwork", (libvirt.virNetwork,), net_attrs)
    return _CLASSES["conn"], _CLASSES["domain"]


def _adopt(value: Any, sim_dir: Path) -> Any:
    """Give domains, storage pools and networks returned by the connection the
    fault-checking class."""
    import libvirt  # a heavy C binding: loaded at first use, not at start-up

    _, dom_class = _sim_classes(libvirt)
    pool_class = _CLASSES["pool"]
    if isinstance(value, list):
        return [_adopt(v, sim_dir) for v in value]
    if isinstance(value, libvirt.virDomain) and not isinstance(value, dom_class):
        value.__class__ = dom_class
        value._aihow_sim_dir = sim_dir
    elif isinstance(value, libvirt.virStoragePool) and not isinstance(value, pool_class):
        value.__class__ = pool_class
        value._aihow_sim_dir = sim_dir
    elif isinstance(value, libvirt.virNetwork) and \
            not isinstance(value, _CLASSES["network"]):
        value.__class__ = _CLASSES["network"]
        value._aihow_sim_dir = sim_dir
    return value


def guard_with_faults(conn: Any, sim_dir: Path) -> None:
    import libvirt  # a heavy C binding: loaded at first use, not at start-up

    conn_class, _ = _sim_classes(libvirt)
    conn.__class__ = conn_class  # the same virConnect object, with checked methods
    conn._aihow_sim_dir = sim_dir
