"""The example cluster end to end on a bare simulated host, as ``make demo`` runs it:
nothing is defined beforehand, so apply defines the nine domains too. Plan-making gets
the host's records (domains aihow defined, the allocation ledger) the way the CLI reads
them. Then re-plan, isolation, one node changed, a second config refused, reboot, and a
fault at every step of the apply rolled back to the starting fingerprint."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from planner.apply.allocator import GPUResourceAllocator, record_applied
from planner.apply.executor import ApplyInput, ApplyResult, apply_plan
from planner.apply.journal import archived_journals
from planner.apply.state_dir import resolve_state_dir
from planner.cli.host_opts import open_environment
from planner.config import load_config
from planner.config.vms import expand_vms
from planner.host import libvirt_domains as ld
from planner.host import libvirt_objects as lo
from planner.host.records import defined_by_aihow
from planner.host.state import HostState
from planner.plan.fingerprint import fingerprint
from planner.plan.make import make_plan
from planner.plan.request import mdev_uuid
from planner.plan.resolve import ResolveError
from planner.sim.kernel import sysfs_write
from planner.sim.mdev_store import SimMdevDefinitions
from tests.clirun import aihow
from tests.vm.base_images import give_base_images

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config" / "example-mig-cluster.yaml"
H100_CONFIG = ROOT / "config" / "example-h100-vfio.yaml"
GPU = "0000:17:00.0"


class Host:
    """A bare simulated host and one config (nothing defined in libvirt)."""

    def __init__(self, path: Path, config: Path = CONFIG, spec: str = "sim-a100.toml") -> None:
        aihow("sim", "init", str(path), "--spec", str(ROOT / "config" / spec), ok=True)
        self.dir, self.uri, self.config = path, f"sim:{path}", config
        give_base_images(path, config)
        self.cfg = load_config(config)

    def state_dir(self) -> Path:
        return resolve_state_dir(open_environment(self.uri).state_dir())

    def probe(self) -> HostState:
        return open_environment(self.uri).probe()

    def plan(self, config: Path | None = None) -> Any:
        config = config or self.config
        return make_plan(load_config(config), self.probe(), config_path=str(config),
                         config_sha256=hashlib.sha256(config.read_bytes()).hexdigest(),
                         host_uri=self.uri, records=open_environment(self.uri).records())

    def apply(self, plan: Any, *, parallel: bool = True) -> ApplyResult:
        result = apply_plan(
            ApplyInput(plan, plan.to_json(), self.cfg, self.config.read_text(),
                       str(self.config), allow_reset=True, parallel=parallel),
            open_environment(self.uri), self.state_dir())
        if result.outcome == "applied":  # what apply records after success
            record_applied(self.state_dir(), self.probe(), self.cfg)
        return result


def changes(plan: Any) -> list[Any]:
    return [a for a in plan.actions if a.action != "no-op"]


def owner_of(name: str) -> str:
    return name.split("-", 1)[0]


@pytest.fixture(scope="module")
def applied(tmp_path_factory: pytest.TempPathFactory) -> tuple[Host, HostState]:
    host = Host(tmp_path_factory.mktemp("bare") / "sim")
    assert host.probe().domains == ()
    result = host.apply(host.plan())
    assert result.outcome == "applied", result.failed
    return host, host.probe()


def test_apply_from_nothing_defines_nine_domains_on_seven_gis_and_seven_vgpus(
    applied: tuple[Host, HostState],
) -> None:
    host, state = applied
    (gpu,) = state.gpus
    assert gpu.mig_current
    assert sorted(gi.profile_name for gi in gpu.gpu_instances) == ["1g.5gb"] * 7
    # MIG-backed mdevs are never mdevctl-defined (boot-time apply makes them again), and
    # apply knows the GI behind each by construction.
    assert len(state.mdevs) == 7 and not any(m.persistent for m in state.mdevs)
    by_name = {d.name: d for d in state.domains}
    # NVML names the GI behind the vGPU of a running VM (auto_start: all but
    # hpc-compute-04); for the one shut off, apply's own record does.
    running = {h.key for d in state.domains if d.running for h in d.hostdevs}
    assert {m.uuid: m.gi_from for m in state.mdevs} == {
        m.uuid: "nvml" if m.uuid in running else "recorded" for m in state.mdevs}
    assert not by_name["hpc-compute-04"].running and len(running) == 6
    assert sorted(by_name) == sorted(vm.name for vm in expand_vms(host.cfg))
    assert len(by_name) == 9
    for vm in expand_vms(host.cfg):
        dom = by_name[vm.name]
        if vm.gpu_config is None:
            assert dom.hostdevs == (), vm.name
            continue
        (hd,) = dom.hostdevs  # the node's own vGPU: the UUID derived from its stable name
        assert (hd.type, hd.uuid) == ("mdev", mdev_uuid(f"{vm.cluster_name}/{vm.name}/gpu0"))
    with open_environment(host.uri).libvirt() as s:
        for name in by_name:
            assert defined_by_aihow(ld.persistent_xml(s.conn, name)) == owner_of(name)
    assert SimMdevDefinitions(host.dir).list_defined() == ()


def test_every_vm_sits_on_the_gpu_instance_its_plan_named(tmp_path: Path) -> None:
    """Issue 10 defect 2: the GI the plan binds each VM to is the GI the driver backs its
    vGPU with, as NVML reports it once the VMs run (GI ids permuted on this GPU, so the
    driver's lowest-id pick is not the lowest placement)."""
    host = Host(tmp_path / "sim")
    plan = host.plan()
    planned = {a.address.removeprefix("vgpu[").rstrip("]"): a.after.gi
               for a in changes(plan) if a.kind == "vgpu"}
    assert host.apply(plan).outcome == "applied"
    with open_environment(host.uri).libvirt() as s:
        for dom in s.conn.listAllDomains():
            if "hostdev" in dom.XMLDesc(0) and not dom.isActive():
                dom.create()  # the one VM without auto_start too
        s.commit()
    state = host.probe()
    gis = {gi.gi_id: f"{gi.profile_name}@{gi.placement_start}"
           for gi in state.gpus[0].gpu_instances}
    assert {m.uuid: gis[m.gi_id] for m in state.mdevs if m.gi_from == "nvml"} == planned
    assert changes(host.plan()) == []


def test_replan_shows_no_changes(applied: tuple[Host, HostState]) -> None:
    host, _ = applied
    plan = host.plan()
    assert changes(plan) == []
    assert plan.summary["no-op"] == len(plan.actions) > 0


def test_isolation(applied: tuple[Host, HostState]) -> None:
    _, state = applied
    keys = [h.key for d in state.domains for h in d.hostdevs]
    assert len(keys) == 7 and len(keys) == len(set(keys)), "two domains share a device"
    gis = [m.gi_id for m in state.mdevs]
    assert None not in gis and len(set(gis)) == 7, "two vGPUs on one GPU instance"
    (gpu,) = state.gpus
    slices = [s for gi in gpu.gpu_instances
              for s in range(gi.placement_start, gi.placement_start + gi.placement_size)]
    assert len(slices) == len(set(slices)), "GPU instances overlap in memory slices"


def _variant(tmp: Path, source: Path, edit: Any) -> Path:
    text = edit(source.read_text())
    path = tmp / source.name
    path.write_text(text)
    return path


def test_changing_one_node_plans_nothing_for_the_other_nodes(
    applied: tuple[Host, HostState], tmp_path: Path,
) -> None:
    host, _ = applied

    def second_node_with_media_engines(text: str) -> str:
        parts = text.split("gpu_config: {mode: mig, mig_profile: 1g.5gb}")
        assert len(parts) == 8
        return "gpu_config: {mode: mig, mig_profile: 1g.5gb}".join(parts[:2]) + \
            "gpu_config: {mode: mig, mig_profile: 1g.5gb+me}" + \
            "gpu_config: {mode: mig, mig_profile: 1g.5gb}".join(parts[2:])

    plan = host.plan(_variant(tmp_path, CONFIG, second_node_with_media_engines))
    touched = changes(plan)
    assert touched, "the changed node must be re-planned"
    mine = mdev_uuid("hpc/hpc-compute-02/gpu0")
    for a in touched:
        assert "hpc-compute-02" in a.address or mine in a.address or a.kind in (
            "gpu_instance", "compute_instance"), a.address
        if a.kind in ("gpu_instance", "compute_instance"):
            # only the instance under hpc-compute-02's vGPU is replaced
            before = a.before or a.after
            assert before is not None and before.to_json()["profile"].startswith("1g.5gb")
    gi_changes = {a.address.split(".ci[")[0] for a in touched
                  if a.kind in ("gpu_instance", "compute_instance")}
    assert len(gi_changes) <= 2  # the old instance goes, the new +me one comes


def test_a_second_config_claiming_held_slices_is_refused_naming_both_owners(
    applied: tuple[Host, HostState], tmp_path: Path,
) -> None:
    host, _ = applied
    ledger = GPUResourceAllocator.for_state_dir(host.state_dir()).read()
    assert ledger.owner_of("gi_placement", f"{GPU}/0") is not None
    assert len(set(ledger.claims.values())) == 7
    # another config (its own metadata.name: a config is identified by it) with an HPC
    # cluster managing the same GPU would take (delete and re-make) the slices
    other = _variant(tmp_path, CONFIG, lambda t: t.replace('name: "hpc"', 'name: "lab"')
                     .replace('name: "mig-workstation"', 'name: "lab-workstation"'))
    with pytest.raises(ResolveError) as err:
        host.plan(other)
    text = str(err.value)
    assert re.search(r"held by hpc/hpc-compute-0\d", text), text
    assert re.search(r"lab/lab-compute-0\d", text), text
    # and a node pinned onto one held slice of a GPU it does not manage
    pinned = _variant(tmp_path, CONFIG, lambda t: t.replace('name: "hpc"', 'name: "lab"')
                      .replace('name: "mig-workstation"', 'name: "lab-workstation"')
                      .replace('name: "k8s"', 'name: "k8s2"')
                      .replace("  gpus:\n    - select: \"0000:17:00.0\"    # the A100; GPUs not "
                               "listed here are never touched\n      mig: enabled\n",
                               "  gpus: []\n")
                      .replace("gpu_config: {mode: mig, mig_profile: 1g.5gb}",
                               f'gpu_config: {{mode: mig, mig_profile: 1g.5gb, gpu: "{GPU}", '
                               "placement: 0}", 1))
    holder = ledger.owner_of("gi_placement", f"{GPU}/0")
    with pytest.raises(ResolveError, match=rf"lab-compute-01 .*gi_placement\[{GPU}/0\] is held "
                       rf"by {holder}.*cannot also go to lab/lab-compute-01"):
        host.plan(pinned)


def test_after_a_reboot_apply_brings_the_same_slices_back_to_the_same_domains(
    applied: tuple[Host, HostState],
) -> None:
    host, before = applied
    aihow("sim", "reboot", str(host.dir), ok=True)
    lost = host.probe()
    assert lost.mdevs == () and lost.gpus[0].gpu_instances == ()
    assert len(lost.domains) == 9  # persistent definitions survive
    plan = host.plan()
    assert not [a for a in changes(plan) if a.kind in ("domain", "hostdev")]
    result = host.apply(plan)
    assert result.outcome == "applied", result.failed
    after = host.probe()
    assert {d.name: d.hostdevs for d in after.domains} == {
        d.name: d.hostdevs for d in before.domains}
    assert {(m.uuid, m.parent, m.type_id) for m in after.mdevs} == {
        (m.uuid, m.parent, m.type_id) for m in before.mdevs}
    assert [(g.profile_name, g.placement_start) for g in after.gpus[0].gpu_instances] == [
        (g.profile_name, g.placement_start) for g in before.gpus[0].gpu_instances]
    assert changes(host.plan()) == []


# The operation each kind of action performs first, by the name ``aihow sim fail`` knows.
FAULT_OP = {
    "mig_mode": "nvmlDeviceSetMigMode",
    "gpu_instance": "nvmlDeviceCreateGpuInstanceWithPlacement",
    "compute_instance": "nvmlGpuInstanceCreateComputeInstanceWithPlacement",
    "sriov": "sriov-manage",
    "vgpu": "sysfs.mdev_create",
    "domain": "virDomainDefineXML",
    "hostdev": "virDomainAttachDeviceFlags",
    "network": "virNetworkDefineXML",
    "pool": "virStoragePoolDefineXML",
    "volume": "virStorageVolCreateXML",
    "running": "virDomainCreate",
}


# Counted operations a step calls besides its FAULT_OP: libvirt's test driver cannot
# attach an mdev hostdev, so the handler redefines the domain too.
EXTRA_CALLS = {"hostdev": ("virDomainDefineXML",)}


def ops_per_step(host: Host) -> dict[str, int]:
    """How many calls of its FAULT_OP each step of a clean apply made: one, plus, for a
    vGPU, one per placeholder it needed so that the driver picked the planned GI (the
    journal's ``placeholders_on_gi_ids``)."""
    result = host.apply(host.plan())
    assert result.outcome == "applied", result.failed
    address_of: dict[str, str] = {}
    out: dict[str, int] = {}
    for path in archived_journals(host.state_dir()):
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if rec.get("type") == "intent" and rec.get("op") == "do":
                address_of[rec["action_id"]] = rec["address"]
            elif rec.get("type") == "done" and rec.get("op") == "do":
                extra = len((rec.get("result") or {}).get("placeholders_on_gi_ids", []))
                out[address_of[rec["action_id"]]] = 1 + extra
    return out


# One apply per step, each running the simulated sriov-manage (a Python process) as the
# real script runs: 160 s on a quiet 2-core machine, so more room than the default.
@pytest.mark.timeout(900)
def test_a_fault_at_every_step_of_the_apply_rolls_back_to_the_start(tmp_path: Path) -> None:
    """One host, one plan: for every action position, arm a fault on the operation that
    action performs (counted among the calls of the same operation before it, placeholders
    included), apply, and check the failure hit that very step and the rollback reached the
    starting fingerprint. The host is back at the start after each round, so it is reused."""
    calls = ops_per_step(Host(tmp_path / "twin"))
    host = Host(tmp_path / "sim")
    start = fingerprint(host.probe(), host.cfg)
    plan = host.plan()
    steps = changes(plan)
    assert {a.kind for a in steps} == set(FAULT_OP)
    assert any(n > 1 for n in calls.values())  # the example needs placeholders somewhere
    seen: dict[str, int] = {}
    for a in steps:
        op = FAULT_OP[a.kind]
        # The step's last call of its operation (a vGPU's placeholders come first), in
        # plan order, so the Nth call of an operation is the Nth such step of the plan
        # (in parallel, steps of different domains run in whichever order they get to).
        at = seen.get(op, 0) + calls[a.address]
        aihow("sim", "fail", str(host.dir), "--clear", ok=True)
        aihow("sim", "fail", str(host.dir), "--op", op, "--at", str(at), ok=True)
        seen[op] = at
        for called in EXTRA_CALLS.get(a.kind, ()):
            seen[called] = seen.get(called, 0) + 1
        result = host.apply(plan, parallel=False)
        assert result.outcome == "rolled-back", (a.address, result.outcome, result.failed)
        assert [addr for addr, _ in result.failed] == [a.address], (a.address, result.failed)
        assert result.back_at_start, a.address
        state = host.probe()
        assert fingerprint(state, host.cfg) == start, a.address
        assert state.domains == () and state.mdevs == (), a.address
        assert SimMdevDefinitions(host.dir).list_defined() == (), a.address
    aihow("sim", "fail", str(host.dir), "--clear", ok=True)
    assert host.apply(plan).outcome == "applied"


def test_h100_vfio_vf_from_nothing_then_replan_and_reboot(tmp_path: Path) -> None:
    host = Host(tmp_path / "sim", H100_CONFIG, "sim-h100.toml")
    result = host.apply(host.plan())
    assert result.outcome == "applied", result.failed
    state = host.probe()
    assigned = {p.pci: p for p in state.vgpu_parents if p.current_type}
    assert len(assigned) == 7 and len({p.gi_id for p in assigned.values()}) == 7
    assert len(state.domains) == 9
    held = sorted(h.pci for d in state.domains for h in d.hostdevs)
    assert held == sorted(assigned) and all(
        h.type == "pci" for d in state.domains for h in d.hostdevs)
    assert changes(host.plan()) == []  # VFs already holding a node's vGPU are reused
    aihow("sim", "reboot", str(host.dir), ok=True)
    assert host.apply(host.plan()).outcome == "applied"
    again = host.probe()
    assert {d.name: d.hostdevs for d in again.domains} == {
        d.name: d.hostdevs for d in state.domains}
    assert changes(host.plan()) == []


def test_a_vm_on_the_wrong_gpu_instance_is_drift_the_plan_repairs(tmp_path: Path) -> None:
    """Two vGPUs of placement-pinned VMs, re-made by hand in the other order, land on each
    other's GI (the driver takes the lowest free GI id). With their VMs running NVML shows
    it, and the plan replaces both vGPUs to put each VM back on its pinned GI."""
    text = CONFIG.read_text()
    for k in range(7):  # pin every node: placement k
        text = text.replace("gpu_config: {mode: mig, mig_profile: 1g.5gb}",
                            f"gpu_config: {{mode: mig, mig_profile: 1g.5gb, placement: {k}}}", 1)
    pinned = tmp_path / "pinned.yaml"
    pinned.write_text(text)
    host = Host(tmp_path / "sim", pinned)
    assert host.apply(host.plan()).outcome == "applied"
    a, b = sorted(host.probe().mdevs, key=lambda m: m.gi_id or 0)[:2]  # a has the lower GI id
    users = [d.name for d in host.probe().domains
             if {h.key for h in d.hostdevs} & {a.uuid, b.uuid}]
    with open_environment(host.uri).libvirt() as s:  # they run (auto_start): stop them
        for name in users:
            lo.shut_down_domain(s.conn, name, timeout=10)
        s.commit()
    for m in (a, b):
        sysfs_write(host.dir, f"bus/mdev/devices/{m.uuid}/remove", "1")
    for m in (b, a):  # b first: it takes a's GI, a gets b's
        sysfs_write(host.dir, f"bus/pci/devices/{m.parent}/mdev_supported_types/{m.type_id}/"
                    "create", m.uuid)
    with open_environment(host.uri).libvirt() as s:
        for dom in s.conn.listAllDomains():
            if a.uuid in dom.XMLDesc(0) or b.uuid in dom.XMLDesc(0):
                dom.create()
        s.commit()
    seen = {m.uuid: (m.gi_id, m.gi_from) for m in host.probe().mdevs}
    assert seen[a.uuid] == (b.gi_id, "nvml") and seen[b.uuid] == (a.gi_id, "nvml")
    replaced = {c.address: (c.before.gi, c.after.gi) for c in changes(host.plan())
                if c.kind == "vgpu"}
    assert set(replaced) == {f"vgpu[{a.uuid}]", f"vgpu[{b.uuid}]"}
    assert all(before != after for before, after in replaced.values())
