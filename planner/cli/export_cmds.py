"""``aihow export``: write a config for what a host has (``planner.host.export``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from planner.cli import output
from planner.cli.host_opts import LibvirtOpt, open_environment


def export_command(
    host: Annotated[str, typer.Option(
        "--host", help="Host URI: local, sim:DIR or snapshot:FILE.")] = "local",
    out: Annotated[Path | None, typer.Option(
        "-o", "--out", help="Write the config here (default: stdout).")] = None,
    libvirt_uri: LibvirtOpt = None,
) -> None:
    """Write a config for what the host has (GPUs with their MIG mode and instances as
    pins, the domains aihow defined) that plans to no changes on that host. Read-only."""
    from planner import __version__
    from planner.host.export import export_config, has_clusters

    env = open_environment(host, libvirt_uri)
    text = export_config(env.probe(), env.records(), version=__version__,
                         config_path=env.config_path)
    if not has_clusters(text):
        output.error("warning: no domain aihow defined is on the host; add a cluster to "
                     "the config before planning with it")
    if out is None:
        output.say(text, nl=False)
        return
    out.write_text(text)
    output.note(f"wrote {out}", err=True)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.command("export")(export_command)
