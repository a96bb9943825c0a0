"""What the CLI says when an apply fails: each failed step's address once (the error a
handler raises often names the address already)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.apply.simhost import SimHost
from tests.campaign.cases import config
from tests.clirun import aihow

G0 = "0000:17:00.0"


def test_a_failed_step_names_its_address_once(tmp_path: Path) -> None:
    host = SimHost.create(tmp_path / "h", [("a100-40gb", G0, False)])
    cfg = config(tmp_path)
    armed = aihow("sim", "fail", str(host.dir), "--op", "virDomainDefineXML", "--at", "1")
    assert armed.returncode == 0, armed.stderr
    res = aihow("apply", str(cfg), "--host", host.uri, "--auto-approve", "--allow-reset")
    assert res.returncode == 1, res.stdout + res.stderr
    failed = [line for line in res.stderr.splitlines() if line.startswith("error: domain[")]
    assert failed, res.stderr
    assert not re.search(r"(domain\[[^\]]+\]): \1:", res.stderr), res.stderr
    assert "back at the plan's starting state" in res.stderr
