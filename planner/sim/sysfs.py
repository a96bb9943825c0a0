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
                   iommu_group, nvidia/vgpu_params}
                   bus/mdev/devices/<uuid> -> ../../../devices/pci0000:00/<vf>/<uuid>
                   class/mdev_bus/<vf> -> ../../devices/pci0000:00/<vf>
      vendor VFIO: <vf>/nvidia/{creatable_vgpu_types,current_vgpu_type,vgpu_params}
    bus/pci/devices/<bdf> -> ../../../devices/pci0000:00/<bdf>
    bus/pci/drivers/nvidia/<bdf> -> ../../../../devices/pci0000:00/<bdf>
    kernel/iommu_groups/<n>/devices/<bdf> -> ../../../../devices/pci0000:00/<bdf>

The files under ``nvidia/`` are the ones the vGPU 17 user guide documents (section 2.10.8);
which GI backs a vGPU is not among them: NVML tells it (``planner.sim.vgpu``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from planner.sim import driver
from planner.sim.models import mig_capable, pci_device_id
from planner.sim.state import SimGpu, SimMdev, SimState
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


def common_tree(state: SimState) -> dict[str, Entry]:
    """The entries that belong to no GPU: the driver's and the mdev bus's directories."""
    tree: dict[str, Entry] = {"bus/pci/drivers/nvidia": Entry("dir")}
    if state.vfio_loaded:  # as /sys shows loaded modules and the vfio-pci driver
        for module in ("vfio", "vfio_pci", "vfio_iommu_type1"):
            tree[f"module/{module}"] = Entry("dir")
        tree["bus/pci/drivers/vfio-pci"] = Entry("dir")
    if state.vgpu_backend == "mdev":
        tree["bus/mdev/devices"] = Entry("dir")
        tree["class/mdev_bus"] = Entry("dir")
    return tree


def mdevs_by_gpu(state: SimState) -> dict[str, list[SimMdev]]:
    """Each GPU's mdevs (by the PF's address), in state order."""
    out: dict[str, list[SimMdev]] = {}
    for m in state.mdevs:
        out.setdefault(m.gpu, []).append(m)
    return out


def gpu_tree(state: SimState, gpu: SimGpu, mdevs: list[SimMdev]) -> dict[str, Entry]:
    """Every entry of one GPU: its PF, its VFs with their vGPU types, and its mdevs.

    A pure function of the GPU, its own mdevs (``mdevs``: those whose ``gpu`` is this GPU),
    the vGPU backend and the driver version: nothing of another GPU shows here, which is
    what lets ``render_changes`` render only the GPUs a change touched.
    """
    # The vGPU rules read ``state.mdevs``; this GPU's are all that can concern it.
    view = state.model_copy(update={"mdevs": mdevs}) if mdevs != state.mdevs else state
    tree: dict[str, Entry] = {}
    backend = view.vgpu_backend
    model = driver.model_of(gpu)
    dev_id = pci_device_id(model)
    pf = _pci_device(tree, gpu.pci, dev_id, iommu_group(gpu))
    tree[f"{pf}/sriov_totalvfs"] = _file(str(total_vfs(model)))
    tree[f"{pf}/sriov_numvfs"] = _file(str(gpu.num_vfs), 0o644)
    tree[f"{pf}/sriov_offset"] = _file("4")
    tree[f"{pf}/sriov_stride"] = _file("1")
    types = vgpu_types(view, gpu) if mig_capable(model) else []
    for k, vf in enumerate(vfs(gpu)):
        d = _pci_device(tree, vf, dev_id, iommu_group(gpu, k))
        tree[f"{pf}/virtfn{k}"] = _link(f"../{vf}")
        tree[f"{d}/physfn"] = _link(f"../{gpu.pci}")
        if backend == "mdev":
            tree[f"class/mdev_bus/{vf}"] = _link(f"../../{d}")
            for t in types:
                td = f"{d}/mdev_supported_types/{t.mdev_id}"
                tree[f"{td}/name"] = _file(t.name)
                tree[f"{td}/available_instances"] = _file(str(available(view, gpu, vf, t)))
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
                lines += [f"{t.number} : {t.name}" for t in types if available(view, gpu, vf, t)]
            tree[f"{d}/nvidia/creatable_vgpu_types"] = _file("\n".join(lines))
            tree[f"{d}/nvidia/current_vgpu_type"] = _file(
                str(current.type_id if current else 0), 0o644
            )
            tree[f"{d}/nvidia/vgpu_params"] = Entry("file", "", 0o644)
    if backend == "mdev":
        for m in mdevs:
            d = f"{PCI_ROOT}/{m.parent}/{m.uuid}"
            mtype = find_type(view, gpu, m.type_id)
            tree[f"{d}/remove"] = Entry("file", "", 0o200)
            tree[f"{d}/mdev_type"] = _link(f"../mdev_supported_types/{m.type_id}")
            group = mdev_iommu_group(m.uuid)
            tree[f"{d}/iommu_group"] = _link(f"../../../../kernel/iommu_groups/{group}")
            tree[f"kernel/iommu_groups/{group}/devices/{m.uuid}"] = _link(f"../../../../{d}")
            tree[f"{d}/nvidia/vgpu_params"] = Entry("file", "", 0o644)
            tree[f"bus/mdev/devices/{m.uuid}"] = _link(f"../../../{d}")
            if mtype is not None:
                tree[f"{PCI_ROOT}/{m.parent}/mdev_supported_types/{m.type_id}/devices/{m.uuid}"] = (
                    _link(f"../../../{m.uuid}")
                )
    return tree


def sysfs_tree(state: SimState) -> dict[str, Entry]:
    """The whole tree: the common entries and every GPU's (an mdev whose GPU is gone has
    no entries)."""
    tree = common_tree(state)
    by_gpu = mdevs_by_gpu(state)
    for gpu in state.gpus:
        tree.update(gpu_tree(state, gpu, by_gpu.get(gpu.pci, [])))
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


def _replace(path: Path | str, make: str, entry: Entry) -> None:
    """Put ``entry`` at ``path`` atomically: readers see the old entry or the new one.
    The temporary name is removed first and created exclusively, never followed."""
    path = os.fspath(path)
    head, name = os.path.split(path)
    tmp = os.path.join(head, f".{name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)  # left by a killed render
    if make == "link":
        os.symlink(entry.content, tmp)
    else:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     entry.mode)
        try:
            data = entry.content.encode()
            while data:
                data = data[os.write(fd, data):]
            os.fchmod(fd, entry.mode)  # whatever the umask
        finally:
            os.close(fd)
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
    """Render the kernel's views of the simulated host, ``DIR/sys`` and ``DIR/proc``, whole:
    every path is compared with the disk (``sim init``, and repair after a killed commit)."""
    sync_tree(Path(sim_root) / SYS, sysfs_tree(state))
    sync_tree(Path(sim_root) / "proc", proc_tree(state))


def render_changes(sim_root: Path, before: SimState, after: SimState) -> None:
    """Bring the kernel views from ``before`` (what the disk shows) to ``after``, touching
    only the GPUs whose part of the state changed, and only the entries that differ.

    A change of the GPU list, the vGPU backend or the driver version (none of which an
    operation makes) renders everything again.
    """
    sim_root = Path(sim_root)
    if (
        [g.pci for g in before.gpus] != [g.pci for g in after.gpus]
        or before.vgpu_backend != after.vgpu_backend
        or before.driver_version != after.driver_version
    ):
        render_sysfs(sim_root, after)
        return
    old_mdevs, new_mdevs = mdevs_by_gpu(before), mdevs_by_gpu(after)
    old: dict[str, Entry] = {}
    new: dict[str, Entry] = {}
    old_dirs: set[str] = set()
    new_dirs: set[str] = set()
    for was, now in zip(before.gpus, after.gpus, strict=True):
        was_mdevs, now_mdevs = old_mdevs.get(was.pci, []), new_mdevs.get(now.pci, [])
        if was == now and was_mdevs == now_mdevs:
            continue
        for tree, dirs, state, gpu, mdevs in ((old, old_dirs, before, was, was_mdevs),
                                              (new, new_dirs, after, now, now_mdevs)):
            kept = _gpu_tree_kept(state, gpu, mdevs)
            tree.update(kept.tree)
            dirs |= kept.dirs
    common = common_tree(after)
    apply_changes(sim_root / SYS, old, new, keep=_dirs_of(common), dirs=(old_dirs, new_dirs))
    if any(was.holders != now.holders for was, now in zip(before.gpus, after.gpus, strict=True)):
        apply_changes(sim_root / "proc", proc_tree(before), proc_tree(after), keep=set())


# The GPU trees rendered last, by everything they depend on: the tree a commit renders is
# the "before" of the next commit on that GPU. Trees are never changed once made.
@dataclass(frozen=True)
class _KeptTree:
    tree: dict[str, Entry]
    dirs: set[str]  # _dirs_of(tree), worked out once


_TREES: OrderedDict[tuple[str, ...], _KeptTree] = OrderedDict()
_TREES_LOCK = threading.Lock()
_MAX_TREES = 256


def _gpu_tree_kept(state: SimState, gpu: SimGpu, mdevs: list[SimMdev]) -> _KeptTree:
    key = (str(state.vgpu_backend), state.driver_version, gpu.model_dump_json(),
           *(m.model_dump_json() for m in mdevs))
    with _TREES_LOCK:
        tree = _TREES.get(key)
        if tree is not None:
            _TREES.move_to_end(key)
            return tree
    made = gpu_tree(state, gpu, mdevs)
    tree = _KeptTree(made, _dirs_of(made))
    with _TREES_LOCK:
        _TREES[key] = tree
        while len(_TREES) > _MAX_TREES:
            _TREES.popitem(last=False)
    return tree


def _dirs_of(tree: dict[str, Entry]) -> set[str]:
    """Every directory the tree needs: its "dir" entries and every entry's parents."""
    out = {rel for rel, e in tree.items() if e.kind == "dir"}
    for rel in tree:
        parent = os.path.dirname(rel)
        while parent and parent not in out:
            out.add(parent)
            parent = os.path.dirname(parent)
    return out


def apply_changes(root: Path, old: dict[str, Entry], new: dict[str, Entry], keep: set[str],
                  dirs: tuple[set[str], set[str]] | None = None) -> None:
    """Change the tree under ``root`` from ``old`` (what is on disk) to ``new``: remove what
    ``new`` lacks, write what differs, leave equal entries alone (no disk access for them).
    A directory left empty by a removal goes too, unless ``new`` or ``keep`` needs it.
    ``dirs``: the directories of ``old`` and ``new`` when the caller knows them already."""
    base = os.fspath(root)
    old_dirs, new_dirs = dirs if dirs is not None else (_dirs_of(old), _dirs_of(new))
    wanted_dirs = new_dirs | keep
    emptied: set[str] = set()
    removed: set[str] = set()  # directories removed
    for rel in sorted(old, key=lambda r: r.count("/"), reverse=True):
        was = old[rel]
        now = new.get(rel)
        if now is not None and now.kind == was.kind:
            continue
        path = os.path.join(base, rel)
        if was.kind == "dir":
            if rel not in wanted_dirs:
                shutil.rmtree(path, ignore_errors=True)
                removed.add(rel)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        emptied.add(os.path.dirname(rel))
    for rel in sorted(emptied, key=lambda r: r.count("/"), reverse=True):
        while rel and rel not in wanted_dirs:
            try:
                os.rmdir(os.path.join(base, rel))
            except OSError:  # not empty (another GPU's entries), or already gone
                break
            removed.add(rel)
            rel = os.path.dirname(rel)
    # directories known to be there: the old tree's, less what was removed
    existing = {""} | {
        d for d in old_dirs if not any(d == r or d.startswith(r + "/") for r in removed)
    }
    for rel in sorted(new):
        e = new[rel]
        was_entry = old.get(rel)
        if was_entry == e:
            continue
        path = os.path.join(base, rel)
        if e.kind == "dir":
            os.makedirs(path, exist_ok=True)
            existing.add(rel)
            continue
        parent = os.path.dirname(rel)
        if parent not in existing:
            os.makedirs(os.path.join(base, parent), exist_ok=True)
            while parent:
                existing.add(parent)
                parent = os.path.dirname(parent)
        if was_entry is not None and was_entry.kind == e.kind == "file" and (
            was_entry.content == e.content
        ):
            os.chmod(path, e.mode)
        elif was_entry is None and e.kind == "link":
            try:
                os.symlink(e.content, path)  # a new link appears whole
            except FileExistsError:
                _replace(path, "link", e)
        else:
            _replace(path, e.kind, e)
