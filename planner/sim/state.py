"""The simulated host's state, kept in ``DIR/state.json``.

Every change to a simulated host is one transaction: take an exclusive flock on
``DIR/.lock``, read state.json, change it, write it back atomically (temp file, fsync,
rename, fsync of the directory), render again the parts of the kernel views (``DIR/sys``,
``DIR/proc``) that the change touched, then unlock. Concurrent processes therefore always
see a whole state, never a half-written one. Reading needs no transaction: see
``SimStore.snapshot``.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from planner.errors import AihowError

FORMAT = 1
STATE_FILE = "state.json"
LOCK_FILE = ".lock"
RENDER_PENDING = ".render-pending"


class SimError(AihowError):
    """A problem with a simulated host directory or a sim command's arguments."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=False)


class SimCi(_Model):
    ci_id: int
    profile_id: int  # CI profile id (== NVML CI profile enum)
    start: int  # compute slices within the GI
    size: int
    serial: int  # unique for the life of the state; stale handles are detected with it
    mig_uuid: str  # "MIG-<uuid>", fixed for the life of this instance


class SimGi(_Model):
    gi_id: int
    profile_id: int
    start: int
    size: int
    serial: int
    cis: list[SimCi] = Field(default_factory=list)


class Holder(_Model):
    """A process holding the GPU open: a service (persistenced, dcgm, fabric manager) or a
    compute process (optionally on one MIG device)."""

    pid: int
    name: str
    kind: Literal["service", "compute"]
    mig_uuid: str | None = None


class VfVgpu(_Model):
    """vendor-VFIO backend: the vGPU type written to a VF's ``current_vgpu_type``."""

    type_id: int
    gi_serial: int | None  # the GI backing a MIG-backed type


class SimGpu(_Model):
    index: int
    pci: str
    model: str  # catalog id
    uuid: str  # "GPU-<uuid>"
    gi_id_map: Literal["identity", "swapped-halves"] = "identity"
    mig_current: bool = False
    mig_pending: bool = False
    gpu_instances: list[SimGi] = Field(default_factory=list)
    holders: list[Holder] = Field(default_factory=list)
    num_vfs: int = 0
    vf_vgpus: dict[str, VfVgpu] = Field(default_factory=dict)  # VF address -> vGPU


class SimMdev(_Model):
    uuid: str
    parent: str  # the VF's address
    type_id: str  # "nvidia-474"
    gpu: str  # the PF's address
    gi_serial: int | None
    persistent: bool = False


class Fault(_Model):
    op: str
    at: int  # fire on this call (1-based) counted from when the fault was armed
    error: str  # symbolic: an NVML code name ("IN_USE") or an errno name ("EBUSY")
    calls: int = 0
    fired: bool = False


class SimState(_Model):
    format: int = FORMAT
    driver_version: str
    vgpu_backend: Literal["mdev", "vfio-vf"] | None = None
    # vfio_pci and vfio_iommu_type1 loaded, as on a host prepared for passthrough (the
    # guide's setup); a spec's ``[host] vfio = false`` gives a host that still lacks them.
    vfio_loaded: bool = True
    nvswitch: bool = False  # an HGX board: every GPU an NVLink peer of every other, via NVSwitch
    boot: int = 1
    next_serial: int = 1
    gpus: list[SimGpu] = Field(default_factory=list)
    mdevs: list[SimMdev] = Field(default_factory=list)
    faults: list[Fault] = Field(default_factory=list)

    def gpu(self, pci: str) -> SimGpu | None:
        by_pci = _indexes(self)[1]
        i = by_pci.get(pci)
        if i is not None and i < len(self.gpus) and self.gpus[i].pci == pci:
            return self.gpus[i]
        by_pci.clear()
        by_pci.update((g.pci, i) for i, g in enumerate(self.gpus))
        i = by_pci.get(pci)
        return None if i is None else self.gpus[i]

    def gpu_at(self, index: int) -> SimGpu | None:
        """The GPU with this NVML index."""
        by_index = _indexes(self)[2]
        i = by_index.get(index)
        if i is not None and i < len(self.gpus) and self.gpus[i].index == index:
            return self.gpus[i]
        by_index.clear()
        by_index.update((g.index, i) for i, g in enumerate(self.gpus))
        i = by_index.get(index)
        return None if i is None else self.gpus[i]

    def take_serial(self) -> int:
        serial = self.next_serial
        self.next_serial += 1
        return serial


# GPU list positions by PCI address and by NVML index, per SimState, built on first use:
# a probe looks GPUs up hundreds of thousands of times. Every hit is checked against the
# list, so a list changed since falls back to a rebuilt table. Kept beside the model (not
# as pydantic private attributes, whose every access costs microseconds).
_INDEXES: dict[int, tuple[weakref.ref[SimState], dict[str, int], dict[int, int]]] = {}


def _indexes(state: SimState) -> tuple[weakref.ref[SimState], dict[str, int], dict[int, int]]:
    key = id(state)
    entry = _INDEXES.get(key)
    if entry is None or entry[0]() is not state:
        ref = weakref.ref(state, lambda _, key=key: _INDEXES.pop(key, None))  # type: ignore[misc]
        entry = _INDEXES[key] = (ref, {}, {})
    return entry


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: str | bytes, mode: int = 0o644) -> None:
    """Write ``path`` so that readers see the old or the new content, never a mix."""
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


class _Snapshot:
    """state.json as last read: the open file (so its inode cannot be reused while the
    snapshot is cached), its identity, its text and, parsed once on demand, its state."""

    def __init__(self, fd: int, key: tuple[int, ...], raw: bytes) -> None:
        self.fd = fd
        self.key = key
        self.raw = raw
        self.state: SimState | None = None


def _file_key(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


# Parsed state.json per simulated host directory, for the read-only calls of this process.
# A few directories at most (each entry holds a file descriptor open).
_SNAPSHOTS: OrderedDict[Path, _Snapshot] = OrderedDict()
_SNAPSHOTS_LOCK = threading.Lock()
_MAX_SNAPSHOTS = 8


class SimStore:
    """Access to one simulated host directory.

    Reads and writes follow two rules that make the simulator both fast and
    crash-consistent (see docs/architecture.md, "Simulator"):

    * state.json is only ever replaced whole (``atomic_write``), so a reader without the
      lock sees a whole state, and a file that still has the inode, size and times it had
      when it was parsed still holds the same text: ``snapshot()`` reuses the parsed state
      until the file changes, and read-only operations need neither the lock nor a parse.
    * A commit writes ``.render-pending`` before it replaces state.json and removes it once
      the kernel views (``sys/``, ``proc/``) show the new state. A process killed in between
      leaves the marker, and the next access to the host renders the views again from
      state.json before anything reads them.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).absolute()
        self.state_path = self.root / STATE_FILE
        self.pending_path = self.root / RENDER_PENDING
        self._state_file = str(self.state_path)  # os.stat on a str: no pathlib per query

    def exists(self) -> bool:
        return self.state_path.is_file()

    def require(self) -> None:
        if not self.exists():
            raise SimError(
                f"{self.root}: not a simulated host (no {STATE_FILE}; run 'aihow sim init')"
            )

    @contextmanager
    def locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / LOCK_FILE,
                     os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    # -- reading

    def _current(self) -> _Snapshot:
        """The snapshot of state.json as it is now: the cached one while the file is the
        same, else a fresh read (no lock needed: the file is replaced, never rewritten)."""
        try:
            key = _file_key(os.stat(self._state_file))
        except (FileNotFoundError, NotADirectoryError):
            self.require()
            raise
        with _SNAPSHOTS_LOCK:
            snap = _SNAPSHOTS.get(self.root)
            if snap is not None and snap.key == key:
                _SNAPSHOTS.move_to_end(self.root)
                return snap
        fd = os.open(self._state_file, os.O_RDONLY | os.O_CLOEXEC)
        try:
            key = _file_key(os.fstat(fd))
            chunks = []
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
        except BaseException:
            os.close(fd)
            raise
        snap = _Snapshot(fd, key, b"".join(chunks))
        with _SNAPSHOTS_LOCK:
            old = _SNAPSHOTS.pop(self.root, None)
            _SNAPSHOTS[self.root] = snap
            while len(_SNAPSHOTS) > _MAX_SNAPSHOTS:
                _, evicted = _SNAPSHOTS.popitem(last=False)
                os.close(evicted.fd)
        if old is not None:
            os.close(old.fd)
        return snap

    def _parse(self, raw: bytes) -> SimState:
        try:
            state = SimState.model_validate_json(raw)
        except ValueError as exc:
            first = str(exc).splitlines()[0]
            raise SimError(f"{self.state_path}: corrupt simulator state ({first})") from None
        if state.format != FORMAT:
            raise SimError(f"{self.state_path}: unsupported state format {state.format}")
        return state

    def snapshot(self) -> SimState:
        """The current state, shared with every other caller of this process until
        state.json changes: read it, never change it. Takes no lock, and waits for none."""
        snap = self._current()
        state = snap.state
        if state is None:
            # A new state.json: if a commit was killed before its views were rendered, no
            # one holds the lock and the marker is still there. Render them now.
            if self.pending_path.exists() and self._repair_unless_busy():
                snap = self._current()
            state = snap.state = self._parse(snap.raw)
        return state

    def load(self) -> SimState:
        """A private copy of the current state (the caller may change it)."""
        self.require()
        return self._parse(self._current().raw)

    def read(self) -> SimState:
        """A consistent snapshot (taken under the lock), the caller's own to change."""
        with self.locked():
            self._repair_locked()
            return self.load()

    # -- writing

    def save(self, state: SimState) -> None:
        """Replace the whole state and render every kernel view from it (``sim init``)."""
        from planner.sim.sysfs import render_sysfs  # here: planner.sim.sysfs imports this module

        self._mark_pending()
        atomic_write(self.state_path, _dump(state))
        render_sysfs(self.root, state)
        self.pending_path.unlink(missing_ok=True)

    def _commit(self, before: SimState, after: SimState, text: bytes) -> None:
        from planner.sim.sysfs import render_changes  # here: planner.sim.sysfs imports this module

        self._mark_pending()
        atomic_write(self.state_path, text)
        render_changes(self.root, before, after)
        self.pending_path.unlink(missing_ok=True)

    def _mark_pending(self) -> None:
        # No fsync of its own: the directory fsync that commits state.json commits the
        # marker's entry with it (or before it), never after.
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.pending_path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        os.close(fd)

    def _repair_unless_busy(self) -> bool:
        """Repair now if no one holds the lock (a holder is committing; its marker is no
        sign of a killed commit). Whether a repair ran."""
        fd = os.open(self.root / LOCK_FILE,
                     os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            try:
                if not self.pending_path.exists():
                    return False
                self._repair_locked()
                return True
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _repair_locked(self) -> None:
        if not self.pending_path.exists():
            return
        from planner.sim.sysfs import render_sysfs  # here: planner.sim.sysfs imports this module

        render_sysfs(self.root, self.load())
        self.pending_path.unlink(missing_ok=True)

    @contextmanager
    def transaction(self, commit_on: tuple[type[BaseException], ...] = ()) -> Iterator[SimState]:
        """Lock, load, yield the state for changing, and save it if it changed.

        An exception in ``commit_on`` (an expected refusal such as a DriverError) still commits
        what was changed before it, e.g. a fault's call counter; any other exception discards.
        Only what the change touched is rendered again in ``sys/`` and ``proc/``.
        """
        self.require()  # before the lock: a directory that is no host gets nothing written
        with self.locked():
            self.require()
            self._repair_locked()
            snap = self._current()
            state = self._parse(snap.raw)
            try:
                yield state
            except commit_on:
                self._commit_if_changed(snap, state)
                raise
            self._commit_if_changed(snap, state)

    def _commit_if_changed(self, snap: _Snapshot, state: SimState) -> None:
        text = _dump(state)
        if text == snap.raw:
            return
        before = snap.state if snap.state is not None else self._parse(snap.raw)
        self._commit(before, state, text)


def _dump(state: SimState) -> bytes:
    return state.model_dump_json(indent=1).encode() + b"\n"
