"""sysfs adapter: the kernel's view of GPUs, SR-IOV VFs and vGPU devices.

``Sysfs(root)`` reads paths such as ``sys/bus/pci/devices/...`` under ``root`` (``/`` on a
real host, the simulator's DIR for ``sim:DIR``). Writes go through ``writer`` when one is
given, so on a simulated host the simulated kernel sees them and reacts (mdev
create/remove, current_vgpu_type, sriov_numvfs), as the real kernel would.

The vGPU reader knows both NVIDIA layouts: the mdev framework (parents under
``class/mdev_bus``, types under ``mdev_supported_types``, devices under
``bus/mdev/devices``) and the vendor VFIO files of vGPU 17+ (``nvidia/creatable_vgpu_types``
and ``nvidia/current_vgpu_type`` on each VF).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from planner.host.errors import HostError
from planner.host.state import Mdev, VgpuParent, VgpuType
from planner.lang.pci import normalize_pci

PCI_DEVICES = "sys/bus/pci/devices"
MDEV_BUS = "sys/class/mdev_bus"
MDEV_DEVICES = "sys/bus/mdev/devices"
MDEVCTL_CONFIG = "etc/mdevctl.d"

# "1414 : NVIDIA H200X-1-18C"; the header line of creatable_vgpu_types does not match.
_CREATABLE_LINE = re.compile(r"^\s*(\d+)\s*:\s*(\S.*?)\s*$")


class Sysfs:
    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        writer: Callable[[str, str], None] | None = None,
        writable: bool = True,
    ) -> None:
        self.root = Path(root)
        self._base = os.fspath(self.root)
        self._writer = writer
        self._writable = writable

    def path(self, rel: str) -> Path:
        return self.root / rel.lstrip("/")

    def _at(self, rel: str) -> str:
        # Plain strings, not Path objects: a probe reads thousands of attributes.
        return os.path.join(self._base, rel.lstrip("/"))

    def exists(self, rel: str) -> bool:
        return os.path.exists(self._at(rel))

    def read(self, rel: str) -> str:
        """A sysfs attribute's text without the trailing newline."""
        try:
            return _read_text(self._at(rel)).rstrip("\n")
        except OSError as err:
            raise HostError(f"cannot read /{rel.lstrip('/')}: {err.strerror}") from err

    def read_optional(self, rel: str) -> str | None:
        """Like ``read``; None where there is no such file (or a directory)."""
        try:
            return _read_text(self._at(rel)).rstrip("\n")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        except OSError as err:
            raise HostError(f"cannot read /{rel.lstrip('/')}: {err.strerror}") from err

    def list(self, rel: str) -> list[str]:
        """Entry names of a directory, sorted; empty when it does not exist."""
        p = self._at(rel)
        try:
            return sorted(os.listdir(p)) if os.path.isdir(p) else []
        except OSError as err:
            raise HostError(f"cannot list /{rel.lstrip('/')}: {err.strerror}") from err

    def link_name(self, rel: str) -> str | None:
        """The last component of a symlink's target (``driver`` -> ``nvidia``); None when
        there is no such link, or it went while we read it (an mdev removed meanwhile)."""
        try:
            return os.path.basename(os.readlink(self._at(rel)).rstrip("/"))
        except OSError:  # not a link (EINVAL), or gone (ENOENT)
            return None

    def resolve_parent_name(self, rel: str) -> str | None:
        """The name of the directory a symlinked device really lives in; None when it is
        not there, or went while we resolved it (an mdev of another GPU removed meanwhile:
        ``os.path.realpath`` reads each link it meets and raises if one just went)."""
        p = self._at(rel)
        try:
            if not os.path.exists(p):
                return None
            return os.path.basename(os.path.dirname(os.path.realpath(p)))
        except OSError:
            return None

    def write(self, rel: str, value: str) -> None:
        rel = rel.lstrip("/")
        if not self._writable:
            raise HostError(f"/{rel}: sysfs is open read-only")
        try:
            if self._writer is not None:
                self._writer(rel, value)
                return
            with open(self._at(rel), "w") as f:  # one write(2), as sysfs expects
                f.write(value)
        except OSError as err:
            raise HostError(f"cannot write {value!r} to /{rel}: {err.strerror}") from err

    # --- PCI -------------------------------------------------------------------------

    def pci_driver(self, pci: str) -> str | None:
        """The kernel driver bound to a PCI device (nvidia, vfio-pci, ...) or None."""
        return self.link_name(f"{PCI_DEVICES}/{pci}/driver")

    def physfn(self, pci: str) -> str | None:
        name = self.link_name(f"{PCI_DEVICES}/{pci}/physfn")
        return normalize_pci(name) if name else None

    def functions_of(self, pf: str) -> set[str]:
        """The PF's own device name and those of its VFs, from its ``virtfnN`` links (the
        kernel's SR-IOV ABI), without reading every other device on the bus."""
        names = {pf}
        for entry in self.list(f"{PCI_DEVICES}/{pf}"):
            if entry.startswith("virtfn") and entry[6:].isdigit():
                vf = self.link_name(f"{PCI_DEVICES}/{pf}/{entry}")
                if vf:
                    names.add(vf)
        return names


def _read_text(path: str) -> str:
    """A small file's text in open(2), read(2) until the end, close(2): a probe reads
    thousands of attributes, and ``open()`` adds a stat, an ioctl and a seek to each."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode(errors="replace")


@dataclass(frozen=True)
class VgpuView:
    backend: Literal["mdev", "vfio-vf"] | None
    parents: tuple[VgpuParent, ...]
    mdevs: tuple[Mdev, ...]


def _pci_or_none(name: str) -> str | None:
    try:
        return normalize_pci(name)
    except ValueError:
        return None


def read_mdev_parents(sysfs: Sysfs, scope: set[str] | None = None) -> tuple[VgpuParent, ...]:
    """The mdev parents (those named in ``scope`` only, when given) with their types."""
    parents = []
    for name in sysfs.list(MDEV_BUS):
        pci = _pci_or_none(name)
        if pci is None or (scope is not None and name not in scope):
            continue
        pf = sysfs.physfn(name)
        types_dir = f"{PCI_DEVICES}/{name}/mdev_supported_types"
        types = []
        for type_id in sysfs.list(types_dir):
            base = f"{types_dir}/{type_id}"
            available = sysfs.read_optional(f"{base}/available_instances")
            types.append(
                VgpuType(
                    type_id=type_id,
                    name=sysfs.read_optional(f"{base}/name") or type_id,
                    available_instances=int(available) if available else 0,
                )
            )
        parents.append(
            VgpuParent(pci=pci, physfn=pf, backend="mdev", types=tuple(types))
        )
    return tuple(sorted(parents, key=lambda p: p.pci))


def parse_creatable_types(text: str) -> tuple[VgpuType, ...]:
    """The lines of ``nvidia/creatable_vgpu_types``; each VF can hold one vGPU."""
    types = []
    for line in text.splitlines():
        m = _CREATABLE_LINE.match(line)
        if m:
            types.append(VgpuType(type_id=m[1], name=m[2], available_instances=1))
    return tuple(types)


def read_vfio_vf_parents(sysfs: Sysfs, scope: set[str] | None = None
                         ) -> tuple[VgpuParent, ...]:
    """The VFs offering vGPU types (those named in ``scope`` only, when given)."""
    parents = []
    for name in sorted(scope) if scope is not None else sysfs.list(PCI_DEVICES):
        pci = _pci_or_none(name)
        if pci is None:
            continue
        base = f"{PCI_DEVICES}/{name}/nvidia"
        creatable = sysfs.read_optional(f"{base}/creatable_vgpu_types")
        if creatable is None:
            continue
        current = (sysfs.read_optional(f"{base}/current_vgpu_type") or "0").strip()
        parents.append(
            VgpuParent(
                pci=pci,
                physfn=sysfs.physfn(name),
                backend="vfio-vf",
                types=parse_creatable_types(creatable),
                current_type=None if current in ("", "0") else current,
            )
        )
    return tuple(sorted(parents, key=lambda p: p.pci))


_UUID_NAME = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")


def read_mdevs(sysfs: Sysfs, parents: set[str] | None = None) -> tuple[Mdev, ...]:
    """The mdevs that exist (on the parents named in ``parents`` only, when given)."""
    if parents is not None:
        return _read_mdevs_of(sysfs, parents)
    mdevs = []
    for uuid in sysfs.list(MDEV_DEVICES):
        rel = f"{MDEV_DEVICES}/{uuid}"
        parent = sysfs.resolve_parent_name(rel)
        if parent is None:
            continue  # vanished while we looked
        mdev = _mdev(sysfs, uuid, _pci_or_none(parent) or parent, parent, rel)
        if mdev is not None:
            mdevs.append(mdev)
    return tuple(sorted(mdevs, key=lambda m: m.uuid))


def _read_mdevs_of(sysfs: Sysfs, parents: set[str]) -> tuple[Mdev, ...]:
    """The mdevs of the named parents, from each parent's own directory: an mdev device
    is a child of its parent device in sysfs (``/sys/bus/mdev/devices/UUID`` links
    there), so no other parent's devices are read (one GPU's read-back must not grow
    with the number of GPUs)."""
    mdevs = []
    for parent in sorted(parents):
        for name in sysfs.list(f"{PCI_DEVICES}/{parent}"):
            if not _UUID_NAME.match(name):
                continue
            mdev = _mdev(sysfs, name, parent, parent, f"{PCI_DEVICES}/{parent}/{name}")
            if mdev is not None:
                mdevs.append(mdev)
    return tuple(sorted(mdevs, key=lambda m: m.uuid))


def _mdev(sysfs: Sysfs, uuid: str, parent_pci: str, parent: str, rel: str) -> Mdev | None:
    type_id = sysfs.link_name(f"{rel}/mdev_type")
    if type_id is None:
        return None  # not an mdev, or removed while we looked
    return Mdev(uuid=uuid.lower(), parent=parent_pci, type_id=type_id,
                persistent=sysfs.exists(f"{MDEVCTL_CONFIG}/{parent}/{uuid}"))


def read_vgpu(sysfs: Sysfs, physfn: str | None = None) -> VgpuView:
    """vGPU parents, their types and the mdevs that exist, with the backend in use; with
    ``physfn``, only the parents of that PF (itself included) and their mdevs."""
    scope = None if physfn is None else sysfs.functions_of(physfn)
    mdev_parents = read_mdev_parents(sysfs, scope)
    vf_parents = read_vfio_vf_parents(sysfs, scope)
    backend: Literal["mdev", "vfio-vf"] | None = None
    if mdev_parents or sysfs.path(MDEV_BUS).is_dir():
        backend = "mdev"  # the mdev framework is there, even before VFs are enabled
    elif vf_parents:
        backend = "vfio-vf"
    mine = None if physfn is None else {p.pci for p in mdev_parents}
    return VgpuView(backend=backend, parents=mdev_parents + vf_parents,
                    mdevs=read_mdevs(sysfs, mine))
