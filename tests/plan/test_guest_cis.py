"""Compute instances inside a vGPU-backed GPU instance belong to the guest (issue 11
item 4; docs/reference/vgpu-on-mig.md section 3): apply, the guest makes its own CIs,
the re-plan is empty, another VM's slice changes, the guest's CIs are untouched."""

from __future__ import annotations

from pathlib import Path

import pytest

from planner.config import load_config
from planner.errors import ConfigError
from planner.vocab import Action, Kind
from tests.scenarios.harness import KINDS, Ctx, build, cli, mig
from tests.scenarios.harness import base as base_config
from tests.scenarios.test_day2 import start_node_1


def _where(ctx: Ctx, domain: str) -> tuple[str, int, int]:
    """(profile, start, GI id) of the GPU instance behind ``domain``'s vGPU."""
    gi = ctx.gi_of(domain)
    return gi["profile_name"], gi["placement_start"], gi["gi_id"]


def _cis(ctx: Ctx, gi_id: int) -> list[tuple[int, int, str]]:
    """(profile id, start, MIG UUID) of the CIs in GI ``gi_id``."""
    (gpu,) = [g for g in ctx.host.probe().gpus if g.pci == ctx.kind.pci]
    (gi,) = [gi for gi in gpu.gpu_instances if gi.gi_id == gi_id]
    return sorted((c.profile_id, c.placement_start, c.mig_uuid or "")
                  for c in gi.compute_instances)


def _guest(ctx: Ctx, domain: str, *args: str) -> str:
    out = cli("sim", "guest-ci", str(ctx.host.dir), domain, *args)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.parametrize("kind", ["a100", "h100"])
def test_guest_cis_are_never_planned(tmp_path: Path, kind: str) -> None:
    k = KINDS[kind]
    ctx, cfg = build(tmp_path, k, second_gpu=False)
    # node 1 on a 2-slice instance: its guest can split it into two 1c CIs
    two = base_config(k)
    two.hpc[0].gpu = mig(k.medium)
    cfg.write_text(two.text())
    assert ctx.host.apply(ctx.host.plan(cfg), cfg).outcome == "applied"
    start_node_1(ctx)
    profile, start, gi_id = where = _where(ctx, "hpc-compute-01")
    addr = f"gi[{profile}@{start}]"
    host_made = _cis(ctx, gi_id)
    assert [c[:2] for c in host_made] == [(1, 0)]  # the GI's default (2-slice) CI

    # the guest replaces the host's CI with two 1-slice ones (it sees its GI as id 0)
    assert "GPU instance ID 0" in _guest(ctx, "hpc-compute-01", "--delete", "0")
    assert "using profile MIG 1c." in _guest(ctx, "hpc-compute-01", "--create", "--profile", "0")
    _guest(ctx, "hpc-compute-01", "--create", "--profile", "0")
    guest_made = _cis(ctx, gi_id)
    assert [c[:2] for c in guest_made] == [(0, 0), (0, 1)]

    # re-plan: nothing to do, and nothing about the guest's CIs but "kept"
    plan = ctx.host.plan(cfg)
    assert [c.address for c in plan.actions if c.action is not Action.NO_OP] == []
    kept = [c for c in plan.actions if c.kind is Kind.COMPUTE_INSTANCE
            and addr in c.address]
    assert len(kept) == 2 and all("the guest's" in c.reason for c in kept)
    assert cli("plan", str(cfg), "--host", ctx.host.uri, "--detailed-exitcode").returncode == 0

    # another VM's slice changes: the plan and the apply leave the guest's CIs alone
    bigger = base_config(k)
    bigger.hpc[0].gpu = mig(k.medium)
    bigger.hpc[1].gpu = mig(k.medium)
    cfg.write_text(bigger.text())
    plan = ctx.host.plan(cfg)
    changed = [c.address for c in plan.actions if c.action is not Action.NO_OP]
    assert changed and not any(addr in a for a in changed)
    assert not any(c.action is not Action.NO_OP and c.kind is Kind.VGPU
                   and c.before is not None and c.before.gi == f"{profile}@{start}"
                   for c in plan.actions)
    assert ctx.host.apply(plan, cfg).outcome == "applied"
    assert _cis(ctx, gi_id) == guest_made
    assert _where(ctx, "hpc-compute-01") == where
    assert cli("plan", str(cfg), "--host", ctx.host.uri, "--detailed-exitcode").returncode == 0


def test_guest_mode_makes_no_host_cis_for_vgpus(tmp_path: Path) -> None:
    k = KINDS["a100"]
    ctx, cfg = build(tmp_path, k, second_gpu=False)
    wider = base_config(k)
    wider.hpc[2].gpu = mig(k.medium)
    cfg.write_text(wider.text().replace("mig: enabled}",
                                        "mig: enabled, vgpu_compute_instances: guest}"))
    plan = ctx.host.plan(cfg)
    made = [c for c in plan.actions if c.action is Action.CREATE]
    assert any(c.kind is Kind.GPU_INSTANCE for c in made)
    assert not any(c.kind is Kind.COMPUTE_INSTANCE for c in made)
    assert ctx.host.apply(plan, cfg).outcome == "applied"
    assert cli("plan", str(cfg), "--host", ctx.host.uri, "--detailed-exitcode").returncode == 0


def test_vgpu_compute_instances_is_checked(tmp_path: Path) -> None:
    k = KINDS["a100"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(base_config(k).text().replace(
        "mig: enabled}", "mig: enabled, vgpu_compute_instances: vm}"))
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    assert "vgpu_compute_instances" in str(err.value) and "bad.yaml:" in str(err.value)
    off = tmp_path / "off.yaml"
    off.write_text(base_config(k).text().replace(
        "mig: enabled}", "mig: disabled, vgpu_compute_instances: guest}"))
    with pytest.raises(ConfigError) as err:
        load_config(off)
    assert "needs mig: enabled" in str(err.value)


def test_guest_ci_needs_a_running_guest(tmp_path: Path) -> None:
    ctx, _ = build(tmp_path, KINDS["a100"], second_gpu=False)
    out = cli("sim", "guest-ci", str(ctx.host.dir), "hpc-compute-01", "--create")
    assert out.returncode == 1 and "is not running" in out.stderr
    start_node_1(ctx)
    out = cli("sim", "guest-ci", str(ctx.host.dir), "hpc-compute-01", "--create")
    assert out.returncode == 1 and "Insufficient Resources" in out.stderr  # 1g: one CI only
