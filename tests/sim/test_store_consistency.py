"""The simulator's store: rendering only what changed gives the same tree as rendering
everything, a commit killed at any point leaves a host that reads consistently, and the
cached snapshot follows every change of state.json."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pynvml
import pytest

from planner.sim import sysfs as sim_sysfs
from planner.sim.fake_nvml import FakeNvml
from planner.sim.host import GpuSpec
from planner.sim.kernel import sysfs_write
from planner.sim.state import RENDER_PENDING, STATE_FILE, SimStore
from planner.sim.sysfs import Entry, proc_tree, sysfs_tree

U = "2f0c6a3e-1b6f-4c5e-9a8b-0d1e2f3a4b5{}"


def disk_tree(base: Path) -> dict[str, tuple[str, str, int]]:
    out: dict[str, tuple[str, str, int]] = {}
    for dirpath, dirnames, filenames in os.walk(base):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(base))
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p), 0)
            elif p.is_dir():
                out[rel] = ("dir", "", 0)
            else:
                out[rel] = ("file", p.read_text(), p.stat().st_mode & 0o777)
    return out


def wanted(tree: dict[str, Entry]) -> dict[str, tuple[str, str, int]]:
    out: dict[str, tuple[str, str, int]] = {}
    for rel, e in tree.items():
        out[rel] = (e.kind, e.content, e.mode if e.kind == "file" else 0)
        parent = os.path.dirname(rel)
        while parent:
            out.setdefault(parent, ("dir", "", 0))
            parent = os.path.dirname(parent)
    return out


def assert_consistent(root: Path) -> None:
    state = SimStore(root).read()
    assert not (root / RENDER_PENDING).exists()
    assert disk_tree(root / "sys") == wanted(sysfs_tree(state))
    assert disk_tree(root / "proc") == wanted(proc_tree(state))


def _operations(root: Path) -> list[Callable[[], None]]:
    """A sequence that touches every part of the tree: GIs, CIs, VFs, mdevs, holders."""
    n = FakeNvml(root)
    n.nvmlInit()

    def gi(index: int, start: int) -> Callable[[], None]:
        def run() -> None:
            h = n.nvmlDeviceGetHandleByIndex(index)
            p = pynvml.c_nvmlGpuInstancePlacement_t(start, 1)
            g = n.nvmlDeviceCreateGpuInstanceWithPlacement(h, 19, ctypes.byref(p))
            n.nvmlGpuInstanceCreateComputeInstance(g, 0)
        return run

    def write(rel: str, value: str) -> Callable[[], None]:
        return lambda: sysfs_write(root, rel, value)

    def type_dir(vf: str) -> str:
        types = sorted(os.listdir(root / "sys/bus/pci/devices" / vf / "mdev_supported_types"))
        for t in types:
            name = (root / "sys/bus/pci/devices" / vf / "mdev_supported_types" / t / "name")
            if name.read_text().strip().endswith("-1-5C"):
                return f"bus/pci/devices/{vf}/mdev_supported_types/{t}"
        raise AssertionError("no 1g.5gb vGPU type")

    def mdev(vf: str, k: int) -> Callable[[], None]:
        return lambda: sysfs_write(root, f"{type_dir(vf)}/create", U.format(k))

    def vfs(num: int) -> Callable[[], None]:
        # what sriov-manage does to the state (the script refuses while this sequence's
        # own NVML session is open, so the render test sets the VFs itself)
        def run() -> None:
            with SimStore(root).transaction() as state:
                state.gpus[0].num_vfs = num
        return run

    def hold() -> None:
        with SimStore(root).transaction() as state:
            from planner.sim import driver

            driver.hold(state.gpus[1], "nvidia-persistenced", 4242)

    def release() -> None:
        with SimStore(root).transaction() as state:
            from planner.sim import driver

            driver.release(state.gpus[1], "nvidia-persistenced", None)

    return [
        gi(0, 0), gi(0, 1), gi(1, 3),
        vfs(3),
        mdev("0000:17:00.4", 1), mdev("0000:17:00.5", 2),
        hold,
        write(f"bus/mdev/devices/{U.format(1)}/remove", "1"),
        release,
        write(f"bus/mdev/devices/{U.format(2)}/remove", "1"),
        vfs(0),
    ]


@pytest.fixture
def host(make_host: Callable[..., Path]) -> Path:
    return make_host(GpuSpec("a100-40gb", "0000:17:00.0", mig=True),
                     GpuSpec("a100-40gb", "0000:31:00.0", mig=True), vgpu="mdev")


def test_rendering_what_changed_equals_rendering_everything(host: Path) -> None:
    assert_consistent(host)
    for op in _operations(host):
        op()
        assert_consistent(host)


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it in the process runs (no except Exception)."""


@pytest.mark.parametrize("after", [0, 1, 3, 10, 40])
def test_a_commit_killed_while_rendering_is_repaired_on_next_access(
    host: Path, monkeypatch: pytest.MonkeyPatch, after: int
) -> None:
    ops = _operations(host)
    for op in ops[:3]:
        op()
    real = sim_sysfs._replace
    calls = {"n": 0}

    def dying(*args: object) -> None:
        if calls["n"] == after:
            raise Killed
        calls["n"] += 1
        real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(sim_sysfs, "_replace", dying)
    with pytest.raises(Killed):
        ops[3]()  # enabling VFs writes many entries
    monkeypatch.setattr(sim_sysfs, "_replace", real)
    assert (host / RENDER_PENDING).exists()  # state.json is new, the tree is not
    # the next reader (here through NVML) repairs before anything reads
    n = FakeNvml(host)
    n.nvmlInit()
    assert n.nvmlDeviceGetCount() == 2
    assert_consistent(host)
    for op in ops[4:]:  # and the host goes on working
        op()
    assert_consistent(host)


def test_a_kill_before_state_json_changes_leaves_the_old_state(
    host: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = (host / STATE_FILE).read_bytes()

    def dying(*args: object, **kwargs: object) -> None:
        raise Killed

    monkeypatch.setattr("planner.sim.state.atomic_write", dying)
    with pytest.raises(Killed), SimStore(host).transaction() as state:
        state.gpus[0].num_vfs = 2
    monkeypatch.undo()
    assert (host / STATE_FILE).read_bytes() == before
    assert_consistent(host)


def test_snapshot_follows_changes_made_by_another_process(host: Path) -> None:
    store = SimStore(host)
    assert store.snapshot().faults == []
    assert store.snapshot() is store.snapshot()  # cached while the file is unchanged
    subprocess.run([str(Path(sys.executable).with_name("aihow")), "sim", "fail", str(host),
                    "--op", "nvmlDeviceGetName", "--at", "2"], check=True, capture_output=True)
    assert [f.op for f in store.snapshot().faults] == ["nvmlDeviceGetName"]
    # an armed query is counted: the second call fails, then queries read the snapshot again
    n = FakeNvml(host)
    n.nvmlInit()
    h = n.nvmlDeviceGetHandleByIndex(0)
    n.nvmlDeviceGetName(h)
    with pytest.raises(pynvml.NVMLError):
        n.nvmlDeviceGetName(h)
    assert store.snapshot().faults[0].fired


def test_snapshot_sees_a_state_json_edited_in_place(host: Path) -> None:
    store = SimStore(host)
    assert store.snapshot().boot == 1
    path = host / STATE_FILE
    text = path.read_text().replace('"boot": 1', '"boot": 7')
    with open(path, "r+") as f:  # same inode, new content
        f.write(text)
        f.truncate()
    assert store.snapshot().boot == 7


def test_queries_do_not_write(host: Path) -> None:
    path = host / STATE_FILE
    before = os.stat(path)
    n = FakeNvml(host)
    n.nvmlInit()
    for i in range(n.nvmlDeviceGetCount()):
        h = n.nvmlDeviceGetHandleByIndex(i)
        n.nvmlDeviceGetMigMode(h)
        n.nvmlDeviceGetName(h)
    after = os.stat(path)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert not (host / RENDER_PENDING).exists()


_DOMAIN = ("<domain type='kvm'><name>{name}</name><memory>{mem}</memory>"
           "<os><type>hvm</type></os>{devices}</domain>")


def _mdev_domain(name: str, mdev: str) -> str:
    return _DOMAIN.format(name=name, mem=524288, devices=(
        "<devices><hostdev mode='subsystem' type='mdev' model='vfio-pci'>"
        f"<source><address uuid='{mdev}'/></source></hostdev></devices>"))


def test_libvirt_snapshot_follows_commits_of_another_process(host: Path) -> None:
    """The libvirt store read once is kept while no file changes; a domain another
    process defines and starts is seen, and so is its vGPU becoming active in NVML."""
    from planner.sim.fake_nvml_vgpu import running_devices
    from planner.sim.libvirt_store import load_sim_domains, store_snapshot

    assert load_sim_domains(host) == []
    assert store_snapshot(host) is store_snapshot(host)  # nothing changed: kept
    assert running_devices(str(host)) == {}
    script = (
        "import sys; from planner.cli.host_opts import open_environment\n"
        "with open_environment(sys.argv[1]).libvirt() as s:\n"
        "    s.conn.defineXML(sys.argv[2]).create(); s.commit()\n")
    subprocess.run([sys.executable, "-c", script, f"sim:{host}",
                    _mdev_domain("vm1", U.format(1))], check=True, capture_output=True,
                   timeout=60)
    (rec,) = load_sim_domains(host)
    assert (rec.name, rec.state) == ("vm1", 1)
    assert set(running_devices(str(host))) == {U.format(1)}


def test_libvirt_snapshot_sees_domain_files_changed_by_hand(host: Path) -> None:
    """An XML file dropped into domains/ counts as a defined domain at once, and one
    edited in place (same inode) is read again."""
    from planner.sim.libvirt_store import load_sim_domains

    assert load_sim_domains(host) == []
    domains = host / "libvirt" / "domains"
    domains.mkdir(parents=True, exist_ok=True)
    path = domains / "byhand.xml"
    path.write_text(_DOMAIN.format(name="byhand", mem=524288, devices=""))
    (rec,) = load_sim_domains(host)
    assert "524288" in (rec.persistent_xml or "")
    with open(path, "r+") as f:  # same inode, new content of another size
        f.write(_DOMAIN.format(name="byhand", mem=1048576, devices=""))
        f.truncate()
    (rec,) = load_sim_domains(host)
    assert "1048576" in (rec.persistent_xml or "")
    path.unlink()
    assert load_sim_domains(host) == []


def test_libvirt_snapshot_reads_again_only_the_files_that_changed(
        host: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a change of one domain's file, a new snapshot reads that file and keeps the
    text it read before of every other (a commit changes a domain or two; reading them
    all again made each change cost O(domains))."""
    from planner.sim.libvirt_store import load_sim_domains

    domains = host / "libvirt" / "domains"
    domains.mkdir(parents=True, exist_ok=True)
    for name in ("vm-a", "vm-b", "vm-c"):
        (domains / f"{name}.xml").write_text(_DOMAIN.format(name=name, mem=524288, devices=""))
    assert [r.name for r in load_sim_domains(host)] == ["vm-a", "vm-b", "vm-c"]
    read: list[str] = []
    real_read_text = Path.read_text

    def counted(self: Path, *args: object, **kwargs: object) -> str:
        read.append(self.name)
        return real_read_text(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "read_text", counted)
    (domains / "vm-b.xml").write_text(_DOMAIN.format(name="vm-b", mem=1048576, devices=""))
    records = {r.name: r for r in load_sim_domains(host)}
    assert read == ["vm-b.xml"]
    assert "1048576" in (records["vm-b"].persistent_xml or "")
    assert "524288" in (records["vm-a"].persistent_xml or "")


def test_read_only_libvirt_sessions_share_one_connection_while_the_store_is_unchanged(
        host: Path) -> None:
    """Readers (a probe of one GPU runs twice per vGPU an apply creates) share one
    read-only test-driver connection; closing a session leaves it usable for the next,
    and a commit gives the next reader a new one that shows the change."""
    from planner.cli.host_opts import open_environment
    from planner.host.errors import HostError

    env = open_environment(f"sim:{host}")
    with env.libvirt(read_only=True) as first:
        conn = first.conn
        assert conn.listAllDomains() == []
        with pytest.raises(HostError, match="read-only"):
            first.commit()
    with env.libvirt(read_only=True) as second:
        assert second.conn is conn and second.conn.listAllDomains() == []
    with env.libvirt() as rw:
        rw.conn.defineXML(_DOMAIN.format(name="vm1", mem=524288, devices=""))
        rw.commit()
    with env.libvirt(read_only=True) as third:
        assert third.conn is not conn
        assert [d.name() for d in third.conn.listAllDomains()] == ["vm1"]
        assert third.autostart == {"vm1": False}
