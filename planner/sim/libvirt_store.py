"""The simulated host's libvirt: libvirt's own test driver over domains kept in DIR.

The test driver is a complete in-process hypervisor but keeps its state in memory only,
so a session opens it on a node file built from the domains kept in ``DIR/libvirt/`` and
``commit()`` writes back what the session changed, so the next process (plan, apply,
probe) sees what the previous one left. Several sessions may commit at once (apply's
branch threads share one; other processes open their own): a commit writes and deletes
only the domains its own session changed since its last commit, under the store's lock,
so it never undoes another session's work. The store:

    DIR/libvirt/domains/NAME.xml   persistent (inactive) XML of each defined domain
    DIR/libvirt/live/NAME.xml      live XML of a running domain, when it differs from
                                   the persistent XML, and of every transient domain
    DIR/libvirt/runstate.json      {"NAME": {"state": virDomainState, "persistent": bool,
                                             "autostart": bool}}
    DIR/libvirt/networks/NAME.xml  each network's definition
    DIR/libvirt/pools/NAME.xml     each storage pool's definition, its volumes inside
    DIR/libvirt/objects.json       {"networks"|"pools": {"NAME": {"active": bool}}}

Run state travels into the test driver through its own node-file extensions
(``<test:runstate>``, ``<test:transient/>``), so a running domain is running again,
with its live XML, in the next process. A read-write session on a whole simulated host
also honours the simulator's injected faults (``planner.sim.libvirt_faults``).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import tempfile
import threading
import uuid as uuidlib
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from planner.host.errors import HostError
from planner.host.libvirt_conn import LibvirtSession, connect
from planner.sim.libvirt_faults import guard_with_faults

TEST_NS = "http://libvirt.org/schemas/domain/test/1.0"
STATE_RUNNING = 1
STATE_SHUTOFF = 5
ET.register_namespace("test", TEST_NS)
_AIHOW_NS = uuidlib.UUID("6b1f3c52-6f0e-5c1e-9a55-61686f772d6c")  # uuid5 namespace for names


@dataclass
class SimDomainRecord:
    """One domain as kept in DIR/libvirt."""

    name: str
    persistent_xml: str | None  # None for a transient domain
    live_xml: str | None = None  # only when running and different from persistent_xml
    state: int = STATE_SHUTOFF
    autostart: bool = False


def open_sim_libvirt(host_uri: str, sim_dir: Path, *, read_only: bool = False
                     ) -> LibvirtSession:
    """A test-driver session holding the domains kept in ``sim_dir``; ``commit()`` writes
    them back."""
    if not sim_dir.is_dir():
        raise HostError(f"{host_uri}: no such directory {sim_dir}")
    records = load_sim_domains(sim_dir)
    objects = load_sim_objects(sim_dir)
    node_xml = build_node_xml(records, objects)
    fd, node_path = tempfile.mkstemp(prefix="aihow-libvirt-", suffix=".xml")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(node_xml)
        conn = connect(f"test://{node_path}", read_only=read_only)
    finally:
        os.unlink(node_path)  # the test driver has read it; it keeps state in memory
    if not read_only:
        _set_object_states(conn, objects)
        if (sim_dir / "state.json").is_file():  # a whole simulated host: faults apply
            guard_with_faults(conn, sim_dir)
        # A running domain whose persistent definition differs from its live one: the
        # node file carried the live XML, defining the persistent one makes it pending.
        for rec in records:
            if rec.live_xml is not None and rec.persistent_xml is not None:
                conn.defineXML(rec.persistent_xml)
        for rec in records:
            if rec.autostart and rec.persistent_xml is not None:
                conn.lookupByName(rec.name).setAutostart(1)

    # Names kept on disk that the test driver could not hold (a transient domain that is
    # shut off) count as this session's removals: its first commit deletes them. A
    # read-only session's commit is refused before it gets here.
    baseline = {} if read_only else {**{r.name: r for r in records}, **_records(conn)}
    domains_commit = _SessionCommit(sim_dir, baseline)
    objects_commit = _ObjectsCommit(sim_dir, {} if read_only else _objects(conn))

    def persist(live: Any) -> None:
        domains_commit(live)
        objects_commit(live)
    return LibvirtSession(conn=conn, uri=f"{host_uri} (libvirt test driver)",
                          read_only=read_only, persist=persist,
                          autostart={r.name: r.autostart for r in records
                                     if r.persistent_xml is not None} if read_only else None)


class _SessionCommit:
    """A session's ``commit``: writes back the domains that changed in this session since
    its last commit (or since it was opened), and nothing else.

    Other sessions commit to the same store at the same time: apply's branch threads
    share one session, and other processes (a probe, another apply with its own state
    directory) open their own. Each compares what its test driver holds now with what it
    held at its last commit, under the store's lock, so no commit rewrites or deletes a
    domain it did not change from a stale view of the store.
    """

    def __init__(self, sim_dir: Path, baseline: dict[str, SimDomainRecord]) -> None:
        self._sim_dir = sim_dir
        self._baseline = baseline
        self._lock = threading.Lock()  # the baseline is one per session, shared by threads

    def __call__(self, conn: Any) -> None:
        with self._lock, _locked(self._sim_dir, exclusive=True):
            current = _records(conn)
            changed = {name: current.get(name)
                       for name in sorted(current.keys() | self._baseline.keys())
                       if current.get(name) != self._baseline.get(name)}
            if changed:
                _write_changes(self._sim_dir, changed)
            self._baseline = current


def _records(conn: Any) -> dict[str, SimDomainRecord]:
    """Every domain the test driver holds, by name. A domain another thread removes while
    this one lists them counts as absent, which it is."""
    import libvirt  # a heavy C binding: loaded at first use, not at start-up

    out = {}
    for dom in conn.listAllDomains():
        try:
            rec = _record_of(dom)
        except libvirt.libvirtError as err:
            if err.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise
            continue
        out[rec.name] = rec
    return out


def _record_of(dom: Any) -> SimDomainRecord:
    import libvirt  # a heavy C binding: loaded at first use, not at start-up

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
    """Through an unpredictable temporary name created exclusively (a link planted at a
    guessable name cannot redirect the write)."""
    from planner.sim.state import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text)


def _write_changes(sim_dir: Path, changed: dict[str, SimDomainRecord | None]) -> None:
    """Write each changed domain's files and run state (None: remove the domain); the
    caller holds the store's lock. Domains not named are left as they are on disk."""
    store = _store(sim_dir)
    states_path = store / "runstate.json"
    try:
        states = json.loads(states_path.read_text()) if states_path.exists() else {}
    except (OSError, ValueError) as err:
        raise HostError(f"{states_path}: unreadable libvirt run state: {err}") from err
    for name, rec in changed.items():
        texts = (rec.persistent_xml, rec.live_xml) if rec is not None else (None, None)
        for sub, text in zip(("domains", "live"), texts, strict=True):
            path = store / sub / f"{name}.xml"
            if text is not None:
                _write_atomic(path, text)
            else:
                path.unlink(missing_ok=True)
        if rec is None:
            states.pop(name, None)
        else:
            states[name] = {
                "state": rec.state,
                "persistent": rec.persistent_xml is not None,
                "autostart": rec.autostart,
            }
    _write_atomic(states_path, json.dumps(states, indent=2, sort_keys=True) + "\n")


def reboot_domains(sim_dir: Path) -> list[str]:
    """What a host reboot does to libvirt's domains, once the kernel's devices are back
    (``sim reboot`` calls it after the driver's reboot): transient domains and live XML
    are gone, every domain is shut off, and libvirt starts those with autostart whose
    host devices exist (an mdev under /sys/bus/mdev/devices, a PCI device under
    /sys/bus/pci/devices); a domain whose vGPU vanished with the reboot stays shut off,
    as libvirt's autostart of it fails. Returns the domains started."""
    started: list[str] = []
    changed: dict[str, SimDomainRecord | None] = {}
    records = load_sim_domains(sim_dir)  # (takes the store's lock itself)
    for rec in records:
        if rec.persistent_xml is None:
            changed[rec.name] = None
            continue
        up = rec.autostart and all(_device_exists(sim_dir, kind, key)
                                   for kind, key in _hostdevs(rec.persistent_xml))
        if up:
            started.append(rec.name)
        changed[rec.name] = SimDomainRecord(rec.name, rec.persistent_xml, None,
                                            STATE_RUNNING if up else STATE_SHUTOFF,
                                            rec.autostart)
    with _locked(sim_dir, exclusive=True):
        _write_changes(sim_dir, changed)
    return started


def _hostdevs(xml: str) -> list[tuple[str, str]]:
    """(type, key) of each hostdev: ("mdev", UUID) or ("pci", DDDD:BB:SS.F)."""
    out = []
    for hd in ET.fromstring(xml).iter("hostdev"):
        addr = hd.find("source/address")
        if addr is None:
            continue
        if hd.get("type") == "mdev":
            out.append(("mdev", addr.get("uuid", "")))
        else:
            parts = [int(addr.get(k, "0"), 0) for k in ("domain", "bus", "slot", "function")]
            out.append(("pci", "{:04x}:{:02x}:{:02x}.{:x}".format(*parts)))
    return out


def _device_exists(sim_dir: Path, kind: str, key: str) -> bool:
    bus = "mdev" if kind == "mdev" else "pci"
    return (sim_dir / "sys" / "bus" / bus / "devices" / key).exists()


@dataclass
class SimObjects:
    """Networks and pools (volumes inside) as kept in DIR/libvirt: (XML, active)."""

    networks: dict[str, tuple[str, bool]]
    pools: dict[str, tuple[str, bool]]


def load_sim_objects(sim_dir: Path) -> SimObjects:
    store = _store(sim_dir)
    out = SimObjects({}, {})
    with _locked(sim_dir, exclusive=False):
        path = store / "objects.json"
        try:
            states = json.loads(path.read_text()) if path.exists() else {}
        except (OSError, ValueError) as err:
            raise HostError(f"{path}: unreadable libvirt objects: {err}") from err
        for kind, into in (("networks", out.networks), ("pools", out.pools)):
            for p in sorted((store / kind).glob("*.xml")):
                active = bool(states.get(kind, {}).get(p.stem, {}).get("active", True))
                into[p.stem] = (p.read_text(), active)
    return out


_Objects = dict[tuple[str, str], tuple[str, bool]]  # (kind, name) -> (XML, active)


def _objects(conn: Any) -> _Objects:
    """Every network and pool (its volumes inside) the test driver holds."""
    out: _Objects = {}
    for net in conn.listAllNetworks():
        out[("networks", net.name())] = (net.XMLDesc(0), bool(net.isActive()))
    for pool in conn.listAllStoragePools():
        root = ET.fromstring(pool.XMLDesc(0))
        if pool.isActive():
            for vol in sorted(pool.listAllVolumes(), key=lambda v: v.name()):
                root.append(ET.fromstring(vol.XMLDesc(0)))
        out[("pools", pool.name())] = (ET.tostring(root, encoding="unicode"),
                                       bool(pool.isActive()))
    return out


class _ObjectsCommit:
    """As ``_SessionCommit``, for networks and pools: writes back only those this
    session changed since its last commit."""

    def __init__(self, sim_dir: Path, baseline: _Objects) -> None:
        self._sim_dir = sim_dir
        self._baseline = baseline
        self._lock = threading.Lock()

    def __call__(self, conn: Any) -> None:
        with self._lock, _locked(self._sim_dir, exclusive=True):
            current = _objects(conn)
            changed = {k: current.get(k) for k in sorted(current.keys() | self._baseline.keys())
                       if current.get(k) != self._baseline.get(k)}
            if changed:
                _write_object_changes(self._sim_dir, changed)
            self._baseline = current


def _write_object_changes(sim_dir: Path, changed: dict[tuple[str, str],
                                                       tuple[str, bool] | None]) -> None:
    store = _store(sim_dir)
    path = store / "objects.json"
    try:
        states = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError) as err:
        raise HostError(f"{path}: unreadable libvirt objects: {err}") from err
    for (kind, name), value in changed.items():
        target = store / kind / f"{name}.xml"
        if value is None:
            target.unlink(missing_ok=True)
            states.get(kind, {}).pop(name, None)
            continue
        _write_atomic(target, value[0])
        states.setdefault(kind, {})[name] = {"active": value[1]}
    _write_atomic(path, json.dumps(states, indent=2, sort_keys=True) + "\n")


def _set_object_states(conn: Any, objects: SimObjects) -> None:
    """The test driver starts every network and pool of its node file: stop those kept
    as inactive. A read-only session cannot, so it shows them active (a known limit of
    the simulated host: an inactive network or pool is only seen by read-write sessions)."""
    for name, (_xml, active) in objects.networks.items():
        if not active:
            conn.networkLookupByName(name).destroy()
    for name, (_xml, active) in objects.pools.items():
        if not active:
            conn.storagePoolLookupByName(name).destroy()


def build_node_xml(records: list[SimDomainRecord], objects: SimObjects | None = None) -> str:
    """A test-driver node file holding the domains with their run state, and the
    networks and pools."""
    parts: list[str] = []
    if objects is not None:
        for kind, items in (("network", objects.networks), ("pool", objects.pools)):
            for name, (obj_xml, _active) in items.items():
                try:
                    ET.fromstring(obj_xml)
                except ET.ParseError as err:
                    raise HostError(f"libvirt/{kind}s/{name}.xml: not valid XML: {err}") \
                        from err
                parts.append(obj_xml)
    parts += [_node_domain(r.name, r.persistent_xml, r.live_xml, r.state) for r in records]
    return f'<node>{"".join(parts)}</node>'


@functools.lru_cache(maxsize=8192)
def _node_domain(name: str, persistent_xml: str | None, live_xml: str | None,
                 state: int) -> str:
    """One domain's element of the node file ('' when it has none). Cached: every
    session open builds the node file of all domains, and most of them have not
    changed since the last open (an apply opens a session per libvirt step)."""
    text = live_xml if live_xml is not None else persistent_xml
    if text is None or (persistent_xml is None and state == STATE_SHUTOFF):
        return ""  # a transient domain exists only while it runs
    try:
        dom = ET.fromstring(text)
    except ET.ParseError as err:
        raise HostError(f"libvirt/domains/{name}.xml: not valid XML: {err}") from err
    if dom.find("uuid") is None:
        # Without a UUID the test driver would draw a random one on every open.
        uuid_el = ET.Element("uuid")
        uuid_el.text = str(uuidlib.uuid5(_AIHOW_NS, f"domain:{name}"))
        dom.insert(1, uuid_el)
    running = state != STATE_SHUTOFF
    run = ET.SubElement(dom, f"{{{TEST_NS}}}runstate")
    run.text = str(state if running else STATE_SHUTOFF)
    if persistent_xml is None:
        ET.SubElement(dom, f"{{{TEST_NS}}}transient")
    return ET.tostring(dom, encoding="unicode")  # declares the test: prefix on itself
