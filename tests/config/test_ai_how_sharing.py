"""Issue 10 defect 9: ai-how configs aihow must accept.

One GPU passed through to VMs of two clusters (ai-how's example-multi-gpu-clusters.yaml:
they take turns, the second with ``auto_start: false``) is defined into both domains; aihow
refuses to start the second while the first holds the device. ``device_id: 2330``
unquoted (ai-how's gpu_inventory.sh) is read as the id "2330"."""

from __future__ import annotations

from pathlib import Path

import pytest

from planner.cli.host_opts import open_environment
from planner.config import load_config
from planner.config.vms import expand_vms
from planner.host import libvirt_domains as ld
from planner.host import libvirt_objects as lo
from planner.host.libvirt_domains import DomainError
from tests.clirun import aihow

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(__file__).parent / "data/ai-how/multi-gpu-clusters.yaml"


def test_unquoted_device_ids_and_a_shared_gpu_load() -> None:
    cfg = load_config(SHARED)
    assert cfg.global_.gpus[0].device_id == "2330"
    nodes = {vm.name: vm for vm in expand_vms(cfg)}
    for name in ("hpc-compute-01", "cloud-gpu-worker-01"):
        assert [d.device_id for d in nodes[name].pcie_devices] == ["2330", "22bd"]
    assert nodes["cloud-gpu-worker-01"].auto_start is False


@pytest.mark.parametrize("bad,why", [
    ("device_id: 233", "not a 4-digit hex id; write it quoted"),
    ("device_id: 23300", "not a 4-digit hex id; write it quoted"),
    ('device_id: "23g0"', "is not 4 hex digits"),
])
def test_a_device_id_that_is_no_id_is_one_error_naming_where(tmp_path: Path, bad: str,
                                                            why: str) -> None:
    text = SHARED.read_text().replace("device_id: 2330}", bad + "}", 1)
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    out = aihow("validate", str(path))
    assert out.returncode == 1
    [line] = out.stderr.splitlines()
    assert line.startswith(f"{path}:29:") and "devices[0].device_id" in line and why in line


def test_sharing_within_one_cluster_stays_an_error(tmp_path: Path) -> None:
    text = SHARED.read_text()
    node = text[text.index("      - cpu_cores: 4"):text.index("    slurm_config")]
    path = tmp_path / "twice.yaml"
    path.write_text(text.replace(node, node + node.replace("100.11", "100.12")))
    out = aihow("validate", str(path))
    assert out.returncode == 1
    assert "is passed through to hpc-compute-02 here and to hpc-compute-01" in out.stderr
    assert "same cluster" in out.stderr


def _states(host: Path) -> dict[str, bool]:
    return {d.name: d.running for d in open_environment(f"sim:{host}").probe().domains}


def test_both_domains_are_defined_and_only_one_may_run(tmp_path: Path) -> None:
    host = tmp_path / "host"
    assert aihow("sim", "init", str(host), "--spec",
                 str(ROOT / "config/sim-a100.toml")).returncode == 0
    done = aihow("apply", str(SHARED), "--host", f"sim:{host}", "--auto-approve")
    assert done.returncode == 0, done.stdout + done.stderr
    domains = {d.name: d for d in open_environment(f"sim:{host}").probe().domains}
    for name in ("hpc-compute-01", "cloud-gpu-worker-01"):
        assert [h.key for h in domains[name].hostdevs] == ["0000:01:00.0", "0000:01:00.1"]
    # auto_start: the hpc node runs, the cloud worker (auto_start: false) waits its turn
    assert _states(host)["hpc-compute-01"] and not _states(host)["cloud-gpu-worker-01"]
    session = open_environment(f"sim:{host}").libvirt()
    try:
        with pytest.raises(DomainError, match="cloud-gpu-worker-01 cannot start: its device is "
                           "held .*0000:01:00.0 by hpc-compute-01.*stop hpc-compute-01 first"):
            ld.start(session.conn, "cloud-gpu-worker-01")
        lo.shut_down_domain(session.conn, "hpc-compute-01", timeout=10)
        ld.start(session.conn, "cloud-gpu-worker-01")  # its turn now
        session.commit()
    finally:
        session.close()
    # The operator chose who runs: a re-plan does not start hpc-compute-01 (auto_start)
    # while the worker holds the device, and plans nothing.
    again = aihow("plan", str(SHARED), "--host", f"sim:{host}", "--detailed-exitcode")
    assert again.returncode == 0, again.stdout + again.stderr
    assert _states(host) | {"hpc-compute-01": False, "cloud-gpu-worker-01": True} == \
        _states(host)


def test_two_vms_sharing_a_device_may_not_both_start_on_their_own(tmp_path: Path) -> None:
    path = tmp_path / "both.yaml"
    path.write_text(SHARED.read_text().replace("      - auto_start: false\n", "      - "
                                               "auto_start: true\n"))
    out = aihow("validate", str(path))
    assert out.returncode == 1
    [line] = out.stderr.splitlines()
    assert "cloud-gpu-worker-01 here and to hpc-compute-01" in line
    assert "both have auto_start" in line and line.startswith(f"{path}:")
