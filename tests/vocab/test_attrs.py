"""One attribute model per kind: what plan-making writes is what the handlers read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from planner.vocab import (
    AttrsError,
    ComputeInstanceAttrs,
    DomainAttrs,
    GpuInstanceAttrs,
    HostdevAttrs,
    Kind,
    MigModeAttrs,
    SriovAttrs,
    VgpuAttrs,
    VmAttrs,
    attrs_as,
    attrs_from_json,
)
from planner.vocab.plan import Change

ROOT = Path(__file__).resolve().parents[2]

SAMPLES = [
    (Kind.MIG_MODE, MigModeAttrs.of(True, False)),
    (Kind.GPU_INSTANCE, GpuInstanceAttrs("3g.20gb", 4, 4)),
    (Kind.COMPUTE_INSTANCE, ComputeInstanceAttrs("1c.3g.20gb", 0, 1)),
    (Kind.SRIOV, SriovAttrs(True)),
    (Kind.VGPU, VgpuAttrs("mdev", "0000:17:00.0", "0000:17:00.4", None, "NVIDIA A100-1-5C")),
    (Kind.HOSTDEV, HostdevAttrs("hpc-compute-01", "pci", "0000:65:00.4")),
    (Kind.DOMAIN, DomainAttrs("hpc-compute-01", "running")),
    (Kind.DOMAIN, DomainAttrs("hpc-compute-01", "shut off", cluster="hpc", xml="<domain/>")),
    (Kind.DOMAIN, VmAttrs("hpc-compute-01", "hpc", "compute", 8, 16, 100, "virbr100", None,
                          (("0000:01:00.1", "other"),), (("data", "/srv/d", True),),
                          "clusters.hpc.compute_nodes[0]")),
]


@pytest.mark.parametrize("kind,attrs", SAMPLES, ids=[f"{k}-{type(a).__name__}" for k, a in SAMPLES])
def test_json_round_trip(kind: Kind, attrs: object) -> None:
    data = attrs.to_json()  # type: ignore[attr-defined]
    again = attrs_from_json(kind, json.loads(json.dumps(data)))
    assert again == attrs
    assert again.to_json() == data


def test_the_json_is_the_plan_files_since_format_1() -> None:
    assert MigModeAttrs.of(True, True).to_json() == {"mode": "enabled", "pending": "enabled"}
    assert DomainAttrs("a", "running").to_json() == {"name": "a", "state": "running"}
    vm = SAMPLES[-1][1].to_json()  # type: ignore[attr-defined]
    assert vm["passthrough"] == [["0000:01:00.1", "other"]] and vm["base_image_path"] is None
    # every before/after in the committed example plans reads back to the same values
    for path in sorted((ROOT / "plans").glob("*.json")):
        for line in json.loads(path.read_text())["actions"]:
            for side in ("before", "after"):
                if line[side] is not None:
                    assert attrs_from_json(Kind(line["kind"]), line[side]).to_json() == \
                        line[side], (path.name, line["address"], side)


def test_compared_attributes_decide_a_change() -> None:
    a = VgpuAttrs("mdev", "g", "0000:17:00.4", "nvidia-778", "NVIDIA A100-1-5C", "1g.5gb@0")
    b = VgpuAttrs("mdev", "g", "0000:17:00.4", "nvidia-779", "NVIDIA A100-1-5C", "1g.5gb@0")
    assert a.compared() == b.compared()  # a type id alone is not a change (ids differ by board)
    named = VgpuAttrs("mdev", "g", "0000:17:00.4", None, "GRID A100-1-5C", "1g.5gb@0")
    assert a.compared() == named.compared()  # the type name is for display only
    c = VgpuAttrs("mdev", "g", "0000:17:00.4", None, "NVIDIA A100-1-5CME", "1g.5gb+me@0")
    assert a.compared() != c.compared()  # the backing instance decides
    assert DomainAttrs("x", "running").compared() == DomainAttrs("x", "shut off").compared()


def test_wrong_or_missing_attributes_are_refused_naming_what() -> None:
    with pytest.raises(AttrsError, match="gpu_instance attributes: size: Field required"):
        attrs_from_json(Kind.GPU_INSTANCE, {"profile": "1g.5gb", "start": 0})
    with pytest.raises(AttrsError, match="mode"):
        attrs_from_json(Kind.MIG_MODE, {"mode": "maybe", "pending": "enabled"})
    with pytest.raises(AttrsError, match="sriov attributes: vfs: Unexpected"):
        attrs_from_json(Kind.SRIOV, {"enabled": True, "vfs": 4})
    with pytest.raises(AttrsError, match=r"vgpu\[x\]: expected VgpuAttrs, the plan holds "
                                          "SriovAttrs"):
        attrs_as(SriovAttrs(True), VgpuAttrs, "vgpu[x]")
    assert attrs_as(None, VgpuAttrs, "vgpu[x]") is None


def test_a_change_reads_its_sides_as_its_kinds_model() -> None:
    base = {"id": 1, "kind": "gpu_instance", "action": "create", "before": None,
            "reason": "r", "reason_code": "wanted", "branch": "0000:17:00.0"}
    c = Change.model_validate({**base, "address": "gpu[0000:17:00.0].gi[1g.5gb@0]",
                               "after": {"profile": "1g.5gb", "start": 0, "size": 1}})
    assert c.after == GpuInstanceAttrs("1g.5gb", 0, 1) and c.address.gi_slot is not None
    with pytest.raises(ValidationError, match="is not a gpu_instance address"):
        Change.model_validate({**base, "address": "gpu[0000:17:00.0].mig",
                               "after": {"profile": "1g.5gb", "start": 0, "size": 1}})
    with pytest.raises(ValidationError, match="not PROFILE@START"):
        Change.model_validate({**base, "address": "gpu[0000:17:00.0].gi[1g.5gb]",
                               "after": {"profile": "1g.5gb", "start": 0, "size": 1}})
    with pytest.raises(ValidationError, match="only a replace, has a delete_step"):
        Change.model_validate({**base, "address": "gpu[0000:17:00.0].gi[1g.5gb@0]",
                               "after": {"profile": "1g.5gb", "start": 0, "size": 1},
                               "delete_step": {"id": 1}})
