"""The example cluster's domains on a real libvirtd, through the executor: a host that
mixes the simulator's NVML and sysfs (``sim:DIR``) with the real ``qemu:///system``
(``libvirt_uri``), so MIG slices and mdevs are simulated and the domains are real.

Apply defines the nine domains (marked as aihow's) with their mdev hostdevs; a failing
late step rolls them back off libvirtd; dropping a node from the config deletes exactly
its domain. The clusters get unique names so nothing else on the daemon is touched."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import ipaddress
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from planner.apply.control import run_with_deadline
from planner.apply.executor import ApplyInput, ApplyResult, Event, apply_plan
from planner.apply.state_dir import resolve_state_dir
from planner.cli.host_opts import open_environment
from planner.config import load_config
from planner.host import libvirt_objects as lo
from planner.host.errors import HostError
from planner.host.libvirt_read import read_domains
from planner.host.records import defined_by_aihow
from planner.plan.make import make_plan
from planner.plan.request import mdev_uuid

pytestmark = pytest.mark.libvirtd

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config" / "example-mig-cluster.yaml"
AIHOW = str(Path(sys.executable).with_name("aihow"))
URI = "qemu:///system"
CLEAN_TIMEOUT_S = 180.0


@functools.cache
def kvm_guests_start() -> bool:
    """Whether a KVM guest with the host's CPU (what the domains ask for with KVM on)
    starts here: /dev/kvm may be there while KVM refuses the host CPU's MSRs (seen in a
    Firecracker VM: QEMU aborts in kvm_buf_set_msrs). Still running after two seconds,
    paused before its first instruction, counts as started."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK) or not shutil.which("qemu-system-x86_64"):
        return False
    try:
        subprocess.run(["qemu-system-x86_64", "-accel", "kvm", "-cpu", "host", "-machine", "q35",
                        "-m", "64", "-nodefaults", "-display", "none", "-serial", "none",
                        "-monitor", "none", "-S"], capture_output=True, timeout=2)
    except subprocess.TimeoutExpired:
        return True
    return False



def _taken_subnets(conn: Any) -> list[ipaddress.IPv4Network]:
    """The host's own IPv4 networks and those of libvirt's networks: never reused."""
    out = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True,
                         check=True, timeout=30).stdout
    taken = [ipaddress.IPv4Interface(f).network for f in re.findall(r"inet (\S+)", out)]
    for net in conn.listAllNetworks():
        for ip in re.findall(r"<ip address='([^']+)' prefix='(\d+)'", net.XMLDesc(0)):
            taken.append(ipaddress.IPv4Interface(f"{ip[0]}/{ip[1]}").network)
    return taken


def free_subnets(conn: Any, seed: str, count: int) -> list[str]:
    """``count`` /24 prefixes ("10.A.B.") in 10.0.0.0/8, derived from ``seed`` (the
    test's tmp path and pid), that overlap none of the host's or libvirt's networks."""
    taken = _taken_subnets(conn)
    n = int(hashlib.sha256(seed.encode()).hexdigest()[:8], 16)
    found: list[str] = []
    for i in range(4096):
        k = (n + i * 7919) % 65536
        net = ipaddress.IPv4Network(f"10.{k // 256}.{k % 256}.0/24")
        if not any(net.overlaps(t) for t in taken) and f"10.{k // 256}.{k % 256}." not in found:
            found.append(f"10.{k // 256}.{k % 256}.")
            if len(found) == count:
                return found
    raise AssertionError("no free /24 in 10.0.0.0/8")


class MixedHost:
    def __init__(self, tmp: Path, hpc: str, k8s: str, tag: str, subnets: list[str]) -> None:
        self.dir = tmp / "sim"
        subprocess.run([AIHOW, "sim", "init", str(self.dir), "--spec",
                        str(ROOT / "config" / "sim-a100.toml")], check=True, capture_output=True,
                       timeout=120)
        # a real (tiny, empty) qcow2 base image: libvirt layers each VM's disk over it
        (self.dir / "images").mkdir()
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2",
                        str(self.dir / "images" / "base.qcow2"), "64M"], check=True,
                       timeout=60)
        self.uri = f"sim:{self.dir}"
        self.tmp, self.hpc, self.k8s = tmp, hpc, k8s
        self.bridges = (f"aib{tag}h", f"aib{tag}k")
        self.subnets = subnets

    def config(self, drop_last_worker: bool = False) -> Path:
        text = CONFIG.read_text().replace('name: "hpc"', f'name: "{self.hpc}"').replace(
            'name: "k8s"', f'name: "{self.k8s}"')
        # unique bridges and subnets (no clash with the host's), the test's base image,
        # small guests, and no GPU node started (no VFIO here: it could not start)
        text = text.replace("virbr100", self.bridges[0]).replace("virbr200", self.bridges[1])
        text = text.replace("192.168.100.", self.subnets[0]).replace(
            "192.168.200.", self.subnets[1])
        text = re.sub(r'base_image_path: "[^"]+"', 'base_image_path: "images/base.qcow2"', text)
        text = re.sub(r"memory_gb: \d+", "memory_gb: 1", text)
        if not kvm_guests_start():  # the controllers start (auto_start): under TCG
            # where KVM is absent or refuses the host's CPU
            text = text.replace("enable_kvm: true", "enable_kvm: false")
        text = text.replace("        auto_start: false\n", "")
        text = re.sub(r'(\n        ip: "[^"]+")', r"\1\n        auto_start: false", text)
        if drop_last_worker:
            head, sep, tail = text.rpartition("      - cpu_cores")
            assert sep and "worker" not in tail.split("\n", 1)[0]
            rest = tail.split("\n")
            keep = next(i for i, line in enumerate(rest[1:], 1)
                        if line and not line.startswith("        "))
            text = head + "\n".join(rest[keep:])
        path = self.tmp / ("dropped.yaml" if drop_last_worker else "example.yaml")
        path.write_text(text)
        return path

    def plan(self, config: Path) -> Any:
        return make_plan(load_config(config), open_environment(self.uri, URI).probe(),
                         config_path=str(config),
                         config_sha256=hashlib.sha256(config.read_bytes()).hexdigest(),
                         host_uri=self.uri, records=open_environment(self.uri, URI).records())

    def apply(self, config: Path, plan: Any, on_event: Any = None) -> ApplyResult:
        return apply_plan(
            ApplyInput(plan, plan.to_json(), load_config(config), config.read_text(),
                       str(config), allow_reset=True),
            open_environment(self.uri, URI),
            resolve_state_dir(open_environment(self.uri).state_dir()),
            on_event or (lambda _e: None))


def _firewall_missing() -> str | None:
    """libvirtd starts a NAT network only with a firewall tool to program."""
    if any(shutil.which(t) or Path(f"/usr/sbin/{t}").exists() for t in ("iptables", "nft")):
        return None
    return ("libvirtd cannot start a NAT network here: neither iptables nor nft is "
            "installed (Debian: iptables)")


@pytest.fixture
def host(libvirtd_conn: Any, virtlogd: None, tmp_path: Path) -> Iterator[MixedHost]:
    # virtlogd: the example's auto_start domains are started, and QEMU logs through it
    missing = _firewall_missing()
    if missing is not None:
        if os.environ.get("AIHOW_REQUIRE_LIBVIRTD") == "1":
            pytest.fail(f"AIHOW_REQUIRE_LIBVIRTD=1 but {missing}", pytrace=False)
        pytest.skip(missing)
    tag = secrets.token_hex(3)
    subnets = free_subnets(libvirtd_conn, f"{tmp_path}:{os.getpid()}", 2)
    # QEMU runs as libvirt-qemu, which cannot enter pytest's 0700 directories, and the
    # started controller's overlay reads the base image inside the simulated host
    top = Path(tempfile.mkdtemp(prefix="aihow-it-", dir="/var/tmp"))
    top.chmod(0o755)
    try:
        h = MixedHost(top, f"ithpc{tag}", f"itk8s{tag}", tag, subnets)
        try:
            yield h
        finally:  # bounded like every libvirt call of aihow's (the executor's deadline)
            run_with_deadline(lambda: _clean(libvirtd_conn, h), CLEAN_TIMEOUT_S, "cleanup")
    finally:
        shutil.rmtree(top, ignore_errors=True)
        for cluster in (f"ithpc{tag}", f"itk8s{tag}"):  # the pool directories, once empty
            with contextlib.suppress(OSError):  # (aihow's undo of a pool leaves its files)
                os.rmdir(f"/var/lib/libvirt/images/{cluster}-pool")


def _clean(conn: Any, h: MixedHost) -> None:
    """Whatever the test left on libvirtd, pass or fail: its domains, volumes, pools and
    networks (all named after its clusters). Each call is bounded by the daemon's own
    timeouts and the caller's deadline; a failure to remove one thing does not stop the
    rest."""
    prefixes = (h.hpc + "-", h.k8s + "-")
    for dom in conn.listAllDomains():
        if dom.name().startswith(prefixes):
            with contextlib.suppress(Exception):
                if dom.isActive():
                    dom.destroy()
            with contextlib.suppress(Exception):
                dom.undefine()
    for pool in conn.listAllStoragePools():
        if pool.name().startswith(prefixes):
            with contextlib.suppress(Exception):
                if not pool.isActive():
                    pool.create(0)
                for vol in pool.listAllVolumes():
                    vol.delete(0)
            with contextlib.suppress(Exception):
                pool.destroy()
            with contextlib.suppress(Exception):
                pool.delete(0)  # its (now empty) directory
            with contextlib.suppress(Exception):
                pool.undefine()
    for net in conn.listAllNetworks():
        if net.name().startswith(prefixes):
            with contextlib.suppress(Exception):
                if net.isActive():
                    net.destroy()
            with contextlib.suppress(Exception):
                net.undefine()


def ours(conn: Any, h: MixedHost) -> dict[str, Any]:
    return {d.name: d for d in read_domains(conn) if d.name.startswith((h.hpc, h.k8s))}


def test_apply_defines_the_domains_with_mdev_hostdevs_on_libvirtd(
    libvirtd_conn: Any, host: MixedHost,
) -> None:
    config = host.config()
    result = host.apply(config, host.plan(config))
    assert result.outcome == "applied", result.failed
    doms = ours(libvirtd_conn, host)
    assert len(doms) == 9
    cfg = load_config(config)
    from planner.config.vms import expand_vms

    for vm in expand_vms(cfg):
        dom = doms[vm.name]
        xml = libvirtd_conn.lookupByName(vm.name).XMLDesc(2)
        assert defined_by_aihow(xml) == vm.cluster_name
        if vm.gpu_config is None:
            assert dom.hostdevs == ()
        else:
            (hd,) = dom.hostdevs
            assert (hd.type, hd.uuid) == ("mdev", mdev_uuid(f"{vm.cluster_name}/{vm.name}/gpu0"))
            assert "<hostdev mode='subsystem' type='mdev'" in xml and "managed='no'" in xml
    again = host.plan(config)
    assert [a.address for a in again.actions if a.action != "no-op"] == []
    # The controllers (auto_start, no GPU) run; a GPU node cannot start here (no VFIO, no
    # NVIDIA driver behind its mdev), and the start says exactly that.
    assert {n for n, d in ours(libvirtd_conn, host).items() if d.running} == {
        f"{host.hpc}-controller", f"{host.k8s}-control-plane"}
    gpu_node = f"{host.hpc}-compute-01"
    with pytest.raises(HostError, match=rf"domain {gpu_node} cannot start: its vGPU "
                       r"cannot be used on this host: VFIO is not available"):
        run_with_deadline(lambda: lo.start_domain(libvirtd_conn, gpu_node, autostart=False),
                          60, "start")
    assert not libvirtd_conn.lookupByName(gpu_node).isActive()

    # The config drops the last worker: its domain (aihow's) is deleted, its hostdev
    # detached first; nothing else changes.
    dropped = host.config(drop_last_worker=True)
    plan = host.plan(dropped)
    gone = f"{host.k8s}-cpu-worker-03"
    touched = [(a.action, a.address) for a in plan.actions if a.action != "no-op"]
    assert ("delete", f"domain[{gone}]") in touched
    lease = f"network[{host.k8s}-network]"  # the worker's static DHCP lease goes
    assert all(gone in addr or addr == lease or addr.startswith(("vgpu[", "gpu["))
               for _, addr in touched), touched
    result = host.apply(dropped, plan)
    assert result.outcome == "applied", result.failed
    assert sorted(ours(libvirtd_conn, host)) == sorted(set(doms) - {gone})


def test_a_failing_late_step_rolls_the_domains_back_off_libvirtd(
    libvirtd_conn: Any, host: MixedHost,
) -> None:
    config = host.config()
    plan = host.plan(config)
    vgpus = [a for a in plan.actions if a.kind == "vgpu"]
    subprocess.run([AIHOW, "sim", "fail", str(host.dir), "--op", "sysfs.mdev_create",
                    "--at", str(len(vgpus))], check=True, capture_output=True)
    seen: dict[str, int] = {}

    def watch(event: Event) -> None:  # how many of our domains libvirtd has at the failure
        if event.type == "action-failed":
            seen["defined"] = len(ours(libvirtd_conn, host))

    result = host.apply(config, plan, watch)
    assert result.outcome == "rolled-back", result.outcome
    assert result.back_at_start
    assert seen["defined"] == 9, "the domains were on libvirtd when the late step failed"
    assert any(a.startswith("domain[") for a in result.undone)
    assert ours(libvirtd_conn, host) == {}
