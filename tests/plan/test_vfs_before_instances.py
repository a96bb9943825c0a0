"""sriov-manage wipes a GPU's instances (vgpu-on-mig.md section 4): a plan enables a GPU's
VFs before it creates the GPU's instances, and an instance it would keep there is made
again after the VFs (issue 11 item 5)."""

from __future__ import annotations

from pathlib import Path

from planner.host.nvml import NvmlHost
from planner.sim.fake_nvml import FakeNvml
from planner.sim.host import GpuSpec, HostSpec, init_host
from planner.vocab import Action, Kind
from tests.apply.simhost import IMAGE, SimHost
from tests.scenarios.harness import KINDS, cli
from tests.scenarios.harness import base as base_config


def test_vfs_come_first_and_kept_instances_are_made_again(tmp_path: Path) -> None:
    k = KINDS["a100"]
    root = tmp_path / "host"
    init_host(root, HostSpec(gpus=(GpuSpec(k.model, k.pci, mig=True),), vgpu=k.backend,
                             images=(IMAGE,)))
    with NvmlHost(FakeNvml(root)) as nvml:  # an instance made before any VF exists
        nvml.create_gpu_instance(k.pci, 19, 0)
    host = SimHost(root)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(base_config(k).text())
    plan = host.plan(cfg)
    by_addr = {c.address: c for c in plan.actions}
    vfs = by_addr[f"gpu[{k.pci}].vfs"]
    kept = by_addr[f"gpu[{k.pci}].gi[1g.5gb@0]"]
    assert vfs.action is Action.CREATE
    assert kept.action is Action.REPLACE and "sriov-manage -e" in kept.reason
    assert kept.delete_step is not None and kept.delete_step.id < vfs.id < kept.id
    for c in plan.actions:
        if c.kind is Kind.GPU_INSTANCE and c.action is not Action.NO_OP:
            assert vfs.id in c.depends_on, c.address
    assert host.apply(plan, cfg).outcome == "applied"
    assert cli("plan", str(cfg), "--host", host.uri, "--detailed-exitcode").returncode == 0
