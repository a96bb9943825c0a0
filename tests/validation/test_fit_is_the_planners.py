"""Issue 10 defect 7: `aihow validate --host` and `aihow plan` agree on what fits and on
which MIG UUIDs are free, because validate's rows come from the planner's resolve."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.clirun import aihow
from tests.config.test_cli_validate_host import rows

ROOT = Path(__file__).resolve().parents[2]
GPU = "0000:17:00.0"
IMAGE = "/var/lib/images/hpc.qcow2"  # every test host holds it (sim init --image)


def _config(path: Path, layout: str | None, nodes: list[str]) -> Path:
    lines = ['version: "1.0"', "metadata: {name: fit, description: fit}", "global:",
             "  gpus:", f'    - select: "{GPU}"', "      mig: enabled"]
    if layout:
        lines.append(f'      layout: "{layout}"')
    lines += ["clusters:", "  hpc:", "    name: hpc", f"    base_image_path: {IMAGE}",
              '    network: {subnet: "192.168.100.0/24", bridge: virbr100}',
              '    controller: {cpu_cores: 2, memory_gb: 4, disk_gb: 20, '
              'ip_address: "192.168.100.10"}', "    compute_nodes:"]
    for i, gc in enumerate(nodes):
        lines.append(f'      - {{cpu_cores: 2, memory_gb: 4, disk_gb: 20, '
                     f'ip: "192.168.100.{11 + i}", gpu_config: {gc}}}')
    lines.append("    slurm_config: {partitions: [gpu], default_partition: gpu}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _agree(cfg: Path, uri: str) -> tuple[dict[tuple[str, str], tuple[str, str]], str]:
    """validate's table and plan's error; asserts both refuse or both accept."""
    checked = aihow("validate", str(cfg), "--host", uri)
    planned = aihow("plan", str(cfg), "--host", uri)
    assert (checked.returncode == 0) == (planned.returncode == 0), \
        checked.stdout + checked.stderr + planned.stdout + planned.stderr
    return rows(checked.stdout), planned.stderr


def _host(tmp_path: Path, model: str) -> str:
    d = tmp_path / "host"
    assert aihow("sim", "init", str(d), "--gpu", f"{model}@{GPU}", "--vgpu",
                 "mdev", "--image", IMAGE).returncode == 0
    for module in ("vfio_pci", "vfio_iommu_type1"):
        (d / "sys" / "module" / module).mkdir(parents=True, exist_ok=True)
    return f"sim:{d}"


def test_two_plus_me_instances_on_an_a30_are_refused_by_both(tmp_path: Path) -> None:
    uri = _host(tmp_path, "a30")
    cfg = _config(tmp_path / "a30.yaml", "1g.6gb+me + 2g.12gb+me", ["{mode: none}"])
    table, error = _agree(cfg, uri)
    status, hint = table[("profile-fit", "global.gpus[0].layout")]
    assert status == "FAIL" and hint and hint in error
    ok = _config(tmp_path / "ok.yaml", "1g.6gb+me + 2g.12gb", ["{mode: none}"])
    table, _ = _agree(ok, uri)
    assert table[("profile-fit", GPU)][0] == "OK"


def test_a_mig_uuid_the_configs_own_vm_holds_is_refused_by_both(tmp_path: Path) -> None:
    uri = _host(tmp_path, "a100-40gb")
    first = _config(tmp_path / "first.yaml", None, ["{mode: mig, mig_profile: 3g.20gb}"])
    done = aihow("apply", str(first), "--host", uri, "--auto-approve", "--allow-reset")
    assert done.returncode == 0, done.stdout + done.stderr
    smi = subprocess.run([uri[4:] + "/bin/nvidia-smi", "-L"], capture_output=True, text=True,
                         check=True)
    (held,) = re.findall(r"MIG-[0-9a-f-]{36}", smi.stdout)
    # hpc-compute-01 keeps its 3g.20gb; hpc-compute-02 is pinned to that very instance
    second = _config(tmp_path / "second.yaml", None,
                     ["{mode: mig, mig_profile: 3g.20gb}", f"{{mode: mig, mig_uuid: {held}}}"])
    table, error = _agree(second, uri)
    status, hint = table[("mig-uuid", f"hpc-compute-02:{held}")]
    assert status == "FAIL" and "hpc-compute-01" in hint and hint in error


def test_a_missing_base_image_is_refused_by_both_naming_the_config_key(tmp_path: Path) -> None:
    uri = _host(tmp_path, "a100-40gb")
    cfg = _config(tmp_path / "a.yaml", None, ["{mode: mig, mig_profile: 3g.20gb}"])
    cfg.write_text(cfg.read_text().replace(IMAGE, "/var/lib/images/gone.qcow2"))
    table, error = _agree(cfg, uri)
    status, hint = table[("base-image", "clusters.hpc.base_image_path")]
    assert status == "FAIL" and "gone.qcow2, which does not exist" in hint and hint in error
    assert table[("profile-fit", GPU)][0] == "OK"  # the rest is still checked
    (Path(uri[4:]) / "var/lib/images/gone.qcow2").touch()
    table, _ = _agree(cfg, uri)
    assert table[("base-image", "/var/lib/images/gone.qcow2")] == ("OK", "on the host")
