"""Issue 10 defect 1: changing a VM's MIG profile plans one replace per address, applies,
is verified against the final state and re-plans empty; a replace that fails part-way
rolls back to where it started. Through the CLI, on simulated A100 hosts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.apply.simhost import SimHost
from tests.clirun import aihow

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config/example-mig-cluster.yaml"
WORKER3 = '192.168.200.13"\n        gpu_config: {mode: mig, mig_profile: 1g.5gb}'
CPU_ONLY = ('192.168.100.13"\n', '192.168.100.14"\n        auto_start: false\n',
            '192.168.200.12"\n')  # nodes made CPU-only so the GPU has room for a 2g.10gb


def _configs(tmp_path: Path, new_profile: str, room: bool) -> tuple[Path, Path]:
    text = EXAMPLE.read_text()
    if room:
        for head in CPU_ONLY:
            slice_line = head + "        gpu_config: {mode: mig, mig_profile: 1g.5gb}\n"
            assert slice_line in text
            text = text.replace(slice_line, head)
    assert WORKER3 in text
    first, second = tmp_path / "first.yaml", tmp_path / "second.yaml"
    first.write_text(text)
    second.write_text(text.replace(WORKER3, WORKER3.replace("1g.5gb", new_profile)))
    return first, second


def _applied(tmp_path: Path, first: Path) -> SimHost:
    out = aihow("sim", "init", str(tmp_path / "host"), "--spec",
                str(ROOT / "config/sim-a100.toml"))
    assert out.returncode == 0, out.stderr
    host = SimHost(tmp_path / "host")
    plan = tmp_path / "first.json"
    assert aihow("plan", str(first), "--host", host.uri, "-o", str(plan)).returncode == 0
    done = aihow("apply", str(plan), "--host", host.uri, "--auto-approve", "--allow-reset")
    assert done.returncode == 0, done.stdout + done.stderr
    return host


def _vgpu_types(host: SimHost) -> dict[str, str]:
    return {m.uuid: m.type_id for m in host.probe().mdevs}


@pytest.mark.parametrize("new_profile,room,new_type", [
    ("1g.5gb+me", False, "NVIDIA A100-1-5CME"),
    ("2g.10gb", True, "NVIDIA A100-2-10C"),
])
def test_changing_a_vms_profile_applies_and_replans_empty(
        tmp_path: Path, new_profile: str, room: bool, new_type: str) -> None:
    first, second = _configs(tmp_path, new_profile, room)
    host = _applied(tmp_path, first)
    plan = tmp_path / "second.json"
    made = aihow("plan", str(second), "--host", host.uri, "-o", str(plan))
    assert made.returncode == 0, made.stderr
    data = json.loads(plan.read_text())
    replaces = [a for a in data["actions"] if a["action"] == "replace"]
    # the worker's vGPU (another type) and its hostdev: each ONE change, with both sides;
    # the worker runs (auto_start), so it is shut down around them and started again
    assert sorted(a["kind"] for a in replaces) == ["hostdev", "running", "vgpu"]
    assert {a["reason_code"] for a in replaces} == {"changed", "dependency-replaced",
                                                    "restart-for-change"}
    vgpu = next(a for a in replaces if a["kind"] == "vgpu")
    assert vgpu["after"]["type_name"] == new_type and vgpu["before"]["type_name"] != new_type
    assert vgpu["delete_step"]["id"] < vgpu["id"]
    addresses = [a["address"] for a in data["actions"]]
    assert len(addresses) == len(set(addresses))

    done = aihow("apply", str(plan), "--host", host.uri, "--auto-approve",
                 "--restart-running-vms")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "host verified" in done.stdout and "not in its planned state" not in done.stderr
    again = aihow("plan", str(second), "--host", host.uri, "--detailed-exitcode")
    assert again.returncode == 0, again.stdout + again.stderr
    (uuid,) = [a["address"][5:-1] for a in replaces if a["kind"] == "vgpu"]
    parent_types = {t.type_id: t.name for p in host.probe().vgpu_parents for t in p.types}
    assert parent_types[_vgpu_types(host)[uuid]] == new_type


@pytest.mark.parametrize("op", [
    "sysfs.mdev_create",  # the replace's create step fails: its delete step is undone
    "virDomainAttachDeviceFlags",  # the last step fails: the new vGPU goes, the old returns
    "nvmlGpuInstanceCreateComputeInstanceWithPlacement",  # between the two halves
])
def test_a_failing_replace_rolls_back_to_the_start(tmp_path: Path, op: str) -> None:
    first, second = _configs(tmp_path, "1g.5gb+me", room=False)
    host = _applied(tmp_path, first)
    start = host.layout(), _vgpu_types(host)
    plan = tmp_path / "second.json"
    assert aihow("plan", str(second), "--host", host.uri, "-o", str(plan)).returncode == 0
    armed = aihow("sim", "fail", str(host.dir), "--op", op, "--at", "1")
    assert armed.returncode == 0, armed.stderr
    failed = aihow("apply", str(plan), "--host", host.uri, "--auto-approve",
                   "--restart-running-vms")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "back at the plan's starting state" in failed.stderr, failed.stderr
    assert "Traceback" not in failed.stderr
    assert (host.layout(), _vgpu_types(host)) == start
    assert {d.name: d.state for d in host.probe().domains}["k8s-cpu-worker-03"] == "running"
    back = aihow("plan", str(first), "--host", host.uri, "--detailed-exitcode")
    assert back.returncode == 0, back.stdout + back.stderr
