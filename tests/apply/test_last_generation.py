"""``aihow apply --last-generation`` (what the boot unit runs): after a reboot the host
comes back to the last *applied* generation's config, whatever the config file on disk
says now; with no generation yet it does nothing and succeeds."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
AIHOW = str(Path(sys.executable).parent / "aihow")


def aihow(*args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([AIHOW, *args], capture_output=True, text=True, cwd=ROOT,
                         check=False)
    assert res.returncode == code, res.stdout + res.stderr
    return res


def mig_uuids(host: Path) -> set[str]:
    return set(re.findall(r"MIG-[0-9a-f-]{36}", aihow("probe", "--host", f"sim:{host}").stdout))


def test_boot_reapplies_the_last_generation_not_the_edited_file(tmp_path: Path) -> None:
    host = tmp_path / "host"
    aihow("sim", "init", str(host), "--spec", "config/sim-h100.toml")
    none = aihow("apply", "--last-generation", "--host", f"sim:{host}", "--auto-approve")
    assert "no generation recorded yet; nothing to apply" in none.stdout

    cfg = tmp_path / "cluster.yaml"
    shutil.copy(ROOT / "config" / "example-h100-vfio.yaml", cfg)
    aihow("apply", str(cfg), "--host", f"sim:{host}", "--auto-approve", "--allow-reset")
    before = mig_uuids(host)
    assert len(before) == 7
    # an edit nobody applied: at boot it must not be picked up
    cfg.write_text(cfg.read_text().replace("mig_profile: 1g.10gb", "mig_profile: 2g.20gb", 1))

    aihow("sim", "reboot", str(host))  # Hopper: MIG mode and every instance are gone
    assert mig_uuids(host) == set()
    res = aihow("apply", "--last-generation", "--host", f"sim:{host}", "--auto-approve",
                "--allow-reset", "--lock-timeout", "10s")
    assert "Applying generation 1 again" in res.stdout and "Apply complete" in res.stdout
    profiles = aihow("probe", "--host", f"sim:{host}", "--format", "json").stdout
    names = {gi["profile_name"] for g in json.loads(profiles)["gpus"]
             for gi in g["gpu_instances"]}
    assert names == {"1g.10gb"}  # the generation's config, not the edit
    assert len(mig_uuids(host)) == 7
    again = aihow("apply", "--last-generation", "--host", f"sim:{host}", "--auto-approve")
    assert "No changes" in again.stdout


def test_last_generation_and_a_target_exclude_each_other(tmp_path: Path) -> None:
    res = aihow("apply", "config/example-mig-cluster.yaml", "--last-generation", code=1)
    assert res.stderr.strip() == "error: give either a PLAN/CONFIG or --last-generation, not both"
    res = aihow("apply", code=1)
    assert "missing PLAN or CONFIG (or --last-generation)" in res.stderr
