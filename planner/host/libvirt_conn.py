"""libvirt connections for a host URI.

``local`` opens ``qemu:///system`` (or the override). ``sim:DIR`` opens libvirt's own
test driver on a node file built from the domains kept in ``DIR/libvirt/``: the test
driver is a complete in-process hypervisor but keeps its state in memory only, so
``commit()`` writes every domain back to DIR, and the next process (plan, apply,
probe) sees what the previous one left. The store:

    DIR/libvirt/domains/NAME.xml   persistent (inactive) XML of each defined domain
    DIR/libvirt/live/NAME.xml      live XML of a running domain, when it differs from
                                   the persistent XML, and of every transient domain
    DIR/libvirt/runstate.json      {"NAME": {"state": virDomainState, "persistent": bool,
                                             "autostart": bool}}

Run state travels into the test driver through its own node-file extensions
(``<test:runstate>``, ``<test:transient/>``), so a running domain is running again,
with its live XML, in the next process.

A read-write session on a simulated host also honours the simulator's injected faults
(``aihow sim fail DIR --op virDomainCreate ...``): the connection and its domains are
libvirt's own objects whose changing methods first ask ``planner.sim.faults.check`` and
raise a ``libvirtError`` with the armed error code when a fault fires.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import uuid as uuidlib
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from planner.host.errors import HostError
from planner.host.uri import parse_host_uri

LOCAL_LIBVIRT_URI = "qemu:///system"
TEST_NS = "http://libvirt.org/schemas/domain/test/1.0"
STATE_RUNNING = 1
STATE_SHUTOFF = 5
_AIHOW_NS = uuidlib.UUID("6b1f3c52-6f0e-5c1e-9a55-61686f772d6c")  # uuid5 namespace for names


@dataclass
class SimDomainRecord:
    """One domain as kept in DIR/libvirt."""

    name: str
    persistent_xml: str | None  # None for a transient domain
    live_xml: str | None = None  # only when running and different from persistent_xml
    state: int = STATE_SHUTOFF
    autostart: bool = False


@dataclass
class LibvirtSession:
    """An open libvirt connection. ``commit()`` makes the domains' current state
    durable (a no-op on a real libvirtd, which keeps its own state)."""

    conn: Any  # libvirt.virConnect
    uri: str
    read_only: bool = False
    sim_dir: Path | None = None
    _closed: bool = field(default=False, repr=False)

    def commit(self) -> None:
        if self.sim_dir is None:
            return
        if self.read_only:
            raise HostError(f"{self.uri}: a read-only libvirt session cannot commit")
        records = [_record_of(dom) for dom in self.conn.listAllDomains()]
        save_sim_domains(self.sim_dir, records)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            with contextlib.suppress(Exception):
                self.conn.close()

    def __enter__(self) -> LibvirtSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_libvirt(
    host_uri: str, override: str | None = None, *, read_only: bool = False
) -> LibvirtSession:
    """Open libvirt for the host. ``read_only`` uses ``virConnectOpenReadOnly``, so the
    connection itself refuses every change (the probe path)."""
    import libvirt

    libvirt.registerErrorHandler(lambda *_: None, None)  # errors arrive as exceptions
    uri = parse_host_uri(host_uri)
    if override is not None or uri.kind == "local":
        target = override or LOCAL_LIBVIRT_URI
        return LibvirtSession(conn=_connect(libvirt, target, read_only), uri=target,
                              read_only=read_only)
    assert uri.sim_dir is not None
    sim_dir = uri.sim_dir
    if not sim_dir.is_dir():
        raise HostError(f"{uri.text}: no such directory {sim_dir}")
    records = load_sim_domains(sim_dir)
    node_xml = build_node_xml(records)
    fd, node_path = tempfile.mkstemp(prefix="aihow-libvirt-", suffix=".xml")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(node_xml)
        conn = _connect(libvirt, f"test://{node_path}", read_only)
    finally:
        os.unlink(node_path)  # the test driver has read it; it keeps state in memory
    if not read_only:
        if (sim_dir / "state.json").is_file():  # a whole simulated host: faults apply
            _guard_with_faults(libvirt, conn, sim_dir)
        # A running domain whose persistent definition differs from its live one: the
        # node file carried the live XML, defining the persistent one makes it pending.
        for rec in records:
            if rec.live_xml is not None and rec.persistent_xml is not None:
                conn.defineXML(rec.persistent_xml)
        for rec in records:
            if rec.autostart and rec.persistent_xml is not None:
                conn.lookupByName(rec.name).setAutostart(1)
    return LibvirtSession(conn=conn, uri=f"{uri.text} (libvirt test driver)",
                          read_only=read_only, sim_dir=sim_dir)


def _connect(libvirt: Any, target: str, read_only: bool) -> Any:
    try:
        return libvirt.openReadOnly(target) if read_only else libvirt.open(target)
    except libvirt.libvirtError as err:
        raise HostError(f"cannot connect to libvirt at {target}: {err.get_error_message()}") \
            from err


def _record_of(dom: Any) -> SimDomainRecord:
    import libvirt

    state = int(dom.state()[0])
    persistent = bool(dom.isPersistent())
    active = bool(dom.isActive())
    live = dom.XMLDesc(0) if active else None
    inactive = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE) if persistent else None
    return SimDomainRecord(
        name=dom.name(),
        persistent_xml=inactive,
        live_xml=live if live != inactive else None,
        state=state,
        autostart=bool(dom.autostart()) if persistent else False,
    )


# --- the store in DIR/libvirt ------------------------------------------------------------


def _store(sim_dir: Path) -> Path:
    return sim_dir / "libvirt"


@contextlib.contextmanager
def _locked(sim_dir: Path, exclusive: bool) -> Iterator[None]:
    store = _store(sim_dir)
    if not exclusive and not (store / ".lock").exists():
        yield  # nothing was ever committed here; reading must not create files
        return
    store.mkdir(exist_ok=True)
    with open(store / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def load_sim_domains(sim_dir: Path) -> list[SimDomainRecord]:
    """The domains kept in DIR/libvirt, sorted by name. XML files dropped into
    ``domains/`` by hand count as defined, shut-off domains."""
    store = _store(sim_dir)
    with _locked(sim_dir, exclusive=False):
        states_path = store / "runstate.json"
        try:
            states = json.loads(states_path.read_text()) if states_path.exists() else {}
        except (OSError, ValueError) as err:
            raise HostError(f"{states_path}: unreadable libvirt run state: {err}") from err
        names = {p.stem for p in (store / "domains").glob("*.xml")}
        names |= {p.stem for p in (store / "live").glob("*.xml")}
        records = []
        for name in sorted(names):
            info = states.get(name, {})
            persistent = store / "domains" / f"{name}.xml"
            live = store / "live" / f"{name}.xml"
            records.append(
                SimDomainRecord(
                    name=name,
                    persistent_xml=persistent.read_text() if persistent.exists() else None,
                    live_xml=live.read_text() if live.exists() else None,
                    state=int(info.get("state", STATE_SHUTOFF)),
                    autostart=bool(info.get("autostart", False)),
                )
            )
    return records


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_sim_domains(sim_dir: Path, records: list[SimDomainRecord]) -> None:
    store = _store(sim_dir)
    with _locked(sim_dir, exclusive=True):
        keep: set[Path] = set()
        states: dict[str, dict[str, Any]] = {}
        for rec in sorted(records, key=lambda r: r.name):
            if rec.persistent_xml is not None:
                path = store / "domains" / f"{rec.name}.xml"
                _write_atomic(path, rec.persistent_xml)
                keep.add(path)
            if rec.live_xml is not None:
                path = store / "live" / f"{rec.name}.xml"
                _write_atomic(path, rec.live_xml)
                keep.add(path)
            states[rec.name] = {
                "state": rec.state,
                "persistent": rec.persistent_xml is not None,
                "autostart": rec.autostart,
            }
        for sub in ("domains", "live"):
            for path in (store / sub).glob("*.xml"):
                if path not in keep:
                    path.unlink()
        _write_atomic(store / "runstate.json", json.dumps(states, indent=2, sort_keys=True) + "\n")


def build_node_xml(records: list[SimDomainRecord]) -> str:
    """A test-driver node file holding the domains with their run state."""
    ET.register_namespace("test", TEST_NS)
    node = ET.Element("node")
    for rec in records:
        text = rec.live_xml if rec.live_xml is not None else rec.persistent_xml
        if text is None or (rec.persistent_xml is None and rec.state == STATE_SHUTOFF):
            continue  # a transient domain exists only while it runs
        try:
            dom = ET.fromstring(text)
        except ET.ParseError as err:
            raise HostError(f"libvirt/domains/{rec.name}.xml: not valid XML: {err}") from err
        if dom.find("uuid") is None:
            # Without a UUID the test driver would draw a random one on every open.
            uuid_el = ET.Element("uuid")
            uuid_el.text = str(uuidlib.uuid5(_AIHOW_NS, f"domain:{rec.name}"))
            dom.insert(1, uuid_el)
        running = rec.state != STATE_SHUTOFF
        state = ET.SubElement(dom, f"{{{TEST_NS}}}runstate")
        state.text = str(rec.state if running else STATE_SHUTOFF)
        if rec.persistent_xml is None:
            ET.SubElement(dom, f"{{{TEST_NS}}}transient")
        node.append(dom)
    return ET.tostring(node, encoding="unicode")


# --- injected faults on a simulated host ---------------------------------------------------

# libvirt-python method -> the simulator's operation name (planner.sim.faults.LIBVIRT_OPS).
_CONN_FAULT_OPS = {
    "defineXML": "virDomainDefineXML",
    "defineXMLFlags": "virDomainDefineXML",
    "nodeDeviceCreateXML": "virNodeDeviceCreateXML",
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


def _checked(libvirt: Any, method: Any, op: str) -> Any:
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        from planner.sim.faults import check

        error = check(self._aihow_sim_dir, op)
        if error is not None:
            raise _fault_error(libvirt, op, error)
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
        for name, op in _CONN_FAULT_OPS.items():
            conn_attrs[name] = _checked(libvirt, getattr(libvirt.virConnect, name), op)
        dom_attrs = {name: _checked(libvirt, getattr(libvirt.virDomain, name), op)
                     for name, op in _DOMAIN_FAULT_OPS.items()}
        _CLASSES["conn"] = type("SimVirConnect", (libvirt.virConnect,), conn_attrs)
        _CLASSES["domain"] = type("SimVirDomain", (libvirt.virDomain,), dom_attrs)
    return _CLASSES["conn"], _CLASSES["domain"]


def _adopt(value: Any, sim_dir: Path) -> Any:
    """Give domains returned by the connection the fault-checking class."""
    import libvirt

    _, dom_class = _sim_classes(libvirt)
    if isinstance(value, list):
        return [_adopt(v, sim_dir) for v in value]
    if isinstance(value, libvirt.virDomain) and not isinstance(value, dom_class):
        value.__class__ = dom_class
        value._aihow_sim_dir = sim_dir
    return value


def _guard_with_faults(libvirt: Any, conn: Any, sim_dir: Path) -> None:
    conn_class, _ = _sim_classes(libvirt)
    conn.__class__ = conn_class  # the same virConnect object, with checked methods
    conn._aihow_sim_dir = sim_dir
