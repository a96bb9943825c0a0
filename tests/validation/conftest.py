"""A fake host for the validator: a sysfs/proc tree in tmp_path in the kernel's layout,
plus the HostState that the probe would read from NVML on the same machine."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from planner.host.state import (
    ComputeInstance,
    Domain,
    Gpu,
    GpuInstance,
    Hostdev,
    HostState,
    Mdev,
    VgpuParent,
    VgpuType,
)

A100 = "NVIDIA A100-SXM4-40GB"
PF = "0000:17:00.0"
VF = "0000:17:00.4"
PASS_GPU = "0000:65:00.0"
PASS_AUDIO = "0000:65:00.1"
MIG_UUID = "MIG-11111111-2222-3333-4444-555555555555"


class FakeTree:
    """Writes the files the validator reads; every method mirrors one kernel fact."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.sys = root / "sys"
        (self.sys / "bus/pci/devices").mkdir(parents=True)
        (self.sys / "kernel/iommu_groups").mkdir(parents=True)
        (root / "proc").mkdir()
        self.proc("cmdline", "BOOT_IMAGE=/vmlinuz root=/dev/sda1 intel_iommu=on\n")
        self.proc("modules", "")

    def proc(self, name: str, text: str) -> None:
        (self.root / "proc" / name).write_text(text)

    def device(self, bdf: str, *, driver: str | None, klass: str = "0x030200",
               group: int | None = None, vendor: str = "0x10de") -> Path:
        d = self.sys / "bus/pci/devices" / bdf
        d.mkdir(parents=True, exist_ok=True)
        (d / "class").write_text(klass + "\n")
        (d / "vendor").write_text(vendor + "\n")
        self.bind(bdf, driver)
        if group is not None:
            g = self.sys / "kernel/iommu_groups" / str(group) / "devices"
            g.mkdir(parents=True, exist_ok=True)
            os.symlink(f"../../../../bus/pci/devices/{bdf}", g / bdf)
            os.symlink(f"../../../kernel/iommu_groups/{group}", d / "iommu_group")
        return d

    def bind(self, bdf: str, driver: str | None) -> None:
        link = self.sys / "bus/pci/devices" / bdf / "driver"
        if link.is_symlink():
            link.unlink()
        if driver is not None:
            (self.sys / "bus/pci/drivers" / driver).mkdir(parents=True, exist_ok=True)
            os.symlink(f"../../../bus/pci/drivers/{driver}", link)

    def module(self, name: str) -> None:
        (self.sys / "module" / name).mkdir(parents=True, exist_ok=True)

    def sriov(self, bdf: str, total: int, num: int) -> None:
        d = self.sys / "bus/pci/devices" / bdf
        (d / "sriov_totalvfs").write_text(f"{total}\n")
        (d / "sriov_numvfs").write_text(f"{num}\n")


def a100(*, instances: tuple[GpuInstance, ...] = (), **kw: object) -> Gpu:
    fields: dict[str, object] = {
        "index": 0, "pci": PF, "uuid": "GPU-aaaaaaaa-0000-0000-0000-000000000000", "name": A100,
        "model": "a100-40gb", "pci_device_id": "20b0", "mig_capable": True, "mig_current": True,
        "mig_pending": True, "driver": "nvidia", "gpu_instances": instances,
    }
    fields.update(kw)
    return Gpu.model_validate(fields)


def gi(gi_id: int, profile_id: int, name: str, start: int, size: int,
       uuid: str | None = None) -> GpuInstance:
    ci = ComputeInstance(ci_id=0, profile_id=2, placement_start=0, placement_size=3,
                         mig_uuid=uuid)
    return GpuInstance(gi_id=gi_id, profile_id=profile_id, profile_name=name,
                       placement_start=start, placement_size=size, compute_instances=(ci,))


def mdev_parent(*names: str, backend: str = "mdev") -> VgpuParent:
    types = tuple(VgpuType(type_id=f"nvidia-{470 + i}", name=n, available_instances=1)
                  for i, n in enumerate(names))
    return VgpuParent.model_validate(
        {"pci": VF, "physfn": PF, "backend": backend, "types": types}
    )


def host_state(*gpus: Gpu, parents: tuple[VgpuParent, ...] | None = None,
               mdevs: tuple[Mdev, ...] = (), domains: tuple[Domain, ...] = ()) -> HostState:
    if parents is None:
        parents = (mdev_parent("NVIDIA A100-1-5C", "NVIDIA A100-2-10C", "NVIDIA A100-3-20C"),)
    return HostState(uri="sim:/fake", gpus=gpus or (a100(),), vgpu_parents=parents,
                     mdevs=mdevs, domains=domains, vgpu_backend="mdev")


def other_domain(mdev_uuid: str, name: str = "someone-else") -> Domain:
    return Domain(name=name, uuid="00000000-0000-0000-0000-0000000000d1", state="running",
                  hostdevs=(Hostdev(type="mdev", uuid=mdev_uuid),))


@pytest.fixture
def tree(tmp_path: Path) -> FakeTree:
    """A healthy host: IOMMU on, VFIO loaded, the A100 on nvidia with 4 VFs enabled, a
    second GPU and its audio function in IOMMU group 40 on vfio-pci behind a bridge."""
    t = FakeTree(tmp_path)
    t.device(PF, driver="nvidia", group=23)
    t.sriov(PF, 16, 4)
    t.device(VF, driver="nvidia", group=90)
    t.device(PASS_GPU, driver="vfio-pci", group=40)
    t.device(PASS_AUDIO, driver="vfio-pci", klass="0x040300", group=40)
    t.device("0000:64:00.0", driver="pcieport", klass="0x060400", group=40, vendor="0x8086")
    t.device("0000:00:1f.0", driver="lpc_ich", klass="0x060100", group=1, vendor="0x8086")
    t.module("vfio_pci")
    t.module("vfio_iommu_type1")
    t.proc("modules", "vfio_pci 16384 0 - Live 0x0\nvfio_iommu_type1 45056 0 - Live 0x0\n")
    return t


__all__ = ["A100", "MIG_UUID", "PASS_AUDIO", "PASS_GPU", "PF", "VF", "FakeTree", "a100", "gi",
           "host_state", "mdev_parent", "other_domain"]
