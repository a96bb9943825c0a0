"""The example cluster end to end on a simulated A100: plan, apply (MIG, VFs, vGPUs,
hostdevs through the VM layer's handlers), re-plan, reboot, apply again, and rollback
when a vGPU step fails. The domains exist beforehand, as ai-how creates them."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from planner.apply.executor import ApplyInput, ApplyResult, apply_plan
from planner.apply.state_dir import resolve_state_dir
from planner.cli.host_opts import open_environment
from planner.config import load_config
from planner.config.vms import expand_vms
from planner.host import libvirt_domains as ld
from planner.host.state import HostState
from planner.plan.fingerprint import fingerprint
from planner.plan.make import make_plan
from planner.vm.vm_factory import VMSpec, render_domain_xml
from tests.clirun import aihow
from tests.vm.base_images import give_base_images

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config" / "example-mig-cluster.yaml"


class Host:
    def __init__(self, path: Path) -> None:
        aihow("sim", "init", str(path), "--spec", str(ROOT / "config" / "sim-a100.toml"), ok=True)
        self.dir = path
        self.uri = f"sim:{path}"
        self.cfg = load_config(CONFIG)
        give_base_images(path, CONFIG)
        # what ai-how leaves behind: domains, no GPUs
        with open_environment(self.uri).libvirt() as s:
            for decl in expand_vms(self.cfg):
                ld.define(s.conn, render_domain_xml(VMSpec.from_decl(decl)))
            s.commit()

    def probe(self) -> HostState:
        return open_environment(self.uri).probe()

    def plan(self) -> Any:
        return make_plan(
            self.cfg,
            self.probe(),
            config_path=str(CONFIG),
            config_sha256=hashlib.sha256(CONFIG.read_bytes()).hexdigest(),
            host_uri=self.uri,
        )

    def apply(self, plan: Any) -> ApplyResult:
        return apply_plan(
            ApplyInput(
                plan, plan.to_json(), self.cfg, CONFIG.read_text(), str(CONFIG), allow_reset=True
            ),
            open_environment(self.uri),
            resolve_state_dir(open_environment(self.uri).state_dir()),
        )


@pytest.fixture(scope="module")
def applied(tmp_path_factory: pytest.TempPathFactory) -> tuple[Host, HostState]:
    host = Host(tmp_path_factory.mktemp("e2e") / "sim")
    result = host.apply(host.plan())
    assert result.outcome == "applied", result.failed
    return host, host.probe()


def test_seven_slices_seven_vgpus_nine_domains(applied: tuple[Host, HostState]) -> None:
    _host, state = applied
    (gpu,) = state.gpus
    assert gpu.mig_current
    assert sorted(gi.profile_name for gi in gpu.gpu_instances) == ["1g.5gb"] * 7
    assert len(state.mdevs) == 7
    assert len(state.domains) == 9
    by_name = {d.name: d for d in state.domains}
    for plain in ("hpc-controller", "k8s-control-plane"):
        assert by_name[plain].hostdevs == ()
    gpu_nodes = [n for n in by_name if "compute" in n or "worker" in n]
    assert len(gpu_nodes) == 7
    mdevs = {m.uuid for m in state.mdevs}
    for name in gpu_nodes:
        (hd,) = by_name[name].hostdevs
        assert hd.type == "mdev" and hd.uuid in mdevs


def test_isolation(applied: tuple[Host, HostState]) -> None:
    _host, state = applied
    keys = [h.key for d in state.domains for h in d.hostdevs]
    assert len(keys) == len(set(keys)), "two domains share a device"
    gis = [m.gi_id for m in state.mdevs]
    assert None not in gis and len(set(gis)) == len(gis), "two vGPUs on one GPU instance"
    (gpu,) = state.gpus
    slices = [
        s
        for gi in gpu.gpu_instances
        for s in range(gi.placement_start, gi.placement_start + gi.placement_size)
    ]
    assert len(slices) == len(set(slices)), "GPU instances overlap in memory slices"


def test_replan_is_empty(applied: tuple[Host, HostState]) -> None:
    host, _state = applied
    summary = host.plan().summary
    assert (summary["create"], summary["update"], summary["replace"], summary["delete"]) == (
        0,
        0,
        0,
        0,
    )


def test_after_a_reboot_apply_brings_the_same_slices_back_to_the_same_domains(
    applied: tuple[Host, HostState],
) -> None:
    host, before = applied
    aihow("sim", "reboot", str(host.dir), ok=True)
    lost = host.probe()
    assert lost.mdevs == () and lost.gpus[0].gpu_instances == ()
    result = host.apply(host.plan())
    assert result.outcome == "applied", result.failed
    after = host.probe()
    assert {d.name: d.hostdevs for d in after.domains} == {
        d.name: d.hostdevs for d in before.domains
    }
    assert {(m.uuid, m.parent, m.type_id) for m in after.mdevs} == {
        (m.uuid, m.parent, m.type_id) for m in before.mdevs
    }
    assert [(g.profile_name, g.placement_start) for g in after.gpus[0].gpu_instances] == [
        (g.profile_name, g.placement_start) for g in before.gpus[0].gpu_instances
    ]
    assert host.plan().summary["create"] == 0


@pytest.mark.parametrize(
    ("op", "at"),
    [("sriov-manage", 1), ("sysfs.mdev_create", 1), ("sysfs.mdev_create", 7)],
)
def test_a_failing_vgpu_step_rolls_back_to_the_start(tmp_path: Path, op: str, at: int) -> None:
    host = Host(tmp_path / "sim")
    start = fingerprint(host.probe(), host.cfg)
    aihow("sim", "fail", str(host.dir), "--op", op, "--at", str(at), ok=True)
    result = host.apply(host.plan())
    assert result.outcome == "rolled-back", result.outcome
    assert result.back_at_start
    state = host.probe()
    assert fingerprint(state, host.cfg) == start
    assert state.mdevs == () and all(d.hostdevs == () for d in state.domains)


def test_h100_vfio_vf_backend_gives_each_node_its_own_vf(tmp_path: Path) -> None:
    """The H100 variant: vGPU types assigned to VFs (current_vgpu_type), the VFs passed
    to the domains as PCI hostdevs."""
    config = ROOT / "config" / "example-h100-vfio.yaml"
    path = tmp_path / "sim"
    aihow("sim", "init", str(path), "--spec", str(ROOT / "config" / "sim-h100.toml"), ok=True)
    uri, cfg = f"sim:{path}", load_config(config)
    give_base_images(path, config)
    with open_environment(uri).libvirt() as s:
        for decl in expand_vms(cfg):
            ld.define(s.conn, render_domain_xml(VMSpec.from_decl(decl)))
        s.commit()
    plan = make_plan(
        cfg,
        open_environment(uri).probe(),
        config_path=str(config),
        config_sha256=hashlib.sha256(config.read_bytes()).hexdigest(),
        host_uri=uri,
    )
    result = apply_plan(
        ApplyInput(plan, plan.to_json(), cfg, config.read_text(), str(config), allow_reset=True),
        open_environment(uri),
        resolve_state_dir(open_environment(uri).state_dir()),
    )
    assert result.outcome == "applied", result.failed
    state = open_environment(uri).probe()
    assigned = {p.pci: p for p in state.vgpu_parents if p.current_type}
    assert len(assigned) == 7
    gis = [p.gi_id for p in assigned.values()]
    assert None not in gis and len(set(gis)) == 7
    held = [h for d in state.domains for h in d.hostdevs]
    assert sorted(h.pci for h in held if h.pci) == sorted(assigned)
    assert all(h.type == "pci" for h in held)
