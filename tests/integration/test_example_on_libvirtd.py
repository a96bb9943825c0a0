"""The example cluster's domains on a real libvirtd, through the executor: a host that
mixes the simulator's NVML and sysfs (``sim:DIR``) with the real ``qemu:///system``
(``libvirt_uri``), so MIG slices and mdevs are simulated and the domains are real.

Apply defines the nine domains (marked as aihow's) with their mdev hostdevs; a failing
late step rolls them back off libvirtd; dropping a node from the config deletes exactly
its domain. The clusters get unique names so nothing else on the daemon is touched."""

from __future__ import annotations

import hashlib
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from planner.apply.executor import ApplyInput, ApplyResult, Event, apply_plan
from planner.apply.state_dir import resolve_state_dir
from planner.cli.host_opts import open_environment
from planner.config import load_config
from planner.host.libvirt_read import read_domains
from planner.host.records import defined_by_aihow
from planner.plan.make import make_plan
from planner.plan.request import mdev_uuid

pytestmark = pytest.mark.libvirtd

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config" / "example-mig-cluster.yaml"
AIHOW = str(Path(sys.executable).with_name("aihow"))
URI = "qemu:///system"


class MixedHost:
    def __init__(self, tmp: Path, hpc: str, k8s: str) -> None:
        self.dir = tmp / "sim"
        subprocess.run([AIHOW, "sim", "init", str(self.dir), "--spec",
                        str(ROOT / "config" / "sim-a100.toml")], check=True, capture_output=True)
        self.uri = f"sim:{self.dir}"
        self.tmp, self.hpc, self.k8s = tmp, hpc, k8s

    def config(self, drop_last_worker: bool = False) -> Path:
        text = CONFIG.read_text().replace('name: "hpc"', f'name: "{self.hpc}"').replace(
            'name: "k8s"', f'name: "{self.k8s}"')
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


@pytest.fixture
def host(libvirtd_conn: Any, tmp_path: Path) -> Iterator[MixedHost]:
    tag = secrets.token_hex(3)
    h = MixedHost(tmp_path, f"ithpc{tag}", f"itk8s{tag}")
    yield h
    for dom in libvirtd_conn.listAllDomains():  # whatever the test left, pass or fail
        if dom.name().startswith((h.hpc + "-", h.k8s + "-")):
            if dom.isActive():
                dom.destroy()
            dom.undefine()


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

    # The config drops the last worker: its domain (aihow's) is deleted, its hostdev
    # detached first; nothing else changes.
    dropped = host.config(drop_last_worker=True)
    plan = host.plan(dropped)
    gone = f"{host.k8s}-cpu-worker-03"
    touched = [(a.action, a.address) for a in plan.actions if a.action != "no-op"]
    assert ("delete", f"domain[{gone}]") in touched
    assert all(gone in addr or addr.startswith(("vgpu[", "gpu[")) for _, addr in touched)
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
