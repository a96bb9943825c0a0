"""Injected libvirt faults on a simulated host (``aihow sim fail DIR --op virDomainCreate
...``): the connection and its domains stay libvirt's own objects, given subclasses whose
changing methods first ask ``planner.sim.faults.check`` and raise a ``libvirtError`` with
the armed error code when a fault fires. The same subclasses mark what each call may
change (``planner.sim.libvirt_changes``), for the session's commit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from planner.sim import latency
from planner.sim.faults import check
from planner.sim.libvirt_changes import (
    CONN_MAKES_DOMAIN,
    CONN_READS,
    DOMAIN_READS,
    OBJECT_READS,
    Changes,
)

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
            return _adopt(method(self, *args, **kwargs), self)

    call.__name__ = method.__name__
    return call


def _returning_domains(method: Any) -> Any:
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        return _adopt(method(self, *args, **kwargs), self)

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
        conn_attrs["__getattribute__"] = _conn_getattribute
        dom_attrs["__getattribute__"] = _domain_getattribute
        _CLASSES["conn"] = type("SimVirConnect", (libvirt.virConnect,), conn_attrs)
        _CLASSES["domain"] = type("SimVirDomain", (libvirt.virDomain,), dom_attrs)
        pool_attrs = {name: _checked(libvirt, getattr(libvirt.virStoragePool, name), op)
                      for name, op in _POOL_FAULT_OPS.items()}
        pool_attrs["__getattribute__"] = _marking(OBJECT_READS, _mark_objects)
        _CLASSES["pool"] = type("SimVirStoragePool", (libvirt.virStoragePool,), pool_attrs)
        net_attrs = {name: _checked(libvirt, getattr(libvirt.virNetwork, name), op)
                     for name, op in _NETWORK_FAULT_OPS.items()}
        net_attrs["__getattribute__"] = _marking(OBJECT_READS, _mark_objects)
        _CLASSES["network"] = type("SimVirNetwork", (libvirt.virNetwork,), net_attrs)
        _CLASSES["volume"] = type("SimVirStorageVol", (libvirt.virStorageVol,),
                                  {"__getattribute__": _marking(OBJECT_READS, _mark_objects)})
    return _CLASSES["conn"], _CLASSES["domain"]


def _adopt(value: Any, owner: Any) -> Any:
    """Give domains, storage pools, networks and volumes returned by ``owner`` (the
    connection, or an object it handed out) the checking, marking classes."""
    import libvirt  # a heavy C binding: loaded at first use, not at start-up

    _sim_classes(libvirt)
    if isinstance(value, list):
        return [_adopt(v, owner) for v in value]
    for base, key in ((libvirt.virDomain, "domain"), (libvirt.virStoragePool, "pool"),
                      (libvirt.virNetwork, "network"), (libvirt.virStorageVol, "volume")):
        if isinstance(value, base):
            if not isinstance(value, _CLASSES[key]):
                value.__class__ = _CLASSES[key]
                value._aihow_sim_dir = owner._aihow_sim_dir
                value._aihow_conn = owner._aihow_conn  # whose marks it adds to
            break
    return value


def _marking(reads: frozenset[str], mark: Any) -> Any:
    """A ``__getattribute__`` whose public methods, but ``reads``, call ``mark(self,
    changes, result)`` before (result None) and after the call, and adopt what they
    return."""
    def __getattribute__(self: Any, name: str) -> Any:  # noqa: N807 - the hook's name
        attr = object.__getattribute__(self, name)
        if name.startswith("_") or not callable(attr):
            return attr
        conn = object.__getattribute__(self, "__dict__").get("_aihow_conn")
        changes = None if conn is None else conn.__dict__.get("_aihow_changes")
        if changes is None:
            return attr
        if name in reads:  # what it returns (a volume looked up) marks its own calls
            return lambda *args, **kwargs: _adopt(attr(*args, **kwargs), self)

        def call(*args: Any, **kwargs: Any) -> Any:
            mark(self, changes, None)
            result = None
            try:
                result = _adopt(attr(*args, **kwargs), self)
                return result
            finally:
                mark(self, changes, result)
        return call
    return __getattribute__


def _mark_domain(dom: Any, changes: Changes, _result: Any) -> None:
    changes.domain(dom.name())


def _mark_everything(_obj: Any, changes: Changes, _result: Any) -> None:
    changes.everything()


def _domain_getattribute(self: Any, name: str) -> Any:
    """A domain's hook: as ``_marking``; a rename marks everything (the domain object
    keeps its old name, so the new one could not be marked)."""
    mark = _mark_everything if name == "rename" else _mark_domain
    return _marking(DOMAIN_READS, mark)(self, name)


def _mark_objects(_obj: Any, changes: Changes, _result: Any) -> None:
    changes.objects()


def _marker_of_conn(method_name: str) -> Any:
    def mark(_conn: Any, changes: Changes, result: Any) -> None:
        if method_name not in CONN_MAKES_DOMAIN:
            changes.everything()
        elif result is not None:
            changes.domain(result.name())
    return mark


def _conn_getattribute(self: Any, name: str) -> Any:
    """The connection's hook: as ``_marking``, with the mark chosen by the method."""
    return _marking(CONN_READS, _marker_of_conn(name))(self, name)


def guard_with_faults(conn: Any, sim_dir: Path) -> None:
    import libvirt  # a heavy C binding: loaded at first use, not at start-up

    conn_class, _ = _sim_classes(libvirt)
    conn.__class__ = conn_class  # the same virConnect object, with checked methods
    conn._aihow_sim_dir = sim_dir
    conn._aihow_conn = conn
    conn._aihow_changes = None  # no marks until the session starts them (track_changes)


def track_changes(conn: Any) -> Changes | None:
    """Start marking what calls on ``conn`` (guarded) and on what it hands out may change;
    the marks made so far are dropped. None for a connection without the classes."""
    if "_aihow_sim_dir" not in conn.__dict__:
        return None
    changes = Changes()
    conn._aihow_changes = changes
    return changes
