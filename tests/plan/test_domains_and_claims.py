"""Domains in the plan (define the missing, never redefine, delete only what aihow
defined for the config's clusters) and allocation-ledger claims (a slice another
cluster holds is refused, naming both owners)."""

from __future__ import annotations

from typing import Any

import pytest
from hosts import A100, domain, gi, gpu, host, mdev, node, pci, type_id, vf, vfs

from planner.host.records import DefinedDomain, HostRecords
from planner.plan.make import plan_requests
from planner.plan.request import Requests, SliceRequest, VmRequest, mdev_uuid
from planner.plan.resolve import ResolveError
from planner.vocab import VmAttrs

G17 = pci(0x17)


def vm(name: str, cluster: str = "hpc") -> VmRequest:
    attrs = VmAttrs(name=name, cluster=cluster, role="compute", cpu_cores=2, memory_gb=4,
                    disk_gb=20, bridge="virbr100", base_image_path=None, passthrough=(),
                    virtio_fs=(), key_path=f"clusters.{cluster}.x")
    return VmRequest(name=name, cluster=cluster, key=f"clusters.{cluster}.x", attrs=attrs)


def plan(state: Any, *slices: SliceRequest, vms: tuple[VmRequest, ...] = (),
         records: HostRecords | None = None) -> Any:
    clusters = tuple(sorted({v.cluster for v in vms}))
    req = Requests(slices=slices, vms=vms, clusters=clusters)
    return plan_requests(req, state, config_path="c.yaml", config_sha256="0" * 64,
                         host_uri=state.uri, records=records or HostRecords())


def by_address(p: Any) -> dict[str, Any]:
    return {a.address: a for a in p.actions}


def test_missing_domains_are_defined_before_their_hostdev_is_attached() -> None:
    state = host(gpu(0x17, instances=[gi("1g.5gb", 0)]), parents=vfs(0x17))
    p = plan(state, node("hpc-compute-01", "1g.5gb"),
             vms=(vm("hpc-compute-01"), vm("hpc-controller")))
    a = by_address(p)
    define = a["domain[hpc-compute-01]"]
    assert define.action == "create" and define.after.cpu_cores == 2
    assert "define VM hpc-compute-01" in define.reason
    assert a["domain[hpc-controller]"].action == "create"  # a VM without a GPU too
    attach = a[f"domain[hpc-compute-01].hostdev[{mdev_uuid('hpc/hpc-compute-01/gpu0')}]"]
    assert define.id in attach.depends_on and define.id < attach.id


def test_an_existing_domain_is_never_redefined_only_its_hostdev_planned() -> None:
    state = host(gpu(0x17, instances=[gi("1g.5gb", 0)]), parents=vfs(0x17),
                 domains=[domain("hpc-compute-01", running=True)])
    p = plan(state, node("hpc-compute-01", "1g.5gb"), vms=(vm("hpc-compute-01"),))
    a = by_address(p)
    assert a["domain[hpc-compute-01]"].action == "no-op"
    assert "never redefined" in a["domain[hpc-compute-01]"].reason
    changed = {x.kind for x in p.actions if x.action != "no-op"}
    assert "domain" not in changed and "hostdev" in changed


def _defined(name: str, cluster: str = "hpc") -> DefinedDomain:
    return DefinedDomain(name, cluster, f"<domain><name>{name}</name></domain>")


def test_only_a_dropped_domain_aihow_defined_for_the_configs_clusters_is_deleted() -> None:
    state = host(gpu(0x17), domains=[domain("hpc-compute-01", running=False),
                                     domain("hpc-compute-02", running=False),
                                     domain("hpc-legacy", running=False),
                                     domain("lab-compute-01", running=False)])
    records = HostRecords(defined={"hpc-compute-02": _defined("hpc-compute-02"),
                                   "lab-compute-01": _defined("lab-compute-01", "lab")})
    p = plan(state, vms=(vm("hpc-compute-01"),), records=records)
    a = by_address(p)
    gone = a["domain[hpc-compute-02]"]
    assert gone.action == "delete" and gone.before.xml.startswith("<domain>")
    assert "no longer declares it" in gone.reason and not gone.destructive
    assert "domain[hpc-legacy]" not in a  # not defined by aihow: never touched
    assert "domain[lab-compute-01]" not in a  # another cluster's: never touched


def test_deleting_a_running_domain_is_destructive_and_says_so() -> None:
    state = host(gpu(0x17), domains=[domain("hpc-compute-02", running=True)])
    p = plan(state, vms=(vm("hpc-compute-01"),),
             records=HostRecords(defined={"hpc-compute-02": _defined("hpc-compute-02")}))
    gone = by_address(p)["domain[hpc-compute-02]"]
    assert gone.action == "delete" and gone.destructive
    assert "only with --restart-running-vms" in gone.reason
    stop = by_address(p)["domain[hpc-compute-02].running"]  # its own step, before
    assert stop.action == "delete" and stop.reason_code == "stop-vm"
    assert stop.id in gone.depends_on


def test_a_slice_another_cluster_holds_is_refused_naming_both_owners() -> None:
    state = host(gpu(0x17, instances=[gi("1g.5gb", 0)]), parents=vfs(0x17))
    claims = {("gi_placement", f"{G17}/0"): "lab/lab-compute-01"}
    with pytest.raises(ResolveError, match=r"hpc-compute-01 .*gi_placement\[0000:17:00.0/0\] "
                       r"is held by lab/lab-compute-01.*cannot also go to hpc/hpc-compute-01"):
        plan(state, node("hpc-compute-01", "1g.5gb", gpu=G17, placement=0),
             vms=(vm("hpc-compute-01"),), records=HostRecords(claims=claims))
    # unpinned, the node is placed elsewhere: the held instance is left to its owner
    p = plan(state, node("hpc-compute-01", "1g.5gb"), vms=(vm("hpc-compute-01"),),
             records=HostRecords(claims=claims))
    made = [a.address for a in p.actions if a.kind == "gpu_instance" and a.action == "create"]
    assert made and f"gpu[{G17}].gi[1g.5gb@0]" not in made
    # the config's own clusters' claims never block it (it is the truth for them)
    own = {("gi_placement", f"{G17}/0"): "hpc/hpc-compute-09"}
    plan(state, node("hpc-compute-01", "1g.5gb", gpu=G17, placement=0),
         vms=(vm("hpc-compute-01"),), records=HostRecords(claims=own))


def test_a_held_vgpu_device_is_refused() -> None:
    u = mdev_uuid("hpc/hpc-compute-01/gpu0")
    state = host(gpu(0x17, instances=[gi("1g.5gb", 0, gi_id=7)]), parents=vfs(0x17),
                 mdevs=[mdev(u, vf(0x17, 0), type_id(A100, "1g.5gb"), gi_id=7)])
    with pytest.raises(ResolveError, match=rf"vgpu\[{u}\] is held by lab/lab-compute-01"):
        plan(state, node("hpc-compute-01", "1g.5gb"), vms=(vm("hpc-compute-01"),),
             records=HostRecords(claims={("vgpu", u): "lab/lab-compute-01"}))


def test_a_vf_already_holding_the_nodes_vgpu_is_kept_though_it_lists_no_types() -> None:
    """An assigned vfio-vf VF offers no creatable type (the driver lists none once a type
    is set, and a full GPU offers none on the free VFs either): re-planning must keep the
    VF the node's domain holds, named by the catalog, not look for a free one."""
    from hosts import manage

    from planner.host.state import VgpuParent

    pf = pci(0x17)
    assigned = VgpuParent(pci=vf(0x17, 0), physfn=pf, backend="vfio-vf",
                          current_type=type_id(A100, "1g.5gb", "vfio-vf"), gi_id=7)
    free = VgpuParent(pci=vf(0x17, 1), physfn=pf, backend="vfio-vf")
    state = host(gpu(0x17, instances=[gi("1g.5gb", 0, gi_id=7)]), parents=[assigned, free],
                 domains=[domain("hpc-compute-01", vf(0x17, 0), running=False)],
                 backend="vfio-vf")
    req = Requests(policies=(manage(pf),), slices=(node("hpc-compute-01", "1g.5gb"),),
                   vgpu_backend="vfio-vf")
    p = plan_requests(req, state, config_path="c.yaml", config_sha256="0" * 64,
                      host_uri=state.uri)
    assert [a.address for a in p.actions if a.action != "no-op"] == []
    (v,) = [a for a in p.actions if a.kind == "vgpu"]
    assert v.address == f"vgpu[{vf(0x17, 0)}]" and v.before.type_name == "NVIDIA A100-1-5C"
