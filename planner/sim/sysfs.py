"""Render the simulated host's sysfs tree into ``DIR/sys`` in the kernel's layout.

The tree is a pure function of the state (``sysfs_tree``), written to disk by ``sync_tree``,
which changes only what differs (each file replaced atomically) so readers never see a
missing tree. Layout, relative to ``DIR/sys`` (all links relative, so DIR can move):

    devices/pci0000:00/<bdf>/{vendor,device,class,subsystem_vendor,sriov_totalvfs,
        sriov_numvfs,sriov_offset,sriov_stride,virtfn<k> -> ../<vf>,
        driver -> ../../../bus/pci/drivers/nvidia, iommu_group -> ../../../kernel/iommu_groups/N}
    devices/pci0000:00/<vf>/{vendor,device,class,physfn -> ../<pf>,driver,iommu_group,...}
      mdev:        <vf>/mdev_supported_types/nvidia-N/{name,available_instances,device_api,
                   description,create,devices/<uuid> -> ../../../<uuid>}
                   <vf>/<uuid>/{remove,mdev_type -> ../mdev_supported_types/nvidia-N,
                   iommu_group, nvidia/{vgpu_params,gpu_instance_id}}
                   bus/mdev/devices/<uuid> -> ../../../devices/pci0000:00/<vf>/<uuid>
                   class/mdev_bus/<vf> -> ../../devices/pci0000:00/<vf>
      vendor VFIO: <vf>/nvidia/{creatable_vgpu_types,current_vgpu_type,gpu_instance_id}
    bus/pci/devices/<bdf> -> ../../../devices/pci0000:00/<bdf>
    bus/pci/drivers/nvidia/<bdf> -> ../../../../devices/pci0000:00/<bdf>
    kernel/iommu_groups/<n>/devices/<bdf> -> ../../../../devices/pci0000:00/<bdf>

``nvidia/gpu_instance_id`` is a simulator stand-in (see ``planner.sim.vgpu``).
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from pathlib import Path

from planner.sim import driver
from planner.sim.models import mig_capable, pci_device_id
from planner.sim.state import SimGpu, SimState
from planner.sim.vgpu import available, find_type, total_vfs, vfs, vgpu_types

SYS = "sys"
PCI_ROOT = "devices/pci0000:00"
VENDOR = "0x10de"
CLASS_3D = "0x030200"  # 3D controller, as data-center GPUs report


@dataclass(frozen=True)
class Entry:
    kind: str  # "file" | "link" | "dir"
    content: str = ""  # file text or link target
    mode: int = 0o444


def _file(text: str, mode: int = 0o444) -> Entry:
    return Entry("file", text if text.endswith("\n") or not text else text + "\n", mode)


def _link(target: str) -> Entry:
    return Entry("link", target)


def iommu_group(gpu: SimGpu, vf_index: int | None = None) -> int:
    base = 20 + 40 * gpu.index
    return base if vf_index is None else base + 1 + vf_index


def mdev_iommu_group(uuid: str) -> int:
    return 10000 + zlib.crc32(uuid.encode()) % 10000


def _pci_device(tree: dict[str, Entry], bdf: str, device_id: int, group: int) -> str:
    d = f"{PCI_ROOT}/{bdf}"
    tree[f"{d}/vendor"] = _file(VENDOR)
    tree[f"{d}/device"] = _file(f"0x{device_id:04x}")
    tree[f"{d}/class"] = _file(CLASS_3D)
    tree[f"{d}/subsystem_vendor"] = _file(VENDOR)
    tree[f"{d}/driver"] = _link("../../../bus/pci/drivers/nvidia")
    tree[f"{d}/iommu_group"] = _link(f"../../../kernel/iommu_groups/{group}")
    tree[f"bus/pci/devices/{bdf}"] = _link(f"../../../{d}")
    tree[f"bus/pci/drivers/nvidia/{bdf}"] = _link(f"../../../../{d}")
    tree[f"kernel/iommu_groups/{group}/devices/{bdf}"] = _link(f"../../../../{d}")
    return d


def sysfs_tree(state: SimState) -> dict[str, Entry]:
    tree: dict[str, Entry] = {"bus/pci/drivers/nvidia": Entry("dir")}
    backend = state.vgpu_backend
    if backend == "mdev":
        tree["bus/mdev/devices"] = Entry("dir")
        tree["class/mdev_bus"] = Entry("dir")
    for gpu in state.gpus:
        model = driver.model_of(gpu)
        dev_id = pci_device_id(model)
        pf = _pci_device(tree, gpu.pci, dev_id, iommu_group(gpu))
        tree[f"{pf}/sriov_totalvfs"] = _file(str(total_vfs(model)))
        tree[f"{pf}/sriov_numvfs"] = _file(str(gpu.num_vfs), 0o644)
        tree[f"{pf}/sriov_offset"] = _file("4")
        tree[f"{pf}/sriov_stride"] = _file("1")
        types = vgpu_types(state, gpu) if mig_capable(model) else []
        for k, vf in enumerate(vfs(gpu)):
            d = _pci_device(tree, vf, dev_id, iommu_group(gpu, k))
            tree[f"{pf}/virtfn{k}"] = _link(f"../{vf}")
            tree[f"{d}/physfn"] = _link(f"../{gpu.pci}")
            if backend == "mdev":
                tree[f"class/mdev_bus/{vf}"] = _link(f"../../{d}")
                for t in types:
                    td = f"{d}/mdev_supported_types/{t.mdev_id}"
                    tree[f"{td}/name"] = _file(t.name)
                    tree[f"{td}/available_instances"] = _file(str(available(state, gpu, vf, t)))
                    tree[f"{td}/device_api"] = _file("vfio-pci")
                    tree[f"{td}/description"] = _file(
                        f"num_heads=0, frl_config=60, framebuffer={t.profile.memory_mib}M, "
                        f"max_resolution=0x0, max_instance=1"
                    )
                    tree[f"{td}/create"] = Entry("file", "", 0o200)
                    tree[f"{td}/devices"] = Entry("dir")
            elif backend == "vfio-vf":
                current = gpu.vf_vgpus.get(vf)
                lines = ["ID    : vGPU Name"]
                if current is None:
                    lines += [
                        f"{t.number} : {t.name}" for t in types if available(state, gpu, vf, t)
                    ]
                tree[f"{d}/nvidia/creatable_vgpu_types"] = _file("\n".join(lines))
                tree[f"{d}/nvidia/current_vgpu_type"] = _file(
                    str(current.type_id if current else 0), 0o644
                )
                gi = (
                    driver.find_gi_serial(gpu, current.gi_serial)
                    if current and current.gi_serial
                    else None
                )
                if gi is not None:
                    tree[f"{d}/nvidia/gpu_instance_id"] = _file(str(gi.gi_id))
    if backend == "mdev":
        for m in state.mdevs:
            owner = state.gpu(m.gpu)
            if owner is None:
                continue
            d = f"{PCI_ROOT}/{m.parent}/{m.uuid}"
            mtype = find_type(state, owner, m.type_id)
            tree[f"{d}/remove"] = Entry("file", "", 0o200)
            tree[f"{d}/mdev_type"] = _link(f"../mdev_supported_types/{m.type_id}")
            group = mdev_iommu_group(m.uuid)
            tree[f"{d}/iommu_group"] = _link(f"../../../../kernel/iommu_groups/{group}")
            tree[f"kernel/iommu_groups/{group}/devices/{m.uuid}"] = _link(f"../../../../{d}")
            tree[f"{d}/nvidia/vgpu_params"] = Entry("file", "", 0o644)
            backing = driver.find_gi_serial(owner, m.gi_serial) if m.gi_serial is not None else None
            if backing is not None:
                tree[f"{d}/nvidia/gpu_instance_id"] = _file(str(backing.gi_id))
            tree[f"bus/mdev/devices/{m.uuid}"] = _link(f"../../../{d}")
            if mtype is not None:
                tree[f"{PCI_ROOT}/{m.parent}/mdev_supported_types/{m.type_id}/devices/{m.uuid}"] = (
                    _link(f"../../../{m.uuid}")
                )
    return tree


def _existing(root: Path) -> dict[str, str]:
    """Every path under root (not following links): relpath -> "file" | "link" | "dir"."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            key = os.path.normpath(os.path.join(rel, name))
            if os.path.islink(p):
                out[key] = "link"
            elif os.path.isdir(p):
                out[key] = "dir"
            else:
                out[key] = "file"
    return out


def _same_content(path: Path, content: str) -> bool:
    if not content:  # write-only attributes (create, remove) are empty
        return path.stat().st_size == 0
    return path.read_text() == content


def _replace(path: Path, make: str, entry: Entry) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    if make == "link":
        os.symlink(entry.content, tmp)
    else:
        tmp.write_text(entry.content)
        os.chmod(tmp, entry.mode)
    os.replace(tmp, path)


def sync_tree(root: Path, tree: dict[str, Entry]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    wanted: dict[str, str] = {}
    for rel, e in tree.items():
        wanted[rel] = e.kind
        parent = os.path.dirname(rel)
        while parent:
            wanted.setdefault(parent, "dir")
            parent = os.path.dirname(parent)
    have = _existing(root)
    for rel in sorted(have, key=lambda r: r.count("/"), reverse=True):
        if wanted.get(rel) != have[rel]:
            p = root / rel
            if have[rel] == "dir":
                for dirpath, _, filenames in os.walk(p, topdown=False):
                    for f in filenames:
                        os.unlink(os.path.join(dirpath, f))
                    os.rmdir(dirpath)
            elif p.is_symlink() or p.exists():
                p.unlink()
    for rel in sorted(wanted):
        p = root / rel
        e = tree.get(rel, Entry("dir"))
        if e.kind == "dir":
            p.mkdir(parents=True, exist_ok=True)
        elif e.kind == "link":
            if not p.is_symlink() or os.readlink(p) != e.content:
                _replace(p, "link", e)
        else:
            if p.is_symlink() or not p.exists() or not _same_content(p, e.content):
                _replace(p, "file", e)
            elif (p.stat().st_mode & 0o777) != e.mode:
                os.chmod(p, e.mode)


def proc_tree(state: SimState) -> dict[str, Entry]:
    """``DIR/proc``: the processes holding GPUs, as ``fuser``/lsof would find them: each has
    ``comm``, ``cmdline`` and ``fd/<n>`` links to ``/dev/nvidiactl`` and ``/dev/nvidia<minor>`` (the
    minor number is the GPU's index here, as on most hosts)."""
    tree: dict[str, Entry] = {}
    fds: dict[int, int] = {}
    for gpu in state.gpus:
        for h in gpu.holders:
            base = f"{h.pid}"
            tree[f"{base}/comm"] = _file(h.name[:15])  # the kernel cuts comm at 15 bytes
            tree[f"{base}/cmdline"] = Entry("file", h.name + "\0")
            if h.pid not in fds:
                tree[f"{base}/fd/3"] = _link("/dev/nvidiactl")
                fds[h.pid] = 4
            tree[f"{base}/fd/{fds[h.pid]}"] = _link(f"/dev/nvidia{gpu.index}")
            fds[h.pid] += 1
    return tree


def render_sysfs(sim_root: Path, state: SimState) -> None:
    """Re-render the kernel's views of the simulated host: ``DIR/sys`` and ``DIR/proc``."""
    sync_tree(Path(sim_root) / SYS, sysfs_tree(state))
    sync_tree(Path(sim_root) / "proc", proc_tree(state))
