"""A stale plan's refusal lists every host change since the plan: the plan keeps the
canonical fingerprint input (``host.snapshot``), so changes outside the resources the
plan acts on (another GPU, a domain) are named too. A plan made before the snapshot was
kept still loads, and its refusal falls back to the plan's own resources."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from planner.plan.model import digest, parse_plan
from tests.apply.simhost import IMAGE, write_config
from tests.clirun import aihow

G0, G1 = "0000:17:00.0", "0000:65:00.0"


def _two_gpu_host(tmp_path: Path) -> Path:
    d = tmp_path / "host"
    res = aihow("sim", "init", str(d), "--gpu", f"h100-80gb@{G0}", "--gpu", f"h100-80gb@{G1}",
                "--image", IMAGE)
    assert res.returncode == 0, res.stderr
    for index in ("0", "1"):
        _smi(d, "-i", index, "-mig", "1")
    return d


def _smi(d: Path, *args: str) -> None:
    res = subprocess.run([str(d / "bin" / "nvidia-smi"), *args], capture_output=True,
                         text=True, check=False)
    assert res.returncode == 0, res.stdout + res.stderr


def test_refusal_names_a_change_on_a_gpu_the_plan_does_not_touch(tmp_path: Path) -> None:
    d = _two_gpu_host(tmp_path)
    cfg = write_config(tmp_path / "a.yaml", {G0: "3g.40gb@4 + 2*1g.10gb"})  # G1 unmanaged
    plan = tmp_path / "plan.json"
    assert aihow("plan", str(cfg), "--host", f"sim:{d}", "-o", str(plan)).returncode == 0
    snapshot = json.loads(plan.read_text())["host"]["snapshot"]
    assert [g["pci"] for g in snapshot["gpus"]] == [G0, G1]

    _smi(d, "mig", "-i", "1", "-cgi", "19", "-C")  # someone takes a slice of the other GPU
    res = aihow("apply", str(plan), "--auto-approve")
    assert res.returncode == 1
    assert "the plan is stale" in res.stderr and "Traceback" not in res.stderr
    assert f"+ gpu[{G1}].gi[1g.10gb@" in res.stderr, res.stderr
    assert '"compute_instances": [{"profile": "1g.10gb"' in res.stderr, res.stderr
    assert "a part of the host the plan does not act on" not in res.stderr


def test_a_plan_without_a_snapshot_still_loads_and_is_refused_when_stale(
        tmp_path: Path) -> None:
    d = _two_gpu_host(tmp_path)
    cfg = write_config(tmp_path / "a.yaml", {G0: "3g.40gb@4 + 2*1g.10gb"})
    plan = tmp_path / "plan.json"
    assert aihow("plan", str(cfg), "--host", f"sim:{d}", "-o", str(plan)).returncode == 0
    data = json.loads(plan.read_text())
    del data["host"]["snapshot"], data["plan_sha256"]  # as an older aihow wrote it
    data["plan_sha256"] = digest(data)
    old = parse_plan(json.dumps(data))
    assert old.host.snapshot is None and '"snapshot"' not in old.to_json()
    assert parse_plan(old.to_json()).plan_sha256 == data["plan_sha256"]
    plan.write_text(old.to_json())

    _smi(d, "mig", "-i", "0", "-cgi", "19", "-C")  # on the GPU the plan acts on
    _smi(d, "mig", "-i", "1", "-cgi", "19", "-C")  # and on the other
    res = aihow("apply", str(plan), "--auto-approve")
    assert res.returncode == 1 and "the plan is stale" in res.stderr
    assert f"+ gpu[{G0}].gi[1g.10gb@" in res.stderr, res.stderr
    assert f"gpu[{G1}]" not in res.stderr  # without a snapshot only the plan's GPUs show
