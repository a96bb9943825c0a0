"""``aihow probe --format prometheus``: drift against the latest generation, the last
apply's time and result, the generation, and slices per GPU and profile, on a simulated
host driven through the real CLI."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
AIHOW = str(Path(sys.executable).parent / "aihow")
A100 = "0000:17:00.0"
SMALL = f"""\
version: "1.0"
metadata: {{name: small, description: two slices}}
global:
  host: {{vgpu_backend: mdev}}
  gpus:
    - {{select: "{A100}", mig: enabled}}
clusters:
  hpc:
    name: lab
    base_image_path: "build/packer/hpc-compute/hpc-compute/hpc-compute.qcow2"
    network: {{subnet: "192.168.100.0/24", bridge: virbr100}}
    controller: {{cpu_cores: 2, memory_gb: 4, disk_gb: 20, ip_address: "192.168.100.10"}}
    compute_nodes:
      - {{cpu_cores: 4, memory_gb: 8, disk_gb: 40, ip: "192.168.100.11",
         gpu_config: {{mode: mig, mig_profile: 1g.5gb, placement: 0}}}}
      - {{cpu_cores: 4, memory_gb: 8, disk_gb: 40, ip: "192.168.100.12",
         gpu_config: {{mode: mig, mig_profile: 1g.5gb, placement: 1}}}}
    slurm_config: {{partitions: [gpu], default_partition: gpu}}
"""


def aihow(*args: str, code: int = 0) -> str:
    res = subprocess.run([AIHOW, *args], capture_output=True, text=True, cwd=ROOT,
                         check=False)
    assert res.returncode == code, res.stdout + res.stderr
    return res.stdout


def metrics(host: Path) -> dict[str, float]:
    text = aihow("probe", "--host", f"sim:{host}", "--format", "prometheus")
    out = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.match(r"# (HELP|TYPE) aihow_[a-z_]+ ", line), line
            continue
        name, value = line.rsplit(" ", 1)
        out[name] = float(value)
    return out


def test_metrics_follow_apply_drift_and_failure(tmp_path: Path) -> None:
    host = tmp_path / "host"
    aihow("sim", "init", str(host), "--spec", "config/sim-a100.toml")
    fresh = metrics(host)
    assert fresh["aihow_generation"] == 0 and "aihow_drift" not in fresh
    assert fresh[f'aihow_gpu_mig_enabled{{gpu="{A100}",model="a100-40gb"}}'] == 0

    cfg = tmp_path / "small.yaml"
    cfg.write_text(SMALL)
    aihow("apply", str(cfg), "--host", f"sim:{host}", "--allow-reset", "--auto-approve")
    m = metrics(host)
    gpu = f'gpu="{A100}",model="a100-40gb"'
    assert m["aihow_drift"] == 0 and m["aihow_generation"] == 1
    assert m["aihow_last_apply_success"] == 1 and m["aihow_last_apply_timestamp_seconds"] > 1e9
    assert m[f'aihow_mig_instances_used{{{gpu},profile="1g.5gb"}}'] == 2
    assert m[f'aihow_mig_memory_slices{{{gpu},state="free"}}'] == 6
    assert m[f'aihow_mig_instances_available{{{gpu},profile="3g.20gb"}}'] == 1  # at 4
    assert m[f'aihow_mig_instances_available{{{gpu},profile="1g.5gb"}}'] == 5

    subprocess.run([str(host / "bin" / "nvidia-smi"), "mig", "-i", "0", "-cgi", "9:4", "-C"],
                   check=True, capture_output=True)  # made by hand: the host drifts
    m = metrics(host)
    assert m["aihow_drift"] == 1 and m["aihow_drift_changes"] == 2  # the GI and its CI
    assert m[f'aihow_mig_instances_spare{{{gpu},profile="3g.20gb"}}'] == 1
    assert m[f'aihow_mig_instances_available{{{gpu},profile="3g.20gb"}}'] == 0

    aihow("sim", "fail", str(host), "--op", "nvmlGpuInstanceDestroy", "--at", "1",
          "--error", "IN_USE")
    aihow("apply", str(cfg), "--host", f"sim:{host}", "--auto-approve", code=1)
    m = metrics(host)
    assert m["aihow_last_apply_success"] == 0 and m["aihow_generation"] == 1


def test_a_snapshot_has_no_state_facts(tmp_path: Path) -> None:
    host = tmp_path / "host"
    aihow("sim", "init", str(host), "--spec", "config/sim-a100.toml")
    snap = tmp_path / "snap.json"
    aihow("probe", "--host", f"sim:{host}", "-o", str(snap))
    text = aihow("probe", "--host", f"snapshot:{snap}", "--format", "prometheus")
    assert "aihow_gpu_mig_enabled" in text and "aihow_generation" not in text
