"""The sysfs reader on trees laid out as the kernel lays out /sys."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from planner.host.errors import HostError
from planner.host.sysfs import Sysfs, parse_creatable_types, read_vgpu

PF = "0000:41:00.0"
VF = "0000:41:00.4"
MDEV = "2f0c6a3e-1111-4222-8333-444455556666"


def _link(path: Path, target: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, path)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def pci_device(root: Path, bdf: str, driver: str | None = None, physfn: str | None = None) -> Path:
    real = root / "sys/devices/pci0000:40" / bdf
    real.mkdir(parents=True)
    _link(root / "sys/bus/pci/devices" / bdf, f"../../../devices/pci0000:40/{bdf}")
    if driver:
        (root / "sys/bus/pci/drivers" / driver).mkdir(parents=True, exist_ok=True)
        _link(real / "driver", f"../../../bus/pci/drivers/{driver}")
    if physfn:
        _link(real / "physfn", f"../{physfn}")
    return real


def mdev_host(root: Path) -> None:
    pci_device(root, PF, driver="nvidia")
    vf = pci_device(root, VF, driver="nvidia", physfn=PF)
    _link(root / "sys/class/mdev_bus" / VF, f"../../devices/pci0000:40/{VF}")
    for type_id, name, avail in [("nvidia-474", "NVIDIA A100-1-5C", "1"),
                                 ("nvidia-468", "NVIDIA A100-4C", "0")]:
        _write(vf / "mdev_supported_types" / type_id / "name", name + "\n")
        _write(vf / "mdev_supported_types" / type_id / "available_instances", avail + "\n")
    dev = vf / MDEV
    dev.mkdir()
    _link(dev / "mdev_type", "../mdev_supported_types/nvidia-474")
    _link(root / "sys/bus/mdev/devices" / MDEV, f"../../../devices/pci0000:40/{VF}/{MDEV}")
    _write(root / "etc/mdevctl.d" / VF / MDEV, "{}")


def test_mdev_layout(tmp_path: Path) -> None:
    mdev_host(tmp_path)
    view = read_vgpu(Sysfs(tmp_path, writable=False))
    assert view.backend == "mdev"
    (parent,) = view.parents
    assert (parent.pci, parent.physfn, parent.backend) == (VF, PF, "mdev")
    assert [(t.type_id, t.name, t.available_instances) for t in parent.types] == [
        ("nvidia-468", "NVIDIA A100-4C", 0),
        ("nvidia-474", "NVIDIA A100-1-5C", 1),
    ]
    (mdev,) = view.mdevs
    assert (mdev.uuid, mdev.parent, mdev.type_id, mdev.persistent) == (
        MDEV, VF, "nvidia-474", True)


def test_vfio_vf_layout(tmp_path: Path) -> None:
    pci_device(tmp_path, PF, driver="nvidia")
    for k, current in ((4, "0\n"), (5, "1414\n")):
        vf = pci_device(tmp_path, f"0000:41:00.{k}", driver="nvidia", physfn=PF)
        _write(vf / "nvidia/creatable_vgpu_types",
               "ID    : vGPU Name\n1414  : NVIDIA H200X-1-18C\n1428  : NVIDIA H200X-141C\n")
        _write(vf / "nvidia/current_vgpu_type", current)
    view = read_vgpu(Sysfs(tmp_path))
    assert view.backend == "vfio-vf"
    assert [(p.pci, p.physfn, p.current_type) for p in view.parents] == [
        ("0000:41:00.4", PF, None), ("0000:41:00.5", PF, "1414")]
    assert [t.type_id for t in view.parents[0].types] == ["1414", "1428"]
    assert view.mdevs == ()


def test_no_vgpu_at_all(tmp_path: Path) -> None:
    pci_device(tmp_path, PF, driver="vfio-pci")
    view = read_vgpu(Sysfs(tmp_path))
    assert (view.backend, view.parents, view.mdevs) == (None, (), ())
    assert Sysfs(tmp_path).pci_driver(PF) == "vfio-pci"
    assert Sysfs(tmp_path).pci_driver("0000:99:00.0") is None


def test_creatable_types_header_only_means_none() -> None:
    assert parse_creatable_types("ID    : vGPU Name\n") == ()


def test_read_only_sysfs_refuses_writes(tmp_path: Path) -> None:
    mdev_host(tmp_path)
    sysfs = Sysfs(tmp_path, writable=False)
    with pytest.raises(HostError, match="read-only"):
        sysfs.write(f"sys/bus/mdev/devices/{MDEV}/remove", "1")


def test_writes_go_to_the_writer_when_given(tmp_path: Path) -> None:
    seen: list[tuple[str, str]] = []
    sysfs = Sysfs(tmp_path, writer=lambda rel, value: seen.append((rel, value)))
    sysfs.write("/sys/bus/pci/devices/x/sriov_numvfs", "4")
    assert seen == [("sys/bus/pci/devices/x/sriov_numvfs", "4")]


def test_plain_write_and_clear_error(tmp_path: Path) -> None:
    _write(tmp_path / "sys/f", "0\n")
    sysfs = Sysfs(tmp_path)
    sysfs.write("sys/f", "1")
    assert sysfs.read("sys/f") == "1"
    with pytest.raises(HostError, match="cannot write '1' to /sys/missing/f"):
        sysfs.write("sys/missing/f", "1")
    with pytest.raises(HostError, match="cannot read /sys/nothing"):
        sysfs.read("sys/nothing")


def test_an_mdev_removed_while_the_probe_resolves_it_is_skipped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another GPU's mdev (a placeholder apply removes on another thread, or anything on
    a real host) may go between listing /sys/bus/mdev/devices and resolving its link:
    os.path.realpath reads each link it meets and raises then. The mdev counts as gone."""
    mdev_host(tmp_path)
    link = tmp_path / "sys/bus/mdev/devices" / MDEV
    real_readlink = os.readlink

    def removed_first(path: str | os.PathLike[str], *args: object) -> str:
        if os.fspath(path) == str(link) and link.is_symlink():
            link.unlink()  # removed just before realpath reads it
        return real_readlink(path)

    monkeypatch.setattr(os, "readlink", removed_first)
    view = read_vgpu(Sysfs(tmp_path, writable=False))
    assert view.mdevs == ()


def test_one_gpus_read_finds_its_mdevs_in_its_vfs_directories(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a PF named, the mdevs come from its VFs' own directories (an mdev device is a
    child of its parent in sysfs): the same mdevs as the whole host's read shows for that
    GPU, and nothing of another GPU's (not even its /sys/bus/mdev/devices link) is read."""
    mdev_host(tmp_path)
    other_pf, other_vf = "0000:42:00.0", "0000:42:00.4"
    other_mdev = "3a1d7b4c-2222-4333-8444-555566667777"
    pci_device(tmp_path, other_pf, driver="nvidia")
    vf = pci_device(tmp_path, other_vf, driver="nvidia", physfn=other_pf)
    _link(tmp_path / "sys/class/mdev_bus" / other_vf, f"../../devices/pci0000:40/{other_vf}")
    _write(vf / "mdev_supported_types/nvidia-474/name", "NVIDIA A100-1-5C\n")
    _write(vf / "mdev_supported_types/nvidia-474/available_instances", "0\n")
    (vf / other_mdev).mkdir()
    _link(vf / other_mdev / "mdev_type", "../mdev_supported_types/nvidia-474")
    _link(tmp_path / "sys/bus/mdev/devices" / other_mdev,
          f"../../../devices/pci0000:40/{other_vf}/{other_mdev}")
    _link(tmp_path / "sys/devices/pci0000:40" / PF / "virtfn0", f"../{VF}")
    (tmp_path / "sys/devices/pci0000:40" / PF / "not-an-mdev").mkdir()

    whole = read_vgpu(Sysfs(tmp_path, writable=False))
    assert sorted(m.uuid for m in whole.mdevs) == sorted([MDEV, other_mdev])
    read: list[str] = []
    real_readlink = os.readlink

    def watched(path: str | os.PathLike[str], *args: object) -> str:
        read.append(os.fspath(path))
        return real_readlink(path)

    monkeypatch.setattr(os, "readlink", watched)
    mine = read_vgpu(Sysfs(tmp_path, writable=False), PF)
    assert mine.mdevs == tuple(m for m in whole.mdevs if m.parent == VF)
    assert [p.pci for p in mine.parents] == [VF]
    assert not [p for p in read if other_mdev in p or other_vf in p]


def test_optional_reads(tmp_path: Path) -> None:
    """A file's text without its newline; None for a missing path, a path through a
    file, and a directory; an unreadable file is a one-line error."""
    _write(tmp_path / "sys/a", "text\n")
    (tmp_path / "sys/d").mkdir()
    sysfs = Sysfs(tmp_path, writable=False)
    assert sysfs.read_optional("sys/a") == "text"
    assert [sysfs.read_optional(p) for p in ("sys/none", "sys/a/b", "sys/d")] == [None] * 3
    if os.geteuid() != 0:  # root reads a file of mode 000
        (tmp_path / "sys/a").chmod(0)
        with pytest.raises(HostError, match="cannot read /sys/a: Permission denied"):
            sysfs.read_optional("sys/a")
