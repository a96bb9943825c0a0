"""Domain writes and their inverses, against libvirt's test driver (a real libvirt)."""

from __future__ import annotations

from typing import Any

import pytest

from planner.host import libvirt_domains as ld
from planner.host.state import Hostdev
from planner.vm.vm_factory import GpuAttachment, MdevDevice, PciDevice, VMFactory, VMSpec

U1 = "11111111-2222-4333-8444-555555555555"
U2 = "66666666-7777-4888-9999-aaaaaaaaaaaa"
F = VMFactory()


def spec(name: str = "hpc-compute-01", gpu: GpuAttachment | None = None) -> VMSpec:
    return VMSpec(
        name=name,
        cluster_name="hpc",
        role="compute",
        cpu_cores=2,
        memory_gb=4,
        disk_gb=20,
        bridge="virbr100",
        gpu=gpu,
    )


def inactive(conn: Any, name: str) -> str:
    return ld.persistent_xml(conn, name)


def test_define_returns_undefine_and_refuses_an_existing_name(test_conn: Any) -> None:
    xml = F.domain_xml(spec(gpu=GpuAttachment.mdev(U1, mig_profile="1g.5gb")))
    inverse = ld.define(test_conn, xml)
    assert inverse == ld.DomainOp("undefine", "hpc-compute-01")
    assert ld.persistent_hostdevs(test_conn, "hpc-compute-01") == (Hostdev(type="mdev", uuid=U1),)
    with pytest.raises(ld.DomainError, match="already exists; aihow attaches devices"):
        ld.define(test_conn, xml)
    ld.run_op(test_conn, inverse)
    assert not ld.domain_exists(test_conn, "hpc-compute-01")


def test_attach_to_existing_domain_changes_only_the_hostdev(test_conn: Any) -> None:
    # A domain ai-how made, without a GPU; aihow adds the vGPU to its persistent config.
    ld.define(test_conn, F.domain_xml(spec()))
    before = inactive(test_conn, "hpc-compute-01")
    inverse = ld.attach_hostdev(test_conn, "hpc-compute-01", F.hostdev_xml(MdevDevice(U1)))
    assert inverse.kind == "detach_hostdev"
    assert ld.persistent_hostdevs(test_conn, "hpc-compute-01") == (Hostdev(type="mdev", uuid=U1),)
    dom = test_conn.lookupByName("hpc-compute-01")
    assert dom.UUIDString() == spec().uuid  # the same domain, not a new one
    ld.run_op(test_conn, inverse)
    assert inactive(test_conn, "hpc-compute-01") == before


def test_attach_twice_and_detach_missing_are_refused(test_conn: Any) -> None:
    ld.define(test_conn, F.domain_xml(spec(gpu=GpuAttachment.mdev(U1))))
    with pytest.raises(ld.DomainError, match=f"mdev {U1} is already in its configuration"):
        ld.attach_hostdev(test_conn, "hpc-compute-01", F.hostdev_xml(MdevDevice(U1)))
    with pytest.raises(ld.DomainError, match=f"mdev {U2} is not in its configuration"):
        ld.detach_hostdev(test_conn, "hpc-compute-01", F.hostdev_xml(MdevDevice(U2)))
    with pytest.raises(ld.DomainError, match="domain nope does not exist"):
        ld.attach_hostdev(test_conn, "nope", F.hostdev_xml(MdevDevice(U2)))


def test_detach_inverse_restores_the_exact_element(test_conn: Any) -> None:
    ld.define(
        test_conn,
        F.domain_xml(spec(gpu=GpuAttachment.vf("0000:17:00.4", mig_profile="1g.10gb"))),
    )
    before = inactive(test_conn, "hpc-compute-01")
    # Detach by device identity; the XML passed need not match formatting or address.
    inverse = ld.detach_hostdev(
        test_conn, "hpc-compute-01", F.hostdev_xml(PciDevice("17:00.4", "vf"))
    )
    assert ld.persistent_hostdevs(test_conn, "hpc-compute-01") == ()
    assert inverse.kind == "attach_hostdev" and "0x17" in inverse.xml
    ld.run_op(test_conn, inverse)
    assert ld.persistent_hostdevs(test_conn, "hpc-compute-01") == (
        Hostdev(type="pci", pci="0000:17:00.4"),
    )
    assert inactive(test_conn, "hpc-compute-01") == before


def test_running_domain_is_not_stopped_and_change_waits_for_next_boot(test_conn: Any) -> None:
    ld.define(test_conn, F.domain_xml(spec()))
    dom = test_conn.lookupByName("hpc-compute-01")
    dom.create()
    live_before = dom.XMLDesc(0)
    ld.attach_hostdev(test_conn, "hpc-compute-01", F.hostdev_xml(MdevDevice(U2)))
    assert dom.isActive()
    assert dom.XMLDesc(0) == live_before  # nothing hot-plugged
    assert Hostdev(type="mdev", uuid=U2) in ld.persistent_hostdevs(test_conn, "hpc-compute-01")

    with pytest.raises(ld.DomainRunningError, match="running; undefining it needs stopping"):
        ld.undefine(test_conn, "hpc-compute-01")
    with pytest.raises(ld.DomainRunningError):
        ld.stop(test_conn, "hpc-compute-01")
    assert dom.isActive() and ld.domain_exists(test_conn, "hpc-compute-01")


def test_undefine_with_allow_stop_and_its_inverse_restarts(test_conn: Any) -> None:
    ld.define(test_conn, F.domain_xml(spec(gpu=GpuAttachment.mdev(U1))))
    test_conn.lookupByName("hpc-compute-01").create()
    before = inactive(test_conn, "hpc-compute-01")
    inverse = ld.undefine(test_conn, "hpc-compute-01", allow_stop=True)
    assert not ld.domain_exists(test_conn, "hpc-compute-01")
    assert inverse.kind == "define" and inverse.start
    again = ld.run_op(test_conn, ld.DomainOp.from_json(inverse.to_json()))
    dom = test_conn.lookupByName("hpc-compute-01")
    assert dom.isActive()
    assert inactive(test_conn, "hpc-compute-01") == before
    assert again == ld.DomainOp("undefine", "hpc-compute-01")
    ld.run_op(test_conn, again, allow_stop=True)
    assert not ld.domain_exists(test_conn, "hpc-compute-01")


def test_start_and_stop_are_inverses(test_conn: Any) -> None:
    ld.define(test_conn, F.domain_xml(spec()))
    inverse = ld.start(test_conn, "hpc-compute-01")
    assert inverse == ld.DomainOp("stop", "hpc-compute-01")
    with pytest.raises(ld.DomainError, match="already running"):
        ld.start(test_conn, "hpc-compute-01")
    assert ld.run_op(test_conn, inverse, allow_stop=True) == ld.DomainOp("start", "hpc-compute-01")
    assert not test_conn.lookupByName("hpc-compute-01").isActive()


def test_a_sequence_rolls_back_to_the_start(test_conn: Any) -> None:
    """What apply does: run ops, collect inverses, undo newest first."""
    ld.define(test_conn, F.domain_xml(spec("hpc-compute-02", GpuAttachment.mdev(U2))))
    snapshot = {
        d.name(): ld.persistent_xml(test_conn, d.name()) for d in test_conn.listAllDomains()
    }
    ops = [
        ld.DomainOp("define", "hpc-compute-01", F.domain_xml(spec())),
        ld.DomainOp("attach_hostdev", "hpc-compute-01", F.hostdev_xml(MdevDevice(U1))),
        ld.DomainOp("detach_hostdev", "hpc-compute-02", F.hostdev_xml(MdevDevice(U2))),
        ld.DomainOp("undefine", "hpc-compute-02"),
    ]
    undo = [ld.run_op(test_conn, op) for op in ops]
    assert [d.name() for d in test_conn.listAllDomains()] == ["hpc-compute-01"]
    for op in reversed(undo):
        ld.run_op(test_conn, op)
    after = {d.name(): ld.persistent_xml(test_conn, d.name()) for d in test_conn.listAllDomains()}
    assert after == snapshot


def test_bad_xml_is_a_clear_error(test_conn: Any) -> None:
    with pytest.raises(ld.DomainError, match="does not parse"):
        ld.define(test_conn, "<domain")
    with pytest.raises(ld.DomainError, match="has no <name>"):
        ld.define(test_conn, "<domain type='kvm'/>")
    ld.define(test_conn, F.domain_xml(spec()))
    with pytest.raises(ld.DomainError, match="expected a <hostdev"):
        ld.attach_hostdev(test_conn, "hpc-compute-01", "<disk/>")
    with pytest.raises(ValueError, match="unknown domain operation"):
        ld.DomainOp("reboot", "x")  # type: ignore[arg-type]


def test_describe_names_device_and_domain() -> None:
    op = ld.DomainOp("attach_hostdev", "hpc-compute-01", F.hostdev_xml(MdevDevice(U1)))
    assert op.describe() == f"attach hostdev mdev {U1} on domain hpc-compute-01"


def test_changes_survive_a_sim_session_commit(tmp_path: Any) -> None:
    """Through the host layer's sim session (test driver + DIR/libvirt store): a hostdev
    attached to a running domain is pending in the next process, the domain still runs."""
    from planner.cli.host_opts import open_environment

    sim = tmp_path / "sim"
    sim.mkdir()
    with open_environment(f"sim:{sim}").libvirt() as s:
        ld.define(s.conn, F.domain_xml(spec()))
        ld.start(s.conn, "hpc-compute-01")
        ld.attach_hostdev(s.conn, "hpc-compute-01", F.hostdev_xml(MdevDevice(U1)))
        s.commit()
    with open_environment(f"sim:{sim}").libvirt() as s:
        dom = s.conn.lookupByName("hpc-compute-01")
        assert dom.isActive()
        assert ld.hostdevs_in_xml(dom.XMLDesc(0)) == ()
        assert ld.persistent_hostdevs(s.conn, "hpc-compute-01") == (Hostdev(type="mdev", uuid=U1),)
        inverse = ld.detach_hostdev(s.conn, "hpc-compute-01", F.hostdev_xml(MdevDevice(U1)))
        s.commit()
    with open_environment(f"sim:{sim}").libvirt() as s:
        assert ld.persistent_hostdevs(s.conn, "hpc-compute-01") == ()
        assert inverse.kind == "attach_hostdev"
