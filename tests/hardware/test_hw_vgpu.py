"""MIG-backed vGPU type names (mig-hardware.md 5.2)."""

from __future__ import annotations

import pytest

from planner.hardware.catalog import all_models, get_model
from planner.hardware.vgpu import lookup_vgpu_type, vgpu_type_name


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


def test_rtx_variants() -> None:
    assert name("rtx-pro-6000", "1g.24gb+gfx") == "NVIDIA DC-1-24QGFX"
    assert name("rtx-pro-6000", "1g.24gb-me") == "NVIDIA DC-1-24CNOME"
    assert name("rtx-pro-6000", "2g.48gb+me.all") == "NVIDIA DC-2-48CMEALL"
    assert name("rtx-pro-6000", "4g.96gb") == "NVIDIA DC-4-96C"


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
    for board in m.vgpu_boards:
        names = [vgpu_type_name(m, p, board) for p in m.gi_profiles]
        assert None not in names and len(set(names)) == len(names)
        for p, n in zip(m.gi_profiles, names, strict=True):
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
