"""Commits of the simulated host's libvirt that run at the same time keep each other's
domains: a commit writes and deletes only what its own session changed, under the store's
lock (issue 12, item 4)."""

from __future__ import annotations

import threading
from pathlib import Path

from planner.cli.host_opts import open_environment
from planner.host.libvirt_domains import attach_hostdev
from planner.host.libvirt_read import read_domains

MDEV = "2f0c6a3e-1111-4222-8333-{:012x}"


def domain_xml(name: str, mdev: str | None = None) -> str:
    dev = ("<hostdev mode='subsystem' type='mdev' model='vfio-pci' managed='no'>"
           f"<source><address uuid='{mdev}'/></source></hostdev>") if mdev else ""
    return (f"<domain type='kvm'><name>{name}</name><memory unit='MiB'>512</memory>"
            "<vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os>"
            f"<devices>{dev}</devices></domain>")


def hostdev_xml(mdev: str) -> str:
    return ("<hostdev mode='subsystem' type='mdev' model='vfio-pci' managed='no'>"
            f"<source><address uuid='{mdev}'/></source></hostdev>")


def domains_on_disk(sim_dir: Path) -> dict[str, tuple[str, ...]]:
    with open_environment(f"sim:{sim_dir}").libvirt(read_only=True) as s:
        return {d.name: tuple(h.key for h in d.hostdevs) for d in read_domains(s.conn)}


def test_two_sessions_keep_each_others_domains(tmp_path: Path) -> None:
    """Two processes' sessions open on the same store; each defines, changes and removes
    its own domains. Neither commit undoes the other's work."""
    sim = f"sim:{tmp_path}"
    with open_environment(sim).libvirt() as s:
        for name in ("old-a", "old-b", "shared"):
            s.conn.defineXML(domain_xml(name))
        s.commit()
    a = open_environment(sim).libvirt()
    b = open_environment(sim).libvirt()
    try:
        a.conn.defineXML(domain_xml("new-a"))
        a.conn.lookupByName("old-a").undefine()
        attach_hostdev(a.conn, "shared", hostdev_xml(MDEV.format(1)))
        a.commit()
        b.conn.defineXML(domain_xml("new-b"))  # b never saw new-a, nor old-a's removal
        b.conn.lookupByName("old-b").undefine()
        b.commit()
        a.conn.defineXML(domain_xml("late-a"))  # a commits again after b
        a.commit()
    finally:
        a.close()
        b.close()
    assert domains_on_disk(tmp_path) == {
        "late-a": (), "new-a": (), "new-b": (), "shared": (MDEV.format(1),)}
    assert not (tmp_path / "libvirt" / "domains" / "old-a.xml").exists()


def test_threads_of_one_session_commit_at_once(tmp_path: Path) -> None:
    """Apply's branch threads share one session and commit after each change: every
    define and every attach survives, however the commits interleave."""
    sim = f"sim:{tmp_path}"
    names = [f"vm-{k:02d}" for k in range(16)]
    with open_environment(sim).libvirt() as s:
        for name in names:
            s.conn.defineXML(domain_xml(name))
        s.commit()
    errors: list[BaseException] = []
    start = threading.Barrier(len(names))
    with open_environment(sim).libvirt() as s:

        def work(k: int, name: str) -> None:
            try:
                start.wait(timeout=30)
                for round_ in range(3):
                    attach_hostdev(s.conn, name, hostdev_xml(MDEV.format(100 * k + round_)))
                    s.commit()
                    s.conn.defineXML(domain_xml(f"{name}-extra-{round_}"))
                    s.commit()
            except BaseException as exc:  # reported below, with the thread's name
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(k, n)) for k, n in enumerate(names)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    assert not errors, errors
    found = domains_on_disk(tmp_path)
    for k, name in enumerate(names):
        assert found[name] == tuple(MDEV.format(100 * k + r) for r in range(3)), name
        for r in range(3):
            assert f"{name}-extra-{r}" in found
    assert len(found) == 4 * len(names)
