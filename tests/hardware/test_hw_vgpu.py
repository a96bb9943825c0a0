"""MIG-backed vGPU type names (docs/reference/vgpu-on-mig.md sections 1.4-1.6)."""

from __future__ import annotations

import pytest

from planner.hardware.catalog import all_models, get_model
from planner.hardware.vgpu import (
    gfx_profile_for,
    lookup_vgpu_type,
    short_type_name,
    vgpu_type_name,
)


def name(model_id: str, profile: str, board: str | None = None) -> str | None:
    m = get_model(model_id)
    p = m.profile(profile)
    assert p is not None
    return vgpu_type_name(m, p, board)


def test_a100_types_from_the_mdev_table() -> None:
    # nvidia-474..478 and nvidia-706 on A100-PCIE-40GB
    assert [name("a100-40gb", p) for p in
            ("1g.5gb", "2g.10gb", "3g.20gb", "4g.20gb", "7g.40gb", "1g.5gb+me")] == [
        "NVIDIA A100-1-5C", "NVIDIA A100-2-10C", "NVIDIA A100-3-20C", "NVIDIA A100-4-20C",
        "NVIDIA A100-7-40C", "NVIDIA A100-1-5CME"]


def test_hopper_boards() -> None:
    assert name("h100-80gb", "1g.10gb+me") == "NVIDIA H100XM-1-10CME"
    assert name("h100-80gb", "3g.40gb") == "NVIDIA H100XM-3-40C"
    assert name("h100-80gb", "3g.40gb", board="H100") == "NVIDIA H100-3-40C"
    assert name("h200-141gb", "1g.18gb") == "NVIDIA H200X-1-18C"
    assert name("h200-141gb", "1g.18gb", board="H200") == "NVIDIA H200-1-18C"
    assert name("h100-94gb", "7g.94gb") == "NVIDIA H100L-7-94C"
    assert name("h100-80gb", "1g.10gb", board="A100") is None  # not this model's board


def test_rtx_types_run_only_on_gfx_instances() -> None:
    # The driver's type table: DC-1-24C (1563), DC-2-48C (1575), DC-4-96C (1587) all carry
    # the GFX partition flag; no type name has a GFX suffix.
    assert name("rtx-pro-6000", "1g.24gb+gfx") == "NVIDIA DC-1-24C"
    assert name("rtx-pro-6000", "2g.48gb+gfx") == "NVIDIA DC-2-48C"
    assert name("rtx-pro-6000", "4g.96gb+gfx") == "NVIDIA DC-4-96C"
    for plain in ("1g.24gb", "1g.24gb+me", "1g.24gb-me", "1g.24gb+me.all", "2g.48gb",
                  "2g.48gb-me", "2g.48gb+me.all", "4g.96gb"):
        assert name("rtx-pro-6000", plain) is None, plain


def test_rtx_type_names_resolve_to_gfx_profiles() -> None:
    # As sysfs and NVML print them: a spaced board name before the type.
    for full, profile_id in (("NVIDIA RTX Pro 6000 Blackwell DC-1-24C", 47),
                             ("NVIDIA RTX Pro 6000 Blackwell DC-2-48C", 35),
                             ("DC-4-96C", 32)):
        found = lookup_vgpu_type(full)
        assert found is not None and found[0].id == "rtx-pro-6000", full
        assert found[1].id == profile_id and found[1].media == "gfx"
    # Not the type aihow gives a VM: graphics series, fractions of a GI, the old spelling.
    for other in ("NVIDIA RTX Pro 6000 Blackwell DC-1-24Q", "DC-1-12C", "DC-4-24C",
                  "DC-1-24QGFX", "NVIDIA RTX Pro 6000 Blackwell DC-1-24"):
        assert lookup_vgpu_type(other) is None, other


def test_gfx_profile_for_names_what_a_vgpu_needs() -> None:
    rtx = get_model("rtx-pro-6000")
    for plain, gfx in (("1g.24gb", "1g.24gb+gfx"), ("1g.24gb-me", "1g.24gb+gfx"),
                       ("2g.48gb+me.all", "2g.48gb+gfx"), ("4g.96gb", "4g.96gb+gfx")):
        p = rtx.profile(plain)
        assert p is not None
        found = gfx_profile_for(rtx, p)
        assert found is not None and found.name == gfx
    assert gfx_profile_for(rtx, rtx.profile("1g.24gb+gfx")) is None  # type: ignore[arg-type]
    a100 = get_model("a100-40gb")
    assert gfx_profile_for(a100, a100.profile("1g.5gb")) is None  # type: ignore[arg-type]


def test_short_type_name_is_the_last_word() -> None:
    assert short_type_name("NVIDIA RTX Pro 6000 Blackwell DC-1-24C") == "DC-1-24C"
    assert short_type_name("GRID A100D-1-10C") == "A100D-1-10C"
    assert short_type_name("  H200X-1-18C\n") == "H200X-1-18C"
    assert short_type_name("") == ""


def test_models_without_a_known_board_have_no_names() -> None:
    assert name("b200-180gb", "1g.23gb") is None
    assert name("gh200-144gb", "7g.144gb") is None


def test_reverse_lookup() -> None:
    found = lookup_vgpu_type("GRID A100-3-20C")
    assert found is not None and found[0].id == "a100-40gb" and found[1].name == "3g.20gb"
    found = lookup_vgpu_type("NVIDIA H100L-1-12CME")
    assert found is not None and found[0].id == "h100-94gb" and found[1].name == "1g.12gb+me"
    found = lookup_vgpu_type("H200-2-35C")
    assert found is not None and found[0].id == "h200-141gb" and found[1].name == "2g.35gb"
    assert lookup_vgpu_type("NVIDIA A100-40C") is None  # time-sliced
    assert lookup_vgpu_type("NVIDIA A100-3-21C") is None  # no such profile
    assert lookup_vgpu_type("NVIDIA Z9-1-5C") is None  # unknown board
    assert lookup_vgpu_type("not a type") is None


@pytest.mark.parametrize("model_id", sorted(m.id for m in all_models()))
def test_names_are_unique_and_round_trip(model_id: str) -> None:
    m = get_model(model_id)
    # every profile has a type, but on a vgpu_needs_gfx model only the +gfx ones
    typed = [p for p in m.gi_profiles if not m.vgpu_needs_gfx or p.media == "gfx"]
    for board in m.vgpu_boards:
        assert all(vgpu_type_name(m, p, board) is None for p in m.gi_profiles if p not in typed)
        names = [vgpu_type_name(m, p, board) for p in typed]
        assert None not in names and len(set(names)) == len(names)
        for p, n in zip(typed, names, strict=True):
            assert n is not None
            assert lookup_vgpu_type(n) == (m, p)
    for p in m.gi_profiles:  # a name a source confirmed is what the pattern gives
        if p.vgpu_type:
            board = p.vgpu_type.split("-")[0]
            assert vgpu_type_name(m, p, board) == f"NVIDIA {p.vgpu_type}"


def test_board_prefixes_belong_to_one_model() -> None:
    boards = [b for m in all_models() for b in m.vgpu_boards]
    assert len(boards) == len(set(boards))
    for m in all_models():
        assert (m.vgpu_board is None) == (not m.vgpu_boards)
        assert m.vgpu_board is None or m.vgpu_board == m.vgpu_boards[0]


def test_confirmed_names_that_the_pattern_would_not_give() -> None:
    # GB200: the driver's type table names types by partition size, not by profile name.
    assert name("gb200-186gb", "1g.23gb") == "NVIDIA GB200-1-24C"
    assert name("gb200-186gb", "3g.93gb") == "NVIDIA GB200-3-95C"
    assert name("gb200-186gb", "7g.186gb") == "NVIDIA GB200-7-189C"
    found = lookup_vgpu_type("NVIDIA GB200-1-24CME")
    assert found is not None and found[1].name == "1g.23gb+me"
    assert lookup_vgpu_type("NVIDIA GB200-1-23C") is None  # what the pattern would guess


def test_ampere_boards_from_the_driver_table() -> None:
    # "GRID " prefixed, as the driver names its Ampere types; every board of the model.
    for full, model_id, profile in (("GRID A100X-1-5C", "a100-40gb", "1g.5gb"),
                                    ("GRID A800-3-20C", "a100-40gb", "3g.20gb"),
                                    ("GRID A100-1-10C", "a100-40gb", "1g.10gb"),
                                    ("GRID A100D-1-10C", "a100-80gb", "1g.10gb"),
                                    ("GRID A100DX-7-80C", "a100-80gb", "7g.80gb"),
                                    ("GRID A800DX-1-20C", "a100-80gb", "1g.20gb"),
                                    ("NVIDIA A30-2-12CME", "a30", "2g.12gb+me")):
        found = lookup_vgpu_type(full)
        assert found is not None, full
        assert (found[0].id, found[1].name) == (model_id, profile), full
