"""``aihow probe``: print what a host has (GPUs, MIG instances, vGPUs, domains), save it
as a snapshot (``-o FILE``, a read-only host for ``--host snapshot:FILE``), or with
``--check-catalog`` compare the GPUs' MIG profiles with the catalog. All only read."""

from __future__ import annotations

from dataclasses import replace
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from planner.cli import output
from planner.cli.host_opts import open_environment

if TYPE_CHECKING:
    from planner.host.environment import Environment
    from planner.host.metrics import StateFacts
    from planner.host.state import HostState


class OutputFormat(StrEnum):
    text = "text"
    json = "json"
    prometheus = "prometheus"


def probe_command(
    host: Annotated[str, typer.Option(
        "--host", help="Host URI: local, sim:DIR or snapshot:FILE.")] = "local",
    fmt: Annotated[
        OutputFormat,
        typer.Option("--format", help="text for people, json (canonical) for tools, "
                     "prometheus for node exporter's textfile collector."),
    ] = OutputFormat.text,
    libvirt_uri: Annotated[
        str | None,
        typer.Option("--libvirt-uri", help="libvirt URI for domains (default: the host's)."),
    ] = None,
    check_catalog: Annotated[
        bool,
        typer.Option(
            "--check-catalog",
            help="Compare each GPU's MIG profiles and placements, read through NVML, with "
            "the catalog and print every difference; exit status 2 when any differ. "
            "Never changes the GPU.",
        ),
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option("-o", "--out",
                     help="Also save the host as a snapshot FILE: plan against it later "
                     "with --host snapshot:FILE, without access to the host."),
    ] = None,
    state_dir: Annotated[Path | None, typer.Option(
        "--state-dir", help="Generations and the last apply, for --format prometheus "
        "(default: the host's).")] = None,
    verbose: Annotated[bool, typer.Option(
        "-v", "--verbose", help="The full listing (every GPU instance, vGPU parent and "
        "type, mdev, domain) instead of the one table.")] = False,
) -> None:
    """Read the host (read-only) and print it: one table VM, cluster, GPU, profile,
    placement, MIG UUID, vGPU/VF, domain state, with each GPU's free slices."""
    env = open_environment(host, libvirt_uri)
    if check_catalog:
        # here, not at the top: --help loads every command module (start-up time)
        from planner.host.catalog_check import check_catalog as run_check

        report, differences = run_check(env)
        typer.echo(report, nl=False)
        if differences:
            raise typer.Exit(2)
        return

    # here, not at the top: --help loads every command module (start-up time)
    from planner.host.render import host_state_json, render_host_state

    state = env.probe()
    if out is not None:
        # here, not at the top: --help loads every command module (start-up time)
        from planner.host.snapshot import snapshot_json

        out.write_text(snapshot_json(state, env.records()))
    if fmt is OutputFormat.json:
        output.say(host_state_json(state), nl=False)
    elif fmt is OutputFormat.prometheus:
        from planner.host.metrics import render_metrics

        output.say(render_metrics(state, _state_facts(env, state, state_dir)), nl=False)
    elif verbose or output.verbose():
        output.say(render_host_state(state), nl=False)
    else:
        from planner.host.overview import render_overview

        output.say(render_overview(state, env.records()), nl=False)


def _state_facts(env: Environment, state: HostState, override: Path | None) -> StateFacts:
    """What the state directory says about the latest generation and apply; drift is a
    plan of the latest generation's config against ``state``. A host without a state
    directory (a snapshot) gives no facts."""
    import hashlib

    from planner.apply.generations import list_generations
    from planner.apply.last_apply import read_last_apply
    from planner.config import load_config
    from planner.errors import AihowError
    from planner.host.metrics import StateFacts
    from planner.plan.make import make_plan

    try:
        sdir = override or env.state_dir()
    except AihowError:
        return StateFacts()
    gens = list_generations(sdir) if sdir.is_dir() else []
    last = read_last_apply(sdir)
    facts = StateFacts(generation=gens[-1].number if gens else 0,
                       generation_time=gens[-1].created if gens else None,
                       last_apply_time=last.finished if last else None,
                       last_apply_ok=last.ok if last else None)
    if not gens:
        return facts
    gen = gens[-1]
    cfg = load_config(gen.config_file)
    plan = make_plan(cfg, state, config_path=str(gen.config_file),
                     config_sha256=hashlib.sha256(gen.config_file.read_bytes()).hexdigest(),
                     host_uri=env.host_uri, records=env.records(sdir))
    changes = sum(plan.summary.get(k, 0) for k in ("create", "update", "replace", "delete"))
    return replace(facts, drift_changes=changes)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.command("probe")(probe_command)
