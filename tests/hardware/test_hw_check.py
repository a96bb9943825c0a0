"""Comparing NVML's profile records with the catalog."""

from __future__ import annotations

import dataclasses
from typing import Any

from planner.hardware.catalog import get_model
from planner.hardware.check import (
    ObservedProfile,
    check_profiles,
    driver_at_least,
    observed_from_model,
)

A100 = get_model("a100-40gb")


def observed(**changes: Any) -> list[ObservedProfile]:
    """The A100 as the catalog has it, with ``changes`` per profile name."""
    out = []
    for rec in observed_from_model(A100):
        name = rec.name.removeprefix("MIG ")
        out.append(dataclasses.replace(rec, **changes.get(name, {})))
    return out


def test_exact_match_is_clean() -> None:
    result = check_profiles(A100, observed(), driver_version="535.183.01")
    assert result.ok and result.differences == () and result.notes == ()


def test_memory_within_tolerance_is_a_note() -> None:
    # the vGPU host prints 4.95 GiB for 1g.5gb [AIE-VGPU]
    result = check_profiles(A100, observed(**{"1g.5gb": {"memory_mib": 5069}}))
    assert result.ok
    assert len(result.notes) == 1 and "1g.5gb" in result.notes[0] and "5069" in result.notes[0]


def test_memory_far_off_is_a_difference() -> None:
    result = check_profiles(A100, observed(**{"7g.40gb": {"memory_mib": 30000}}))
    assert not result.ok
    assert "7g.40gb" in result.differences[0] and "memory" in result.differences[0]


def test_every_field_difference_is_listed() -> None:
    result = check_profiles(A100, observed(**{
        "3g.20gb": {"id": 10, "sm_count": 40, "placements": (0, 2, 4)},
        "2g.10gb": {"decoders": 2},
    }))
    text = "\n".join(result.differences)
    assert "3g.20gb (enum 2): id is 9 in the catalog, 10 on the GPU" in text
    assert "sm_count is 42" in text
    assert "placements are {0,4}:4 in the catalog, {0,2,4}:4 on the GPU" in text
    assert "2g.10gb (enum 1): decoders is 1 in the catalog, 2 on the GPU" in text
    assert len(result.differences) == 4
    assert result.lines()[0].startswith("difference: ")


def test_missing_profile_needs_newer_driver_is_a_note() -> None:
    recs = [r for r in observed() if r.name != "MIG 1g.10gb"]
    old = check_profiles(A100, recs, driver_version="515.65.01")
    assert old.ok and any("1g.10gb" in n and "525" in n for n in old.notes)
    new = check_profiles(A100, recs, driver_version="535.183.01")
    assert not new.ok and "1g.10gb" in new.differences[0]


def test_unknown_profile_and_renamed_profile() -> None:
    extra = ObservedProfile(enum=0xA, id=47, name="MIG 1g.5gb+gfx", instance_count=1,
                            memory_mib=4864, sm_count=14, copy_engines=1, decoders=0,
                            encoders=0, jpegs=0, ofas=0)
    result = check_profiles(A100, observed(**{"1g.5gb": {"name": "MIG 1g.4gb"}}) + [extra])
    assert any("1g.5gb+gfx" in d and "lacks" in d for d in result.differences)
    assert any("names it 1g.4gb" in n for n in result.notes)


def test_placements_not_read_are_not_compared() -> None:
    result = check_profiles(A100, observed(**{"1g.5gb": {"placements": None}}))
    assert result.ok


def test_gb200_alias_is_recognised() -> None:
    gb = get_model("gb200-186gb")
    recs = observed_from_model(gb)
    recs[0] = dataclasses.replace(recs[0], name="MIG 1g.24gb", memory_mib=20480)
    result = check_profiles(gb, recs)
    assert result.ok
    assert any("known alias" in n for n in result.notes)


def test_driver_versions() -> None:
    assert driver_at_least("535.183.01", "525")
    assert driver_at_least("450.80.02", "450.80.02")
    assert not driver_at_least("450.51.06", "450.80.02")
    assert not driver_at_least("470.256.02", "525")
    old = check_profiles(A100, observed(), driver_version="440.33")
    assert any("older than the catalog's minimum" in n for n in old.notes)
