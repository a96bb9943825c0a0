"""The default ``aihow probe`` table: VM -> cluster -> GPU -> profile -> placement ->
MIG UUID -> vGPU/VF -> state, on simulated A100 (mdev) and H100 (vendor VFIO) hosts after
a real apply, and a slice made by hand that no VM holds."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
AIHOW = str(Path(sys.executable).parent / "aihow")


def _run(*args: str) -> str:
    res = subprocess.run([AIHOW, *args], capture_output=True, text=True, cwd=ROOT,
                         check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


@pytest.mark.parametrize(("spec", "config", "pci", "device"), [
    ("sim-a100.toml", "example-mig-cluster.yaml", "0000:17:00.0", r"mdev [0-9a-f-]{36}"),
    ("sim-h100.toml", "example-h100-vfio.yaml", "0000:65:00.0", r"vf 0000:65:0\d\.\d"),
])
def test_one_row_per_vm_with_its_slice(tmp_path: Path, spec: str, config: str, pci: str,
                                       device: str) -> None:
    d = tmp_path / "host"
    _run("sim", "init", str(d), "--spec", f"config/{spec}")
    _run("apply", f"config/{config}", "--host", f"sim:{d}", "--allow-reset",
         "--auto-approve")
    text = _run("probe", "--host", f"sim:{d}")
    lines = text.splitlines()
    assert lines[2].split() == ["VM", "CLUSTER", "GPU", "PROFILE", "PLACEMENT", "MIG",
                                "UUID", "VGPU/VF", "STATE"]
    rows = [line for line in lines if line.startswith(("hpc-", "k8s-"))]
    assert len(rows) == 9  # every VM once; the controllers hold no GPU
    compute = next(r for r in rows if r.startswith("hpc-compute-01 "))
    assert re.search(rf"hpc\s+{pci}\s+1g\.\d+gb\s+\d:1\s+MIG-[0-9a-f-]{{36}}\s+{device}\s+"
                     r"running$", compute), compute  # auto_start (ai-how's default)
    assert re.search(r"^hpc-controller\s+hpc\s+-\s+-", next(
        r for r in rows if r.startswith("hpc-controller"))), rows
    assert (f"{pci} " in text and "7 of 8 memory slices used, 1 free (7)" in text), text
    assert len(lines) < 20  # not the full listing
    full = _run("probe", "--host", f"sim:{d}", "--verbose")
    assert "vGPU parents" in full and len(full.splitlines()) > len(lines)


def test_a_slice_made_by_hand_shows_as_free(tmp_path: Path) -> None:
    d = tmp_path / "host"
    _run("sim", "init", str(d), "--spec", "config/sim-a100.toml")
    for args in (("-i", "0", "-mig", "1"), ("mig", "-i", "0", "-cgi", "9:4", "-C")):
        subprocess.run([str(d / "bin" / "nvidia-smi"), *args], check=True,
                       capture_output=True)
    text = _run("probe", "--host", f"sim:{d}")
    row = next(line for line in text.splitlines() if "3g.20gb" in line)
    assert re.match(r"-\s+-\s+0000:17:00\.0\s+3g\.20gb\s+4:4\s+MIG-[0-9a-f-]{36}\s+-\s+free$",
                    row), row
    assert "4 of 8 memory slices used, 4 free (0,1,2,3)" in text
