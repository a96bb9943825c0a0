from __future__ import annotations

import json

from planner.host.render import host_state_json, render_host_state, slice_bar
from planner.host.state import (
    ComputeInstance,
    Domain,
    Gpu,
    GpuInstance,
    Hostdev,
    HostState,
    Mdev,
    VgpuParent,
)


def _gpu(**kw: object) -> Gpu:
    base: dict[str, object] = {
        "index": 0, "pci": "0000:17:00.0", "uuid": "GPU-1", "name": "NVIDIA A100-SXM4-40GB",
        "model": "a100-40gb", "mig_capable": True, "mig_current": True, "mig_pending": True,
    }
    base.update(kw)
    return Gpu.model_validate(base)


GIS = (
    GpuInstance(gi_id=1, profile_id=5, profile_name="4g.20gb", placement_start=0,
                placement_size=4,
                compute_instances=(ComputeInstance(ci_id=0, profile_id=3, placement_start=0,
                                                   placement_size=4, mig_uuid="MIG-a"),)),
    GpuInstance(gi_id=13, profile_id=19, profile_name="1g.5gb", placement_start=6,
                placement_size=1),
)


def test_slice_bar_draws_each_instance_over_its_slices() -> None:
    ruler, bar = slice_bar(_gpu(gpu_instances=GIS))
    assert ruler.split() == [str(i) for i in range(8)]
    # 4g box is 4 cells wide, then two free slices, the 1g box, one free slice.
    assert bar == "[4g.20gb" + " " * 23 + "]" + "   .    " * 2 + "[1g.5gb]" + "   ."
    assert bar.index("[1g.5gb]") == ruler.index("6")


def test_text_shows_mode_pending_instances_and_domains() -> None:
    state = HostState(
        uri="sim:/x", driver_version="550.54.15", vgpu_backend="mdev",
        gpus=(_gpu(gpu_instances=GIS),
              _gpu(index=1, pci="0000:31:00.0", uuid="GPU-2", mig_current=False,
                   mig_pending=True)),
        vgpu_parents=(VgpuParent(pci="0000:17:00.4", physfn="0000:17:00.0", backend="mdev"),),
        mdevs=(Mdev(uuid="u1", parent="0000:17:00.4", type_id="nvidia-474", gi_id=13,
                    gi_from="nvml"),
               Mdev(uuid="u2", parent="0000:17:00.4", type_id="nvidia-474")),
        domains=(Domain(name="vm1", uuid="d1", state="running",
                        hostdevs=(Hostdev(type="mdev", uuid="u1"),)),),
    )
    text = render_host_state(state)
    assert "GPU 0  0000:17:00.0  NVIDIA A100-SXM4-40GB  [a100-40gb]" in text
    assert "MIG      disabled (pending: enabled after a GPU reset)" in text
    assert "GI 13  1g.5gb       profile 19  placement 6:1" in text
    assert "CI 0   profile 3   placement 0:4  MIG-a" in text
    # each vGPU's backing GI, where it sits and how aihow knows it
    assert "u1  0000:17:00.4  nvidia-474  on GI 13 (1g.5gb@6, nvml)" in text
    assert "u2  0000:17:00.4  nvidia-474  on an unknown GPU instance" in text
    assert "vm1" in text and "mdev u1" in text


def test_json_is_canonical_and_round_trips() -> None:
    state = HostState(uri="sim:/x", gpus=(_gpu(gpu_instances=GIS),))
    text = host_state_json(state)
    assert text.endswith("}\n")
    assert HostState.model_validate(json.loads(text)) == state
    assert text == host_state_json(HostState.model_validate_json(text))
    keys = list(json.loads(text))
    assert keys == sorted(keys)
