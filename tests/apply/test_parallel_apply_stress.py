"""Stress: several many-GPU applies at once, each running its GPU branches in parallel
threads that commit the simulated libvirt after every define and attach (issue 12, item
4: "2 of 5 parallel 8-GPU applies failed" when concurrent commits wrote stale views of
the domain store). Every run must succeed, leave every domain with its vGPU, and leave
nothing to plan."""

from __future__ import annotations

import subprocess
from pathlib import Path

from planner.cli.host_opts import open_environment
from planner.host.libvirt_read import read_domains
from planner.sim.host import GpuSpec, HostSpec, init_host
from tests.apply.simhost import IMAGE
from tests.clirun import AIHOW, aihow

GPUS = 8
SLICES = 7  # 1g.5gb per A100-40GB: one VM each
APPLIES = 4


def config_text(n_gpus: int) -> str:
    """Every A100 managed with MIG on; one 1g.5gb compute node per slice."""
    nodes = "".join(
        f"""\
      - cpu_cores: 1
        memory_gb: 2
        disk_gb: 10
        ip: "10.20.0.{k + 11}"
        gpu_config: {{mode: mig, mig_profile: 1g.5gb}}
""" for k in range(SLICES * n_gpus))
    return f"""\
version: "1.0"
metadata:
  name: "stress"
  description: "{SLICES * n_gpus} MIG-backed nodes on {n_gpus} A100s"
global:
  host:
    vgpu_backend: mdev
  gpus:
    - select: "model=*A100*"
      mig: enabled
clusters:
  hpc:
    name: "hpc"
    base_image_path: "/var/lib/images/hpc.qcow2"
    network:
      subnet: "10.20.0.0/16"
      bridge: "virbr100"
    hardware:
      acceleration:
        enable_kvm: true
    controller:
      cpu_cores: 1
      memory_gb: 2
      disk_gb: 10
      ip_address: "10.20.0.10"
    compute_nodes:
{nodes}    slurm_config:
      partitions: ["gpu"]
      default_partition: "gpu"
      max_job_time: "24:00:00"
"""


def test_parallel_many_gpu_applies_all_succeed(tmp_path: Path) -> None:
    config = tmp_path / "cluster.yaml"
    config.write_text(config_text(GPUS))
    hosts = []
    for i in range(APPLIES):
        root = tmp_path / f"host{i}"
        init_host(root, HostSpec(
            gpus=tuple(GpuSpec("a100-40gb", f"0000:{0x17 + g:02x}:00.0", mig=True)
                       for g in range(GPUS)), vgpu="mdev", images=(IMAGE,)))
        plan = root / "plan.json"
        made = aihow("plan", str(config), "--host", f"sim:{root}", "-o", str(plan))
        assert made.returncode == 0, made.stderr
        hosts.append((root, plan))

    procs = [subprocess.Popen(
        [AIHOW, "apply", str(plan), "--host", f"sim:{root}", "--auto-approve",
         "--allow-reset"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        stdin=subprocess.DEVNULL) for root, plan in hosts]
    outcomes = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        outcomes.append((proc.returncode, out + err))

    for (root, _plan), (rc, text) in zip(hosts, outcomes, strict=True):
        assert rc == 0, f"{root.name}: exit {rc}\n{text[-2000:]}"
        with open_environment(f"sim:{root}").libvirt(read_only=True) as s:
            domains = {d.name: d for d in read_domains(s.conn)}
        nodes = [n for n in domains if n != "hpc-controller"]
        assert len(domains) == SLICES * GPUS + 1 and len(nodes) == SLICES * GPUS, root.name
        keys = [h.key for n in nodes for h in domains[n].hostdevs]
        assert len(keys) == len(nodes) == len(set(keys)), f"{root.name}: {sorted(nodes)}"
        again = aihow("plan", str(config), "--host", f"sim:{root}", "--detailed-exitcode")
        assert again.returncode == 0, f"{root.name}: re-plan not empty\n{again.stdout}"
