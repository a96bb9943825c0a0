"""libvirt adapters: the simulated host's domains persist across processes through
libvirt's real test driver; the probe's connection is read-only."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import libvirt
import pytest

from planner.cli.host_opts import open_environment
from planner.host.errors import HostError
from planner.host.libvirt_read import (
    parse_hostdevs,
    read_domains,
    read_running_domains_by_uuid,
)
from planner.host.state import Hostdev
from planner.sim.host import GpuSpec

MDEV = "2f0c6a3e-1111-4222-8333-444455556666"


def domain_xml(
    name: str, *, mdev: str | None = None, vf: str | None = None, uuid: str | None = None
) -> str:
    devs = ""
    if mdev:
        devs += (
            "<hostdev mode='subsystem' type='mdev' model='vfio-pci' managed='no'>"
            f"<source><address uuid='{mdev}'/></source></hostdev>"
        )
    if vf:
        dom, bus, rest = vf.split(":")
        slot, fn = rest.split(".")
        devs += (
            "<hostdev mode='subsystem' type='pci' managed='yes'><source>"
            f"<address domain='0x{dom}' bus='0x{bus}' slot='0x{slot}' function='0x{fn}'/>"
            "</source></hostdev>"
        )
    return textwrap.dedent(f"""\
        <domain type='kvm'>
          <name>{name}</name>{f"<uuid>{uuid}</uuid>" if uuid else ""}
          <memory unit='MiB'>512</memory>
          <vcpu>1</vcpu>
          <os><type arch='x86_64'>hvm</type></os>
          <devices>{devs}</devices>
        </domain>
        """)


@pytest.fixture(params=["simulated host", "bare directory"])
def sim_dir(request: pytest.FixtureRequest, make_host: Callable[..., Path],
            tmp_path: Path) -> Path:
    """A simulated host's DIR, or a plain directory that only keeps libvirt state."""
    if request.param == "bare directory":
        return tmp_path
    return make_host(GpuSpec("a100-40gb"))


def run_py(code: str) -> str:
    """Run code in a fresh interpreter: a separate process, as plan and apply are."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_domains_persist_across_processes(sim_dir: Path) -> None:
    sim = f"sim:{sim_dir}"
    run_py(f"""
        from planner.cli.host_opts import open_environment
        with open_environment({sim!r}).libvirt() as s:
            d = s.conn.defineXML({domain_xml("vm-a", mdev=MDEV)!r})
            d.create()
            s.conn.defineXML({domain_xml("vm-b", vf="0000:41:00.4")!r})
            s.commit()
            s.conn.defineXML({domain_xml("vm-uncommitted")!r})
    """)
    out = run_py(f"""
        import json
        from planner.cli.host_opts import open_environment
        from planner.host.libvirt_read import read_domains
        with open_environment({sim!r}).libvirt(read_only=True) as s:
            print(json.dumps([d.model_dump(mode="json") for d in read_domains(s.conn)]))
    """)
    domains = {d["name"]: d for d in json.loads(out)}
    assert sorted(domains) == ["vm-a", "vm-b"]  # what was not committed is gone
    assert domains["vm-a"]["state"] == "running"
    assert domains["vm-a"]["hostdevs"] == [{"type": "mdev", "uuid": MDEV, "pci": None}]
    assert domains["vm-b"]["state"] == "shut off"
    assert domains["vm-b"]["hostdevs"] == [{"type": "pci", "uuid": None, "pci": "0000:41:00.4"}]
    assert (sim_dir / "libvirt" / "domains" / "vm-a.xml").is_file()


def test_uuid_state_and_removal_round_trip(sim_dir: Path) -> None:
    sim = f"sim:{sim_dir}"
    with open_environment(sim).libvirt() as s:
        dom = s.conn.defineXML(domain_xml("vm-a"))
        uuid = dom.UUIDString()
        dom.create()
        dom.suspend()
        s.conn.defineXML(domain_xml("vm-gone"))
        s.commit()
    with open_environment(sim).libvirt() as s:
        dom = s.conn.lookupByName("vm-a")
        assert dom.UUIDString() == uuid
        assert dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED
        dom.resume()
        dom.destroy()
        s.conn.lookupByName("vm-gone").undefine()
        s.commit()
    with open_environment(sim).libvirt(read_only=True) as s:
        assert [(d.name, d.state) for d in read_domains(s.conn)] == [("vm-a", "shut off")]
    assert not (sim_dir / "libvirt" / "domains" / "vm-gone.xml").exists()


def test_transient_and_pending_definition_survive(sim_dir: Path) -> None:
    sim = f"sim:{sim_dir}"
    with open_environment(sim).libvirt() as s:
        s.conn.createXML(domain_xml("vm-transient", mdev=MDEV), 0)
        dom = s.conn.defineXML(domain_xml("vm-run"))
        dom.create()
        # Redefining a running domain changes only its persistent definition.
        s.conn.defineXML(domain_xml("vm-run", mdev=MDEV, uuid=dom.UUIDString()))
        s.commit()
    with open_environment(sim).libvirt() as s:
        t = s.conn.lookupByName("vm-transient")
        assert t.isActive() and not t.isPersistent()
        run = s.conn.lookupByName("vm-run")
        assert MDEV not in run.XMLDesc(0)
        assert MDEV in run.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        t.destroy()  # a transient domain that stops is gone
        s.commit()
    with open_environment(sim).libvirt(read_only=True) as s:
        names = [d.name for d in read_domains(s.conn)]
    assert names == ["vm-run"]


def test_read_only_session_refuses_changes(sim_dir: Path) -> None:
    with open_environment(f"sim:{sim_dir}").libvirt(read_only=True) as s:
        with pytest.raises(libvirt.libvirtError, match="read only"):
            s.conn.defineXML(domain_xml("vm-a"))
        with pytest.raises(HostError, match="read-only"):
            s.commit()
    assert not (sim_dir / "libvirt" / "runstate.json").exists()


def test_hand_written_domain_without_uuid_gets_a_stable_one(sim_dir: Path) -> None:
    (sim_dir / "libvirt" / "domains").mkdir(parents=True)
    (sim_dir / "libvirt" / "domains" / "vm-h.xml").write_text(domain_xml("vm-h"))
    uuids = set()
    for _ in range(2):
        with open_environment(f"sim:{sim_dir}").libvirt(read_only=True) as s:
            uuids.add(s.conn.lookupByName("vm-h").UUIDString())
    assert len(uuids) == 1


def test_unknown_uri_and_missing_dir_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(HostError, match="unknown host URI 'qemu:///system'"):
        open_environment("qemu:///system").libvirt()
    with pytest.raises(HostError, match="no such directory"):
        open_environment(f"sim:{tmp_path / 'absent'}").libvirt()
    with pytest.raises(HostError, match="cannot connect to libvirt at bogus:///x"):
        open_environment("local", "bogus:///x").libvirt()


def test_override_opens_that_uri_and_commit_is_a_no_op(sim_dir: Path) -> None:
    with open_environment(f"sim:{sim_dir}", "test:///default").libvirt() as s:
        assert s.conn.getURI() == "test:///default"
        s.commit()
    assert not (sim_dir / "libvirt").exists()


def test_parse_hostdevs_reads_mdev_and_pci_in_order() -> None:
    xml = domain_xml("x", mdev=MDEV.upper(), vf="0000:41:01.2")
    assert parse_hostdevs(xml) == (
        Hostdev(type="mdev", uuid=MDEV),
        Hostdev(type="pci", pci="0000:41:01.2"),
    )


def test_parse_hostdevs_bad_xml_names_the_domain() -> None:
    with pytest.raises(HostError, match=r"domain\[x\]: unreadable domain XML"):
        parse_hostdevs("<domain>", "domain[x]")


def test_injected_faults_fail_the_named_operation_once(make_host: Callable[..., Path]) -> None:
    from planner.sim.faults import arm
    from planner.sim.state import SimStore

    sim_dir = make_host(GpuSpec("a100-40gb"))
    with SimStore(sim_dir).transaction() as state:
        arm(state, "virDomainCreate", 2, "VIR_ERR_OPERATION_TIMEOUT")
        arm(state, "virDomainDefineXML", 1)
    with open_environment(f"sim:{sim_dir}").libvirt() as s:
        with pytest.raises(libvirt.libvirtError, match="virDomainDefineXML: injected") as info:
            s.conn.defineXML(domain_xml("vm-a"))
        assert info.value.get_error_code() == libvirt.VIR_ERR_OPERATION_FAILED
        assert s.conn.listAllDomains() == []  # nothing was defined
        s.conn.defineXML(domain_xml("vm-a"))  # the fault fired once
        s.conn.defineXML(domain_xml("vm-b"))
        s.conn.lookupByName("vm-a").create()  # first create: counted, no fault
        dom = s.conn.lookupByName("vm-b")
        with pytest.raises(libvirt.libvirtError) as info:
            dom.create()
        assert info.value.get_error_code() == libvirt.VIR_ERR_OPERATION_TIMEOUT
        assert not dom.isActive()
        dom.create()
        assert isinstance(s.conn, libvirt.virConnect) and isinstance(dom, libvirt.virDomain)


def test_running_domains_by_uuid_skip_what_is_not_a_running_domain() -> None:
    """NVML's VM ids of one GPU's vGPUs: a UUID of a running domain is read; one no domain
    has, one of a shut-off domain, and an id that is no UUID (another hypervisor's kind)
    are left out, none of them an error."""
    conn = libvirt.open("test:///default")  # its "test" domain runs
    try:
        running = conn.lookupByName("test").UUIDString()
        off = conn.defineXML("<domain type='test'><name>off</name><memory>1024</memory>"
                             "<os><type>hvm</type></os></domain>").UUIDString()
        found = read_running_domains_by_uuid(
            conn, {running.upper(), off, "6b1f3c52-0000-4000-8000-000000000000", "42"})
    finally:
        conn.close()
    assert [(d.name, d.state) for d in found] == [("test", "running")]
