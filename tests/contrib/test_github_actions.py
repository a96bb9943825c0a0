"""contrib/github-actions/aihow-plan.yml: its shell steps, run in order as the runner
would (``bash -e`` with the workflow's env, ``GITHUB_OUTPUT``, a stand-in ``gh`` that
records the comment), against a snapshot of a simulated host committed in a config
repository. Then the plan it made is applied on that host, and refused as stale once
the host changed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / "contrib" / "github-actions" / "aihow-plan.yml"
BIN = Path(sys.executable).parent
AIHOW = str(BIN / "aihow")
FAKE_GH = """#!/bin/sh
# stand-in for the GitHub CLI: record the call and the comment body
echo "$@" >> "$GH_LOG"
while [ $# -gt 0 ]; do
  if [ "$1" = "--body-file" ]; then cp "$2" "$GH_LOG.body"; fi
  shift
done
"""


def _workflow() -> dict[str, Any]:
    return YAML(typ="safe").load(WORKFLOW.read_text())  # type: ignore[no-any-return]


def _expr(text: str, values: dict[str, str]) -> str:
    """Replace ``${{ expr }}`` the way the runner would, from ``values``."""
    return re.sub(r"\$\{\{\s*([^}]+?)\s*\}\}", lambda m: values[m[1]], text)


def _run_steps(repo: Path, tmp: Path) -> dict[str, str]:
    flow = _workflow()
    env = {k: str(v) for k, v in flow["env"].items()}
    fake = tmp / "fakebin"
    fake.mkdir()
    (fake / "gh").write_text(FAKE_GH)
    (fake / "gh").chmod(0o755)
    out_file = tmp / "github_output"
    out_file.touch()
    values = {"github.token": "t0ken", "github.event.pull_request.number": "42",
              "env.AIHOW_OUT": env["AIHOW_OUT"]}
    base = {"PATH": f"{fake}:{BIN}:/usr/bin:/bin", "HOME": str(tmp), "GITHUB_OUTPUT":
            str(out_file), "GH_LOG": str(tmp / "gh.log"), **env}
    ran = []
    for step in flow["jobs"]["plan"]["steps"]:
        if "run" not in step:
            continue  # actions (checkout, setup-python, upload) are GitHub's
        if step.get("name") == "Install aihow":
            continue  # aihow is this checkout's, already on PATH
        step_env = {k: _expr(str(v), values) for k, v in step.get("env", {}).items()}
        res = subprocess.run(["bash", "-e", "-c", _expr(step["run"], values)], cwd=repo,
                             env={**base, **step_env}, capture_output=True, text=True,
                             check=False, timeout=300)
        assert res.returncode == 0, (step.get("name"), res.stdout, res.stderr)
        ran.append(step["name"])
    assert ran == ["Check the config", "Plan against the committed snapshot", "Post the plan"]
    outputs = dict(line.split("=", 1) for line in out_file.read_text().splitlines())
    return {**outputs, "gh": (tmp / "gh.log").read_text(),
            "comment": (tmp / "gh.log.body").read_text()}


def test_the_workflow_plans_a_change_and_the_host_refuses_it_once_stale(tmp_path: Path) -> None:
    host = tmp_path / "host"
    subprocess.run([AIHOW, "sim", "init", str(host), "--spec", "config/sim-a100.toml"],
                   cwd=ROOT, check=True, capture_output=True)
    repo = tmp_path / "repo"
    hostdir = repo / "hosts" / "gpu01"
    hostdir.mkdir(parents=True)
    shutil.copy(ROOT / "config" / "example-mig-cluster.yaml", hostdir / "cluster.yaml")
    subprocess.run([AIHOW, "probe", "--host", f"sim:{host}", "-o",
                    str(hostdir / "snapshot.json")], check=True, capture_output=True)

    got = _run_steps(repo, tmp_path)
    assert got["changes"] == "true"
    assert got["gh"].startswith("pr comment 42 --edit-last --body-file aihow-out/comment.md")
    comment = got["comment"]
    assert comment.startswith("<!-- aihow-plan: hosts/gpu01/cluster.yaml -->\n### aihow plan")
    assert f"Host `sim:{host}`" in comment and "to create" in comment
    plan = repo / "aihow-out" / "plan.json"
    assert plan.exists()

    # On the GPU host, the reviewed plan applies while the host is what the snapshot says.
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    ok = subprocess.run([AIHOW, "apply", str(plan), "--auto-approve", "--allow-reset"],
                        cwd=repo, env=env, capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # Reviewed again from the old snapshot, the same plan is stale on the changed host.
    again = subprocess.run([AIHOW, "apply", str(plan), "--auto-approve", "--allow-reset"],
                           cwd=repo, env=env, capture_output=True, text=True, check=False)
    assert again.returncode == 1 and "stale" in again.stderr, again.stderr
    assert "Traceback" not in again.stderr


def test_no_changes_is_reported_as_such(tmp_path: Path) -> None:
    host = tmp_path / "host"
    subprocess.run([AIHOW, "sim", "init", str(host), "--spec", "config/sim-a100.toml"],
                   cwd=ROOT, check=True, capture_output=True)
    subprocess.run([AIHOW, "apply", "config/example-mig-cluster.yaml", "--host", f"sim:{host}",
                    "--auto-approve", "--allow-reset"], cwd=ROOT, check=True,
                   capture_output=True)
    repo = tmp_path / "repo"
    hostdir = repo / "hosts" / "gpu01"
    hostdir.mkdir(parents=True)
    shutil.copy(ROOT / "config" / "example-mig-cluster.yaml", hostdir / "cluster.yaml")
    subprocess.run([AIHOW, "probe", "--host", f"sim:{host}", "-o",
                    str(hostdir / "snapshot.json")], check=True, capture_output=True)
    got = _run_steps(repo, tmp_path)
    assert got["changes"] == "false" and "No changes" in got["comment"]
