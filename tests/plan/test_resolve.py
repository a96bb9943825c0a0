"""Resolve: which GPU and placement each slice gets, reuse, pins, mig_uuid, errors."""

from __future__ import annotations

import pytest
from hosts import (
    A100,
    acts,
    domain,
    gi,
    gpu,
    host,
    kept,
    make,
    manage,
    mdev,
    node,
    pci,
    type_id,
    vf,
    vfs,
)

from planner.plan.request import Requests, mdev_uuid
from planner.plan.resolve import ResolveError, resolve
from planner.vocab import VgpuAttrs

G17, G18 = pci(0x17), pci(0x18)


def test_reuses_a_free_instance_of_the_profile_instead_of_creating_one() -> None:
    state = host(gpu(0x17, instances=[gi("3g.20gb", 4)]))
    plan = make(state, node("n1", "3g.20gb"), policies=[manage(G17)])
    assert kept(plan) == {f"gpu[{G17}].gi[3g.20gb@4]"}
    assert not acts(plan, "gpu_instance", "compute_instance")


def test_reuse_prefers_the_gpu_holding_a_free_instance_over_an_earlier_empty_gpu() -> None:
    state = host(gpu(0x17), gpu(0x18, index=1, instances=[gi("2g.10gb", 2)]))
    plan = make(state, node("n1", "2g.10gb"), policies=[manage("model=*A100*")])
    assert kept(plan) == {f"gpu[{G18}].gi[2g.10gb@2]"}
    assert not acts(plan, "gpu_instance")


def test_new_instances_go_to_the_lowest_pci_address_deterministically() -> None:
    state = host(gpu(0x18, index=1), gpu(0x17))
    plan = make(state, node("n1", "1g.5gb"), node("n2", "1g.5gb"),
                policies=[manage("model=*A100*")])
    created = [a for a, act in acts(plan, "gpu_instance").items() if act == "create"]
    assert created == [f"gpu[{G17}].gi[1g.5gb@0]", f"gpu[{G17}].gi[1g.5gb@1]"]


def test_node_keeps_the_instance_its_domain_already_uses() -> None:
    own = mdev_uuid("hpc/n2/gpu0")
    state = host(
        gpu(0x17, instances=[gi("1g.5gb", 0), gi("1g.5gb", 5)]),
        mdevs=[mdev(own, vf(0x17, 0), type_id(A100, "1g.5gb"), gi_id=12)],
        domains=[domain("n2", own)],
    )
    res = resolve(Requests(policies=(manage(G17),), slices=(node("n1", "1g.5gb"),
                                                             node("n2", "1g.5gb"))), state)
    by_node = {g.owner.node: g.start for d in res.gpus for g in d.instances}
    assert by_node == {"n2": 5, "n1": 0}
    plan = make(state, node("n1", "1g.5gb"), node("n2", "1g.5gb"), policies=[manage(G17)])
    assert acts(plan, "gpu_instance", "compute_instance") == {}
    assert acts(plan, "vgpu") == {f"vgpu[{mdev_uuid('hpc/n1/gpu0')}]": "create"}


def test_gpu_pin_and_placement_pin_are_honoured() -> None:
    state = host(gpu(0x17), gpu(0x18, index=1))
    plan = make(state, node("n1", "3g.20gb", gpu=G18, placement=4),
                policies=[manage("model=*A100*")])
    assert acts(plan, "gpu_instance") == {f"gpu[{G18}].gi[3g.20gb@4]": "create"}


def test_gpu_pin_by_index_and_by_uuid() -> None:
    state = host(gpu(0x17), gpu(0x18, index=1))
    plan = make(state, node("n1", "1g.5gb", gpu="1"), node("n2", "1g.5gb", gpu=state.gpus[0].uuid),
                policies=[manage("model=*A100*")])
    assert set(acts(plan, "gpu_instance")) == {f"gpu[{G18}].gi[1g.5gb@0]",
                                               f"gpu[{G17}].gi[1g.5gb@0]"}


def test_placement_pin_moves_nothing_else_but_what_is_in_the_way() -> None:
    # 3g.20gb@4 spans slices 4-7: the 1g at 6 is in the way, the ones at 0 and 1 are not.
    state = host(gpu(0x17, instances=[gi("1g.5gb", 0), gi("1g.5gb", 1), gi("1g.5gb", 6)]))
    plan = make(state, node("a", "1g.5gb"), node("b", "1g.5gb"),
                node("n", "3g.20gb", placement=4), policies=[manage(G17)])
    assert acts(plan, "gpu_instance") == {f"gpu[{G17}].gi[1g.5gb@6]": "delete",
                                          f"gpu[{G17}].gi[3g.20gb@4]": "create"}


def test_mig_uuid_binds_the_existing_device_with_that_uuid() -> None:
    uuid = "MIG-11111111-2222-3333-4444-555555555555"
    state = host(gpu(0x17, instances=[gi("2g.10gb", 0), gi("2g.10gb", 2, mig_uuid=uuid)]))
    res = resolve(Requests(policies=(manage(G17),), slices=(node("n1", mig_uuid=uuid),)), state)
    (inst,) = [g for d in res.gpus for g in d.instances]
    assert (inst.start, inst.profile.name, inst.existing is not None) == (2, "2g.10gb", True)
    plan = make(state, node("n1", mig_uuid=uuid), policies=[manage(G17)])
    assert acts(plan, "gpu_instance") == {f"gpu[{G17}].gi[2g.10gb@0]": "delete"}


def test_mig_uuid_missing_is_an_error_naming_the_node() -> None:
    state = host(gpu(0x17))
    with pytest.raises(ResolveError, match=r"n1 .*no MIG device MIG-0000"):
        make(state, node("n1", mig_uuid="MIG-00000000-0000-0000-0000-000000000000"))


def test_impossible_request_names_node_gpus_and_why_with_occupancy() -> None:
    state = host(
        gpu(0x17, instances=[gi("4g.20gb", 0), gi("2g.10gb", 4), gi("1g.5gb", 6)]),
        gpu(0x18, index=1, mig=False),
        gpu(0x19, index=2, capable=False, mig=False),
    )
    with pytest.raises(ResolveError) as err:
        make(state, node("hpc-compute-01", "3g.20gb", key="clusters.hpc.compute_nodes[0]"))
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("hpc-compute-01 (clusters.hpc.compute_nodes[0]): cannot place 3g.20gb")
    assert f"{G17}: no free placement for 3g.20gb [4g.20gb ][2g  ][1g][  ]" in msg
    assert "0000:18:00.0: not listed in global.gpus and MIG is off" in msg
    assert "0000:19:00.0: not MIG-capable" in msg


def test_unknown_profile_for_the_model_is_explained() -> None:
    state = host(gpu(0x17))
    with pytest.raises(ResolveError, match=r"profile 3g\.40gb unknown for NVIDIA A100 40GB"):
        make(state, node("n1", "3g.40gb"), policies=[manage(G17)])


def test_illegal_placement_pin_is_explained() -> None:
    state = host(gpu(0x17))
    with pytest.raises(ResolveError,
                       match=r"3g\.20gb cannot start at slice 2 \(legal starts: 0, 4\)"):
        make(state, node("n1", "3g.20gb", placement=2), policies=[manage(G17)])


def test_selector_matching_no_gpu_is_an_error() -> None:
    state = host(gpu(0x17))
    with pytest.raises(ResolveError,
                       match=r"global\.gpus\[0\]\.select: 0000:99:00\.0 matches no GPU"):
        make(state, policies=[manage("0000:99:00.0")])


def test_two_entries_selecting_one_gpu_is_an_error() -> None:
    state = host(gpu(0x17))
    with pytest.raises(ResolveError, match=r"already selected by global\.gpus\[0\]"):
        make(state, policies=[manage(G17), manage("model=*A100*", i=1)])


def test_layout_that_does_not_fit_is_an_error() -> None:
    state = host(gpu(0x17))
    with pytest.raises(ResolveError, match=r"global\.gpus\[0\]\.layout: 2\*4g\.20gb does not fit"):
        make(state, policies=[manage(G17, "2*4g.20gb")])


def test_mdev_uuids_are_uuid5_of_stable_names_and_parents_are_free_vfs() -> None:
    state = host(gpu(0x17))
    res = resolve(Requests(policies=(manage(G17),), slices=(node("a", "1g.5gb"),
                                                             node("b", "2g.10gb"))), state)
    got = {v.node: (v.key, v.parent, v.type_id) for v in res.vgpus}
    assert got == {
        "a": (mdev_uuid("hpc/a/gpu0"), vf(0x17, 0), type_id(A100, "1g.5gb")),
        "b": (mdev_uuid("hpc/b/gpu0"), vf(0x17, 1), type_id(A100, "2g.10gb")),
    }
    assert mdev_uuid("hpc/a/gpu0") != mdev_uuid("hpc/b/gpu0")


def test_vfio_vf_backend_assigns_a_free_vf_by_address() -> None:
    state = host(gpu(0x17), backend="vfio-vf")
    plan = make(state, node("a", "1g.5gb"), policies=[manage(G17)], backend="vfio-vf")
    assert acts(plan, "vgpu", "hostdev") == {
        f"vgpu[{vf(0x17, 0)}]": "create",
        f"domain[a].hostdev[{vf(0x17, 0)}]": "create",
    }


def test_backend_mismatch_with_the_host_is_an_error() -> None:
    state = host(gpu(0x17), backend="vfio-vf")
    with pytest.raises(ResolveError, match="vgpu_backend: mdev asked for"):
        make(state, node("a", "1g.5gb"), policies=[manage(G17)], backend="mdev")


def test_sriov_off_plans_enabling_the_vfs_before_the_instances_and_vgpu_devices() -> None:
    """sriov-manage wipes a GPU's instances, so the VFs come first (issue 11 item 5)."""
    state = host(gpu(0x17, mig=False), parents=[])
    plan = make(state, node("a", "1g.5gb"), policies=[manage(G17)])
    order = [(a.kind, a.action) for a in plan.actions]
    assert order == [("mig_mode", "update"), ("sriov", "create"), ("gpu_instance", "create"),
                     ("compute_instance", "create"), ("vgpu", "create"),
                     ("hostdev", "create")]
    gi = next(a for a in plan.actions if a.kind == "gpu_instance")
    vgpu = next(a for a in plan.actions if a.kind == "vgpu")
    assert vgpu.after == VgpuAttrs("mdev", G17, vf(0x17, 0), None, "NVIDIA A100-1-5C", "1g.5gb@0")
    sriov = next(a for a in plan.actions if a.kind == "sriov")
    assert sriov.address == f"gpu[{G17}].vfs" and sriov.id in vgpu.depends_on
    assert sriov.id in gi.depends_on


def test_no_free_vf_is_an_error_naming_the_node() -> None:
    foreign = "0f0f0f0f-0000-4000-8000-000000000001"
    state = host(gpu(0x17, instances=[gi("1g.5gb", 0)]), parents=vfs(0x17, count=1),
                 mdevs=[mdev(foreign, vf(0x17, 0), type_id(A100, "1g.5gb"), gi_id=99)])
    with pytest.raises(ResolveError, match=r"a \(.*\): no free mdev SR-IOV VF offering a 1g"):
        make(state, node("a", "1g.5gb"))
