"""validate_host end to end on simulated hosts: real config files, the real probe (fake
NVML at the pynvml function level, the simulator's sysfs tree), the simulator's kernel
reacting to sysfs writes and its nvidia-smi making MIG instances."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from planner.cli.host_opts import open_environment
from planner.config import load_config
from planner.host.validation import CheckRow, validate_host
from planner.plan.fit import fit_rows
from planner.plan.request import requests_from_config

AIHOW = Path(sys.executable).parent / "aihow"
GPU = "0000:17:00.0"


def check_host(cfg: Any, env: Any) -> list[CheckRow]:
    """validate_host with the planner's fit rows, as `aihow validate --host` runs it."""
    requests = requests_from_config(cfg)
    return validate_host(cfg, env, fit=lambda host: fit_rows(requests, host, env.records()))


def sim_init(d: Path, *args: str) -> Path:
    subprocess.run([str(AIHOW), "sim", "init", str(d), *args], check=True, capture_output=True)
    return d


def smi(d: Path, *args: str) -> str:
    proc = subprocess.run([str(d / "bin" / "nvidia-smi"), *args], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def ready(d: Path) -> None:
    """What an operator does before aihow apply: modprobe vfio-pci, enable the VFs."""
    from planner.sim.sriov_manage import run as sriov_manage

    assert sriov_manage(str(d), ["-e", GPU])[0] == 0
    for module in ("vfio_pci", "vfio_iommu_type1"):
        os.makedirs(d / "sys" / "module" / module, exist_ok=True)


def config(tmp_path: Path, gpu_config: str, *, backend: str = "mdev",
           select: str = GPU) -> Path:
    path = tmp_path / "cluster.yaml"
    path.write_text(f"""\
version: "1.0"
metadata: {{name: t, description: t}}
global:
  host: {{vgpu_backend: {backend}}}
  gpus:
    - {{select: "{select}", mig: enabled}}
clusters:
  hpc:
    name: hpc
    network: {{subnet: "192.168.100.0/24", bridge: virbr100}}
    controller: {{cpu_cores: 2, memory_gb: 4, disk_gb: 20, ip_address: "192.168.100.10"}}
    compute_nodes:
      - {{cpu_cores: 4, memory_gb: 8, disk_gb: 40, ip: "192.168.100.11",
         gpu_config: {gpu_config}}}
    slurm_config: {{partitions: [gpu], default_partition: gpu}}
""")
    return path


def failed(rows: list[CheckRow]) -> list[tuple[str, str]]:
    return [(r.check, r.subject) for r in rows if r.status == "fail"]


def test_fresh_default_host_passes_with_warnings_only(tmp_path: Path) -> None:
    """The README's first commands: a fresh simulated host fails no read-only check."""
    root = Path(__file__).resolve().parents[2]
    host = sim_init(tmp_path / "host", "--spec", str(root / "config/sim-a100.toml"))
    cfg = load_config(Path(__file__).resolve().parents[2] / "config/example-mig-cluster.yaml")
    rows = check_host(cfg, open_environment(f"sim:{host}"))
    assert failed(rows) == []
    res = subprocess.run([str(AIHOW), "validate", "config/example-mig-cluster.yaml",
                          "--host", f"sim:{host}"], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[2], check=False)
    assert res.returncode == 0, res.stdout + res.stderr


def test_fresh_host_needs_vfio_and_vfs(tmp_path: Path) -> None:
    host = sim_init(tmp_path / "host", "--gpu", f"a100-40gb@{GPU}", "--vgpu", "mdev",
                    "--no-vfio")
    cfg = load_config(Path(__file__).resolve().parents[2] / "config/example-mig-cluster.yaml")
    rows = check_host(cfg, open_environment(f"sim:{host}"))
    assert failed(rows) == [("vfio", "vfio_pci"), ("vfio", "vfio_iommu_type1")]
    assert all("modprobe" in r.hint for r in rows if r.status == "fail")
    assert [(r.check, r.subject) for r in rows if r.status == "warn"] == [
        ("sriov-vfs", GPU), ("vgpu-types", GPU)]
    assert any(r.check == "profile-fit" and r.status == "ok" and r.hint.count("1g.5gb") == 7
               for r in rows)
    ready(host)
    rows = check_host(cfg, open_environment(f"sim:{host}"))
    assert {r.status for r in rows} == {"ok"}


def test_mig_uuid_on_a_simulated_host(tmp_path: Path) -> None:
    host = sim_init(tmp_path / "host", "--gpu", f"a100-40gb@{GPU}", "--vgpu", "mdev")
    smi(host, "-i", "0", "-mig", "1")
    ready(host)  # VFs before instances: sriov-manage wipes the GPU's instances
    smi(host, "mig", "-i", "0", "-cgi", "9:4", "-C")
    for module in ("vfio_pci", "vfio_iommu_type1"):  # the simulator rewrote its sys/ tree
        os.makedirs(host / "sys" / "module" / module, exist_ok=True)
    (uuid,) = re.findall(r"MIG-[0-9a-f-]{36}", smi(host, "-L"))
    ok = load_config(config(tmp_path, f"{{mode: mig, mig_uuid: {uuid}}}"))
    rows = check_host(ok, open_environment(f"sim:{host}"))
    assert failed(rows) == []
    assert any(r.check == "mig-uuid" and r.status == "ok" and "3g.20gb@4" in r.hint for r in rows)
    gone = "MIG-00000000-1111-2222-3333-444444444444"
    bad = load_config(config(tmp_path, f"{{mode: mig, mig_uuid: {gone}}}"))
    rows = check_host(bad, open_environment(f"sim:{host}"))
    assert failed(rows) == [("mig-uuid", f"hpc-compute-01:{gone}")]


def test_non_mig_gpu_on_a_simulated_host(tmp_path: Path) -> None:
    host = sim_init(tmp_path / "host", "--gpu", f"l40s@{GPU}")
    cfg = load_config(config(tmp_path, "{mode: mig, mig_profile: 1g.5gb}"))
    rows = check_host(cfg, open_environment(f"sim:{host}"))
    row = next(r for r in rows if r.check == "mig-capable")
    assert row.status == "fail" and "NVIDIA L40S" in row.hint


@pytest.mark.parametrize(("host_backend", "config_backend"), [("vfio-vf", "mdev"),
                                                              ("mdev", "vfio-vf")])
def test_backend_mismatch(tmp_path: Path, host_backend: str, config_backend: str) -> None:
    host = sim_init(tmp_path / "host", "--gpu", f"h100-80gb@{GPU}", "--vgpu", host_backend)
    ready(host)
    cfg = load_config(config(tmp_path, "{mode: mig, mig_profile: 1g.10gb}",
                             backend=config_backend))
    rows = check_host(cfg, open_environment(f"sim:{host}"))
    # the host's check, and the planner's own refusal (what `aihow plan` would say)
    assert failed(rows) == [("vgpu-types", GPU), ("profile-fit", "global.host.vgpu_backend")]
    assert f"vgpu_backend: {host_backend}" in next(r.hint for r in rows if r.status == "fail")


def test_missing_simulated_host_is_a_row_not_a_crash(tmp_path: Path) -> None:
    cfg = load_config(config(tmp_path, "{mode: mig, mig_profile: 1g.5gb}"))
    rows = check_host(cfg, open_environment(f"sim:{tmp_path / 'nothing'}"))
    row = next(r for r in rows if r.check == "gpu-present")
    assert row.status == "fail" and "aihow sim init" in row.hint
