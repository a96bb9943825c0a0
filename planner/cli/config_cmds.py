"""CLI commands on config files: ``aihow validate`` and ``aihow schema``."""

from __future__ import annotations

import json
from collections import Counter
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from planner.cli import output
from planner.cli.errors import fail
from planner.cli.host_opts import open_environment
from planner.errors import AihowError, ConfigError

if TYPE_CHECKING:
    from planner.config.models import ClusterConfig
    from planner.host.environment import Environment


class OutputFormat(StrEnum):
    text = "text"
    json = "json"


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
        typer.Option("--host", help="Also check this host read-only: local, sim:DIR or "
                     "snapshot:FILE."),
    ] = None,
    fmt: Annotated[OutputFormat, typer.Option(
        "--format", help="text, or json: one object (docs/reference/json-output.md).")
    ] = OutputFormat.text,
) -> None:
    """Check a cluster config; print a short summary, or every problem found (exit 1).
    With --host, also check the host read-only (one table; exit 1 when a check fails)."""
    # here, not at the top: --help loads every command module (start-up time)
    from planner.config import expand_vms, load_config

    as_json = fmt is OutputFormat.json
    env = None
    try:
        if host is not None:  # a bad URI is refused before anything is read
            env = open_environment(host)
        cfg = load_config(config)
    except AihowError as exc:
        if as_json:
            diagnostics = exc.diagnostics if isinstance(exc, ConfigError) else []
            _emit({"config": str(config), "valid": False, "host": None,
                   "errors": [{"file": d.file, "line": d.line, "column": d.column,
                               "path": d.path, "message": d.message}
                              for d in diagnostics]
                   or [{"file": None, "line": None, "column": None, "path": "",
                        "message": str(exc)}]})
        fail(exc)
    vms = expand_vms(cfg)
    clusters = [(kind, c.name, sum(1 for v in vms if v.cluster_type == kind))
                for kind, c in (("hpc", cfg.clusters.hpc), ("cloud", cfg.clusters.cloud))
                if c is not None]
    slices = Counter(
        str(v.gpu_config.mig_profile) if v.gpu_config.mig_profile else "by mig_uuid"
        for v in vms
        if v.gpu_config is not None and v.gpu_config.mode == "mig"
    )
    total = sum(slices.values())
    if as_json:
        host_part = _validate_host(cfg, env, as_json) if env is not None else None
        _emit({"config": str(config), "valid": True, "errors": [],
               "clusters": [{"type": k, "name": n, "vms": c} for k, n, c in clusters],
               "vms": len(vms),
               "mig_slices": {"total": total, "by_profile": dict(sorted(slices.items()))},
               "managed_gpus": len(cfg.global_.managed_gpus),
               "vgpu_backend": cfg.global_.host.vgpu_backend,
               "host": host_part})
        if host_part is not None and not host_part["ok"]:
            raise typer.Exit(1)
        return
    detail = ", ".join(f"{n} x {p}" for p, n in sorted(slices.items()))
    output.say(f"OK {config}")
    output.say("  clusters: " + ", ".join(f"{k} '{n}' ({c} VMs)" for k, n, c in clusters))
    output.say(f"  VMs: {len(vms)}")
    output.say(f"  MIG slices requested: {total}" + (f" ({detail})" if detail else ""))
    output.say(f"  managed GPUs: {len(cfg.global_.managed_gpus)}"
               f" (vgpu_backend {cfg.global_.host.vgpu_backend})")
    host_part = _validate_host(cfg, env, as_json) if env is not None else None
    if host_part is not None and not host_part["ok"]:
        raise typer.Exit(1)


def _emit(record: dict[str, Any]) -> None:
    output.say(json.dumps({"schema": 1, **record}, indent=2, sort_keys=True))


def _validate_host(cfg: ClusterConfig, env: Environment, as_json: bool) -> dict[str, Any]:
    """Run the read-only host checks; print the table (text) and return the JSON part."""
    # Imported here: validate without --host must not load NVML, libvirt or networkx.
    from planner.cli.host_opts import base_images
    from planner.host.validation import render_table, validate_host
    from planner.plan.fit import fit_rows
    from planner.plan.request import requests_from_config

    requests = requests_from_config(cfg)
    try:
        # Fit and MIG UUID rows come from the planner's own resolve, with the host's
        # records (ledger, domains aihow defined): exactly what `aihow plan` decides.
        records = env.records()
        images = base_images(env, cfg)
        rows = validate_host(cfg, env,
                             fit=lambda host: fit_rows(requests, host, records, images))
    except AihowError as exc:
        fail(exc)
    if not as_json:
        output.say(f"Host {env.host_uri}:")
        output.say(render_table(rows))
    return {"uri": env.host_uri, "ok": not any(r.status == "fail" for r in rows),
            "checks": [{"check": r.check, "subject": r.subject, "status": str(r.status),
                        "hint": r.hint} for r in rows]}


def schema() -> None:
    """Print the JSON Schema of the config format (for yaml-language-server and editors)."""
    # here, not at the top: --help loads every command module (start-up time)
    from planner.config.schema import config_json_schema

    typer.echo(json.dumps(config_json_schema(), indent=2))
