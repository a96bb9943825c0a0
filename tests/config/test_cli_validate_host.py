"""`aihow validate CONFIG --host URI`: the config checks, then the read-only host checks
as one table; exit 1 when a host check fails."""

from __future__ import annotations

from pathlib import Path

from tests.clirun import aihow

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "example-mig-cluster.yaml"
GPU = "0000:17:00.0"


def rows(stdout: str) -> dict[tuple[str, str], tuple[str, str]]:
    """(check, subject) -> (status, hint) from the table after the 'Host ...:' line."""
    lines = stdout.split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith("Host "))
    assert lines[start + 1].split() == ["CHECK", "SUBJECT", "STATUS", "HINT"]
    out = {}
    for line in lines[start + 2:]:
        if line.strip():
            check, subject, status, *hint = line.split(None, 3)
            out[(check, subject)] = (status, hint[0] if hint else "")
    return out


def sim(tmp_path: Path, *args: str) -> Path:
    d = tmp_path / "host"
    res = aihow("sim", "init", str(d), *args)
    assert res.returncode == 0, res.stderr
    return d


def test_host_without_vfio_fails_until_it_is_loaded(tmp_path: Path) -> None:
    d = sim(tmp_path, "--spec", str(ROOT / "config" / "sim-a100.toml"), "--no-vfio")
    res = aihow("validate", str(EXAMPLE), "--host", f"sim:{d}")
    assert res.returncode == 1, res.stdout + res.stderr
    assert res.stdout.startswith(f"OK {EXAMPLE}\n")  # the config checks still print
    table = rows(res.stdout)
    assert table[("vfio", "vfio_pci")][0] == "FAIL"
    assert "modprobe vfio_pci" in table[("vfio", "vfio_pci")][1]
    assert table[("iommu", "host")][0] == "OK"
    assert table[("gpu-present", GPU)][0] == "OK"
    assert table[("mig-capable", GPU)] == ("OK", "a100-40gb, MIG disabled")
    assert table[("gpu-driver", GPU)] == ("OK", "bound to nvidia")
    assert table[("profile-fit", GPU)][0] == "OK" and "1g.5gb@6" in table[("profile-fit", GPU)][1]

    for module in ("vfio_pci", "vfio_iommu_type1"):  # what modprobe leaves in sysfs
        (d / "sys" / "module" / module).mkdir(parents=True)
    res = aihow("validate", str(EXAMPLE), "--host", f"sim:{d}")
    assert res.returncode == 0, res.stdout + res.stderr
    table = rows(res.stdout)
    assert {s for s, _ in table.values()} <= {"OK", "WARN"}
    assert table[("vfio", "vfio_pci")] == ("OK", "loaded or built in")
    assert table[("sriov-vfs", GPU)][0] == "WARN"  # apply turns the VFs on


def test_gpu_without_mig_fails_with_a_hint(tmp_path: Path) -> None:
    d = sim(tmp_path, "--gpu", f"l40s@{GPU}")
    res = aihow("validate", str(EXAMPLE), "--host", f"sim:{d}")
    assert res.returncode == 1, res.stdout + res.stderr
    status, hint = rows(res.stdout)[("mig-capable", GPU)]
    assert status == "FAIL"
    assert "NVIDIA L40S: NVML reports no MIG support" in hint
    assert "Use a MIG-capable GPU" in hint and "global.gpus[0]" in hint
    assert rows(res.stdout)[("profile-fit", "global.gpus[0]")] == (
        "FAIL", "GPU 0000:17:00.0 (NVIDIA L40S) is not MIG-capable")  # what plan says


def test_bad_host_uri_is_one_line_and_nothing_is_checked(tmp_path: Path) -> None:
    res = aihow("validate", str(EXAMPLE), "--host", "bogus:x")
    assert res.returncode == 1
    assert res.stdout == ""
    assert res.stderr.count("\n") == 1 and "bogus:x" in res.stderr
    assert "Traceback" not in res.stderr


def test_without_host_no_host_is_read(tmp_path: Path) -> None:
    res = aihow("validate", str(EXAMPLE))
    assert res.returncode == 0, res.stderr
    assert "Host " not in res.stdout and "CHECK" not in res.stdout
