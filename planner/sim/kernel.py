"""The simulated kernel's side of sysfs writes.

``sysfs_write(DIR, relpath, value)`` applies a write to a kernel-action attribute of the
simulated host, with the errors the kernel returns from write(2), then re-renders the tree:

* ``<PF>/sriov_numvfs``: refused. NVIDIA supports only its ``sriov-manage`` script for
  VFs (``DIR/bin/sriov-manage``, ``planner.sim.sriov_manage``), and a plain write is refused
  on real hosts (third-party observation, vgpu-on-mig.md section 4). The errno follows the
  kernel's ``sriov_numvfs_store`` for a driver without ``sriov_configure`` (ENOENT; that
  NVIDIA's driver has none is ASSUMED): EINVAL for text that is not a number, ERANGE above
  ``sriov_totalvfs``, success when N is what is already set.
* ``<VF>/mdev_supported_types/<type>/create``: write a UUID to create an mdev. EINVAL for a
  malformed UUID, EEXIST for a UUID in use, EUSERS when ``available_instances`` is 0 (the
  mdev core's check since Linux 5.16; ASSUMED for NVIDIA's driver). The driver picks the
  backing GI (``planner.sim.vgpu``).
* ``<mdev>/remove``: write 1 to remove (0 does nothing); EINVAL otherwise.
* ``<VF>/nvidia/current_vgpu_type``: write a type id to give the VF a vGPU, 0 to free it.
  EINVAL for a type that is not creatable (and the VF stays at 0); EBUSY when the VF already
  holds another type.

Any other existing attribute is read-only (EACCES, as kernfs refuses to open it for
writing); a path that does not exist gives ENOENT. ``relpath`` is relative to ``DIR/sys``
(a leading ``/sys/`` or ``sys/`` is accepted) and may go through the bus/class links.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import uuid as uuidlib
from pathlib import Path

from planner.sim import driver, faults, latency, vgpu
from planner.sim.state import SimMdev, SimState, SimStore, VfVgpu
from planner.sim.sysfs import PCI_ROOT, SYS

_BDF = r"[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]"
_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_NUMVFS = re.compile(rf"^(?P<pf>{_BDF})/sriov_numvfs$")
_CREATE = re.compile(rf"^(?P<vf>{_BDF})/mdev_supported_types/(?P<type>[^/]+)/create$")
_REMOVE = re.compile(rf"^(?P<vf>{_BDF})/(?P<uuid>{_UUID})/remove$")
_VGPU_TYPE = re.compile(rf"^(?P<vf>{_BDF})/nvidia/current_vgpu_type$")


def _err(code: int, path: str) -> OSError:
    return OSError(code, os.strerror(code), path)


def _resolve(sim_root: Path, relpath: str) -> tuple[str, str]:
    """(path as given under sys, path relative to sys/devices/pci0000:00 after links)."""
    rel = relpath.strip()
    for prefix in ("/sys/", "sys/", "/"):
        if rel.startswith(prefix):
            rel = rel[len(prefix) :]
            break
    sys_root = (sim_root / SYS).resolve()
    full = sim_root / SYS / rel
    shown = f"/sys/{rel}"
    if not full.exists() and not full.is_symlink():
        raise _err(errno.ENOENT, shown)
    try:
        real = Path(os.path.realpath(full))
    except OSError:  # a link on the way went meanwhile (realpath reads each it meets)
        raise _err(errno.ENOENT, shown) from None
    try:
        inside = real.relative_to(sys_root / PCI_ROOT)
    except ValueError:
        raise _err(errno.EACCES, shown) from None
    return shown, str(inside)


def sysfs_write(sim_dir: str | os.PathLike[str], relpath: str, value: str | bytes) -> None:
    """Write ``value`` to the simulated attribute ``relpath``; raise OSError as write(2) would."""
    store = SimStore(sim_dir)
    text = value.decode() if isinstance(value, bytes) else str(value)
    op = _latency_op(relpath)
    # (the modelled time is slept after the lock is released: GPUs overlap)
    with latency.lasting(store.root, op) if op is not None else contextlib.nullcontext(), \
            store.transaction(commit_on=(OSError,)) as state:
        shown, rel = _resolve(store.root, relpath)
        if m := _NUMVFS.match(rel):
            _set_numvfs(state, m["pf"], text, shown)
        elif m := _CREATE.match(rel):
            _trip(state, "sysfs.mdev_create", shown)
            _create_mdev(state, m["vf"], m["type"], text, shown)
        elif m := _REMOVE.match(rel):
            _trip(state, "sysfs.mdev_remove", shown)
            _remove_mdev(state, m["uuid"], text, shown)
        elif m := _VGPU_TYPE.match(rel):
            _trip(state, "sysfs.current_vgpu_type", shown)
            _set_vgpu_type(state, m["vf"], text, shown)
        else:
            raise _err(errno.EACCES, shown)


def _latency_op(relpath: str) -> str | None:
    """The operation a write is, for the latency model (judged by the file's name)."""
    name = relpath.rstrip("/").rsplit("/", 1)[-1]
    return {"create": "sysfs.mdev_create",
            "remove": "sysfs.mdev_remove",
            "current_vgpu_type": "sysfs.current_vgpu_type"}.get(name)


def _trip(state: SimState, op: str, shown: str) -> None:
    fault = faults.trip(state, op)
    if fault is not None:
        raise faults.os_error(fault, shown)


def _set_numvfs(state: SimState, pf: str, text: str, shown: str) -> None:
    gpu = state.gpu(pf)
    if gpu is None:
        raise _err(errno.ENODEV, shown)
    try:
        n = int(text.strip(), 0)
    except ValueError:
        raise _err(errno.EINVAL, shown) from None
    if n < 0 or n > vgpu.total_vfs(driver.model_of(gpu)):
        raise _err(errno.ERANGE, shown)
    if n != gpu.num_vfs:
        raise _err(errno.ENOENT, shown)  # only sriov-manage changes the VFs (see above)


def _create_mdev(state: SimState, vf: str, type_id: str, text: str, shown: str) -> None:
    if state.vgpu_backend != "mdev":
        raise _err(errno.ENOENT, shown)
    gpu = vgpu.vf_owner(state, vf)
    t = vgpu.find_type(state, gpu, type_id) if gpu else None
    if gpu is None or t is None or t.mdev_id != type_id:
        raise _err(errno.ENOENT, shown)
    raw = text.strip()
    try:
        new = str(uuidlib.UUID(raw))
    except ValueError:
        raise _err(errno.EINVAL, shown) from None
    if len(raw) != 36:
        raise _err(errno.EINVAL, shown)
    if any(m.uuid == new for m in state.mdevs):
        raise _err(errno.EEXIST, shown)
    if not vgpu.available(state, gpu, vf, t):
        raise _err(errno.EUSERS, shown)
    gi = vgpu.backing_gi(state, gpu, t)
    state.mdevs.append(
        SimMdev(
            uuid=new, parent=vf, type_id=t.mdev_id, gpu=gpu.pci, gi_serial=gi.serial if gi else None
        )
    )


def _remove_mdev(state: SimState, uuid: str, text: str, shown: str) -> None:
    try:
        flag = int(text.strip(), 0)
    except ValueError:
        raise _err(errno.EINVAL, shown) from None
    if flag:
        state.mdevs = [m for m in state.mdevs if m.uuid != uuid]


def _set_vgpu_type(state: SimState, vf: str, text: str, shown: str) -> None:
    gpu = vgpu.vf_owner(state, vf)
    if gpu is None or state.vgpu_backend != "vfio-vf":
        raise _err(errno.ENOENT, shown)
    try:
        type_id = int(text.strip(), 0)
    except ValueError:
        raise _err(errno.EINVAL, shown) from None
    current = gpu.vf_vgpus.get(vf)
    if type_id == 0:
        gpu.vf_vgpus.pop(vf, None)
        return
    if current is not None:
        if current.type_id == type_id:
            return
        raise _err(errno.EBUSY, shown)
    t = vgpu.find_type(state, gpu, type_id)
    if t is None or not vgpu.available(state, gpu, vf, t):
        raise _err(errno.EINVAL, shown)
    gi = vgpu.backing_gi(state, gpu, t)
    gpu.vf_vgpus[vf] = VfVgpu(type_id=t.number, gi_serial=gi.serial if gi else None)
