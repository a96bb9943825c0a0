"""aihow plan / show / graph through the real command line, on a simulated host."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.clirun import aihow

ROOT = Path(__file__).resolve().parents[2]
CONFIG = "config/example-mig-cluster.yaml"


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A bare simulated A100, MIG off: everything to do, the domains included."""
    from test_plans_current import REGEN

    where = tmp_path_factory.mktemp("cli") / "host"
    return str(REGEN._prepare(REGEN.SCENARIOS[0], where))


@pytest.fixture(scope="module")
def converged(tmp_path_factory: pytest.TempPathFactory) -> str:
    from test_plans_current import REGEN

    scenario = REGEN.SCENARIOS[0]
    uri = str(REGEN._prepare(scenario, tmp_path_factory.mktemp("cli") / "host"))
    first = REGEN._plan(scenario, uri)
    REGEN._apply(scenario, uri, first.model_copy(
        update={"host": first.host.model_copy(update={"uri": uri})}).sealed())
    return uri


def test_detailed_exitcode_is_2_with_changes_and_0_without(fresh: str, converged: str) -> None:
    changes = aihow("plan", CONFIG, "--host", fresh, "--detailed-exitcode")
    assert changes.returncode == 2, changes.stderr
    assert changes.stdout.rstrip().endswith(
        "Plan: 59 to create, 1 to update, 0 to replace, 0 to delete.")
    same = aihow("plan", CONFIG, "--host", converged, "--detailed-exitcode")
    assert same.returncode == 0, same.stderr
    assert "No changes" in same.stdout
    assert aihow("plan", CONFIG, "--host", fresh).returncode == 0  # without the flag


def test_plan_file_is_written_and_shown_identically(fresh: str, tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    made = aihow("plan", CONFIG, "--host", fresh, "-o", str(out), "--format", "json")
    assert made.returncode == 0, made.stderr
    assert made.stdout == out.read_text()
    again = tmp_path / "again.json"
    assert aihow("plan", CONFIG, "--host", fresh, "-o", str(again)).returncode == 0
    assert again.read_bytes() == out.read_bytes()  # same host, config, version: same bytes
    shown = aihow("show", str(out), "--format", "json")
    assert shown.returncode == 0 and shown.stdout == out.read_text()
    text = aihow("show", str(out))
    assert "\x1b[" not in text.stdout  # colour only on a terminal
    assert "GPU 0000:17:00.0" in text.stdout and "domain hpc-compute-01" in text.stdout
    assert text.stdout.index("GPU 0000:17:00.0") < text.stdout.index("domain hpc-compute-01")
    assert "~ gpu[0000:17:00.0].mig [GPU RESET]" in text.stdout
    md = aihow("show", str(out), "--format", "markdown")
    assert "| create | update | replace | delete | unchanged |" in md.stdout
    assert "<details>" in md.stdout and "[!WARNING]" in md.stdout


def test_show_refuses_an_edited_plan_in_one_line(fresh: str, tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    assert aihow("plan", CONFIG, "--host", fresh, "-o", str(out)).returncode == 0
    out.write_text(out.read_text().replace('"needs_reset":true', '"needs_reset":false'))
    res = aihow("show", str(out))
    assert res.returncode == 1
    assert res.stderr.strip().count("\n") == 0 and "Traceback" not in res.stderr
    assert "plan_sha256 does not match" in res.stderr


def test_impossible_config_is_one_line_error_exit_1(fresh: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / CONFIG).read_text().replace(
        "gpu_config: {mode: mig, mig_profile: 1g.5gb}\n    slurm_config",
        "gpu_config: {mode: mig, mig_profile: 7g.40gb}\n    slurm_config", 1))
    assert bad.read_text() != (ROOT / CONFIG).read_text()
    res = aihow("plan", str(bad), "--host", fresh, "--detailed-exitcode")
    assert res.returncode == 1
    assert "Traceback" not in res.stderr and res.stderr.strip().count("\n") == 0
    assert "hpc-compute-04 (clusters.hpc.compute_nodes[3]): cannot place 7g.40gb" in res.stderr
    assert "[1g][1g][1g][  ][  ][  ][  ][  ]" in res.stderr


def test_graph_prints_dot_that_graphviz_renders_and_json(fresh: str) -> None:
    dot = aihow("graph", CONFIG, "--host", fresh)
    assert dot.returncode == 0, dot.stderr
    assert '"gpu[0000:17:00.0].mig" -> "gpu[0000:17:00.0].gi[1g.5gb@0]"' in dot.stdout
    if shutil.which("dot"):
        svg = subprocess.run(["dot", "-Tsvg"], input=dot.stdout, capture_output=True, text=True)
        assert svg.returncode == 0 and "<svg" in svg.stdout, svg.stderr
    data = json.loads(aihow("graph", CONFIG, "--host", fresh, "--format", "json").stdout)
    edges = {tuple(e) for e in data["edges"]}
    ci = "gpu[0000:17:00.0].gi[1g.5gb@0].ci[1g.5gb@0]"
    vgpu = next(v for u, v in edges if u == ci)
    assert vgpu.startswith("vgpu[")
    assert any(u == vgpu and v.startswith("domain[hpc-compute-01].hostdev[") for u, v in edges)
    kinds = {n["address"]: n["kind"] for n in data["nodes"]}
    assert kinds["gpu[0000:17:00.0].vfs"] == "sriov"


def test_libvirt_uri_points_the_domain_part_of_the_probe_elsewhere(fresh: str) -> None:
    """--libvirt-uri: the sim host's GPUs with another libvirt (here the test driver's
    stock node, whose one running domain 'test' is not aihow's and is never planned)."""
    res = aihow("plan", CONFIG, "--host", fresh, "--libvirt-uri", "test:///default",
              "--format", "json")
    assert res.returncode == 0, res.stderr
    addresses = [a["address"] for a in json.loads(res.stdout)["actions"]]
    assert "domain[hpc-controller]" in addresses
    assert not any(a.startswith("domain[test]") for a in addresses)
    bad = aihow("plan", CONFIG, "--host", fresh, "--libvirt-uri", "nosuch:///x")
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr


def test_show_of_several_plans_is_one_fleet_review(fresh: str, converged: str,
                                                   tmp_path: Path) -> None:
    web1, web2 = tmp_path / "web-01.json", tmp_path / "web-02.json"
    assert aihow("plan", CONFIG, "--host", fresh, "-o", str(web1)).returncode == 0
    assert aihow("plan", CONFIG, "--host", converged, "-o", str(web2)).returncode == 0
    single = aihow("show", str(web1), "--format", "markdown").stdout

    md = aihow("show", str(web1), str(web2), "--format", "markdown")
    assert md.returncode == 0, md.stderr
    doc = md.stdout
    assert doc.startswith("## aihow fleet plan\n\n2 hosts, 1 with changes · 1 GPU reset · "
                          "0 destructive steps\n")
    fp1, fp2 = (json.loads(p.read_text())["host"]["fingerprint"][:12] for p in (web1, web2))
    assert f"| web-01 | 59 | 1 | 0 | 0 | 0 | 1 | 0 | `{fp1}` |\n" in doc
    assert f"| web-02 | 0 | 0 | 0 | 0 | 60 | 0 | 0 | `{fp2}` |\n" in doc
    assert "| **total** | **59** | **1** | **0** | **0** | **60** | **1** | **0** | |\n" in doc
    # A section per host, in the order given, each the host's own plan under its name.
    first, second = doc.index("\n### web-01\n"), doc.index("\n### web-02\n")
    assert first < second
    assert doc[first:second] == "\n### web-01\n\n" + single.removeprefix("### aihow plan\n\n")
    assert "No changes. The host matches the config." in doc[second:]

    text = aihow("show", str(web1), str(web2)).stdout
    assert text.startswith("== web-01 ==\nHost ") and "\n== web-02 ==\nHost " in text
    both = json.loads(aihow("show", str(web1), str(web2), "--format", "json").stdout)
    assert [p["plan_sha256"] for p in both] == [
        json.loads(p.read_text())["plan_sha256"] for p in (web1, web2)]

    # Files that share a name are told apart by their path.
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    shutil.copy(web1, tmp_path / "a" / "plan.json")
    shutil.copy(web2, tmp_path / "b" / "plan.json")
    same = aihow("show", str(tmp_path / "a" / "plan.json"), str(tmp_path / "b" / "plan.json"),
               "--format", "markdown").stdout
    assert f"\n### {tmp_path / 'a' / 'plan.json'}\n" in same


def test_show_of_several_plans_refuses_an_edited_one_in_one_line(fresh: str,
                                                                tmp_path: Path) -> None:
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    assert aihow("plan", CONFIG, "--host", fresh, "-o", str(good)).returncode == 0
    bad.write_text(good.read_text().replace('"needs_reset":true', '"needs_reset":false'))
    res = aihow("show", str(good), str(bad), "--format", "markdown")
    assert res.returncode == 1 and res.stdout == ""
    assert res.stderr.strip().count("\n") == 0 and str(bad) in res.stderr
