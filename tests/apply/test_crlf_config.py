"""A config with CRLF line ends plans and applies (issue 16, item 4): `plan` and `apply`
share one definition of the config digest (``planner.config.digest``)."""

from __future__ import annotations

import json
from pathlib import Path

from planner.config.digest import config_digest, read_config_text
from tests.apply.simhost import SimHost, config_text
from tests.clirun import aihow

G0 = "0000:17:00.0"


def test_one_digest_for_crlf_and_lf_text(tmp_path: Path) -> None:
    text = config_text({G0: "3g.20gb"})
    lf, crlf = tmp_path / "lf.yaml", tmp_path / "crlf.yaml"
    lf.write_bytes(text.encode())
    crlf.write_bytes(text.replace("\n", "\r\n").encode())
    assert b"\r\n" in crlf.read_bytes()
    assert read_config_text(crlf) == read_config_text(lf) == text
    assert config_digest(read_config_text(crlf)) == config_digest(text)


def test_a_crlf_config_is_planned_then_applied(tmp_path: Path) -> None:
    host = SimHost.create(tmp_path / "h", [("a100-40gb", G0, False)])
    cfg = tmp_path / "crlf.yaml"
    cfg.write_bytes(config_text({G0: "3g.20gb"}).replace("\n", "\r\n").encode())
    plan_file = tmp_path / "p.json"
    res = aihow("plan", str(cfg), "--host", host.uri, "-o", str(plan_file))
    assert res.returncode == 0, res.stderr
    assert json.loads(plan_file.read_text())["config"]["sha256"] == config_digest(
        read_config_text(cfg))
    res = aihow("apply", str(plan_file), "--auto-approve", "--allow-reset")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Apply complete" in res.stdout
    again = aihow("plan", str(cfg), "--host", host.uri, "--detailed-exitcode")
    assert again.returncode == 0, again.stdout + again.stderr  # no changes left


def test_a_plan_made_with_a_relative_config_path_applies_from_elsewhere(tmp_path: Path) -> None:
    host = SimHost.create(tmp_path / "h", [("a100-40gb", G0, False)])
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir()
    elsewhere.mkdir()
    (work / "c.yaml").write_text(config_text({G0: "3g.20gb"}))
    res = aihow("plan", "c.yaml", "--host", host.uri, "-o", "p.json", cwd=work)
    assert res.returncode == 0, res.stderr
    assert json.loads((work / "p.json").read_text())["config"]["path"] == str(work / "c.yaml")
    res = aihow("apply", str(work / "p.json"), "--auto-approve", "--allow-reset", cwd=elsewhere)
    assert res.returncode == 0, res.stdout + res.stderr
