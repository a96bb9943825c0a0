"""``aihow plan``, ``aihow show`` and ``aihow graph``.

``plan`` probes the host (read-only), writes the plan file with ``-o`` and prints it;
with ``--detailed-exitcode`` it exits 0 when nothing changes and 2 when something does
(1 is an error), as ``terraform plan -detailed-exitcode`` does.
"""

from __future__ import annotations

import contextlib
import os
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from planner.cli import output
from planner.cli.host_opts import LibvirtOpt, libvirt_uri_for, open_environment

if TYPE_CHECKING:
    from planner.host.environment import Environment


class PlanFormat(StrEnum):
    text = "text"
    markdown = "markdown"
    json = "json"


class GraphFormat(StrEnum):
    dot = "dot"
    json = "json"


HostOpt = Annotated[
    str | None,
    typer.Option("--host", help="Host URI: local, sim:DIR or snapshot:FILE (default: "
                 "local)."),
]


def _load(config: Path) -> tuple[Any, str]:
    # here, not at the top: --help loads every command module (start-up time)
    from planner.config import load_config
    from planner.config.digest import config_digest, read_config_text

    cfg = load_config(config)  # a config it cannot read stops here, with its message
    return cfg, config_digest(read_config_text(config))


def _environment(host: str | None, cfg: Any, libvirt_uri: str | None = None) -> Environment:
    return open_environment(host, libvirt_uri_for(cfg, libvirt_uri))


def _write_plan(out: Path, text: str) -> None:
    """Write the plan file whole or not at all: a regular file (or a new one) through a
    temporary file renamed into place, anything else (a pipe, a device) directly. A
    directory, a missing directory or a full disk is one line naming ``out``."""
    import tempfile

    from planner.errors import AihowError

    tmp: str | None = None
    try:
        if out.exists() and not out.is_file():
            if out.is_dir():
                raise IsADirectoryError(21, "Is a directory")
            with open(out, "w", encoding="utf-8") as f:
                f.write(text)
            return
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
        tmp = None
    except OSError as exc:
        raise AihowError(f"{out}: cannot write the plan: {exc.strerror}") from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _colour() -> bool:
    return output.colour()


def plan_command(
    config: Annotated[Path, typer.Argument(help="Cluster config YAML.")],
    host: HostOpt = None,
    out: Annotated[
        Path | None, typer.Option("-o", "--out", help="Write the plan file here.")
    ] = None,
    fmt: Annotated[PlanFormat, typer.Option("--format", help="text, markdown or json.")] = (
        PlanFormat.text
    ),
    detailed_exitcode: Annotated[
        bool,
        typer.Option("--detailed-exitcode",
                     help="Exit 0 when there are no changes, 2 when there are (1 on error)."),
    ] = False,
    libvirt_uri: LibvirtOpt = None,
    sign_key: Annotated[
        Path | None, typer.Option("--sign-key", help="Sign the plan written with -o: "
                                  "OUT.sig, an HMAC with this key file (see plan-format.md).")
    ] = None,
) -> None:
    """Probe the host and print (and with -o save) the plan that makes it match CONFIG."""
    # here, not at the top: --help loads every command module (start-up time)
    from planner.cli.host_opts import base_images
    from planner.plan import make_plan
    from planner.plan.render import render

    key = None
    if sign_key is not None:  # before anything is probed: a bad key is a usage error
        from planner.errors import AihowError
        from planner.plan.signing import read_key

        if out is None:
            raise AihowError("--sign-key: signs the plan file, so give -o too")
        key = read_key(sign_key)
    cfg, sha = _load(config)
    env = _environment(host, cfg, libvirt_uri)
    # The absolute path: apply finds the config from any directory.
    plan = make_plan(cfg, env.probe(), config_path=os.path.abspath(config), config_sha256=sha,
                     host_uri=env.host_uri, records=env.records(),
                     images=base_images(env, cfg))
    if out is not None:
        _write_plan(out, plan.to_json())
        if key is not None:
            from planner.plan.signing import write_signature

            write_signature(out, plan.plan_sha256, key)
    typer.echo(render(plan, fmt.value, colour=_colour()), nl=False)
    if detailed_exitcode and plan.has_changes:
        raise typer.Exit(2)


def show_command(
    plan_files: Annotated[
        list[Path], typer.Argument(metavar="PLAN...", help="Plan files from aihow plan -o; "
                                   "several (one per host) make one fleet review.")
    ],
    fmt: Annotated[PlanFormat, typer.Option("--format", help="text, markdown or json.")] = (
        PlanFormat.text
    ),
) -> None:
    """Print saved plans (each digest is checked first). Several plans print as one
    document: Markdown gets a fleet summary table and a section per host (named by file
    stem), text a section per host, json a list of the plans."""
    # here, not at the top: --help loads every command module (start-up time)
    from planner.plan.render import fleet_labels, render, render_fleet_markdown, render_fleet_text
    from planner.plan.review import load_review

    plans = [load_review(p) for p in plan_files]
    if len(plans) == 1:
        typer.echo(render(plans[0], fmt.value, colour=_colour()), nl=False)
    elif fmt is PlanFormat.json:
        typer.echo("[\n" + ",\n".join(p.to_json().rstrip("\n") for p in plans) + "\n]\n",
                   nl=False)
    else:
        named = list(zip(fleet_labels([str(p) for p in plan_files]), plans, strict=True))
        typer.echo(render_fleet_markdown(named) if fmt is PlanFormat.markdown
                   else render_fleet_text(named, colour=_colour()), nl=False)


def graph_command(
    config: Annotated[Path, typer.Argument(help="Cluster config YAML.")],
    host: HostOpt = None,
    fmt: Annotated[GraphFormat, typer.Option("--format", help="dot (graphviz) or json.")] = (
        GraphFormat.dot
    ),
) -> None:
    """Print the plan graph: each step of the plan with its id and action, edges meaning
    "runs before" (the graph that orders the plan)."""
    # here, not at the top: --help loads every command module (start-up time)
    from planner.plan.diff import diff
    from planner.plan.graph import graph_dot, graph_json, number, plan_graph
    from planner.plan.make import resources_for
    from planner.plan.request import requests_from_config

    cfg, _ = _load(config)
    env = _environment(host, cfg)
    state = env.probe()
    records = env.records()
    r = resources_for(requests_from_config(cfg), state, records)
    g = plan_graph(diff(r.resolution, r.desired, r.actual, records, r.slices_only))
    number(g)
    typer.echo(graph_dot(g) if fmt is GraphFormat.dot else graph_json(g), nl=False)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.command("plan")(plan_command)
    app.command("show")(show_command)
    app.command("graph")(graph_command)
