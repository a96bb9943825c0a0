"""The apply handlers for hostdev and domain actions, on a simulated host's libvirt."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from planner.apply.domain_handlers import HostdevHandler
from planner.apply.handler_table import HANDLERS, handler_for, observe
from planner.apply.handlers import ActionFailed, ApplyContext, Step
from planner.apply.steps import expand
from planner.cli.host_opts import open_environment
from planner.host import libvirt_domains as ld
from planner.host.environment import LocalEnvironment
from planner.host.records import defined_by_aihow
from planner.host.state import Domain, Hostdev, HostState
from planner.host.sysfs import Sysfs
from planner.vm.vm_factory import VMFactory, VMSpec
from planner.vocab import Kind
from planner.vocab.plan import Change

U1 = "11111111-2222-4333-8444-555555555555"


def step(address: str, kind: str, op: str, before: Any, after: Any) -> Step:
    """The one step of a plan change, read from JSON values as a plan file holds them."""
    change = Change.model_validate({
        "id": 1, "address": address, "kind": kind, "action": op, "before": before,
        "after": after, "reason": "test", "reason_code": "wanted", "branch": "host"})
    (only,) = expand(change)
    return only


def action(name: str, key: str, kind: str = "mdev", op: str = "create") -> Step:
    attrs = {"domain": name, "type": kind, "device": key}
    return step(f"domain[{name}].hostdev[{key}]", "hostdev", op,
                None if op == "create" else attrs, attrs if op == "create" else None)


@pytest.fixture
def sim(tmp_path: Path) -> Path:
    d = tmp_path / "sim"
    d.mkdir()
    with open_environment(f"sim:{d}").libvirt() as s:
        for name in ("hpc-compute-01", "hpc-compute-02"):
            spec = VMSpec(
                name=name,
                cluster_name="hpc",
                role="compute",
                cpu_cores=2,
                memory_gb=4,
                disk_gb=20,
                bridge="virbr100",
            )
            ld.define(s.conn, VMFactory().domain_xml(spec))
        s.commit()
    return d


def ctx(sim: Path) -> ApplyContext:
    return ApplyContext(open_environment(f"sim:{sim}"))


def domains_only(sim: Path) -> HostState:
    """The libvirt part of the host's state (the directory holds no simulated GPU)."""
    from planner.host.libvirt_read import read_domains

    with open_environment(f"sim:{sim}").libvirt(read_only=True) as s:
        return HostState(uri=f"sim:{sim}", domains=read_domains(s.conn))


def hostdevs(sim: Path, name: str) -> tuple[Hostdev, ...]:
    with open_environment(f"sim:{sim}").libvirt() as s:
        return ld.persistent_hostdevs(s.conn, name)


def test_create_attaches_and_undo_detaches_idempotently(sim: Path) -> None:
    h = HostdevHandler()
    a = action("hpc-compute-01", U1)
    c = ctx(sim)
    facts = h.ensure(c, a, "after")
    assert facts == {"attached": U1, "domain": "hpc-compute-01", "pending_restart": False}
    c.close()
    assert hostdevs(sim, "hpc-compute-01") == (Hostdev(type="mdev", uuid=U1),)
    c = ctx(sim)
    assert h.ensure(c, a, "after") == {"already": True}  # recover may run it twice
    assert h.ensure(c, a, "before")["detached"] == U1
    assert h.ensure(c, a, "before") == {"already": True}
    c.close()
    assert hostdevs(sim, "hpc-compute-01") == ()


def test_vf_hostdev_and_delete_action(sim: Path) -> None:
    h = HostdevHandler()
    c = ctx(sim)
    h.ensure(c, action("hpc-compute-02", "0000:17:00.4", "pci"), "after")
    assert hostdevs(sim, "hpc-compute-02") == (Hostdev(type="pci", pci="0000:17:00.4"),)
    delete = action("hpc-compute-02", "0000:17:00.4", "pci", op="delete")
    assert h.inverse(delete) == "attach pci 0000:17:00.4 to hpc-compute-02"
    h.ensure(c, delete, "after")
    assert hostdevs(sim, "hpc-compute-02") == ()
    c.close()


def test_running_domain_keeps_running_and_the_change_is_pending(sim: Path) -> None:
    with open_environment(f"sim:{sim}").libvirt() as s:
        ld.start(s.conn, "hpc-compute-01")
        s.commit()
    c = ctx(sim)
    facts = HostdevHandler().ensure(c, action("hpc-compute-01", U1), "after")
    c.close()
    assert facts["pending_restart"] is True
    with open_environment(f"sim:{sim}").libvirt() as s:
        assert s.conn.lookupByName("hpc-compute-01").isActive()


def test_missing_domain_is_a_clear_failure(sim: Path) -> None:
    with pytest.raises(ActionFailed, match=r"domain\[hpc-compute-09\].*is not defined"):
        HostdevHandler().ensure(ctx(sim), action("hpc-compute-09", U1), "after")
    # Undoing an attach on a domain that is gone is already done.
    assert HostdevHandler().ensure(ctx(sim), action("hpc-compute-09", U1), "before")["already"]


def test_observe_and_preflight_read_the_probed_host() -> None:
    h = HostdevHandler()
    a = action("hpc-compute-01", U1)
    none = HostState(
        uri="sim:x", domains=(Domain(name="hpc-compute-01", uuid="u", state="shut off"),)
    )
    held = HostState(
        uri="sim:x",
        domains=(
            Domain(name="hpc-compute-01", uuid="u", state="shut off"),
            Domain(
                name="hpc-compute-02",
                uuid="v",
                state="running",
                hostdevs=(Hostdev(type="mdev", uuid=U1),),
            ),
        ),
    )
    mine = HostState(
        uri="sim:x",
        domains=(
            Domain(
                name="hpc-compute-01",
                uuid="u",
                state="shut off",
                hostdevs=(Hostdev(type="mdev", uuid=U1),),
            ),
        ),
    )
    assert observe(none, a) == "before"
    assert observe(mine, a) == "after"
    assert h.preflight(none, a.change, ApplyContext(open_environment("sim:x"))) == []
    (problem,) = h.preflight(held, a.change, ApplyContext(open_environment("sim:x")))
    assert "already attached to domain hpc-compute-02" in problem


def test_the_handler_table_covers_every_kind() -> None:
    assert set(HANDLERS) == set(Kind)
    assert isinstance(handler_for(action("hpc-compute-01", U1)), HostdevHandler)


def domain_action(name: str, attrs: Any, op: str = "create") -> Step:
    if attrs is not None and not isinstance(attrs, dict):
        attrs = attrs.to_json()
    return step(f"domain[{name}]", "domain", op, attrs if op == "delete" else None,
                None if op == "delete" else attrs)


def test_domain_create_defines_from_the_plan_and_undo_undefines(sim: Path) -> None:
    from types import SimpleNamespace as NS

    from planner.apply.domain_handlers import DomainHandler
    from planner.vm.vm_factory import domain_attrs

    decl = NS(
        name="k8s-cpu-worker-01",
        cluster_name="k8s",
        role="worker",
        cpu_cores=2,
        memory_gb=4,
        disk_gb=20,
        base_image_path=None,
        bridge="virbr200",
        pcie_devices=(),
        virtio_fs_mounts=(),
        key_path="clusters.cloud.worker_nodes[0]",
    )
    a = domain_action("k8s-cpu-worker-01", domain_attrs(decl))
    h, c = DomainHandler(), ctx(sim)
    assert h.ensure(c, a, "after") == {"defined": "k8s-cpu-worker-01"}
    # rendered from the attributes, marked as aihow's
    with open_environment(f"sim:{sim}").libvirt() as s:
        xml = ld.persistent_xml(s.conn, "k8s-cpu-worker-01")
    assert defined_by_aihow(xml) == "k8s"
    assert "<vcpu placement='static'>2</vcpu>" in xml or ">2</vcpu>" in xml
    assert h.ensure(c, a, "after") == {"already": True}
    # Its vGPU follows through the hostdev action.
    HostdevHandler().ensure(c, action("k8s-cpu-worker-01", U1), "after")
    c.close()
    assert hostdevs(sim, "k8s-cpu-worker-01") == (Hostdev(type="mdev", uuid=U1),)
    assert h.inverse(a) == "undefine domain k8s-cpu-worker-01"
    c = ctx(sim)
    assert h.ensure(c, a, "before") == {"undefined": "k8s-cpu-worker-01"}
    c.close()
    with open_environment(f"sim:{sim}").libvirt() as s:
        assert not ld.domain_exists(s.conn, "k8s-cpu-worker-01")


def _aihow_domain(sim: Path, name: str) -> dict[str, Any]:
    """Define ``name`` as aihow does (marked) and return its delete-side attributes."""
    from planner.vm.vm_factory import VMSpec, render_defined_domain_xml

    spec = VMSpec(name=name, cluster_name="hpc", role="compute", cpu_cores=1, memory_gb=1,
                  disk_gb=1, bridge="virbr100")
    xml = render_defined_domain_xml(spec)
    with open_environment(f"sim:{sim}").libvirt() as s:
        ld.define(s.conn, xml)
        s.commit()
    return {"name": name, "state": "shut off", "cluster": "hpc", "xml": xml}


def test_domain_delete_only_of_a_stopped_domain_aihow_defined(sim: Path) -> None:
    from planner.apply.domain_handlers import DomainHandler

    h = DomainHandler()
    before = _aihow_domain(sim, "hpc-compute-09")
    gone = domain_action("hpc-compute-09", before, "delete")
    assert h.preflight(domains_only(sim), gone.change, ctx(sim)) == []
    c = ctx(sim)
    assert h.ensure(c, gone, "after") == {"undefined": "hpc-compute-09"}
    assert h.ensure(c, gone, "before") == {"defined": "hpc-compute-09"}  # the undo
    c.close()
    with open_environment(f"sim:{sim}").libvirt() as s:  # back exactly as it was
        assert defined_by_aihow(ld.persistent_xml(s.conn, "hpc-compute-09")) == "hpc"
        ld.start(s.conn, "hpc-compute-09")
        s.commit()
    # A plan stops a running domain by its own step (domain[NAME].running) before the
    # undefine, so preflight leaves that to the plan; the undefine itself never stops one.
    assert h.preflight(domains_only(sim), gone.change, ctx(sim)) == []
    with pytest.raises(ActionFailed, match="is running"):
        h.ensure(ctx(sim), gone, "after")


def test_domain_handler_never_deletes_a_domain_aihow_did_not_define(sim: Path) -> None:
    from planner.apply.domain_handlers import DomainHandler

    h = DomainHandler()
    # defined the way ai-how does: no aihow mark
    with open_environment(f"sim:{sim}").libvirt() as s:
        xml = ld.persistent_xml(s.conn, "hpc-compute-01")
    theirs = domain_action("hpc-compute-01",
                           {"name": "hpc-compute-01", "state": "shut off", "xml": xml}, "delete")
    (problem,) = h.preflight(domains_only(sim), theirs.change, ctx(sim))
    assert "was not defined by aihow" in problem
    with pytest.raises(ActionFailed, match="was not defined by aihow"):
        h.ensure(ctx(sim), theirs, "after")
    # undoing a create refuses the same way, and a plan without the VM's attributes is
    # refused when it is read
    with pytest.raises(ActionFailed, match="was not defined by aihow"):
        h.ensure(ctx(sim), domain_action("hpc-compute-01", None), "before")
    with pytest.raises(ValidationError, match="domain attributes"):
        domain_action("hpc-compute-05", {"name": "hpc-compute-05"})
    with open_environment(f"sim:{sim}").libvirt() as s:
        assert ld.domain_exists(s.conn, "hpc-compute-01")


def vgpu_action(key: str, backend: str, parent: str, type_name: str, gi: str | None,
                gpu: str = "0000:65:00.0", op: str = "create") -> Step:
    attrs = {
        "backend": backend,
        "gpu": gpu,
        "parent": parent,
        "type_id": None,
        "type_name": type_name,
        "gi": gi,
    }
    if op == "delete":
        return step(f"vgpu[{key}]", "vgpu", "delete", attrs, None)
    return step(f"vgpu[{key}]", "vgpu", "create", None, attrs)


def vgpu_host(tmp_path: Path, model: str, pci: str, backend: str, *gis: tuple[int, int],
              gi_ids: str = "identity") -> tuple[Path, list[int]]:
    """A simulated host with MIG on, the VFs enabled (sriov-manage) and then the GIs
    ``(profile id, start)`` made through NVML; returns its DIR and the GI ids the driver
    gave."""
    from planner.host.nvml import NvmlHost
    from planner.sim.fake_nvml import FakeNvml
    from planner.sim.host import GpuSpec, HostSpec, init_host
    from planner.sim.sriov_manage import run as sriov_manage

    root = tmp_path / "host"
    init_host(root, HostSpec(gpus=(GpuSpec(model, pci, mig=True, gi_ids=gi_ids),), vgpu=backend))
    assert sriov_manage(str(root), ["-e", pci])[0] == 0
    with NvmlHost(FakeNvml(root)) as host:
        ids = [host.create_gpu_instance(pci, profile, start).gi_id for profile, start in gis]
    return root, ids


def sim_ctx(root: Path) -> ApplyContext:
    return ApplyContext(open_environment(f"sim:{root}"))


@dataclass(frozen=True)
class TreeEnvironment(LocalEnvironment):
    """A bare sysfs tree under ``fs_root`` (no GPU behind it): ``writer`` plays the
    kernel's reaction to writes; ``store`` keeps mdev definitions (default: mdevctl)."""

    writer: Callable[[str, str], None] | None = None
    store: Any = None

    def sysfs(self) -> Sysfs:
        return Sysfs(self.fs_root, writer=self.writer, writable=True)

    def mdev_store(self) -> Any:
        return self.store if self.store is not None else super().mdev_store()


def test_vfio_vf_type_found_by_profile_and_released(tmp_path: Path) -> None:
    """Before the VFs existed the plan could only guess a name; apply picks the type the
    driver maps (through NVML) to the target GI's profile, whatever the name says."""
    from planner.apply.vgpu_handlers import VgpuHandler
    from planner.host.vgpu_bindings import read_bindings

    root, (gi_id,) = vgpu_host(tmp_path, "h100-80gb", "0000:65:00.0", "vfio-vf", (14, 0))
    nv = root / "sys/bus/pci/devices/0000:65:00.4/nvidia"
    line = next(x for x in (nv / "creatable_vgpu_types").read_text().splitlines()
                if x.endswith("H100XM-2-20C"))
    want = line.split(":")[0].strip()
    a = vgpu_action("0000:65:00.4", "vfio-vf", "0000:65:00.4", "GRID H100-2-20C", "2g.20gb@0")
    h, c = VgpuHandler(), sim_ctx(root)
    assert h.ensure(c, a, "after") == {"type_id": want, "gi_id": gi_id}
    assert (nv / "current_vgpu_type").read_text().strip() == want
    assert read_bindings(root / "state")["0000:65:00.4"].gi_id == gi_id
    assert h.ensure(c, a, "after") == {"already": True}
    assert h.ensure(c, a, "before") == {"released_type_id": want}
    assert (nv / "current_vgpu_type").read_text().strip() == "0"
    assert read_bindings(root / "state") == {}


def test_vgpu_lands_on_the_planned_gi_through_placeholders(tmp_path: Path) -> None:
    """Three 1g.5gb GIs; the driver gives a new vGPU the free one with the lowest GI id.
    Asked for the one with the highest id, apply first parks placeholders on the two
    lower ones, then removes them: the vGPU sits where the plan says, and a VM running it
    shows that GI through NVML."""
    from planner.apply.vgpu_handlers import VgpuHandler

    pci = "0000:17:00.0"
    root, ids = vgpu_host(tmp_path, "a100-40gb", pci, "mdev", (19, 0), (19, 1), (19, 2))
    top = max(range(3), key=lambda i: ids[i])  # the start whose GI has the highest id
    a = vgpu_action(U1, "mdev", "0000:17:00.5", "NVIDIA A100-1-5C", f"1g.5gb@{top}", gpu=pci)
    facts = VgpuHandler().ensure(sim_ctx(root), a, "after")
    assert facts["gi_id"] == ids[top] and len(facts["placeholders_on_gi_ids"]) == 2
    state = open_environment(f"sim:{root}").probe()
    assert [m.uuid for m in state.mdevs] == [U1]  # the placeholders are gone
    assert (state.mdevs[0].gi_id, state.mdevs[0].gi_from) == (ids[top], "recorded")
    xml = ("<domain type='test'><name>vm</name><uuid>2f0c6a3e-1b6f-4c5e-9a8b-0d1e2f3a4b5c"
           "</uuid><memory>1024</memory><os><type>hvm</type></os><devices>"
           "<hostdev mode='subsystem' type='mdev' model='vfio-pci'><source>"
           f"<address uuid='{U1}'/></source></hostdev></devices></domain>")
    with open_environment(f"sim:{root}").libvirt() as session:
        session.conn.defineXML(xml).create()
        session.commit()
    (m,) = open_environment(f"sim:{root}").probe().mdevs
    assert (m.gi_id, m.gi_from) == (ids[top], "nvml")  # the driver agrees


def test_vgpu_errors_name_the_resource_and_the_reason(tmp_path: Path) -> None:
    from planner.apply.vgpu_handlers import VgpuHandler

    root, _ = vgpu_host(tmp_path, "h100-80gb", "0000:65:00.0", "vfio-vf", (19, 0))
    a = vgpu_action("0000:65:00.4", "vfio-vf", "0000:65:00.4", "NVIDIA H100XM-1-10C",
                    "1g.10gb@3")
    with pytest.raises(ActionFailed, match=r"^vgpu\[0000:65:00.4\]: GPU instance 1g.10gb@3 "
                                           r"does not exist on 0000:65:00.0"):
        VgpuHandler().ensure(sim_ctx(root), a, "after")
    a = vgpu_action("0000:65:00.5", "vfio-vf", "0000:65:00.5", "NVIDIA H100XM-1-10C",
                    "1g.10gb@0")
    VgpuHandler().ensure(sim_ctx(root), a, "after")
    b = vgpu_action("0000:65:00.6", "vfio-vf", "0000:65:00.6", "NVIDIA H100XM-1-10C",
                    "1g.10gb@0")
    with pytest.raises(ActionFailed, match=r"1g.10gb@0 already backs vGPU 0000:65:00.5"):
        VgpuHandler().ensure(sim_ctx(root), b, "after")


def test_a_vgpu_of_unknown_binding_blocks_the_prediction(tmp_path: Path) -> None:
    """A vGPU made by hand whose VM does not run may hold any GI of its profile: apply
    cannot foresee the driver's pick and says so instead of guessing."""
    from planner.apply.vgpu_handlers import VgpuHandler
    from planner.sim.kernel import sysfs_write

    root, _ = vgpu_host(tmp_path, "h100-80gb", "0000:65:00.0", "vfio-vf", (19, 0), (19, 1))
    nv = root / "sys/bus/pci/devices/0000:65:00.7/nvidia"
    tid = (nv / "creatable_vgpu_types").read_text().splitlines()[1].split(":")[0].strip()
    sysfs_write(root, "bus/pci/devices/0000:65:00.7/nvidia/current_vgpu_type", tid)
    a = vgpu_action("0000:65:00.4", "vfio-vf", "0000:65:00.4", "NVIDIA H100XM-1-10C",
                    "1g.10gb@1")
    with pytest.raises(ActionFailed, match=r"cannot tell which GPU instance vGPU 0000:65:00.7"):
        VgpuHandler().ensure(sim_ctx(root), a, "after")


def test_mig_backed_mdevs_are_not_defined_and_old_definitions_go(tmp_path: Path) -> None:
    """mdevctl cannot keep a MIG-backed mdev (vgpu-on-mig.md section 5): apply creates it
    without a definition; deleting it also undefines one an older aihow made."""
    from planner.apply.vgpu_handlers import VgpuHandler
    from planner.host.mdev_persist import MdevDefinition
    from planner.sim.mdev_store import SimMdevDefinitions

    pci = "0000:17:00.0"
    root, _ = vgpu_host(tmp_path, "a100-40gb", pci, "mdev", (19, 0))
    a = vgpu_action(U1, "mdev", "0000:17:00.4", "NVIDIA A100-1-5C", "1g.5gb@0", gpu=pci)
    facts = VgpuHandler().ensure(sim_ctx(root), a, "after")
    assert "persistent" not in facts and SimMdevDefinitions(root).list_defined() == ()
    SimMdevDefinitions(root).define(MdevDefinition(U1, "0000:17:00.4", facts["type_id"]))
    gone = vgpu_action(U1, "mdev", "0000:17:00.4", "NVIDIA A100-1-5C", "1g.5gb@0", gpu=pci,
                       op="delete")
    assert VgpuHandler().ensure(sim_ctx(root), gone, "after") == {"undefined": U1,
                                                                  "removed": U1}
    assert SimMdevDefinitions(root).list_defined() == ()


def test_old_mdevctl_definition_is_undefined_on_a_real_host(tmp_path: Path) -> None:
    """On ``local`` the delete runs ``mdevctl undefine`` for a definition that exists, then
    removes the mdev (mdevctl itself is faked here)."""
    import json as _json
    import subprocess

    from planner.apply.vgpu_handlers import VgpuHandler
    from planner.host.mdev_persist import Mdevctl

    (tmp_path / f"sys/bus/mdev/devices/{U1}").mkdir(parents=True)
    calls: list[list[str]] = []
    defined = {U1: {"parent": "0000:17:00.4", "mdev_type": "nvidia-474"}}

    def fake_mdevctl(argv: Any) -> subprocess.CompletedProcess[str]:
        argv = list(argv)
        calls.append(argv)
        out = ""
        if argv[1] == "undefine":
            defined.pop(argv[3])
        elif argv[1] == "list":
            out = _json.dumps([{d["parent"]: [{u: {"mdev_type": d["mdev_type"],
                                                   "start": "manual"}}]}
                               for u, d in defined.items()])
        return subprocess.CompletedProcess(argv, 0, out, "")

    def write(rel: str, value: str) -> None:  # the kernel's reaction to remove
        (tmp_path / rel).parent.rmdir()

    c = ApplyContext(TreeEnvironment(fs_root=tmp_path, writer=write,
                                     store=Mdevctl(run=fake_mdevctl)))
    a = vgpu_action(U1, "mdev", "0000:17:00.4", "NVIDIA A100-1-5C", "1g.5gb@0",
                    gpu="0000:17:00.0", op="delete")
    assert VgpuHandler().ensure(c, a, "after") == {"undefined": U1, "removed": U1}
    assert ["mdevctl", "undefine", "-u", U1] in calls and defined == {}



def test_domain_create_never_defines_xml_carried_by_the_plan(sim: Path) -> None:
    """Defence behind apply's vetting: a create defines only what aihow renders from the
    VM's attributes, and an undo re-defines only a definition aihow made."""
    from planner.apply.domain_handlers import DomainHandler

    injected = ("<domain type='kvm'><name>evil</name><memory>1024</memory><os><type>hvm"
                "</type></os><devices><disk type='file' device='disk'><source "
                "file='/etc/shadow'/><target dev='vda'/></disk></devices></domain>")
    h, c = DomainHandler(), ctx(sim)
    forged = domain_action("evil", {"name": "evil", "state": "shut off", "xml": injected})
    with pytest.raises(ActionFailed, match="only from the VM's attributes"):
        h.ensure(c, forged, "after")
    undo = step("domain[evil]", "domain", "delete",
                {"name": "evil", "state": "shut off", "xml": injected}, None)
    with pytest.raises(ActionFailed, match="was not defined by aihow"):
        h.ensure(c, undo, "before")
    c.close()
    with open_environment(f"sim:{sim}").libvirt() as s:
        assert not ld.domain_exists(s.conn, "evil")


@pytest.mark.parametrize("autostart_before", [False, True])
def test_undoing_a_start_puts_back_the_autostart_the_start_found(
        sim: Path, autostart_before: bool) -> None:
    """A rollback puts a started VM back as it was: shut off, with the libvirt autostart
    it had (off, or on for a VM a boot could not start), not the one the start set."""
    from planner.apply.vm_side_handlers import RunningHandler
    from planner.host.libvirt_read import read_domains

    def first() -> Domain:
        with open_environment(f"sim:{sim}").libvirt(read_only=True) as s:
            return read_domains(s.conn, s.autostart)[0]

    with open_environment(f"sim:{sim}").libvirt() as s:
        s.conn.lookupByName("hpc-compute-01").setAutostart(int(autostart_before))
        s.commit()
    a = step("domain[hpc-compute-01].running", "running", "create", None,
             {"domain": "hpc-compute-01", "autostart": True})
    h, c = RunningHandler(), ctx(sim)
    did = h.ensure(c, a, "after")
    assert did == {"running": "hpc-compute-01", "autostart": True,
                   "autostart_before": autostart_before}
    c.close()
    dom = first()
    assert (dom.name, dom.running, dom.autostart) == ("hpc-compute-01", True, True)
    c = ctx(sim)  # (as recover does: what the start returned, read from the journal)
    c.done[a.id] = did
    assert h.ensure(c, a, "before")["stopped"] == "hpc-compute-01"
    c.close()
    dom = first()
    assert (dom.running, dom.autostart) == (False, autostart_before)
