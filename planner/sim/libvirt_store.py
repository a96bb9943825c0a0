"""The files that keep a simulated host's libvirt in DIR, and reading them.

libvirt's test driver keeps its state in memory only, so the simulated host keeps its
domains, networks and pools in files (``planner.sim.libvirt_session`` opens a test-driver
session on them and commits back what it changed). The store:

    DIR/libvirt/domains/NAME.xml   persistent (inactive) XML of each defined domain
    DIR/libvirt/live/NAME.xml      live XML of a running domain, when it differs from
                                   the persistent XML, and of every transient domain
    DIR/libvirt/runstate.json      {"NAME": {"state": virDomainState, "persistent": bool,
                                             "autostart": bool}}
    DIR/libvirt/networks/NAME.xml  each network's definition
    DIR/libvirt/pools/NAME.xml     each storage pool's definition, its volumes inside
    DIR/libvirt/objects.json       {"networks"|"pools": {"NAME": {"active": bool}}}

Every file is replaced whole (never rewritten in place), and every commit replaces
runstate.json and objects.json. So a process keeps what it read (``store_snapshot``)
until the store changes. An inotify watch on the store's directories
(``planner.sim.dir_watch``) says whether anything changed since; when something did (or
without inotify), the key is the identity (inode, size, times) of each file, and only
the files whose identity changed are read again. The two JSON files a snapshot read stay
open meanwhile, so their inode numbers cannot be reused by a later commit. Without
inotify, a hand edit in place that keeps a file's size within one tick of the file
system's clock can go unseen; aihow's own writes cannot.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import functools
import json
import os
import threading
import uuid as uuidlib
import xml.etree.ElementTree as ET
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from planner.host.errors import HostError
from planner.sim.dir_watch import DirWatch

TEST_NS = "http://libvirt.org/schemas/domain/test/1.0"
STATE_RUNNING = 1
STATE_SHUTOFF = 5
ET.register_namespace("test", TEST_NS)
_AIHOW_NS = uuidlib.UUID("6b1f3c52-6f0e-5c1e-9a55-61686f772d6c")  # uuid5 namespace for names


@dataclass(frozen=True)
class SimDomainRecord:
    """One domain as kept in DIR/libvirt."""

    name: str
    persistent_xml: str | None  # None for a transient domain
    live_xml: str | None = None  # only when running and different from persistent_xml
    state: int = STATE_SHUTOFF
    autostart: bool = False


def _store(sim_dir: Path) -> Path:
    return sim_dir / "libvirt"


@contextlib.contextmanager
def store_lock(sim_dir: Path, exclusive: bool) -> Iterator[None]:
    """The store's lock: shared to read it, exclusive to change it."""
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


@dataclass
class SimObjects:
    """Networks and pools (volumes inside) as kept in DIR/libvirt: (XML, active)."""

    networks: dict[str, tuple[str, bool]]
    pools: dict[str, tuple[str, bool]]


_T = TypeVar("_T")
_JSON_FILES = ("runstate.json", "objects.json")
_XML_DIRS = ("domains", "live", "networks", "pools")


@dataclass
class StoreSnapshot:
    """The store as one read found it: share it, never change it. ``derived`` keeps
    what callers work out from it (a node file, the running devices) for as long as the
    snapshot stands."""

    key: tuple[Any, ...]
    records: tuple[SimDomainRecord, ...]
    objects: SimObjects
    held: tuple[int, ...]  # open JSON files, so their inode numbers stay taken
    texts: dict[tuple[str, str], tuple[_Ident, str]]  # the XML files read, with identities
    watch: DirWatch | None = None  # changes since the snapshot was taken or last confirmed
    _derived: dict[str, Any] = field(default_factory=dict)

    def derived(self, name: str, make: Callable[[StoreSnapshot], _T]) -> _T:
        if name not in self._derived:  # two threads may both make it: same result
            self._derived[name] = make(self)
        return self._derived[name]


_Ident = tuple[int, int, int, int]  # inode, size, mtime and ctime (ns) of a file


@dataclass(frozen=True)
class _Listing:
    """What one look at the store found: the identity of each JSON file (None: absent)
    and of each XML file, by directory and name."""

    json: tuple[_Ident | None, ...]
    xml: dict[str, dict[str, _Ident]]

    @property
    def key(self) -> tuple[Any, ...]:
        return (self.json, *(tuple(sorted(self.xml[sub].items())) for sub in _XML_DIRS))


def _ident(st: os.stat_result) -> _Ident:
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _listing(store: Path) -> _Listing:
    """The identity of every file of the store (see the module's docstring)."""
    json_ids: list[_Ident | None] = []
    for name in _JSON_FILES:
        try:
            json_ids.append(_ident(os.stat(store / name)))
        except FileNotFoundError:
            json_ids.append(None)
    xml: dict[str, dict[str, _Ident]] = {}
    for sub in _XML_DIRS:
        files: dict[str, _Ident] = {}
        try:
            with os.scandir(store / sub) as entries:
                for e in entries:
                    if e.name.endswith(".xml") and not e.name.startswith("."):
                        try:
                            files[e.name[:-4]] = _ident(e.stat())
                        except FileNotFoundError:
                            continue  # removed since the listing (by hand: no lock)
        except (FileNotFoundError, NotADirectoryError):
            pass
        xml[sub] = files
    return _Listing(tuple(json_ids), xml)


class _XmlTexts:
    """The XML files' texts by (directory, name), each with the identity it was read at:
    a new snapshot reads again only the files whose identity changed (a commit replaces a
    few files; reading all of them again made each change cost O(domains))."""

    def __init__(self, store: Path, listing: _Listing,
                 previous: dict[tuple[str, str], tuple[_Ident, str]]) -> None:
        self._store = store
        self._listing = listing
        self._previous = previous
        self.read: dict[tuple[str, str], tuple[_Ident, str]] = {}

    def names(self, sub: str) -> list[str]:
        return sorted(self._listing.xml[sub])

    def text(self, sub: str, name: str) -> str | None:
        ident = self._listing.xml[sub].get(name)
        if ident is None:
            return None
        hit = self._previous.get((sub, name))
        if hit is not None and hit[0] == ident:
            self.read[(sub, name)] = hit
            return hit[1]
        try:
            text = (self._store / sub / f"{name}.xml").read_text()
        except FileNotFoundError:
            return None  # removed by hand since the listing
        self.read[(sub, name)] = (ident, text)
        return text


_SNAPSHOTS: OrderedDict[Path, StoreSnapshot] = OrderedDict()
_SNAPSHOTS_LOCK = threading.Lock()
_MAX_SNAPSHOTS = 8  # stores per process; each holds two files open


@atexit.register
def _forget_snapshots() -> None:
    """Drop every snapshot at exit, while libvirt's module is still there to close the
    connections derived from them (at interpreter teardown it may be gone)."""
    with _SNAPSHOTS_LOCK:
        gone = list(_SNAPSHOTS.values())
        _SNAPSHOTS.clear()
    for snap in gone:
        snap._derived.clear()
        _release(snap)


def store_snapshot(sim_dir: Path) -> StoreSnapshot:
    """The store as it is now: the snapshot read before while no file has changed since
    (the calls of one apply read the same store hundreds of times), else a new read."""
    store = _store(sim_dir)
    with store_lock(sim_dir, exclusive=False):
        with _SNAPSHOTS_LOCK:
            found = _SNAPSHOTS.get(store)
        if found is not None and found.watch is not None and not found.watch.changed():
            with _SNAPSHOTS_LOCK:
                if _SNAPSHOTS.get(store) is found:  # (not evicted meanwhile)
                    _SNAPSHOTS.move_to_end(store)
            return found
        # The watch begins before the listing, so nothing done after it goes unseen.
        watch = _watch(store)
        listing = _listing(store)
        key = listing.key
        if found is not None and found.key == key:
            with _SNAPSHOTS_LOCK:
                if _SNAPSHOTS.get(store) is found:
                    stale, found.watch = found.watch, watch
                    _SNAPSHOTS.move_to_end(store)
                else:  # another thread replaced or evicted it meanwhile: nothing owns this
                    stale = watch
            if stale is not None:
                stale.close()
            return found
        held = []
        try:
            texts: list[str | None] = []
            for name in _JSON_FILES:
                try:
                    fd = os.open(store / name, os.O_RDONLY | os.O_CLOEXEC)
                except FileNotFoundError:
                    texts.append(None)
                    continue
                held.append(fd)
                with open(os.dup(fd), encoding="utf-8") as f:
                    texts.append(f.read())
            xml = _XmlTexts(store, listing, found.texts if found is not None else {})
            snap = StoreSnapshot(key, _read_domains(store, texts[0], xml),
                                 _read_objects(store, texts[1], xml), tuple(held), xml.read,
                                 watch)
        except BaseException:
            for fd in held:
                os.close(fd)
            if watch is not None:
                watch.close()
            raise
    with _SNAPSHOTS_LOCK:
        old = _SNAPSHOTS.pop(store, None)
        _SNAPSHOTS[store] = snap
        evicted = [old] if old is not None else []
        while len(_SNAPSHOTS) > _MAX_SNAPSHOTS:
            evicted.append(_SNAPSHOTS.popitem(last=False)[1])
    for gone in evicted:  # (a thread still using it reads its records, not its files)
        _release(gone)
    return snap


def _watch(store: Path) -> DirWatch | None:
    """A watch on the store's directories (the store's own catches a subdirectory that
    appears later); None while there is no store yet (its listing is then cheap)."""
    if not store.is_dir():
        return None
    return DirWatch.start([store, *(store / sub for sub in _XML_DIRS)], ignore=(".lock",))


def _release(snap: StoreSnapshot) -> None:
    for fd in snap.held:
        os.close(fd)
    if snap.watch is not None:
        snap.watch.close()


def _read_domains(store: Path, states_text: str | None, xml: _XmlTexts
                  ) -> tuple[SimDomainRecord, ...]:
    """The domains kept in the store, sorted by name; the caller holds its lock."""
    states_path = store / "runstate.json"
    try:
        states = json.loads(states_text) if states_text is not None else {}
    except ValueError as err:
        raise HostError(f"{states_path}: unreadable libvirt run state: {err}") from err
    records = []
    for name in sorted(set(xml.names("domains")) | set(xml.names("live"))):
        persistent, live = xml.text("domains", name), xml.text("live", name)
        if persistent is None and live is None:
            continue  # removed by hand since the listing
        info = states.get(name, {})
        records.append(
            SimDomainRecord(
                name=name,
                persistent_xml=persistent,
                live_xml=live,
                state=int(info.get("state", STATE_SHUTOFF)),
                autostart=bool(info.get("autostart", False)),
            )
        )
    return tuple(records)


def _read_objects(store: Path, states_text: str | None, xml: _XmlTexts) -> SimObjects:
    """The networks and pools kept in the store; the caller holds its lock."""
    path = store / "objects.json"
    out = SimObjects({}, {})
    try:
        states = json.loads(states_text) if states_text is not None else {}
    except ValueError as err:
        raise HostError(f"{path}: unreadable libvirt objects: {err}") from err
    for kind, into in (("networks", out.networks), ("pools", out.pools)):
        for name in xml.names(kind):
            text = xml.text(kind, name)
            if text is None:
                continue
            active = bool(states.get(kind, {}).get(name, {}).get("active", True))
            into[name] = (text, active)
    return out


def load_sim_domains(sim_dir: Path) -> list[SimDomainRecord]:
    """The domains kept in DIR/libvirt, sorted by name. XML files dropped into
    ``domains/`` by hand count as defined, shut-off domains."""
    return list(store_snapshot(sim_dir).records)


def load_sim_objects(sim_dir: Path) -> SimObjects:
    """The networks and pools kept in DIR/libvirt (shared: read them, never change them)."""
    return store_snapshot(sim_dir).objects


def _write_atomic(path: Path, text: str) -> None:
    """Through an unpredictable temporary name created exclusively (a link planted at a
    guessable name cannot redirect the write)."""
    from planner.sim.state import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text)


def write_changes(sim_dir: Path, changed: dict[str, SimDomainRecord | None]) -> None:
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
    with store_lock(sim_dir, exclusive=True):
        write_changes(sim_dir, changed)
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


def write_object_changes(sim_dir: Path, changed: dict[tuple[str, str],
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


def build_node_xml(records: Sequence[SimDomainRecord], objects: SimObjects | None = None) -> str:
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
