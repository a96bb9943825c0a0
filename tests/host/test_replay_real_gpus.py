"""The real NvmlHost path on NVML answers recorded from real GPUs (issue 11 item 11):
``aihow probe --check-catalog``'s reading and comparison, fed by ``ReplayNvml`` (pynvml's
functions, structs and errors over public outputs, see ``tests/host/replay/``), behind the
read-only view. Anything the simulator assumes plays no part here."""

from __future__ import annotations

import pytest

from planner.host.catalog_check import _check_host, render_checks
from planner.host.nvml import QUERY_FUNCTIONS, NvmlHost, ReadOnlyNvml
from tests.host.replay_nvml import ReplayNvml

RECORDINGS = ("a100-40gb", "a30", "rtx-pro-6000")


@pytest.mark.parametrize("name", RECORDINGS)
def test_recorded_gpus_match_the_catalog(name: str) -> None:
    replay = ReplayNvml.load(name)
    driver, checks = _check_host(ReadOnlyNvml(replay))
    assert driver == replay.recording["driver"]
    (check,) = checks
    assert check.gpu.model == name and check.checked
    assert check.differences == (), render_checks("replay", driver, checks)
    assert check.cis, "the CI profiles of the recorded instances were compared"
    assert set(replay.calls) <= QUERY_FUNCTIONS  # read-only by construction, and checked


def test_real_profile_ids_and_gaps_are_read() -> None:
    """Profile ids are not enums (A100: enum 0 is id 19), enums 5, 6 and 8 are missing in
    the middle of the range, and every CI profile id is read inside a real 3g instance."""
    replay = ReplayNvml.load("a100-40gb")
    with NvmlHost(ReadOnlyNvml(replay)) as host:
        profiles = {p.enum: p for p in host.gi_profiles(0)}
        assert sorted(profiles) == [0, 1, 2, 3, 4, 7, 9]
        assert (profiles[0].id, profiles[0].name) == (19, "1g.5gb")
        assert (profiles[9].id, profiles[9].name) == (15, "1g.10gb")
        (gpu,) = host.read_gpus()
        assert [(g.profile_id, g.placement_start) for g in gpu.gpu_instances] == [(9, 4)]
        types = host.vgpu_types(0)
    assert types[476].gi_profile_id == 9 and types[706].gi_profile_id == 20
    assert types[468].gi_profile_id is None  # a time-sliced type
    _, checks = _check_host(ReadOnlyNvml(ReplayNvml.load("a100-40gb")))
    assert [(c.gi_profile_id, c.id, c.name) for c in checks[0].cis] == [
        (9, 0, "1c.3g.20gb"), (9, 1, "2c.3g.20gb"), (9, 2, "3g.20gb")]


def test_a_recording_that_disagrees_is_reported() -> None:
    rec = ReplayNvml.load("rtx-pro-6000").recording
    gpu = rec["gpus"][0]
    gpu["vgpu_types"].append({"id": 1600, "name": "NVIDIA RTX Pro 6000 Blackwell DC-1-24C",
                              "gi_profile_id": 14})  # a plain instance: not what NVIDIA maps
    gpu["gpu_instances"][0]["ci_profiles"][0]["count"] = 2
    gpu["gi_profiles"][0]["sm"] = 48
    _, (check,) = _check_host(ReadOnlyNvml(ReplayNvml(rec)))
    text = "\n".join(check.differences)
    assert "vGPU type 1600 (DC-1-24C): runs on 1g.24gb" in text and "+gfx" in text
    assert "CI 1g.24gb+gfx instance count is 1 in the catalog, 2 on the GPU" in text
    assert "sm_count is 46 in the catalog, 48 on the GPU" in text
    assert len(check.differences) == 3


def test_without_a_vgpu_host_driver_the_mapping_is_a_note() -> None:
    _, (check,) = _check_host(ReadOnlyNvml(ReplayNvml.load("a30")))
    assert check.check is not None
    assert any("maps no vGPU type" in n for n in check.check.notes)
