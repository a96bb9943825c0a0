"""sysfs tree layout and kernel writes: SR-IOV VFs, mdev create/remove, vendor VFIO types."""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path

import pynvml
import pytest

from planner.cli.host_opts import open_environment
from planner.sim.fake_nvml import FakeNvml
from planner.sim.host import GpuSpec
from planner.sim.kernel import sysfs_write
from planner.sim.sriov_manage import run as sriov_manage

U1 = "2f0c6a3e-1b6f-4c5e-9a8b-0d1e2f3a4b5c"
U2 = "7a9d1c2e-3b4f-4a6b-8c9d-0e1f2a3b4c5d"


def read(root: Path, rel: str) -> str:
    return (root / "sys" / rel).read_text().strip()


def create_gis(root: Path, *placements: tuple[int, int, int]) -> list[int]:
    n = FakeNvml(root)
    n.nvmlInit()
    try:
        h = n.nvmlDeviceGetHandleByIndex(0)
        ids = []
        for profile, start, size in placements:
            p = pynvml.c_nvmlGpuInstancePlacement_t(start, size)
            gi = n.nvmlDeviceCreateGpuInstanceWithPlacement(h, profile, ctypes.byref(p))
            ids.append(n.nvmlGpuInstanceGetInfo(gi).id)
        return ids
    finally:
        n.nvmlShutdown()


def run_vm(root: Path, name: str, uuid: str, hostdev: str) -> None:
    """A running domain of the simulated libvirt using the mdev ``hostdev`` (or a VF)."""
    if ":" in hostdev:
        dom, bus, rest = hostdev.split(":")
        slot, fn = rest.split(".")
        src = (f"<hostdev mode='subsystem' type='pci' managed='no'><source><address "
               f"domain='0x{dom}' bus='0x{bus}' slot='0x{slot}' function='0x{fn}'/></source>"
               "</hostdev>")
    else:
        src = (f"<hostdev mode='subsystem' type='mdev' model='vfio-pci'><source>"
               f"<address uuid='{hostdev}'/></source></hostdev>")
    xml = (f"<domain type='test'><name>{name}</name><uuid>{uuid}</uuid><memory>1024</memory>"
           f"<os><type>hvm</type></os><devices>{src}</devices></domain>")
    with open_environment(f"sim:{root}").libvirt() as session:
        session.conn.defineXML(xml).create()
        session.commit()


def active_gis(root: Path) -> list[tuple[int, int, str, str | None]]:
    """(type id, GI id, VM uuid, mdev uuid) of every active vGPU, through pynvml."""
    n = FakeNvml(root)
    n.nvmlInit()
    try:
        h = n.nvmlDeviceGetHandleByIndex(0)
        out = []
        for inst in n.nvmlDeviceGetActiveVgpus(h):
            try:
                mdev = n.nvmlVgpuInstanceGetMdevUUID(inst)
            except pynvml.NVMLError_NotSupported:
                mdev = None
            out.append((n.nvmlVgpuInstanceGetType(inst),
                        n.nvmlVgpuInstanceGetGpuInstanceId(inst),
                        n.nvmlVgpuInstanceGetVmID(inst)[0].decode(), mdev))
        return out
    finally:
        n.nvmlShutdown()  # an open session would hold the GPU against sriov-manage


def test_pci_layout(make_host) -> None:
    root = make_host(GpuSpec("a100-40gb", "0000:17:00.0"))
    dev = "bus/pci/devices/0000:17:00.0"
    assert read(root, f"{dev}/vendor") == "0x10de"
    assert read(root, f"{dev}/device") == "0x20b0"
    assert read(root, f"{dev}/class") == "0x030200"
    assert os.path.basename(os.readlink(root / "sys" / dev / "driver")) == "nvidia"
    assert (root / "sys" / dev / "iommu_group" / "devices" / "0000:17:00.0").exists()
    assert read(root, f"{dev}/sriov_totalvfs") == "16" and read(root, f"{dev}/sriov_numvfs") == "0"


def test_sriov_numvfs_only_through_sriov_manage(make_host) -> None:
    root = make_host(GpuSpec("a100-40gb", "0000:41:00.0"), vgpu="mdev")
    pf = "bus/pci/devices/0000:41:00.0"
    # a plain write is refused (NVIDIA supports only sriov-manage; vgpu-on-mig.md s. 4)
    for value, code in (("4", errno.ENOENT), ("99", errno.ERANGE), ("x", errno.EINVAL)):
        with pytest.raises(OSError) as err:
            sysfs_write(root, f"/sys/{pf}/sriov_numvfs", value)
        assert err.value.errno == code
    sysfs_write(root, f"{pf}/sriov_numvfs", "0")  # what is set already: accepted
    assert sriov_manage(str(root), ["-e", "0000:41:00.0"])[0] == 0
    assert read(root, f"{pf}/sriov_numvfs") == "16"
    assert os.readlink(root / "sys" / pf / "virtfn0") == "../0000:41:00.4"
    assert read(root, "bus/pci/devices/0000:41:00.4/physfn/device") == "0x20b0"
    assert (root / "sys/class/mdev_bus/0000:41:00.4").exists()
    with pytest.raises(OSError) as err:
        sysfs_write(root, f"{pf}/vendor", "0x1234")
    assert err.value.errno == errno.EACCES
    assert sriov_manage(str(root), ["-d", "0000:41:00.0"])[0] == 0
    assert not (root / "sys" / pf / "virtfn0").exists()


def test_mdev_types_follow_gis_and_backing_gi_is_read_back(make_host) -> None:
    root = make_host(
        GpuSpec("a100-40gb", "0000:41:00.0", mig=True, gi_ids="swapped-halves"), vgpu="mdev"
    )
    sriov_manage(str(root), ["-e", "0000:41:00.0"])
    vf0 = "bus/pci/devices/0000:41:00.4"
    types = {
        read(root, f"{vf0}/mdev_supported_types/{t}/name"): t
        for t in os.listdir(root / "sys" / vf0 / "mdev_supported_types")
    }
    t3g = types["NVIDIA A100-3-20C"]
    avail = f"{vf0}/mdev_supported_types/{t3g}/available_instances"
    assert read(root, avail) == "0"  # no 3g GI yet
    with pytest.raises(OSError) as err:
        sysfs_write(root, f"{vf0}/mdev_supported_types/{t3g}/create", U1)
    assert err.value.errno == errno.EUSERS
    ids = create_gis(root, (9, 0, 4), (9, 4, 4))
    assert ids == [2, 1]  # swapped halves: the GI at 4 has the lower id
    assert read(root, avail) == "1"
    sysfs_write(root, f"{vf0}/mdev_supported_types/{t3g}/create", U1)
    assert read(root, avail) == "0"  # one vGPU per VF
    mdev = f"bus/mdev/devices/{U1}"
    assert not (root / "sys" / mdev / "nvidia" / "gpu_instance_id").exists()  # undocumented
    assert active_gis(root) == []  # NVML lists a vGPU only while its VM runs
    run_vm(root, "vm1", U2, U1)
    number = int(t3g.removeprefix("nvidia-"))
    assert active_gis(root) == [(number, 1, U2, U1)]  # the driver's pick: the lowest GI id
    assert os.path.basename(os.readlink(root / "sys" / mdev / "mdev_type")) == t3g
    with pytest.raises(OSError) as err:
        sysfs_write(root, f"bus/pci/devices/0000:41:00.5/mdev_supported_types/{t3g}/create", U1)
    assert err.value.errno == errno.EEXIST
    with pytest.raises(OSError) as err:
        sysfs_write(root, f"{vf0}/mdev_supported_types/{t3g}/create", "not-a-uuid")
    assert err.value.errno == errno.EINVAL
    n = FakeNvml(root)
    n.nvmlInit()
    h = n.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(pynvml.NVMLError_InUse):  # the GI backs a vGPU
        n.nvmlGpuInstanceDestroy(n.nvmlDeviceGetGpuInstanceById(h, 1))
    sysfs_write(root, f"{mdev}/remove", "1")
    assert not (root / "sys" / mdev).exists()
    n.nvmlGpuInstanceDestroy(n.nvmlDeviceGetGpuInstanceById(h, 1))


def test_vendor_vfio_vgpu_types(make_host) -> None:
    root = make_host(
        GpuSpec("h100-80gb", "0000:65:00.0", mig=True, gi_ids="identity"), vgpu="vfio-vf"
    )
    assert not (root / "sys" / "bus" / "mdev").exists()
    sriov_manage(str(root), ["-e", "0000:65:00.0"])
    vf = "bus/pci/devices/0000:65:00.4/nvidia"
    assert read(root, f"{vf}/creatable_vgpu_types").splitlines() == ["ID    : vGPU Name"]
    create_gis(root, (19, 3, 1))
    lines = read(root, f"{vf}/creatable_vgpu_types").splitlines()
    assert len(lines) == 2 and lines[1].endswith(" : NVIDIA H100XM-1-10C")
    type_id = lines[1].split(" : ")[0]
    with pytest.raises(OSError) as err:
        sysfs_write(root, f"{vf}/current_vgpu_type", "999999")
    assert err.value.errno == errno.EINVAL and read(root, f"{vf}/current_vgpu_type") == "0"
    sysfs_write(root, f"{vf}/current_vgpu_type", type_id)
    assert read(root, f"{vf}/current_vgpu_type") == type_id
    assert not (root / "sys" / "bus/pci/devices/0000:65:00.4/nvidia/gpu_instance_id").exists()
    run_vm(root, "vm1", U2, "0000:65:00.4")
    assert active_gis(root) == [(int(type_id), 10, U2, None)]  # no mdev behind a VF
    other = "bus/pci/devices/0000:65:00.5/nvidia/creatable_vgpu_types"
    assert read(root, other).splitlines() == ["ID    : vGPU Name"]  # the only 1g GI is taken
    code, out = sriov_manage(str(root), ["-d", "0000:65:00.0"])
    assert code == 1 and "holds a vGPU" in out[-1]
    sysfs_write(root, f"{vf}/current_vgpu_type", "0")
    assert sriov_manage(str(root), ["-d", "0000:65:00.0"])[0] == 0


def test_rtx_vgpu_types_need_a_gfx_instance(make_host) -> None:
    """RTX PRO 6000: no vGPU type runs on a plain 1g.24gb instance; DC-1-24C runs on
    1g.24gb+gfx (profile 47), and its name has no GFX suffix (vgpu-on-mig.md 1.6)."""
    root = make_host(
        GpuSpec("rtx-pro-6000", "0000:65:00.0", mig=True, gi_ids="identity"), vgpu="vfio-vf"
    )
    sriov_manage(str(root), ["-e", "0000:65:00.0"])
    vf, other = (f"bus/pci/devices/0000:65:00.{f}/nvidia" for f in (4, 5))
    create_gis(root, (14, 0, 3))  # plain 1g.24gb
    assert read(root, f"{vf}/creatable_vgpu_types").splitlines() == ["ID    : vGPU Name"]
    create_gis(root, (47, 3, 3))  # 1g.24gb+gfx
    lines = read(root, f"{vf}/creatable_vgpu_types").splitlines()
    assert len(lines) == 2 and lines[1].endswith(" : NVIDIA DC-1-24C"), lines
    sysfs_write(root, f"{vf}/current_vgpu_type", lines[1].split(" : ")[0])
    # the plain instance is still free, yet nothing is creatable on it
    assert read(root, f"{other}/creatable_vgpu_types").splitlines() == ["ID    : vGPU Name"]
    sysfs_write(root, f"{vf}/current_vgpu_type", "0")


def test_sriov_manage_faults(make_host) -> None:
    from planner.sim import faults
    from planner.sim.state import SimStore

    root = make_host(GpuSpec("a100-40gb", "0000:41:00.0"), vgpu="mdev")
    with SimStore(root).transaction() as state:
        faults.arm(state, "sriov-manage", 1, "EIO")
    code, out = sriov_manage(str(root), ["-e", "0000:41:00.0"])
    assert code == 1 and "Input/output error" in out[-1]
    assert sriov_manage(str(root), ["-e", "0000:41:00.0"])[0] == 0
    assert SimStore(root).read().faults[0].fired


def test_proc_view_of_holders(make_host) -> None:
    from planner.sim import driver
    from planner.sim.state import SimStore

    root = make_host(GpuSpec("a100-40gb"), GpuSpec("a100-40gb"))
    with SimStore(root).transaction() as state:
        driver.hold(state.gpus[1], "nvidia-persistenced", 812)
    assert (root / "proc/812/comm").read_text() == "nvidia-persiste\n"
    assert (root / "proc/812/cmdline").read_text() == "nvidia-persistenced\0"
    assert sorted(os.readlink(p) for p in (root / "proc/812/fd").iterdir()) == [
        "/dev/nvidia1",
        "/dev/nvidiactl",
    ]
    with SimStore(root).transaction() as state:
        driver.release(state.gpus[1], None, 812)
    assert not (root / "proc/812").exists()
