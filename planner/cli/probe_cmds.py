"""``aihow probe``: print what a host has (GPUs, MIG instances, vGPUs, domains), save it
as a snapshot (``-o FILE``, a read-only host for ``--host snapshot:FILE``), or with
``--check-catalog`` compare the GPUs' MIG profiles with the catalog. All only read."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from planner.cli import output
from planner.cli.host_opts import open_environment


class OutputFormat(StrEnum):
    text = "text"
    json = "json"


def probe_command(
    host: Annotated[str, typer.Option(
        "--host", help="Host URI: local, sim:DIR or snapshot:FILE.")] = "local",
    fmt: Annotated[
        OutputFormat,
        typer.Option("--format", help="text for people, json (canonical) for tools."),
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
    verbose: Annotated[bool, typer.Option(
        "-v", "--verbose", help="The full listing (every GPU instance, vGPU parent and "
        "type, mdev, domain) instead of the one table.")] = False,
) -> None:
    """Read the host (read-only) and print it: one table VM, cluster, GPU, profile,
    placement, MIG UUID, vGPU/VF, domain state, with each GPU's free slices."""
    env = open_environment(host, libvirt_uri)
    if check_catalog:
        from planner.host.catalog_check import check_catalog as run_check

        report, differences = run_check(env)
        typer.echo(report, nl=False)
        if differences:
            raise typer.Exit(2)
        return

    from planner.host.render import host_state_json, render_host_state

    state = env.probe()
    if out is not None:
        from planner.host.snapshot import snapshot_json

        out.write_text(snapshot_json(state, env.records()))
    if fmt is OutputFormat.json:
        output.say(host_state_json(state), nl=False)
    elif verbose or output.verbose():
        output.say(render_host_state(state), nl=False)
    else:
        from planner.host.overview import render_overview

        output.say(render_overview(state, env.records()), nl=False)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.command("probe")(probe_command)
