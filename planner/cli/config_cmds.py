"""CLI commands on config files: ``aihow validate`` and ``aihow schema``."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from planner.errors import AihowError, ConfigError

if TYPE_CHECKING:
    from planner.config.models import ClusterConfig
    from planner.host.environment import Environment


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.command("validate")(validate)
    app.command("schema")(schema)


def validate(
    config: Annotated[
        Path, typer.Argument(help="Cluster config YAML (ai-how 1.0 + MIG settings).")
    ],
    host: Annotated[
        str | None,
        typer.Option("--host", help="Also check this host read-only: local or sim:DIR."),
    ] = None,
) -> None:
    """Check a cluster config; print a short summary, or every problem found (exit 1).
    With --host, also check the host read-only (one table; exit 1 when a check fails)."""
    from planner.config import expand_vms, load_config

    env = None
    try:
        if host is not None:  # a bad URI is refused before anything is read
            from planner.cli.host_opts import open_environment

            env = open_environment(host)
        cfg = load_config(config)
    except ConfigError as exc:
        for diagnostic in exc.diagnostics:
            typer.echo(str(diagnostic), err=True)
        raise typer.Exit(1) from None
    except AihowError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    vms = expand_vms(cfg)
    clusters = [
        f"{kind} '{c.name}' ({sum(1 for v in vms if v.cluster_type == kind)} VMs)"
        for kind, c in (("hpc", cfg.clusters.hpc), ("cloud", cfg.clusters.cloud))
        if c is not None
    ]
    slices = Counter(
        str(v.gpu_config.mig_profile) if v.gpu_config.mig_profile else "by mig_uuid"
        for v in vms
        if v.gpu_config is not None and v.gpu_config.mode == "mig"
    )
    total = sum(slices.values())
    detail = ", ".join(f"{n} x {p}" for p, n in sorted(slices.items()))
    typer.echo(f"OK {config}")
    typer.echo(f"  clusters: {', '.join(clusters)}")
    typer.echo(f"  VMs: {len(vms)}")
    typer.echo(f"  MIG slices requested: {total}" + (f" ({detail})" if detail else ""))
    typer.echo(f"  managed GPUs: {len(cfg.global_.managed_gpus)}"
               f" (vgpu_backend {cfg.global_.host.vgpu_backend})")
    if env is not None:
        _validate_host(cfg, env)


def _validate_host(cfg: ClusterConfig, env: Environment) -> None:
    # Imported here: validate without --host must not load NVML, libvirt or networkx.
    from planner.host.validation import render_table, validate_host

    try:
        rows = validate_host(cfg, env)
    except AihowError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"Host {env.host_uri}:")
    typer.echo(render_table(rows))
    if any(r.status == "fail" for r in rows):
        raise typer.Exit(1)


def schema() -> None:
    """Print the JSON Schema of the config format (for yaml-language-server and editors)."""
    from planner.config.schema import config_json_schema

    typer.echo(json.dumps(config_json_schema(), indent=2))
