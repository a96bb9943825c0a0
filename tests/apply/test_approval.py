"""Issue 10 defect 3: approval and running VMs.

Off a terminal apply refuses a plan with changes unless ``--auto-approve``; on a terminal
a delete asks after a summary. A slice a running VM uses is never deleted or replaced
without ``--restart-running-vms``; with it the VM is shut down, the slice changed and the
VM started again (also when the apply fails and rolls back). Through the CLI, on a
simulated A100 with the example cluster applied."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.apply.simhost import SimHost, applied_example
from tests.apply.test_cli_apply import _run_on_terminal
from tests.clirun import aihow

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config/example-mig-cluster.yaml"
NODE1 = 'ip: "192.168.100.11"\n        gpu_config: {mode: mig, mig_profile: 1g.5gb}'


def _me_config(tmp_path: Path) -> Path:
    text = EXAMPLE.read_text()
    assert NODE1 in text
    out = tmp_path / "me.yaml"
    out.write_text(text.replace(NODE1, NODE1.replace("1g.5gb}", "1g.5gb+me}")))
    return out


def _start(host: SimHost, name: str) -> None:
    """The example's nodes have ``auto_start`` (ai-how's default): apply started them."""
    assert _states(host)[name] == "running"


def _states(host: SimHost) -> dict[str, str]:
    return {d.name: d.state for d in host.probe().domains}


def _plan(host: SimHost, cfg: Path, out: Path) -> Path:
    made = aihow("plan", str(cfg), "--host", host.uri, "-o", str(out))
    assert made.returncode == 0, made.stderr
    return out


def test_off_a_terminal_apply_needs_auto_approve(tmp_path: Path) -> None:
    host = applied_example(tmp_path)
    plan = _plan(host, _me_config(tmp_path), tmp_path / "me.json")
    before = host.fingerprint(EXAMPLE), host.layout()
    refused = aihow("apply", str(plan))
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: stdin is not a terminal")
    assert "--auto-approve" in refused.stderr and "nothing was changed" in refused.stderr
    assert (host.fingerprint(EXAMPLE), host.layout()) == before
    # a plan without changes needs no approval
    same = aihow("apply", str(EXAMPLE), "--host", host.uri)
    assert same.returncode == 0 and "No changes" in same.stdout, same.stderr


def test_on_a_terminal_a_replace_asks_after_a_summary(tmp_path: Path) -> None:
    host = applied_example(tmp_path)
    plan = _plan(host, _me_config(tmp_path), tmp_path / "me.json")
    before = host.layout()
    code, out = _run_on_terminal(["apply", str(plan)], "n")
    assert code == 1, out
    assert "change(s) delete, replace, undefine or reset:" in out
    assert "delete gpu[0000:17:00.0].gi[1g.5gb@0]" in out  # hpc-compute-01 sits on @0
    assert "replace vgpu[" in out and "Apply cancelled; nothing was changed." in out
    assert host.layout() == before


def test_a_running_vms_slice_needs_the_flag_then_the_vm_is_restarted(tmp_path: Path) -> None:
    host = applied_example(tmp_path)
    _start(host, "hpc-compute-01")
    cfg = _me_config(tmp_path)
    plan = _plan(host, cfg, tmp_path / "me.json")
    assert "apply refuses them unless given --restart-running-vms" in \
        aihow("show", str(plan)).stdout
    before = host.fingerprint(EXAMPLE)
    refused = aihow("apply", str(plan), "--auto-approve")
    assert refused.returncode == 1
    [line] = [t for t in refused.stderr.splitlines() if t.startswith("  hpc-compute-01: ")]
    assert "gpu[0000:17:00.0].gi[1g.5gb@0].ci[1g.5gb@0]" in line
    assert "--restart-running-vms" in refused.stderr
    assert host.fingerprint(EXAMPLE) == before and _states(host)["hpc-compute-01"] == "running"

    done = aihow("apply", str(plan), "--auto-approve", "--restart-running-vms")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "shut down hpc-compute-01 (domain[hpc-compute-01].running) done" in done.stdout
    assert "start hpc-compute-01 (domain[hpc-compute-01].running) done" in done.stdout
    assert _states(host)["hpc-compute-01"] == "running"
    again = aihow("plan", str(cfg), "--host", host.uri, "--detailed-exitcode")
    assert again.returncode == 0, again.stdout + again.stderr


@pytest.mark.parametrize("op", ["virDomainShutdown", "nvmlDeviceCreateGpuInstanceWithPlacement",
                                "sysfs.mdev_create"])
def test_a_failure_leaves_the_running_vm_running(tmp_path: Path, op: str) -> None:
    host = applied_example(tmp_path)
    _start(host, "hpc-compute-01")
    plan = _plan(host, _me_config(tmp_path), tmp_path / "me.json")
    before = host.fingerprint(EXAMPLE), host.layout()
    assert aihow("sim", "fail", str(host.dir), "--op", op, "--at", "1").returncode == 0
    failed = aihow("apply", str(plan), "--auto-approve", "--restart-running-vms")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "Traceback" not in failed.stderr
    assert _states(host)["hpc-compute-01"] == "running"
    assert (host.fingerprint(EXAMPLE), host.layout()) == before
    assert "back at the plan's starting state" in failed.stderr
    recover = aihow("recover", "--host", host.uri)
    assert recover.returncode == 0 and "Nothing to recover" in recover.stdout
