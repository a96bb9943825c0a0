"""Issue 10 defect 6, as a day-2 life cycle: a grown slice that finds no free placement
is refused with what blocks each legal start; with ``repack: shut-off`` the plan moves the
fewest shut-off VMs' slices (shown as such), apply carries it out (a fault at any step
rolls back), every VM ends on the instance the plan names and re-planning is empty; a
running VM's slice is never moved, and a plan whose VM has started since is refused."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from planner.apply.vet import PlanNotJustified, vet_plan
from planner.cli.host_opts import open_environment
from planner.config import load_config
from planner.host import libvirt_domains as ld
from planner.plan.model import load_plan
from tests.scenarios.harness import (
    KINDS,
    Config,
    Ctx,
    Node,
    backing_problems,
    base,
    build,
    check_golden,
    cli,
    fault_campaign,
    mig,
    normalised,
)

OTHERS = ("hpc-compute-03", "hpc-compute-04", "hpc-compute-05", "k8s-cpu-worker-01")


def _six(ctx: Ctx) -> Config:
    """Five compute nodes and a worker, one small slice each (starts 0..5 in that order of
    placement: 01, 02, 03, the worker, 04, 05)."""
    return replace(base(ctx.kind),
                   hpc=[Node(f"192.168.100.{11 + i}", mig(ctx.kind.small)) for i in range(5)])


def _grown(ctx: Ctx, repack: bool) -> Config:
    cfg = _six(ctx)
    hpc = list(cfg.hpc)
    hpc[0] = replace(hpc[0], gpu=mig(ctx.kind.medium))
    return replace(cfg, hpc=hpc, repack=repack)


def _power(ctx: Ctx, on: tuple[str, ...] = (), off: tuple[str, ...] = ()) -> None:
    session = open_environment(ctx.host.uri).libvirt()
    try:
        for name in on:
            ld.start(session.conn, name)
        for name in off:
            ld.stop(session.conn, name, allow_stop=True)
        session.commit()
    finally:
        session.close()


def _write(ctx: Ctx, name: str, cfg: Config) -> Path:
    path = ctx.tmp / name
    path.write_text(cfg.text())
    return path


def _starts(ctx: Ctx) -> dict[str, tuple[str, int]]:
    from tests.scenarios.harness import backing_of

    return {vm: (gi["profile_name"], gi["placement_start"])
            for vm, gis in backing_of(ctx.probe()).items() for gi in gis}


@pytest.mark.parametrize("kind", ["a100", "h100"])
def test_repack_life_cycle(tmp_path: Path, kind: str) -> None:
    ctx, _ = build(tmp_path, KINDS[kind], False)
    k = ctx.kind
    six = _write(ctx, "six.yaml", _six(ctx))
    done = cli("apply", str(six), "--host", ctx.host.uri, "--auto-approve")
    assert done.returncode == 0, done.stdout + done.stderr
    # every VM runs, then the operator stops the one to grow and its neighbour at @1
    _power(ctx, on=("hpc-compute-01", "hpc-compute-02", *OTHERS))
    _power(ctx, off=("hpc-compute-01", "hpc-compute-02"))
    before = _starts(ctx)
    assert before["hpc-compute-02"] == (k.small, 1)

    # 1. grow without the opt-in: refused, naming what blocks each start and what to do
    grown = _write(ctx, "grown.yaml", _grown(ctx, repack=False))
    start = ctx.host.fingerprint(grown)
    refused = cli("plan", str(grown), "--host", ctx.host.uri)
    assert refused.returncode == 1
    (line,) = [x for x in refused.stderr.splitlines() if x.strip()]
    assert f"cannot place {k.medium}" in line
    assert f"@0 by hpc-compute-02 ({k.small}@1, shut off)" in line
    assert f"@2 by hpc-compute-03 ({k.small}@2, running)" in line
    assert ("set repack: shut-off on global.gpus[0] so that the plan moves the slice of "
            "hpc-compute-02") in line
    assert ctx.host.fingerprint(grown) == start

    # 2. opted in, but hpc-compute-02 runs: never moved, refused and named
    opted = _write(ctx, "opted.yaml", _grown(ctx, repack=True))
    _power(ctx, on=("hpc-compute-02",))
    running = cli("plan", str(opted), "--host", ctx.host.uri)
    assert running.returncode == 1
    assert ("shut off hpc-compute-02 (a repack never moves a VM that is not shut off)"
            in running.stderr)
    _power(ctx, off=("hpc-compute-02",))

    # 3. opted in, shut off: the plan moves hpc-compute-02's slice, and says so
    plan = tmp_path / "repack.json"
    made = cli("plan", str(opted), "--host", ctx.host.uri, "-o", str(plan))
    assert made.returncode == 0, made.stdout + made.stderr
    shown = cli("show", str(plan))
    assert shown.returncode == 0, shown.stderr
    check_golden(f"{kind}-repack", normalised(shown.stdout, tmp_path))
    assert "Repack: hpc-compute-02's slice moves" in shown.stdout
    md = cli("show", str(plan), "--format", "markdown")
    assert "repack move(s)" in md.stdout and "repack for hpc-compute-01" in md.stdout
    codes = {c["address"]: c["reason_code"] for c in json.loads(plan.read_text())["actions"]}
    assert "repack" in codes.values()

    # 4. vetting: the plan is justified only while the VM is shut off and the config opts in
    loaded = load_plan(plan)
    records = open_environment(ctx.host.uri).records()
    vet_plan(loaded, ctx.host.probe(), load_config(opted), records)
    with pytest.raises(PlanNotJustified) as err:
        vet_plan(loaded, ctx.host.probe(), load_config(grown), records)
    assert "no longer plans on this host" in str(err.value)  # the refusal, as in plan
    _power(ctx, on=("hpc-compute-02",))
    with pytest.raises(PlanNotJustified) as err:
        vet_plan(loaded, ctx.host.probe(), load_config(opted), records)
    assert "shut off hpc-compute-02" in str(err.value)
    # hpc-compute-02 runs but two others are shut off: the config now plans other moves
    _power(ctx, off=("hpc-compute-03", "k8s-cpu-worker-01"))
    with pytest.raises(PlanNotJustified) as err:
        vet_plan(loaded, ctx.host.probe(), load_config(opted), records)
    assert "is a repack move" in str(err.value)
    _power(ctx, on=("hpc-compute-03", "k8s-cpu-worker-01"))
    stale = cli("apply", str(plan), "--auto-approve")
    assert stale.returncode == 1, stale.stdout
    _power(ctx, off=("hpc-compute-02",))

    # 5. a fault at each step rolls back; then apply, and every VM sits where the plan says
    assert fault_campaign(ctx, plan, opted) >= 1
    done = cli("apply", str(plan), "--auto-approve")
    assert done.returncode == 0, done.stdout + done.stderr
    again = cli("plan", str(opted), "--host", ctx.host.uri, "--detailed-exitcode")
    assert again.returncode == 0, again.stdout + again.stderr
    assert backing_problems(ctx.probe(), opted) == []
    after = _starts(ctx)
    assert after["hpc-compute-01"] == (k.medium, 0)
    assert after["hpc-compute-02"] == (k.small, 6)
    assert {vm: after[vm] for vm in OTHERS} == {vm: before[vm] for vm in OTHERS}
    states = {d["name"]: d["state"] for d in ctx.probe()["domains"]}
    assert all(states[vm] == "running" for vm in OTHERS)
