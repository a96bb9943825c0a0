"""Issue 10's acceptance suite: every day-2 edit plans, applies and converges, and each VM
ends on exactly the slice its config names; a fault at any step of each plan rolls back
to where the plan started. See ``harness.py`` for what each scenario checks."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from planner.cli.host_opts import open_environment
from planner.host import libvirt_domains as ld
from tests.scenarios.harness import (
    KINDS,
    SECOND,
    Config,
    Ctx,
    Node,
    Scenario,
    backing_problems,
    build,
    check_golden,
    cli,
    fault_campaign,
    mig,
    normalised,
)


def _with(cfg: Config, i: int, gpu: str) -> Config:
    hpc = list(cfg.hpc)
    hpc[i] = replace(hpc[i], gpu=gpu)
    return replace(cfg, hpc=hpc)


def grow(cfg: Config, ctx: Ctx) -> Config:
    return _with(cfg, 0, mig(ctx.kind.medium))


def shrink(cfg: Config, ctx: Ctx) -> Config:
    # the base's 2-slice node (made by `before`) goes back to one slice
    return _with(cfg, 2, mig(ctx.kind.small))


def media(cfg: Config, ctx: Ctx) -> Config:
    return _with(cfg, 0, mig(ctx.kind.small_me))


def free_start(ctx: Ctx, avoid: int | None = None) -> int:
    """A start a 1-slice instance could take now: one no instance covers."""
    probe = ctx.probe()
    gpu = next(g for g in probe["gpus"] if g["pci"] == ctx.kind.pci)
    used = {s for gi in gpu["gpu_instances"]
            for s in range(gi["placement_start"], gi["placement_start"] + gi["placement_size"])}
    return min(s for s in range(7) if s not in used and s != avoid)


def pin_placement(cfg: Config, ctx: Ctx) -> Config:
    ctx.facts["start"] = str(free_start(ctx))
    return _with(cfg, 0, mig(ctx.kind.small, placement=ctx.facts["start"]))


def move_pin(cfg: Config, ctx: Ctx) -> Config:
    start = int(ctx.facts["start"])
    return _with(cfg, 0, mig(ctx.kind.small, placement=free_start(ctx, avoid=start)))


def pin_first(ctx: Ctx) -> None:
    """Pin node 1 to a free start first (applied), so the scenario moves the pin."""
    start = free_start(ctx)
    ctx.facts["start"] = str(start)
    cfg = ctx.tmp / "pinned.yaml"
    from tests.scenarios.harness import base

    cfg.write_text(_with(base(ctx.kind), 0, mig(ctx.kind.small, placement=start)).text())
    done = cli("apply", str(cfg), "--host", ctx.host.uri, "--auto-approve")
    assert done.returncode == 0, done.stdout + done.stderr


def by_hand(ctx: Ctx) -> None:
    """An operator's own instance, made with nvidia-smi as the MIG guide shows."""
    ctx.smi("mig", "-i", "0", "-cgi", ctx.kind.small, "-C")


def adopt(cfg: Config, ctx: Ctx) -> Config:
    return replace(cfg, hpc=[*cfg.hpc, Node("192.168.100.14", mig(ctx.kind.small))])


def pin_uuid(cfg: Config, ctx: Ctx) -> Config:
    import re

    probe = ctx.probe()
    held = {ci["mig_uuid"] for gis in _backing(probe).values() for gi in gis
            for ci in gi["compute_instances"]}
    free = [u for u in re.findall(r"MIG-[0-9a-f-]{36}", ctx.smi("-L")) if u not in held]
    node = Node("192.168.100.14", f"{{mode: mig, mig_uuid: {free[0]}}}")
    return replace(cfg, hpc=[*cfg.hpc, node])


def _backing(probe: dict) -> dict:  # type: ignore[type-arg]
    from tests.scenarios.harness import backing_of

    return backing_of(probe)


def add_vm(cfg: Config, ctx: Ctx) -> Config:
    return replace(cfg, hpc=[*cfg.hpc, Node("192.168.100.14", mig(ctx.kind.small))])


def remove_middle(cfg: Config, ctx: Ctx) -> Config:
    return replace(cfg, hpc=[cfg.hpc[0], cfg.hpc[2]])


def remove_cluster(cfg: Config, ctx: Ctx) -> Config:
    return replace(cfg, cloud=None)


def second_gpu(cfg: Config, ctx: Ctx) -> Config:
    node = Node("192.168.100.14", mig(ctx.kind.small, gpu=f'"{SECOND}"'))
    return replace(cfg, gpus={**cfg.gpus, SECOND: None}, hpc=[*cfg.hpc, node])


def reboot(ctx: Ctx) -> None:
    out = cli("sim", "reboot", str(ctx.host.dir))
    assert out.returncode == 0, out.stderr


def unchanged(cfg: Config, ctx: Ctx) -> Config:
    return cfg


def start_node_1(ctx: Ctx) -> None:
    session = open_environment(ctx.host.uri).libvirt()
    try:
        ld.start(session.conn, "hpc-compute-01")
        session.commit()
    finally:
        session.close()


def make_medium(ctx: Ctx) -> None:
    """The shrink scenario starts with node 3 on a 2-slice instance."""
    from tests.scenarios.harness import base

    cfg = ctx.tmp / "medium.yaml"
    cfg.write_text(_with(base(ctx.kind), 2, mig(ctx.kind.medium)).text())
    done = cli("apply", str(cfg), "--host", ctx.host.uri, "--auto-approve")
    assert done.returncode == 0, done.stdout + done.stderr


SCENARIOS = [
    Scenario("a100-grow", "a100", grow),
    Scenario("a100-shrink", "a100", shrink, before=make_medium),
    Scenario("a100-media-engines", "a100", media),
    Scenario("a100-pin-placement", "a100", pin_placement),
    Scenario("a100-move-pin", "a100", move_pin, before=pin_first),
    Scenario("a100-pin-mig-uuid", "a100", pin_uuid, before=by_hand),
    Scenario("a100-adopt-by-hand", "a100", adopt, before=by_hand),
    Scenario("a100-add-vm", "a100", add_vm),
    Scenario("a100-remove-middle", "a100", remove_middle),
    # the cluster's control plane runs (ai-how always starts one): it is shut down first
    Scenario("a100-remove-cluster", "a100", remove_cluster,
             apply_args=("--auto-approve", "--restart-running-vms")),
    Scenario("a100-second-gpu", "a100", second_gpu, second_gpu=True),
    Scenario("a100-reboot-reapply", "a100", unchanged, before=reboot),
    Scenario("a100-running-vm", "a100", media, before=start_node_1,
             apply_args=("--auto-approve", "--restart-running-vms")),
    Scenario("h100-grow", "h100", grow),
    Scenario("h100-media-engines", "h100", media),
    Scenario("h100-add-vm", "h100", add_vm),
    Scenario("h100-remove-middle", "h100", remove_middle),
    Scenario("h100-reboot-reapply", "h100", unchanged, before=reboot),
]


@pytest.mark.parametrize("sc", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_scenario(tmp_path: Path, sc: Scenario) -> None:
    kind = KINDS[sc.kind]
    ctx, base_cfg = build(tmp_path, kind, sc.second_gpu)
    from tests.scenarios.harness import base

    if sc.before is not None:
        sc.before(ctx)
    cfg = tmp_path / "day2.yaml"
    cfg.write_text(sc.change(base(kind), ctx).text())
    plan = tmp_path / "day2.json"
    made = cli("plan", str(cfg), "--host", ctx.host.uri, "-o", str(plan))
    assert made.returncode == 0, made.stdout + made.stderr
    shown = cli("show", str(plan))
    assert shown.returncode == 0, shown.stderr
    check_golden(sc.name, normalised(shown.stdout, tmp_path))
    summary = json.loads(plan.read_text())["summary"]
    assert sum(summary[k] for k in ("create", "update", "replace", "delete")) > 0

    restart = "--restart-running-vms" in sc.apply_args
    if restart:  # without the flag the change is refused and nothing moves
        start = ctx.host.fingerprint(cfg)
        refused = cli("apply", str(plan), "--auto-approve")
        assert refused.returncode == 1 and "--restart-running-vms" in refused.stderr
        assert ctx.host.fingerprint(cfg) == start
    cases = fault_campaign(ctx, plan, cfg, restart_running_vms=restart)
    assert cases >= 1

    done = cli("apply", str(plan), *sc.apply_args)
    assert done.returncode == 0, done.stdout + done.stderr
    again = cli("plan", str(cfg), "--host", ctx.host.uri, "--detailed-exitcode")
    assert again.returncode == 0, again.stdout + again.stderr
    assert backing_problems(ctx.probe(), cfg) == []
    if restart and sc.name != "a100-remove-cluster":
        assert {d["name"]: d["state"] for d in ctx.probe()["domains"]}["hpc-compute-01"] \
            == "running"


def test_off_a_terminal_apply_without_approval_changes_nothing(tmp_path: Path) -> None:
    ctx, _ = build(tmp_path, KINDS["a100"], False)
    from tests.scenarios.harness import base

    cfg = tmp_path / "day2.yaml"
    cfg.write_text(grow(base(ctx.kind), ctx).text())
    start = ctx.host.fingerprint(cfg)
    refused = cli("apply", str(cfg), "--host", ctx.host.uri)
    assert refused.returncode == 1 and "--auto-approve" in refused.stderr
    assert ctx.host.fingerprint(cfg) == start
