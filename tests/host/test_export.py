"""``aihow export`` adopts a host: the config it writes validates and plans to no changes
on the same host, on simulated A100 (mdev) and H100 (vendor VFIO) hosts, with aihow's
own VMs and with GPU instances made by hand through the simulated nvidia-smi."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
AIHOW = str(Path(sys.executable).parent / "aihow")
PLACEHOLDER_MARK = "# placeholder:"


def aihow(*args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([AIHOW, *args], capture_output=True, text=True, cwd=ROOT,
                         check=False)
    assert res.returncode == code, res.stdout + res.stderr
    return res


def adopts(host: Path, tmp_path: Path) -> str:
    """Export the host; the config must validate on it and plan to no changes."""
    out = tmp_path / "exported.yaml"
    aihow("export", "--host", f"sim:{host}", "-o", str(out))
    aihow("validate", str(out), "--host", f"sim:{host}")
    plan = aihow("plan", str(out), "--host", f"sim:{host}", "--detailed-exitcode")
    assert "No changes" in plan.stdout
    return out.read_text()


@pytest.mark.parametrize(("spec", "config"), [
    ("sim-a100.toml", "example-mig-cluster.yaml"),
    ("sim-h100.toml", "example-h100-vfio.yaml"),
])
def test_an_applied_example_host(tmp_path: Path, spec: str, config: str) -> None:
    host = tmp_path / "host"
    aihow("sim", "init", str(host), "--spec", f"config/{spec}")
    aihow("apply", f"config/{config}", "--host", f"sim:{host}", "--allow-reset",
          "--auto-approve")
    text = adopts(host, tmp_path)
    uuids = set(re.findall(r"MIG-[0-9a-f-]{36}", aihow("probe", "--host",
                                                       f"sim:{host}").stdout))
    assert set(re.findall(r"mig_uuid: (MIG-[0-9a-f-]{36})", text)) == uuids  # 7 pins
    assert "layout" not in text  # every instance is held by a VM
    # networks, leases, disks, base images and run state are read back from the host
    assert 'subnet: "192.168.100.0/24"\n      bridge: "virbr100"\n' in text
    assert 'ip: "192.168.100.11"' in text and "disk_gb: 100\n" in text
    assert 'base_image_path: "/build/packer/hpc-compute/hpc-compute/hpc-compute.qcow2"' in text
    assert text.count("auto_start: false") == 1  # hpc-compute-04, shut off
    assert PLACEHOLDER_MARK not in text.split("slurm_config")[0]


SMALL = """\
version: "1.0"
metadata: {{name: small, description: two pinned slices}}
global:
  host: {{vgpu_backend: {backend}}}
  gpus:
    - {{select: "{pci}", mig: enabled}}
clusters:
  hpc:
    name: lab
    base_image_path: "build/packer/hpc-compute/hpc-compute/hpc-compute.qcow2"
    network: {{subnet: "192.168.100.0/24", bridge: virbr100}}
    controller: {{cpu_cores: 2, memory_gb: 4, disk_gb: 20, ip_address: "192.168.100.10"}}
    compute_nodes:
      - {{cpu_cores: 4, memory_gb: 8, disk_gb: 40, ip: "192.168.100.11",
         gpu_config: {{mode: mig, mig_profile: {small}, placement: 0}}}}
      - {{cpu_cores: 2, memory_gb: 6, disk_gb: 40, ip: "192.168.100.12",
         gpu_config: {{mode: mig, mig_profile: {small}, placement: 1}}}}
    slurm_config: {{partitions: [gpu], default_partition: gpu}}
"""


@pytest.mark.parametrize(("spec", "pci", "backend", "small", "big"), [
    ("sim-a100.toml", "0000:17:00.0", "mdev", "1g.5gb", "3g.20gb"),
    ("sim-h100.toml", "0000:65:00.0", "vfio-vf", "1g.10gb", "3g.40gb"),
])
def test_instances_made_by_hand_become_the_layout(tmp_path: Path, spec: str, pci: str,
                                                  backend: str, small: str, big: str) -> None:
    host = tmp_path / "host"
    aihow("sim", "init", str(host), "--spec", f"config/{spec}")
    cfg = tmp_path / "small.yaml"
    cfg.write_text(SMALL.format(backend=backend, pci=pci, small=small))
    aihow("apply", str(cfg), "--host", f"sim:{host}", "--allow-reset", "--auto-approve")
    made = subprocess.run([str(host / "bin" / "nvidia-smi"), "mig", "-i", "0", "-cgi", "9:4",
                           "-C"], capture_output=True, text=True, check=False)
    assert made.returncode == 0, made.stdout
    text = adopts(host, tmp_path)
    assert f'layout: "{big}@4"' in text
    assert text.count("gpu_config: {mode: mig, mig_uuid: MIG-") == 2
    assert "cpu_cores: 4\n        memory_gb: 8" in text  # from the domain XML


def test_domains_it_cannot_describe_are_listed(tmp_path: Path) -> None:
    host = tmp_path / "host"
    aihow("sim", "init", str(host), "--spec", "config/sim-a100.toml")
    res = aihow("export", "--host", f"sim:{host}")
    assert "clusters: {}" in res.stdout and "warning: no domain aihow defined" in res.stderr
    assert 'select: "0000:17:00.0"' in res.stdout and "mig: disabled" in res.stdout


def test_an_emulated_cluster_exports_enable_kvm_false(tmp_path: Path) -> None:
    host = tmp_path / "host"
    aihow("sim", "init", str(host), "--spec", "config/sim-a100.toml")
    cfg = tmp_path / "tcg.yaml"
    cfg.write_text((ROOT / "config/example-mig-cluster.yaml").read_text().replace(
        "enable_kvm: true", "enable_kvm: false", 1))  # the hpc cluster only
    aihow("apply", str(cfg), "--host", f"sim:{host}", "--allow-reset", "--auto-approve")
    text = adopts(host, tmp_path)
    hpc, cloud = text.split("\n  cloud:\n")
    assert "enable_kvm: false" in hpc and "enable_kvm" not in cloud
