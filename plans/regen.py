"""Regenerate the example plans in plans/ from the example configs on simulated hosts.

    .venv/bin/python plans/regen.py          # rewrite plans/*.json and plans/*.md
    .venv/bin/python plans/regen.py --check  # exit 1 (naming them) if any is out of date

Each scenario builds a fresh simulated host from a ``config/sim-*.toml`` spec in a
temporary directory (bare: aihow defines the VMs, as in ``make demo``; or with the
cluster's domains defined as ai-how leaves them, shut off and without a GPU), optionally
applies a first plan, probes the host and writes the plan as JSON (the plan file) and as
Markdown (what a pull request comment shows). The plan records the
host URI of the spec's documented location (``sim:/tmp/aihow-...``), not the temporary
one, so the files are the same bytes on every machine: a change to the planner shows up
in a pull request as a diff of plans/.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLANS = ROOT / "plans"
# ${TOT} in the example configs names the repository; pin it so the committed plans are
# the same bytes wherever the repository is checked out.
PINNED_TOT = Path("/srv/ai-how")


@dataclass(frozen=True)
class Scenario:
    name: str
    config: str  # relative to the repository root
    spec: str
    uri: str  # recorded in the plan: where the spec's comment puts the simulated host
    applied_first: bool = False  # apply the first plan, then plan again (shows convergence)
    ai_how_domains: bool = False  # the VMs exist already, defined by ai-how (not by aihow)


SCENARIOS = (
    Scenario("example-mig-cluster.a100-fresh", "config/example-mig-cluster.yaml",
             "config/sim-a100.toml", "sim:/tmp/aihow-a100"),
    Scenario("example-mig-cluster.a100-converged", "config/example-mig-cluster.yaml",
             "config/sim-a100.toml", "sim:/tmp/aihow-a100", applied_first=True),
    Scenario("example-mig-cluster.a100-ai-how-domains", "config/example-mig-cluster.yaml",
             "config/sim-a100.toml", "sim:/tmp/aihow-a100", ai_how_domains=True),
    Scenario("example-h100-vfio.h100-fresh", "config/example-h100-vfio.yaml",
             "config/sim-h100.toml", "sim:/tmp/aihow-h100"),
)


def _prepare(s: Scenario, where: Path) -> str:
    """A simulated host (with the cluster's domains if the scenario says); returns its URI."""
    from planner.cli.host_opts import open_environment
    from planner.config import expand_vms, load_config
    from planner.host import libvirt_domains as ld
    from planner.sim.host import init_host, load_spec
    from planner.vm.vm_factory import VMSpec, render_domain_xml

    init_host(where, load_spec(ROOT / s.spec))
    uri = f"sim:{where}"
    cfg = load_config(ROOT / s.config, root=PINNED_TOT)
    env = open_environment(uri)
    for decl in expand_vms(cfg):  # the base images the VMs' disks are overlays of
        if decl.base_image_path:
            image = env.host_path(decl.base_image_path)
            image.parent.mkdir(parents=True, exist_ok=True)
            image.touch()
    if not s.ai_how_domains:
        return uri
    from planner.host import libvirt_objects as lo

    with env.libvirt() as session:
        # As ai-how leaves a host: each cluster's network (without aihow's leases) and
        # pool, each VM's volume, and the domains, shut off.
        for decl in expand_vms(cfg):
            net, pool = f"{decl.cluster_name}-network", f"{decl.cluster_name}-pool"
            if lo.find_network(session.conn, net) is None:
                lo.define_network(session.conn,
                                  lo.network_xml(net, decl.bridge, decl.subnet, ()), net)
            if lo.find_pool(session.conn, pool) is None:
                lo.define_pool(session.conn, lo.pool_xml(pool, f"/var/lib/libvirt/images/{pool}"),
                               pool)
            lo.create_volume(session.conn, pool,
                             lo.volume_xml(f"{decl.name}.qcow2", decl.disk_gb,
                                           f"/var/lib/libvirt/images/{pool}/"
                                           f"{decl.cluster_name}-base.qcow2"),
                             f"{decl.name}.qcow2")
            ld.define(session.conn, render_domain_xml(VMSpec.from_decl(decl)))
        session.commit()
    return uri


def _plan(s: Scenario, uri: str):  # type: ignore[no-untyped-def]
    from planner.cli.host_opts import base_images, open_environment
    from planner.config import load_config
    from planner.plan import make_plan

    cfg_path = ROOT / s.config
    env = open_environment(uri)
    cfg = load_config(cfg_path, root=PINNED_TOT)
    return make_plan(cfg, env.probe(), config_path=s.config,
                     config_sha256=hashlib.sha256(cfg_path.read_bytes()).hexdigest(),
                     host_uri=s.uri, records=env.records(), images=base_images(env, cfg))


def _apply(s: Scenario, uri: str, plan) -> None:  # type: ignore[no-untyped-def]
    from planner.apply.executor import ApplyInput, apply_plan
    from planner.apply.state_dir import resolve_state_dir
    from planner.cli.host_opts import open_environment
    from planner.config import load_config

    cfg_path = ROOT / s.config
    env = open_environment(uri)
    result = apply_plan(
        ApplyInput(plan, plan.to_json(), load_config(cfg_path, root=PINNED_TOT),
                   cfg_path.read_text(), s.config,
                   allow_reset=True),
        env, resolve_state_dir(env.state_dir()))
    if result.outcome != "applied":
        raise SystemExit(f"{s.name}: applying the first plan failed: {result.failed}")


def render(s: Scenario) -> dict[str, str]:
    """The files of one scenario: name -> text."""
    from planner.plan.render import render_markdown

    with tempfile.TemporaryDirectory(prefix="aihow-plans-") as tmp:
        uri = _prepare(s, Path(tmp) / "host")
        plan = _plan(s, uri)
        if s.applied_first:
            _apply(s, uri, plan.model_copy(update={"host": plan.host.model_copy(
                update={"uri": uri})}).sealed())
            plan = _plan(s, uri)
    return {f"{s.name}.json": plan.to_json(), f"{s.name}.md": render_markdown(plan)}


def main() -> int:
    ap = argparse.ArgumentParser(description="Regenerate (or --check) the plans in plans/.")
    ap.add_argument("--check", action="store_true", help="compare only; exit 1 when stale")
    args = ap.parse_args()
    stale: list[str] = []
    for s in SCENARIOS:
        for name, text in render(s).items():
            path = PLANS / name
            current = path.read_text() if path.exists() else None
            if current == text:
                continue
            stale.append(name)
            if not args.check:
                path.write_text(text)
    if args.check and stale:
        print("out of date (run: .venv/bin/python plans/regen.py): " + ", ".join(stale),
              file=sys.stderr)
        return 1
    print(("rewrote " + ", ".join(stale)) if stale else "plans/ is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
