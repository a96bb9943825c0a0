"""A libvirt test-driver session on the domains kept in a simulated host's store.

libvirt's test driver is a complete in-process hypervisor that keeps its state in
memory only, so a session opens it on a node file built from the store
(``planner.sim.libvirt_store``) and ``commit()`` writes back what the session changed, so
the next process (plan, apply, probe) sees what the previous one left. Several sessions
may commit at once (apply's branch threads share one; other processes open their own):
a commit writes and deletes only the domains its own session changed since its last
commit, under the store's lock, so it never undoes another session's work. On a whole
simulated host it reads back only what its calls marked (``planner.sim.libvirt_changes``).

Run state travels into the test driver through its own node-file extensions
(``<test:runstate>``, ``<test:transient/>``), so a running domain is running again,
with its live XML, in the next process. A read-write session on a whole simulated host
also honours the simulator's injected faults (``planner.sim.libvirt_faults``).
"""

from __future__ import annotations

import os
import tempfile
import threading
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from planner.host.errors import HostError
from planner.host.libvirt_conn import LibvirtSession, connect
from planner.sim.libvirt_changes import Changes
from planner.sim.libvirt_faults import guard_with_faults, track_changes
from planner.sim.libvirt_store import (
    SimDomainRecord,
    SimObjects,
    StoreSnapshot,
    build_node_xml,
    store_lock,
    store_snapshot,
    write_changes,
    write_object_changes,
)


def open_sim_libvirt(host_uri: str, sim_dir: Path, *, read_only: bool = False
                     ) -> LibvirtSession:
    """A test-driver session holding the domains kept in ``sim_dir``; ``commit()`` writes
    them back."""
    if not sim_dir.is_dir():
        raise HostError(f"{host_uri}: no such directory {sim_dir}")
    snap = store_snapshot(sim_dir)
    records, objects = snap.records, snap.objects
    if read_only:
        # One read-only connection per state of the store, shared by every reader of this
        # process (a probe of one GPU runs twice per vGPU apply creates): it cannot
        # change, and it is dropped with its snapshot (libvirt closes it when no session
        # holds it any more).
        return LibvirtSession(conn=snap.derived("read_only_conn", _read_only_conn),
                              uri=f"{host_uri} (libvirt test driver)", read_only=True,
                              autostart={r.name: r.autostart for r in records
                                         if r.persistent_xml is not None},
                              persist=_refused, shared=True)
    conn = _connect_node(snap.derived("node_xml", _node_xml), read_only=False)
    _set_object_states(conn, objects)
    if (sim_dir / "state.json").is_file():  # a whole simulated host: faults apply
        guard_with_faults(conn, sim_dir)
    # A running domain whose persistent definition differs from its live one: the node
    # file carried the live XML, defining the persistent one makes it pending.
    for rec in records:
        if rec.live_xml is not None and rec.persistent_xml is not None:
            conn.defineXML(rec.persistent_xml)
    for rec in records:
        if rec.autostart and rec.persistent_xml is not None:
            conn.lookupByName(rec.name).setAutostart(1)

    changes = track_changes(conn)  # (None on a store that is no whole simulated host)
    held = _records(conn)
    # Names kept on disk that the test driver could not hold (a transient domain that is
    # shut off) count as this session's removals: its first commit deletes them.
    gone = {r.name for r in records} - held.keys()
    if changes is not None:
        for name in gone:
            changes.domain(name)
    domains_commit = _SessionCommit(sim_dir, {**{r.name: r for r in records}, **held},
                                    changes)
    objects_commit = _ObjectsCommit(sim_dir, _objects(conn), changes)

    def persist(live: Any) -> None:
        domains_commit(live)
        objects_commit(live)
    return LibvirtSession(conn=conn, uri=f"{host_uri} (libvirt test driver)",
                          persist=persist)


def _refused(conn: Any) -> None:
    """A read-only session's ``persist``: never called (``commit()`` refuses first), but
    present, so that committing one is the error it is on a simulated host."""
    raise HostError("a read-only libvirt session cannot commit")


def _node_xml(snap: StoreSnapshot) -> str:
    return build_node_xml(snap.records, snap.objects)


def _read_only_conn(snap: StoreSnapshot) -> Any:
    return _connect_node(snap.derived("node_xml", _node_xml), read_only=True)


def _connect_node(node_xml: str, *, read_only: bool) -> Any:
    """A test-driver connection on a node file holding ``node_xml``."""
    fd, node_path = tempfile.mkstemp(prefix="aihow-libvirt-", suffix=".xml")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(node_xml)
        return connect(f"test://{node_path}", read_only=read_only)
    finally:
        os.unlink(node_path)  # the test driver has read it; it keeps state in memory


class _SessionCommit:
    """A session's ``commit``: writes back the domains that changed in this session since
    its last commit (or since it was opened), and nothing else.

    Other sessions commit to the same store at the same time: apply's branch threads
    share one session, and other processes (a probe, another apply with its own state
    directory) open their own. Each compares what its test driver holds now with what it
    held at its last commit (its own, under its thread lock) and writes only what
    differs, under the store's lock, so no commit rewrites or deletes a domain it did not
    change from a stale view of the store.
    """

    def __init__(self, sim_dir: Path, baseline: dict[str, SimDomainRecord],
                 changes: Changes | None) -> None:
        self._sim_dir = sim_dir
        self._baseline = baseline
        self._changes = changes  # what calls marked (None: compare every domain)
        self._lock = threading.Lock()  # the baseline is one per session, shared by threads

    def __call__(self, conn: Any) -> None:
        with self._lock:
            # The session's own test driver is read outside the store's lock (nothing
            # else writes it), so readers of the store wait only for the writes. Only
            # the domains that calls marked are read back, where calls are marked.
            marked = None if self._changes is None else self._changes.take_domains()
            if marked is None:
                current = _records(conn)
                names = current.keys() | self._baseline.keys()
                after = current
            else:
                current = _records_named(conn, marked)
                names = set(marked)
                after = {n: r for n, r in self._baseline.items() if n not in marked}
                after.update(current)
            changed = {name: current.get(name) for name in sorted(names)
                       if current.get(name) != self._baseline.get(name)}
            if changed:
                with store_lock(self._sim_dir, exclusive=True):
                    write_changes(self._sim_dir, changed)
            self._baseline = after


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


def _records_named(conn: Any, names: set[str]) -> dict[str, SimDomainRecord]:
    """Those of ``names`` that the test driver holds, by name (a name it does not hold,
    or no longer holds, is absent)."""
    import libvirt  # a heavy C binding: loaded at first use, not at start-up

    out = {}
    for name in sorted(names):
        try:
            out[name] = _record_of(conn.lookupByName(name))
        except libvirt.libvirtError as err:
            if err.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise
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

    def __init__(self, sim_dir: Path, baseline: _Objects, changes: Changes | None) -> None:
        self._sim_dir = sim_dir
        self._baseline = baseline
        self._changes = changes  # what calls marked (None: compare them all)
        self._lock = threading.Lock()

    def __call__(self, conn: Any) -> None:
        with self._lock:
            if self._changes is not None and not self._changes.take_objects():
                return  # no call that may change a network or pool since the last one
            current = _objects(conn)  # (outside the store's lock, as domains are)
            changed = {k: current.get(k) for k in sorted(current.keys() | self._baseline.keys())
                       if current.get(k) != self._baseline.get(k)}
            if changed:
                with store_lock(self._sim_dir, exclusive=True):
                    write_object_changes(self._sim_dir, changed)
            self._baseline = current


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
