"""A saved probe as a read-only host, end to end through the real CLI: ``aihow probe -o``
saves the host, ``--host snapshot:FILE`` plans against it without touching the host, the
plan is the one the live host gives, byte for byte, and it applies on the live host while
the host still matches the snapshot; once the host has changed, apply refuses it as stale.
Nothing that changes a host runs against a snapshot."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

from tests.apply.simhost import IMAGE, write_config
from tests.clirun import aihow

GPU = "0000:17:00.0"


def _host(tmp_path: Path) -> Path:
    d = tmp_path / "host"
    res = aihow("sim", "init", str(d), "--gpu", f"h100-80gb@{GPU}", "--image", IMAGE)
    assert res.returncode == 0, res.stderr
    _smi(d, "-i", "0", "-mig", "1")
    return d


def _smi(d: Path, *args: str) -> None:
    res = subprocess.run([str(d / "bin" / "nvidia-smi"), *args], capture_output=True,
                         text=True, check=False)
    assert res.returncode == 0, res.stdout + res.stderr


def _tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(str(p.relative_to(root)).encode())
        if p.is_file() and not p.is_symlink():
            h.update(p.read_bytes())
    return h.hexdigest()


def _ok(*args: str) -> subprocess.CompletedProcess[str]:
    res = aihow(*args)
    assert res.returncode == 0, res.stdout + res.stderr
    return res


def test_plan_from_a_snapshot_is_the_live_plan_and_applies_on_the_live_host(
        tmp_path: Path) -> None:
    d = _host(tmp_path)
    first = write_config(tmp_path / "first.yaml", {GPU: "3g.40gb@4"})
    _ok("apply", str(first), "--host", f"sim:{d}", "--auto-approve")  # records: domains
    snap = tmp_path / "snap.json"
    text = _ok("probe", "--host", f"sim:{d}", "-o", str(snap)).stdout
    assert f"GPU 0 {GPU} " in text  # -o saves; the usual table is still printed
    doc = json.loads(snap.read_text())
    assert (doc["format"], doc["format_version"], doc["host_uri"]) == (
        "aihow-host-snapshot", 1, f"sim:{d}")
    assert sorted(r["name"] for r in doc["records"]["defined"]) == [
        "hpc-compute-01", "hpc-controller"]

    cfg = write_config(tmp_path / "next.yaml", {GPU: "3g.40gb@4 + 2*1g.10gb"})
    live, saved = tmp_path / "live.json", tmp_path / "saved.json"
    _ok("plan", str(cfg), "--host", f"sim:{d}", "-o", str(live))
    # The snapshot needs no host: plan with the host directory moved out of reach.
    hidden = d.rename(tmp_path / "elsewhere")
    res = _ok("plan", str(cfg), "--host", f"snapshot:{snap}", "-o", str(saved))
    hidden.rename(d)
    assert saved.read_bytes() == live.read_bytes()
    assert "create" in res.stdout

    res = _ok("apply", str(saved), "--auto-approve")  # on the host the plan names
    assert "Apply complete" in res.stdout
    again = _ok("plan", str(cfg), "--host", f"sim:{d}", "--detailed-exitcode")
    assert "No changes" in again.stdout or "no changes" in again.stdout


def _planned_on_a_snapshot(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    """A simulated host, its snapshot, a config and the plan made against the snapshot."""
    d = _host(tmp_path)
    snap = tmp_path / "snap.json"
    _ok("probe", "--host", f"sim:{d}", "-o", str(snap))
    cfg = write_config(tmp_path / "a.yaml", {GPU: "3g.40gb@4"})
    plan = tmp_path / "plan.json"
    _ok("plan", str(cfg), "--host", f"snapshot:{snap}", "-o", str(plan))
    return d, snap, cfg, plan


def test_a_snapshot_plan_is_refused_as_stale_once_the_host_changed(tmp_path: Path) -> None:
    d, snap, cfg, plan = _planned_on_a_snapshot(tmp_path)

    _smi(d, "mig", "-i", "0", "-cgi", "19", "-C")  # someone takes a slice meanwhile
    before = _tree_digest(d / "libvirt") if (d / "libvirt").exists() else ""
    probe_before = _ok("probe", "--host", f"sim:{d}", "--format", "json").stdout
    res = aihow("apply", str(plan), "--auto-approve")
    assert res.returncode == 1
    assert "the plan is stale" in res.stderr and "Traceback" not in res.stderr
    assert _ok("probe", "--host", f"sim:{d}", "--format", "json").stdout == probe_before
    assert (_tree_digest(d / "libvirt") if (d / "libvirt").exists() else "") == before


def test_commands_that_change_a_host_refuse_a_snapshot_in_one_line(tmp_path: Path) -> None:
    d, snap, cfg, plan = _planned_on_a_snapshot(tmp_path)
    saved, host_before = snap.read_bytes(), _tree_digest(d)
    for args in (
        ("apply", str(cfg), "--auto-approve"),
        ("apply", str(plan), "--auto-approve"),
        ("rollback", "--to", "1", "--auto-approve"),
        ("recover",),
        ("generations",),
    ):
        res = aihow(*args, "--host", f"snapshot:{snap}")
        assert res.returncode == 1, (args, res.stdout, res.stderr)
        assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr, res.stderr
        assert res.stderr.startswith(f"error: snapshot:{snap}: a saved probe is a read-only "
                                     "host and cannot keep a state directory"), res.stderr
    assert snap.read_bytes() == saved and _tree_digest(d) == host_before
