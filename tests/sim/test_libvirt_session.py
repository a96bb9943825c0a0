"""A read-write libvirt session on a simulated host commits what its calls changed, and
reads back only that: the domains whose methods it called (or that it defined), and the
networks and pools only after a call that may change them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from planner.cli.host_opts import open_environment
from planner.sim import libvirt_session
from planner.sim.host import GpuSpec
from planner.sim.libvirt_store import load_sim_domains, load_sim_objects

DOMAIN = ("<domain type='kvm'><name>{name}</name><memory>524288</memory>"
          "<os><type>hvm</type></os></domain>")
POOL = ("<pool type='dir'><name>lab</name><target><path>/var/lib/lab</path></target>"
        "</pool>")
VOLUME = ("<volume><name>{name}.qcow2</name><capacity>1048576</capacity>"
          "<target><format type='qcow2'/></target></volume>")


@pytest.fixture
def host(make_host: Callable[..., Path]) -> Path:
    root = make_host(GpuSpec("a100-40gb", "0000:17:00.0", mig=True))
    with open_environment(f"sim:{root}").libvirt() as s:
        for k in range(12):
            s.conn.defineXML(DOMAIN.format(name=f"vm{k:02d}"))
        s.conn.storagePoolDefineXML(POOL).create()
        s.commit()
    return root


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The domains each commit reads back, in order."""
    seen: list[str] = []
    real = libvirt_session._record_of

    def counted(dom: object) -> object:
        rec = real(dom)
        seen.append(rec.name)
        return rec

    monkeypatch.setattr(libvirt_session, "_record_of", counted)
    return seen


def test_a_commit_reads_back_only_the_domains_its_calls_touched(host: Path,
                                                                reads: list[str]) -> None:
    with open_environment(f"sim:{host}").libvirt() as s:
        reads.clear()  # (opening reads every domain once: the session's baseline)
        s.conn.lookupByName("vm03").setAutostart(1)
        s.conn.defineXML(DOMAIN.format(name="new"))
        s.conn.lookupByName("vm07").undefine()
        s.commit()
        assert sorted(reads) == ["new", "vm03"]  # vm07 is gone: nothing to read
        reads.clear()
        s.conn.lookupByName("vm05").XMLDesc(0)  # a read marks nothing
        s.commit()
        assert reads == []
    by_name = {r.name: r for r in load_sim_domains(host)}
    assert by_name["vm03"].autostart and "new" in by_name and "vm07" not in by_name
    assert len(by_name) == 12


def test_objects_are_read_back_after_a_call_that_may_change_them(host: Path) -> None:
    with open_environment(f"sim:{host}").libvirt() as s:
        pool = s.conn.storagePoolLookupByName("lab")
        pool.createXML(VOLUME.format(name="disk1"), 0)
        s.commit()
        assert "disk1.qcow2" in load_sim_objects(host).pools["lab"][0]
        pool.storageVolLookupByName("disk1.qcow2").delete(0)  # a volume's own method
        s.commit()
    assert "disk1.qcow2" not in load_sim_objects(host).pools["lab"][0]


def test_a_call_the_session_does_not_know_as_a_read_counts_as_a_change_of_everything(
        host: Path, reads: list[str]) -> None:
    with open_environment(f"sim:{host}").libvirt() as s:
        reads.clear()
        s.conn.networkDefineXML("<network><name>lab</name><bridge name='virbr9'/>"
                                "</network>")
        s.commit()
        assert len(reads) == 12  # every domain compared, as before marks existed
    assert "lab" in load_sim_objects(host).networks


def test_a_renamed_domain_is_committed_under_its_new_name(host: Path) -> None:
    with open_environment(f"sim:{host}").libvirt() as s:
        s.conn.lookupByName("vm04").rename("renamed", 0)
        s.commit()
    names = {r.name for r in load_sim_domains(host)}
    assert "renamed" in names and "vm04" not in names
