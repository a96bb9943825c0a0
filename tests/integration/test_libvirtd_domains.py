"""Domains with vGPU hostdevs on a real libvirtd: define, attach, detach, roll back."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from planner.host import libvirt_domains as ld
from planner.host.state import Hostdev
from planner.vm.vm_factory import (
    GpuAttachment,
    MdevDevice,
    PciDevice,
    VirtioFsMount,
    VMFactory,
    VMSpec,
)

pytestmark = pytest.mark.libvirtd
F = VMFactory()


@pytest.fixture
def cluster(libvirtd_conn: Any) -> Iterator[str]:
    """A unique cluster name; every domain whose name starts with it is removed after the
    test, whether it passed or not."""
    name = f"aihowit{secrets.token_hex(4)}"
    yield name
    for dom in libvirtd_conn.listAllDomains():
        if dom.name().startswith(name + "-"):
            if dom.isActive():
                dom.destroy()
            dom.undefine()


def uuid_for(i: int) -> str:
    return f"{i:08x}-{secrets.token_hex(2)}-4{secrets.token_hex(2)[1:]}-8000-{secrets.token_hex(6)}"


def spec(
    cluster: str, n: int, virt_type: str, gpu: GpuAttachment | None = None, **kw: Any
) -> VMSpec:
    return VMSpec(
        name=f"{cluster}-compute-{n:02d}",
        cluster_name=cluster,
        role="compute",
        cpu_cores=2,
        memory_gb=2,
        disk_gb=20,
        bridge="virbr100",
        gpu=gpu,
        virt_type=virt_type,  # type: ignore[arg-type]
        **kw,
    )


def names(conn: Any, cluster: str) -> list[str]:
    return sorted(d.name() for d in conn.listAllDomains() if d.name().startswith(cluster + "-"))


def test_domains_with_mdev_hostdevs_are_defined_changed_and_rolled_back(
    libvirtd_conn: Any, cluster: str, virt_type: str
) -> None:
    conn = libvirtd_conn
    mdevs = [uuid_for(i) for i in range(4)]
    undo: list[ld.DomainOp] = []
    # Four compute nodes, each with its own MIG-backed vGPU (mdev).
    for i in range(4):
        s = spec(cluster, i + 1, virt_type, GpuAttachment.mdev(mdevs[i], mig_profile="1g.5gb"))
        undo.append(ld.run_op(conn, ld.DomainOp("define", s.name, F.domain_xml(s))))
    assert names(conn, cluster) == [f"{cluster}-compute-{i:02d}" for i in range(1, 5)]
    for i in range(4):
        assert ld.persistent_hostdevs(conn, f"{cluster}-compute-{i + 1:02d}") == (
            Hostdev(type="mdev", uuid=mdevs[i]),
        )

    # An existing domain (as ai-how leaves it, no GPU) gets its vGPU attached in place.
    plain = spec(cluster, 5, virt_type)
    undo.append(ld.run_op(conn, ld.DomainOp("define", plain.name, F.domain_xml(plain))))
    uuid_before = conn.lookupByName(plain.name).UUIDString()
    extra = uuid_for(9)
    undo.append(ld.attach_hostdev(conn, plain.name, F.hostdev_xml(MdevDevice(extra))))
    assert conn.lookupByName(plain.name).UUIDString() == uuid_before
    assert ld.persistent_hostdevs(conn, plain.name) == (Hostdev(type="mdev", uuid=extra),)
    with pytest.raises(ld.DomainError, match="already in its configuration"):
        ld.attach_hostdev(conn, plain.name, F.hostdev_xml(MdevDevice(extra)))

    # Take node 1's vGPU off it (detach); its inverse is undone with the rest.
    first = f"{cluster}-compute-01"
    undo.append(ld.detach_hostdev(conn, first, F.hostdev_xml(MdevDevice(mdevs[0]))))
    assert ld.persistent_hostdevs(conn, first) == ()

    # Starting a domain with an mdev fails here (no VFIO), cleanly, leaving it defined.
    with pytest.raises(ld.DomainError, match=f"domain {cluster}-compute-02: start failed"):
        ld.start(conn, f"{cluster}-compute-02")
    assert not conn.lookupByName(f"{cluster}-compute-02").isActive()

    # Roll back newest first: everything disappears again.
    for op in reversed(undo):
        ld.run_op(conn, op)
    assert names(conn, cluster) == []


def test_detach_then_inverse_gives_back_the_same_definition(
    libvirtd_conn: Any, cluster: str, virt_type: str
) -> None:
    conn = libvirtd_conn
    s = spec(cluster, 1, virt_type, GpuAttachment.mdev(uuid_for(1), mig_profile="1g.5gb"))
    ld.define(conn, F.domain_xml(s))
    before = ld.persistent_xml(conn, s.name)
    inverse = ld.detach_hostdev(conn, s.name, F.hostdev_xml(s.hostdevs[0]))
    ld.run_op(conn, inverse)
    assert ld.persistent_xml(conn, s.name) == before  # same guest PCI address too


@pytest.mark.parametrize(
    "variant",
    ["cpu-only", "mdev", "vf", "whole-gpu", "virtio-fs"],
)
def test_every_rendered_variant_is_accepted_by_the_qemu_driver(
    libvirtd_conn: Any, cluster: str, virt_type: str, variant: str
) -> None:
    gpu = {
        "cpu-only": None,
        "mdev": GpuAttachment.mdev(uuid_for(2), mig_profile="1g.5gb"),
        "vf": GpuAttachment.vf("0000:17:00.4", mig_profile="1g.10gb"),
        "whole-gpu": GpuAttachment.whole_gpu("0000:41:00.0"),
        "virtio-fs": None,
    }[variant]
    extra: dict[str, Any] = {}
    if variant == "virtio-fs":
        extra["virtio_fs"] = (VirtioFsMount("shared", "/srv/shared"),)
    if variant == "whole-gpu":
        extra["passthrough"] = (PciDevice("0000:41:00.1"),)
    s = spec(cluster, 1, virt_type, gpu, **extra)
    inverse = ld.define(libvirtd_conn, F.domain_xml(s))
    got = ld.persistent_hostdevs(libvirtd_conn, s.name)
    assert [h.uuid or h.pci for h in got] == [d.key for d in s.hostdevs]
    ld.run_op(libvirtd_conn, inverse)
    assert names(libvirtd_conn, cluster) == []


def test_libvirt_nodedev_define_needs_a_parent_libvirt_knows(libvirtd_conn: Any) -> None:
    """libvirt's node-device path refuses a parent it has not enumerated (no GPU here),
    where mdevctl accepts it: one reason aihow persists mdevs with mdevctl."""
    from planner.host.mdev_persist import LibvirtNodedev, MdevDefinition, MdevPersistError

    d = MdevDefinition(uuid_for(7), "0000:fe:1f.7", "nvidia-474")
    with pytest.raises(MdevPersistError, match=f"define mdev {d.uuid} on 0000:fe:1f.7: .*parent"):
        LibvirtNodedev(libvirtd_conn).define(d)
    assert d not in LibvirtNodedev(libvirtd_conn).list_defined()
