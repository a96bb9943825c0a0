"""The fake nvidia-smi, run as the executable DIR/bin/nvidia-smi in a subprocess."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from planner.sim.fake_nvml import FakeNvml
from planner.sim.host import GpuSpec

AIHOW = str(Path(sys.executable).with_name("aihow"))


def smi(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(root / "bin" / "nvidia-smi"), *args], capture_output=True, text=True, timeout=60
    )


def test_creation_order_failure_through_nvidia_smi(a100: Path) -> None:
    r = smi(a100, "mig", "-cgi", "19,19,14,9")
    assert r.returncode != 0
    assert r.stdout.splitlines() == [
        "Successfully created GPU instance ID 13 on GPU  0 using profile MIG 1g.5gb (ID 19)",
        "Successfully created GPU instance ID 11 on GPU  0 using profile MIG 1g.5gb (ID 19)",
        "Successfully created GPU instance ID  3 on GPU  0 using profile MIG 2g.10gb (ID 14)",
        "Unable to create a GPU instance on GPU  0 using profile 9: Insufficient Resources",
        "Failed to create GPU instances: Insufficient Resources",
    ]
    lgi = smi(a100, "mig", "-lgi").stdout
    assert "|   0  MIG 1g.5gb            19       13          6:1     |" in lgi
    assert "|   0  MIG 2g.10gb           14        3          0:2     |" in lgi
    # NVML sees what nvidia-smi made
    n = FakeNvml(a100)
    n.nvmlInit()
    h = n.nvmlDeviceGetHandleByIndex(0)
    assert n.nvmlDeviceGetGpuInstanceRemainingCapacity(h, 9) == 0


def test_same_set_with_explicit_placements(a100: Path) -> None:
    r = smi(a100, "mig", "-cgi", "19:0,19:1,14:2,9:4", "-C")
    assert r.returncode == 0, r.stdout
    assert r.stdout.count("Successfully created GPU instance") == 4
    assert r.stdout.count("Successfully created compute instance") == 4
    lines = smi(a100, "mig", "-lgi").stdout.splitlines()
    rows = [line for line in lines if line.startswith("|   0")]
    # grouped by profile (1g, 2g, 3g), GI id ascending within a profile
    assert [r.split()[4] for r in rows] == ["19", "19", "14", "9"]
    assert [r.split()[6] for r in rows] == ["0:1", "1:1", "2:2", "4:4"]
    lci = smi(a100, "mig", "-lci", "-gi", "2").stdout
    assert "|   0      2       MIG 3g.20gb          2         0          0:3     |" in lci


def test_names_and_lists(a100: Path) -> None:
    lgip = smi(a100, "mig", "-lgip").stdout.splitlines()
    assert lgip[5] == (
        "|   0  MIG 1g.5gb          19     7/7        4.75       No     14     0     0   |"
    )
    assert all(len(line) == 81 for line in lgip)
    lgipp = smi(a100, "mig", "-lgipp").stdout.splitlines()
    assert "GPU  0 Profile ID 19 Placements: {0,1,2,3,4,5,6}:1" in lgipp
    assert "GPU  0 Profile ID  0 Placement : {0}:8" in lgipp
    assert smi(a100, "mig", "-cgi", "3g.20gb,MIG 1g.5gb", "-C").returncode == 0
    listing = smi(a100, "-L").stdout.splitlines()
    assert listing[0].startswith("GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-")
    assert listing[1].startswith("  MIG 3g.20gb     Device  0: (UUID: MIG-")
    assert listing[2].startswith("  MIG 1g.5gb      Device  1: (UUID: MIG-")


DATA = Path(__file__).with_name("data")


def test_rtx_pro_6000_tables_match_a_real_host(make_host: Callable[..., Path]) -> None:
    """-lgip, -lgipp and -lgi as a real RTX PRO 6000 prints them on driver 610.43.02 (a
    published walkthrough, captured in tests/sim/data): the wide layout where
    "MIG 1g.24gb+me.all" keeps its blanks before the ID, and the real row order."""
    root = make_host(GpuSpec("rtx-pro-6000", "0000:01:00.0", mig=True))
    lgip = smi(root, "mig", "-i", "0", "-lgip").stdout
    assert lgip == (DATA / "rtx-pro-6000-lgip.txt").read_text()
    lgipp = smi(root, "mig", "-i", "0", "-lgipp").stdout.splitlines()
    assert [int(line.split()[4]) for line in lgipp] == [14, 21, 47, 65, 67, 5, 35, 64, 66, 0, 32]
    assert lgipp[3] == "GPU  0 Profile ID 65 Placements: {0,3,6,9}:3"
    assert lgipp[9] == "GPU  0 Profile ID  0 Placement : {0}:12"
    made = smi(root, "mig", "-i", "0", "-cgi", "2g.48gb,1g.24gb,1g.24gb", "-C")
    assert made.returncode == 0, made.stdout
    # the same command on the real host made GIs 1, 5 and 6 and printed this -lgi
    assert smi(root, "mig", "-i", "0", "-lgi").stdout == (
        DATA / "rtx-pro-6000-lgi.txt").read_text()


def test_long_names_never_touch_the_next_column(make_host: Callable[..., Path]) -> None:
    root = make_host(GpuSpec("rtx-pro-6000", "0000:01:00.0", mig=True))
    assert smi(root, "mig", "-i", "0", "-cgi", "65,67,66", "-C").returncode == 0
    for args in (("mig", "-lgip"), ("mig", "-lgi"), ("mig", "-lci"), ("mig", "-lcip"), ("-L",)):
        out = smi(root, *args).stdout
        assert "me.all" in out, args
        assert not re.search(r"me\.all\S", out), (args, out)
    listing = smi(root, "-L").stdout.splitlines()
    assert any(line.startswith("  MIG 1g.24gb+me.all Device ") for line in listing), listing
    assert any(line.startswith("  MIG 1g.24gb-me  Device ") for line in listing), listing


def test_in_use_and_empty_lists(a100: Path) -> None:
    assert smi(a100, "mig", "-lgi").stdout.strip() == "No GPU instances found."
    smi(a100, "mig", "-cgi", "9", "-C")
    r = smi(a100, "mig", "-dgi")
    assert r.returncode == 19
    assert r.stdout.splitlines() == [
        "Unable to destroy GPU instance ID  2 from GPU  0: In use by another client",
        "Failed to destroy GPU instances: In use by another client",
    ]
    assert smi(a100, "mig", "-dci").returncode == 0
    r = smi(a100, "mig", "-dgi")
    assert r.stdout.strip() == "Successfully destroyed GPU instance ID  2 from GPU  0"


def test_mig_disabled_and_pending_and_reset(make_host) -> None:
    root = make_host(GpuSpec("a100-40gb", "0000:17:00.0"))
    r = smi(root, "mig", "-lgi")
    assert (r.returncode, r.stdout.strip()) == (6, "No MIG-enabled devices found.")
    subprocess.run(
        [
            AIHOW,
            "sim",
            "hold",
            str(root),
            "--gpu",
            "17:00.0",
            "--name",
            "nvidia-persistenced",
        ],
        check=True,
        capture_output=True,
    )
    r = smi(root, "-i", "0", "-mig", "1")
    assert r.returncode == 0
    assert r.stdout.splitlines()[0] == (
        "Warning: MIG mode is in pending enable state for GPU 00000000:17:00.0:"
        "In use by another client"
    )
    assert "Enabled" in smi(root, "-q").stdout.split("Pending")[1].splitlines()[0]
    r = smi(root, "-r")
    assert r.returncode == 255
    assert "  GPU 00000000:17:00.0: In use by another client" in r.stdout.splitlines()
    assert "1 device is currently being used" in r.stdout
    subprocess.run(
        [AIHOW, "sim", "hold", str(root), "--gpu", "0000:17:00.0", "--release"],
        check=True,
        capture_output=True,
    )
    r = smi(root, "--gpu-reset")
    assert r.returncode == 0 and "GPU 00000000:17:00.0 was successfully reset." in r.stdout
    assert smi(root, "mig", "-lgi").stdout.strip() == "No GPU instances found."


def test_query_lists_compute_processes(a100: Path) -> None:
    smi(a100, "mig", "-cgi", "9", "-C")
    uuid = smi(a100, "-L").stdout.split("(UUID: ")[2].rstrip(")\n")
    subprocess.run(
        [
            AIHOW,
            "sim",
            "hold",
            str(a100),
            "--gpu",
            "0000:17:00.0",
            "--name",
            "python",
            "--pid",
            "4321",
            "--mig",
            uuid,
        ],
        check=True,
        capture_output=True,
    )
    q = smi(a100, "-q").stdout
    assert "        Process ID                        : 4321" in q
    assert "            Name                          : python" in q
    assert "        GPU instance ID                   : 2" in q


def test_bad_arguments(a100: Path) -> None:
    r = smi(a100, "mig", "-lgi", "-lci")
    assert r.returncode == 2 and r.stdout.startswith("Invalid combination of input arguments")
    r = smi(a100, "-i", "7", "-q")
    assert (r.returncode, r.stdout.strip()) == (6, "No devices were found")


def test_reset_waits_for_every_other_nvml_session_to_close(make_host) -> None:
    """An open NVML session is a client that keeps a GPU from resetting (nvidia-smi(1);
    ASSUMED for an idle one): aihow must close its own before it runs the reset."""
    root = make_host(GpuSpec("a100-40gb", "0000:17:00.0"))
    n = FakeNvml(root)
    n.nvmlInit()
    busy = smi(root, "--gpu-reset", "-i", "0000:17:00.0")
    assert busy.returncode == 255 and "In use by another client" in busy.stdout
    n.nvmlShutdown()
    done = smi(root, "--gpu-reset", "-i", "0000:17:00.0")
    assert done.returncode == 0, done.stdout


def _hgx(make_host, model: str) -> Path:
    from planner.sim.host import HostSpec, init_host

    root = make_host(GpuSpec(model, "0000:07:00.0"))  # a directory to replace
    import shutil

    shutil.rmtree(root)
    init_host(root, HostSpec(gpus=(GpuSpec(model, "0000:07:00.0"),
                                   GpuSpec(model, "0000:0f:00.0")), nvswitch=True))
    return root


def test_hgx_a100_reset_needs_fabric_manager_or_all_nvlink_peers(make_host) -> None:
    """nvidia-smi(1): on an NVSwitch board an Ampere GPU resets alone only while Fabric
    Manager runs; without it every NVLink peer must be in the same command. Fabric Manager
    itself never counts as a holder there (it must keep running)."""
    root = _hgx(make_host, "a100-40gb")
    alone = smi(root, "--gpu-reset", "-i", "0000:07:00.0")
    assert alone.returncode == 255
    assert "NVLink peers must be reset with it: 00000000:0F:00.0" in alone.stdout
    together = smi(root, "--gpu-reset", "-i", "0000:07:00.0,0000:0f:00.0")
    assert together.returncode == 0, together.stdout
    held = subprocess.run([AIHOW, "sim", "hold", str(root), "--gpu", "0000:07:00.0",
                           "--name", "nvidia-fabricmanager"], capture_output=True, text=True,
                          timeout=60)
    assert held.returncode == 0, held.stderr
    fm = smi(root, "--gpu-reset", "-i", "0000:07:00.0")
    assert fm.returncode == 0, fm.stdout


def test_hgx_h100_resets_one_gpu_without_fabric_manager(make_host) -> None:
    root = _hgx(make_host, "h100-80gb")
    r = smi(root, "--gpu-reset", "-i", "0000:07:00.0")
    assert r.returncode == 0, r.stdout
