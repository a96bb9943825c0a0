"""Issue 17: aihow's VMs run. On a simulated host (libvirt's test driver), the example
gets its networks (a static lease per node ip), pools and overlay volumes; its auto_start
domains run with libvirt autostart, the others stay shut off; what ai-how made is
adopted; a missing base image is a plan-time error; a running VM that aihow deletes or
whose slice it replaces is shut down by its own plan step, and a failed apply starts it
again."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path
from typing import Any

from planner.apply.executor import ApplyInput, ApplyResult, apply_plan
from planner.apply.state_dir import resolve_state_dir
from planner.cli.host_opts import base_images, open_environment
from planner.config import load_config
from planner.host import libvirt_objects as lo
from planner.host.state import HostState
from planner.plan.make import make_plan
from planner.vm.vm_factory import mac_for
from planner.vocab import Action, Kind

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config" / "example-mig-cluster.yaml"
AIHOW = str(Path(sys.executable).with_name("aihow"))


def aihow(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([AIHOW, *args], capture_output=True, text=True, timeout=120,
                          check=False)


class Host:
    def __init__(self, path: Path, images: bool = True) -> None:
        # sim-a100.toml holds the example's base images; the same host bare without them
        spec = ("--spec", str(ROOT / "config" / "sim-a100.toml")) if images else (
            "--gpu", "a100-40gb@0000:17:00.0", "--vgpu", "mdev")
        res = aihow("sim", "init", str(path), *spec)
        assert res.returncode == 0, res.stderr
        self.dir, self.uri = path, f"sim:{path}"

    def probe(self) -> HostState:
        return open_environment(self.uri).probe()

    def plan(self, config: Path = CONFIG) -> Any:
        env = open_environment(self.uri)
        cfg = load_config(config)
        return make_plan(cfg, env.probe(), config_path=str(config),
                         config_sha256=hashlib.sha256(config.read_bytes()).hexdigest(),
                         host_uri=self.uri, records=env.records(),
                         images=base_images(env, cfg))

    def apply(self, plan: Any, config: Path = CONFIG) -> ApplyResult:
        env = open_environment(self.uri)
        return apply_plan(ApplyInput(plan, plan.to_json(), load_config(config),
                                     config.read_text(), str(config), allow_reset=True,
                                     restart_running_vms=True),
                          env, resolve_state_dir(env.state_dir()))


def _without_last_worker(tmp: Path) -> Path:
    text = CONFIG.read_text()
    head, sep, tail = text.rpartition("      - cpu_cores")
    assert sep
    rest = tail.split("\n")
    keep = next(i for i, line in enumerate(rest[1:], 1)
                if line and not line.startswith("        "))
    path = tmp / "dropped.yaml"
    path.write_text(head + "\n".join(rest[keep:]))
    return path


def test_the_example_applies_with_networks_volumes_and_auto_start(tmp_path: Path) -> None:
    host = Host(tmp_path / "sim")
    result = host.apply(host.plan())
    assert result.outcome == "applied", result.failed
    state = host.probe()
    running = {d.name: d.autostart for d in state.domains if d.running}
    off = {d.name for d in state.domains if not d.running}
    assert off == {"hpc-compute-04"}  # auto_start: false in the example
    assert len(running) == 8 and all(running.values())
    nets = {n.name: n for n in state.networks}
    assert set(nets) == {"hpc-network", "k8s-network"}
    hpc = nets["hpc-network"]
    assert hpc.bridge == "virbr100" and hpc.address == "192.168.100.1" and hpc.prefix == 24
    assert hpc.active
    assert (mac_for("hpc-compute-01"), "hpc-compute-01", "192.168.100.11") in {
        (h.mac, h.name, h.ip) for h in hpc.hosts}
    assert len(hpc.hosts) == 5
    pools = {p.name: p for p in state.pools}
    assert {v.name for v in pools["hpc-pool"].volumes} == {
        "hpc-controller.qcow2", *(f"hpc-compute-0{i}.qcow2" for i in range(1, 5))}
    vol = next(v for v in pools["hpc-pool"].volumes if v.name == "hpc-compute-01.qcow2")
    assert vol.backing is not None and vol.backing.endswith("hpc-compute.qcow2")
    assert vol.capacity == 100 * 2**30
    assert not host.plan().has_changes


def test_a_missing_base_image_is_a_plan_time_error_naming_the_config_key(tmp_path: Path
                                                                          ) -> None:
    Host(tmp_path / "sim", images=False)
    res = aihow("plan", str(CONFIG), "--host", f"sim:{tmp_path / 'sim'}")
    assert res.returncode == 1
    assert "Traceback" not in res.stderr
    assert ("clusters.hpc.base_image_path: the base image names "
            "build/packer/hpc-compute/hpc-compute/hpc-compute.qcow2, which does not exist "
            "on the host") in res.stderr
    assert "clusters.hpc.controller.base_image_path" in res.stderr


def test_what_ai_how_made_is_adopted_and_its_leases_completed(tmp_path: Path) -> None:
    host = Host(tmp_path / "sim")
    with open_environment(host.uri).libvirt() as s:
        lo.define_network(s.conn, lo.network_xml("hpc-network", "virbr100", "192.168.100.0/24",
                                                 (("52:54:00:00:00:01", "other",
                                                   "192.168.100.50"),)), "hpc-network")
        lo.define_pool(s.conn, lo.pool_xml("hpc-pool", "/srv/ai-how/pool"), "hpc-pool")
        lo.create_volume(s.conn, "hpc-pool", lo.volume_xml("hpc-compute-01.qcow2", 100,
                                                           "/srv/base.qcow2"),
                         "hpc-compute-01.qcow2")
        s.commit()
    plan = host.plan()
    by = {c.address: c for c in plan.actions}
    assert by["network[hpc-network]"].action is Action.UPDATE  # leases added, not redefined
    assert by["pool[hpc-pool]"].action is Action.NO_OP
    assert by["pool[hpc-pool].volume[hpc-compute-01.qcow2]"].action is Action.NO_OP
    assert by["pool[hpc-pool].volume[hpc-compute-02.qcow2]"].action is Action.CREATE
    assert host.apply(plan).outcome == "applied"
    state = host.probe()
    hpc = next(n for n in state.networks if n.name == "hpc-network")
    assert ("52:54:00:00:00:01", "other", "192.168.100.50") in {
        (h.mac, h.name, h.ip) for h in hpc.hosts}  # not aihow's: kept
    assert len(hpc.hosts) == 6
    pool = next(p for p in state.pools if p.name == "hpc-pool")
    assert pool.path == "/srv/ai-how/pool"
    vol = next(v for v in pool.volumes if v.name == "hpc-compute-01.qcow2")
    assert vol.backing == "/srv/base.qcow2"  # ai-how's disk, untouched


def test_a_network_that_differs_is_refused_not_redefined(tmp_path: Path) -> None:
    host = Host(tmp_path / "sim")
    with open_environment(host.uri).libvirt() as s:
        lo.define_network(s.conn, lo.network_xml("hpc-network", "virbr9", "10.9.0.0/24", ()),
                          "hpc-network")
        s.commit()
    res = aihow("plan", str(CONFIG), "--host", host.uri)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert ("clusters.hpc.network: network hpc-network exists on the host with bridge "
            "virbr9, the config says virbr100; subnet 10.9.0.0/24") in res.stderr


def test_a_running_vm_that_is_dropped_is_shut_down_first_and_restarted_on_failure(
        tmp_path: Path) -> None:
    host = Host(tmp_path / "sim")
    assert host.apply(host.plan()).outcome == "applied"
    dropped = _without_last_worker(tmp_path)
    plan = host.plan(dropped)
    ids = {str(c.address): c.id for c in plan.changes}
    stop = "domain[k8s-cpu-worker-03].running"
    assert next(c for c in plan.changes if c.address == stop).action is Action.DELETE
    assert ids[stop] < ids["domain[k8s-cpu-worker-03]"]
    assert ids[stop] < min(i for a, i in ids.items()
                           if a.startswith("domain[k8s-cpu-worker-03].hostdev"))
    # The undefine fails: the rollback defines the domain again and starts it.
    aihow("sim", "fail", str(host.dir), "--op", "virDomainUndefine", "--at", "1")
    result = host.apply(plan, dropped)
    assert result.outcome == "rolled-back" and result.back_at_start, result.failed
    dom = next(d for d in host.probe().domains if d.name == "k8s-cpu-worker-03")
    assert dom.running
    aihow("sim", "fail", str(host.dir), "--clear")
    assert host.apply(host.plan(dropped), dropped).outcome == "applied"
    assert "k8s-cpu-worker-03" not in {d.name for d in host.probe().domains}


def test_a_replaced_slice_stops_and_starts_its_running_vm(tmp_path: Path) -> None:
    host = Host(tmp_path / "sim")
    assert host.apply(host.plan()).outcome == "applied"
    grown = tmp_path / "grown.yaml"
    grown.write_text(CONFIG.read_text().replace(
        'ip: "192.168.100.13"\n        gpu_config: {mode: mig, mig_profile: 1g.5gb}',
        'ip: "192.168.100.13"\n        gpu_config: {mode: mig, mig_profile: 1g.5gb+me}'))
    plan = host.plan(grown)
    run = next(c for c in plan.changes if c.address == "domain[hpc-compute-03].running")
    assert run.action is Action.REPLACE and run.kind is Kind.RUNNING
    assert run.reason_code == "restart-for-change"
    assert host.apply(plan, grown).outcome == "applied"
    assert next(d for d in host.probe().domains if d.name == "hpc-compute-03").running
    assert not host.plan(grown).has_changes


def test_auto_start_false_on_a_running_vm_clears_its_autostart_and_keeps_it_running(
        tmp_path: Path) -> None:
    host = Host(tmp_path / "sim")
    assert host.apply(host.plan()).outcome == "applied"
    off = tmp_path / "off.yaml"
    off.write_text(CONFIG.read_text().replace(
        'ip: "192.168.100.11"\n', 'ip: "192.168.100.11"\n        auto_start: false\n', 1))
    plan = host.plan(off)
    [change] = plan.changes
    assert (str(change.address), change.action) == ("domain[hpc-compute-01].running",
                                                    Action.UPDATE)
    assert host.apply(plan, off).outcome == "applied"
    dom = next(d for d in host.probe().domains if d.name == "hpc-compute-01")
    assert dom.running and not dom.autostart  # left running; not started with the host
    assert not host.plan(off).has_changes


def test_rollback_over_a_running_vms_slice_change_needs_and_takes_restart(
        tmp_path: Path) -> None:
    host = Host(tmp_path / "sim")
    grown = tmp_path / "grown.yaml"
    grown.write_text(CONFIG.read_text().replace(
        'ip: "192.168.100.13"\n        gpu_config: {mode: mig, mig_profile: 1g.5gb}',
        'ip: "192.168.100.13"\n        gpu_config: {mode: mig, mig_profile: 1g.5gb+me}'))
    for config in (CONFIG, grown):
        done = aihow("apply", str(config), "--host", host.uri, "--auto-approve",
                     "--allow-reset", "--restart-running-vms")
        assert done.returncode == 0, done.stdout + done.stderr
    refused = aihow("rollback", "--host", host.uri, "--to", "1", "--auto-approve")
    assert refused.returncode == 1 and "--restart-running-vms" in refused.stderr
    assert "Traceback" not in refused.stderr
    back = aihow("rollback", "--host", host.uri, "--to", "1", "--auto-approve",
                 "--restart-running-vms", "--shutdown-timeout", "10")
    assert back.returncode == 0, back.stdout + back.stderr
    assert next(d for d in host.probe().domains if d.name == "hpc-compute-03").running
    assert not host.plan(CONFIG).has_changes


def test_after_a_reboot_only_vms_whose_devices_exist_run_and_the_plan_starts_the_rest(
        tmp_path: Path) -> None:
    host = Host(tmp_path / "sim")
    assert host.apply(host.plan()).outcome == "applied"
    rebooted = aihow("sim", "reboot", str(host.dir))
    assert rebooted.returncode == 0, rebooted.stderr
    # libvirt's autostart: the controllers (no device) run; the GPU VMs' vGPUs vanished
    assert {d.name for d in host.probe().domains if d.running} == {
        "hpc-controller", "k8s-control-plane"}
    plan = host.plan()
    starts = sorted(str(c.address) for c in plan.changes if c.kind is Kind.RUNNING)
    assert starts == [f"domain[{n}].running" for n in (
        "hpc-compute-01", "hpc-compute-02", "hpc-compute-03", "k8s-cpu-worker-01",
        "k8s-cpu-worker-02", "k8s-cpu-worker-03")]  # hpc-compute-04: auto_start false
    assert host.apply(plan).outcome == "applied"
    assert not host.plan().has_changes


def test_a_gpu_vm_on_a_host_without_vfio_fails_to_start_saying_so(tmp_path: Path) -> None:
    res = aihow("sim", "init", str(tmp_path / "sim"), "--spec",
                str(ROOT / "config" / "sim-a100.toml"), "--no-vfio")
    assert res.returncode == 0, res.stderr
    done = aihow("apply", str(CONFIG), "--host", f"sim:{tmp_path / 'sim'}", "--auto-approve",
                 "--allow-reset")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "cannot start: its vGPU cannot be used on this host: VFIO is not available" in \
        done.stderr
    assert "rolled back" in done.stdout + done.stderr
    assert open_environment(f"sim:{tmp_path / 'sim'}").probe().domains == ()
