"""The simulated host's state, kept in ``DIR/state.json``.

Every operation on a simulated host is one transaction: take an exclusive flock on
``DIR/.lock``, read state.json, change it, write it back atomically (temp file, fsync,
rename, fsync of the directory) and re-render the sysfs tree, then unlock. Concurrent
processes therefore always see a whole state, never a half-written one.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from planner.errors import AihowError

FORMAT = 1
STATE_FILE = "state.json"
LOCK_FILE = ".lock"


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
    boot: int = 1
    next_serial: int = 1
    gpus: list[SimGpu] = Field(default_factory=list)
    mdevs: list[SimMdev] = Field(default_factory=list)
    faults: list[Fault] = Field(default_factory=list)

    def gpu(self, pci: str) -> SimGpu | None:
        return next((g for g in self.gpus if g.pci == pci), None)

    def take_serial(self) -> int:
        serial = self.next_serial
        self.next_serial += 1
        return serial


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


class SimStore:
    """Access to one simulated host directory."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).absolute()

    @property
    def state_path(self) -> Path:
        return self.root / STATE_FILE

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
        fd = os.open(self.root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def load(self) -> SimState:
        self.require()
        try:
            state = SimState.model_validate_json(self.state_path.read_text())
        except ValueError as exc:
            first = str(exc).splitlines()[0]
            raise SimError(f"{self.state_path}: corrupt simulator state ({first})") from None
        if state.format != FORMAT:
            raise SimError(f"{self.state_path}: unsupported state format {state.format}")
        return state

    def save(self, state: SimState) -> None:
        atomic_write(self.state_path, state.model_dump_json(indent=1) + "\n")
        from planner.sim.sysfs import render_sysfs

        render_sysfs(self.root, state)

    def read(self) -> SimState:
        """A consistent snapshot (taken under the lock)."""
        with self.locked():
            return self.load()

    @contextmanager
    def transaction(self, commit_on: tuple[type[BaseException], ...] = ()) -> Iterator[SimState]:
        """Lock, load, yield the state for changing, and save it if it changed.

        An exception in ``commit_on`` (an expected refusal such as a DriverError) still commits
        what was changed before it, e.g. a fault's call counter; any other exception discards.
        """
        with self.locked():
            state = self.load()
            before = state.model_dump_json()
            try:
                yield state
            except commit_on:
                if state.model_dump_json() != before:
                    self.save(state)
                raise
            if state.model_dump_json() != before:
                self.save(state)
