"""A planned domain delete shows what a reviewer checks of the domain's XML (identity,
CPUs, memory, GPU devices, disks, networks) and folds the rest, in text and Markdown; the
plan file keeps the whole XML for the undo."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
AIHOW = str(Path(sys.executable).parent / "aihow")
DROPPED = '''      - cpu_cores: 8
        memory_gb: 16
        disk_gb: 100
        ip: "192.168.100.14"
        auto_start: false
        gpu_config: {mode: mig, mig_profile: 1g.5gb}
'''


def _run(*args: str) -> str:
    res = subprocess.run([AIHOW, *args], capture_output=True, text=True, cwd=ROOT,
                         check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


def test_a_domain_delete_is_a_summary_not_the_whole_xml(tmp_path: Path) -> None:
    d = tmp_path / "host"
    _run("sim", "init", str(d), "--spec", "config/sim-a100.toml")
    _run("apply", "config/example-mig-cluster.yaml", "--host", f"sim:{d}", "--allow-reset",
         "--auto-approve")
    text = (ROOT / "config/example-mig-cluster.yaml").read_text()
    assert DROPPED in text
    smaller = tmp_path / "smaller.yaml"
    smaller.write_text(text.replace(DROPPED, ""))
    plan = tmp_path / "plan.json"
    shown = _run("plan", str(smaller), "--host", f"sim:{d}", "-o", str(plan))
    xml = next(c["before"]["xml"] for c in json.loads(plan.read_text())["actions"]
               if c["address"] == "domain[hpc-compute-04]" and c["action"] == "delete")
    assert xml.count("\n") > 30  # the plan file keeps it whole
    for out in (shown, _run("show", str(plan), "--format", "markdown")):
        block = out[out.index("domain[hpc-compute-04]"):]
        block = block[:block.index("domain hpc-controller")] if "domain hpc-c" in block else block
        assert "<domain" not in out and "</devices>" not in out
        assert "xml: name=hpc-compute-04 uuid=" in block and "vcpu=8 memory=16GiB" in block
        assert "xml: hostdev mdev " in block
        assert "xml: disk " in block and "xml: interface " in block
        assert "lines folded; the plan file has the whole text" in block
        assert len(out.splitlines()) < 60, out
