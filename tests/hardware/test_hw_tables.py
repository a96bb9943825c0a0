"""The catalog's numbers against NVIDIA's published tables (docs/reference/mig-hardware.md
names them).

Expected values are copied here from those tables, not from the TOML files, so a typo in a
data file fails a test.
"""

from __future__ import annotations

import math
import re

import pytest

from planner.hardware.catalog import all_models, get_model
from planner.hardware.model import GpuModel

SEVEN = (0, 1, 2, 3, 4, 5, 6)

# (name, NVML enum, profile id, max instances, placement size, starts)
# docs/reference/mig-hardware.md 1.1: the ids for A100/H100/H100 NVL/H200/GH200/B200/GB200,
# and 1.2's placement lists ({0..6}:1, {0,2,4,6}:2, {0,2,4}:2, {0,4}:4, {0}:4, {0}:8).
def _eight(names: list[str]) -> list[tuple[str, int, int, int, int, tuple[int, ...]]]:
    shape = [
        (0, 19, 7, 1, SEVEN), (7, 20, 1, 1, SEVEN), (9, 15, 4, 2, (0, 2, 4, 6)),
        (1, 14, 3, 2, (0, 2, 4)), (2, 9, 2, 4, (0, 4)), (3, 5, 1, 4, (0,)), (4, 0, 1, 8, (0,)),
    ]
    return [(n, *s) for n, s in zip(names, shape, strict=True)]


PROFILES = {
    "a100-40gb": _eight(["1g.5gb", "1g.5gb+me", "1g.10gb", "2g.10gb", "3g.20gb", "4g.20gb",
                         "7g.40gb"]),
    "a100-80gb": _eight(["1g.10gb", "1g.10gb+me", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb",
                         "7g.80gb"]),
    "h100-80gb": _eight(["1g.10gb", "1g.10gb+me", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb",
                         "7g.80gb"]),
    "h100-94gb": _eight(["1g.12gb", "1g.12gb+me", "1g.24gb", "2g.24gb", "3g.47gb", "4g.47gb",
                         "7g.94gb"]),
    "h100-96gb": _eight(["1g.12gb", "1g.12gb+me", "1g.24gb", "2g.24gb", "3g.48gb", "4g.48gb",
                         "7g.96gb"]),
    "h200-141gb": _eight(["1g.18gb", "1g.18gb+me", "1g.35gb", "2g.35gb", "3g.71gb", "4g.71gb",
                          "7g.141gb"]),
    "gh200-144gb": _eight(["1g.18gb", "1g.18gb+me", "1g.36gb", "2g.36gb", "3g.72gb", "4g.72gb",
                           "7g.144gb"]),
    "b200-180gb": _eight(["1g.23gb", "1g.23gb+me", "1g.45gb", "2g.45gb", "3g.90gb", "4g.90gb",
                          "7g.180gb"]),
    "gb200-186gb": _eight(["1g.23gb", "1g.23gb+me", "1g.47gb", "2g.47gb", "3g.93gb", "4g.93gb",
                           "7g.186gb"]),
    "a30": [
        ("1g.6gb", 0x0, 14, 4, 1, (0, 1, 2, 3)),
        ("1g.6gb+me", 0x7, 21, 1, 1, (0, 1, 2, 3)),
        ("2g.12gb", 0x1, 5, 2, 2, (0, 2)),
        ("2g.12gb+me", 0x8, 6, 1, 2, (0, 2)),
        ("4g.24gb", 0x3, 0, 1, 4, (0,)),
    ],
    "rtx-pro-6000": [
        ("1g.24gb", 0x0, 14, 4, 3, (0, 3, 6, 9)),
        ("1g.24gb+me", 0x7, 21, 1, 3, (0, 3, 6, 9)),
        ("1g.24gb+gfx", 0xA, 47, 4, 3, (0, 3, 6, 9)),
        ("1g.24gb+me.all", 0xF, 65, 1, 3, (0, 3, 6, 9)),
        ("1g.24gb-me", 0xD, 67, 4, 3, (0, 3, 6, 9)),
        ("2g.48gb", 0x1, 5, 2, 6, (0, 6)),
        ("2g.48gb+gfx", 0xB, 35, 2, 6, (0, 6)),
        ("2g.48gb+me.all", 0x10, 64, 1, 6, (0, 6)),
        ("2g.48gb-me", 0xE, 66, 2, 6, (0, 6)),
        ("4g.96gb", 0x3, 0, 1, 12, (0,)),
        ("4g.96gb+gfx", 0xC, 32, 1, 12, (0,)),
    ],
}

# (memory grid units, compute slices, max instances, architecture) from 1.2 and "Supported GPUs".
SHAPE = {
    "a30": (4, 4, 4, "ampere"), "a100-40gb": (8, 7, 7, "ampere"), "a100-80gb": (8, 7, 7, "ampere"),
    "h100-80gb": (8, 7, 7, "hopper"), "h100-94gb": (8, 7, 7, "hopper"),
    "h100-96gb": (8, 7, 7, "hopper"), "h200-141gb": (8, 7, 7, "hopper"),
    "gh200-144gb": (8, 7, 7, "hopper"), "b200-180gb": (8, 7, 7, "blackwell"),
    "gb200-186gb": (8, 7, 7, "blackwell"), "rtx-pro-6000": (12, 4, 4, "blackwell"),
}

# Memory as nvidia-smi prints it (GiB, %.2f) where the reference has real output.
GIB = {
    "a100-40gb": {"1g.5gb": "4.75", "1g.5gb+me": "4.75", "1g.10gb": "9.62", "2g.10gb": "9.62",
                  "3g.20gb": "19.50", "4g.20gb": "19.50", "7g.40gb": "39.25"},
    "a100-80gb": {"1g.10gb": "9.50", "1g.10gb+me": "9.50", "1g.20gb": "19.50", "2g.20gb": "19.50",
                  "3g.40gb": "39.25", "4g.40gb": "39.25", "7g.80gb": "79.00"},
    "a30": {"1g.6gb": "5.81", "1g.6gb+me": "5.81", "2g.12gb": "11.69", "2g.12gb+me": "11.69",
            "4g.24gb": "23.44"},
    "h100-80gb": {"1g.10gb": "9.75", "1g.20gb": "19.62", "2g.20gb": "19.62", "3g.40gb": "39.50",
                  "4g.40gb": "39.50", "7g.80gb": "79.25"},
    "h100-94gb": {"1g.12gb": "10.75", "1g.24gb": "21.62", "2g.24gb": "21.62", "3g.47gb": "46.38",
                  "4g.47gb": "46.38", "7g.94gb": "93.12"},
    "h200-141gb": {"1g.18gb": "16.00", "1g.35gb": "32.25", "2g.35gb": "32.25",
                   "3g.71gb": "69.50", "4g.71gb": "69.50"},
    "gh200-144gb": {"1g.18gb": "17.50", "1g.36gb": "35.25", "2g.36gb": "35.25"},
    "b200-180gb": {"1g.45gb": "44.25", "2g.45gb": "44.25"},
    "gb200-186gb": {"1g.47gb": "45.50", "2g.47gb": "45.50"},
    "rtx-pro-6000": {"1g.24gb": "23.62", "2g.48gb": "47.38", "4g.96gb": "95.12"},
}
# Memory a driver printed differently: either value is accepted, and the other is in a note.
GIB_EITHER = {("b200-180gb", "1g.23gb"): {"22.00", "20.50"},
              ("gb200-186gb", "1g.23gb"): {"22.00", "20.00"}}

# SM counts from real -lgip output.
SM: dict[str, list[int | None]] = {
    "a100-40gb": [14, 14, 14, 28, 42, 56, 98], "a100-80gb": [14, 14, 14, 28, 42, 56, 98],
    "a30": [14, 14, 28, 28, 56],
    "h100-80gb": [16, 16, 26, 32, 60, 64, 132], "h100-94gb": [16, 16, 26, 32, 60, 64, 132],
    "h200-141gb": [16, 16, 26, 32, 60, 64, 132],
    "gh200-144gb": [16, None, 26, 32, None, None, None],
    "b200-180gb": [18, 18, 30, 36, None, None, None],
    "gb200-186gb": [18, None, 32, 38, None, None, None],
    "rtx-pro-6000": [46, 46, 46, 46, 46, 94, 94, 94, 94, 188, 188],
}

# Numbers no published output shows (UNCERTAIN): the catalog must say so, with a note.
UNCERTAIN_MEMORY = {
    "b200-180gb": ["3g.90gb", "4g.90gb", "7g.180gb"],
    "gb200-186gb": ["3g.93gb", "4g.93gb", "7g.186gb"],
    "gh200-144gb": ["3g.72gb", "4g.72gb", "7g.144gb"],
    "h200-141gb": ["7g.141gb"],
    "h100-96gb": ["1g.12gb", "1g.24gb", "2g.24gb", "3g.48gb", "4g.48gb", "7g.96gb"],
}

MIN_DRIVER = {"a100-40gb": "450.80.02", "a100-80gb": "450.80.02", "a30": "460.73.01",
              "h100-80gb": "525.85.12", "h200-141gb": "550.90.07", "b200-180gb": "570.133.20",
              "gb200-186gb": "570.133.20", "rtx-pro-6000": "575.51.03"}
PCI = {"gh200-144gb": "2348", "gb200-186gb": "2941"}


def test_every_model_is_in_the_catalog() -> None:
    assert sorted(m.id for m in all_models()) == sorted(PROFILES)


@pytest.mark.parametrize("model_id", sorted(PROFILES))
def test_profiles_match_the_reference(model_id: str) -> None:
    m = get_model(model_id)
    got = [(p.name, p.enum, p.id, p.instance_count, p.placement_size, tuple(p.placements))
           for p in m.gi_profiles]
    assert sorted(got) == sorted(PROFILES[model_id])
    grid, compute, max_inst, arch = SHAPE[model_id]
    assert (m.memory_slices, m.compute_slices, m.max_instances, m.architecture) == (
        grid, compute, max_inst, arch)
    for p in m.gi_profiles:
        assert p.compute_slices == int(p.name.split("g.")[0])
        assert p.nvml_name == f"MIG {p.name}"


@pytest.mark.parametrize("model_id", sorted(GIB))
def test_memory_prints_as_in_real_output(model_id: str) -> None:
    m = get_model(model_id)
    for name, gib in GIB[model_id].items():
        p = m.profile(name)
        assert p is not None
        assert f"{p.memory_mib / 1024:.2f}" == gib, name
    for (mid, name), allowed in GIB_EITHER.items():
        if mid == model_id:
            p = m.profile(name)
            assert p is not None and f"{p.memory_mib / 1024:.2f}" in allowed
            assert p.notes, "the other driver's value must be noted"


@pytest.mark.parametrize("model_id", sorted(SM))
def test_sm_counts(model_id: str) -> None:
    m = get_model(model_id)
    order = [n for n, *_ in PROFILES[model_id]]
    for name, sm in zip(order, SM[model_id], strict=True):
        if sm is not None:
            p = m.profile(name)
            assert p is not None and p.sm_count == sm, name


@pytest.mark.parametrize("model_id", sorted(UNCERTAIN_MEMORY))
def test_unknown_numbers_are_marked_uncertain_with_a_note(model_id: str) -> None:
    m = get_model(model_id)
    for name in UNCERTAIN_MEMORY[model_id]:
        p = m.profile(name)
        assert p is not None
        assert "memory_mib" in p.uncertain, name
        assert p.notes or any(name in n or "assum" in n.lower() for n in m.notes), name


def test_known_engine_facts() -> None:
    h100 = get_model("h100-80gb")
    seven = h100.profile("7g.80gb")
    assert seven is not None and (seven.copy_engines, seven.decoders, seven.ofas) == (8, 7, 1)
    a30 = get_model("a30").profile("1g.6gb")
    assert a30 is not None and a30.decoders == 1  # the driver, not the guide's 0
    b200 = get_model("b200-180gb").profile("2g.45gb")
    assert b200 is not None and (b200.copy_engines, b200.decoders) == (4, 2)
    rtx = get_model("rtx-pro-6000")
    me_all, no_me = rtx.profile("1g.24gb+me.all"), rtx.profile("1g.24gb-me")
    assert me_all is not None and (me_all.decoders, me_all.encoders, me_all.ofas) == (4, 4, 1)
    assert no_me is not None and (no_me.decoders, no_me.encoders, no_me.jpegs) == (0, 0, 0)


# -lgip row order on real hosts: A100-40GB [UG-GS], H100 PCIe [SCW-H100], RTX PRO 6000 on
# 610.43.02 [RTX-WALK]. The simulator prints rows in the catalog's order.
SMI_ORDER = {
    "a100-40gb": [19, 20, 15, 14, 9, 5, 0],
    "h100-80gb": [19, 20, 15, 14, 9, 5, 0],
    "rtx-pro-6000": [14, 21, 47, 65, 67, 5, 35, 64, 66, 0, 32],
}


@pytest.mark.parametrize("model_id", sorted(SMI_ORDER))
def test_profiles_are_listed_in_nvidia_smi_order(model_id: str) -> None:
    assert [p.id for p in get_model(model_id).gi_profiles] == SMI_ORDER[model_id]


def test_profiles_are_grouped_by_slice_count() -> None:
    for m in all_models():
        slices = [p.compute_slices for p in m.gi_profiles]
        assert slices == sorted(slices), m.id


@pytest.mark.parametrize("model_id", sorted(PROFILES))
def test_model_facts(model_id: str) -> None:
    m = get_model(model_id)
    ampere = SHAPE[model_id][3] == "ampere"
    assert m.mig_mode_persists_reboot is ampere
    assert m.mode_change_needs_reset is ampere
    if model_id in MIN_DRIVER:
        assert m.min_driver == MIN_DRIVER[model_id]
    if model_id in PCI:
        assert PCI[model_id] in m.pci_device_ids
    if not m.pci_device_ids or "pci_device_ids" in m.uncertain:
        assert any("id" in n for n in m.notes)
    assert len({p.id for p in m.gi_profiles}) == len(m.gi_profiles)
    assert len({p.enum for p in m.gi_profiles}) == len(m.gi_profiles)


@pytest.mark.parametrize("model_id", sorted(PROFILES))
def test_compute_instance_profiles_follow_the_rule(model_id: str) -> None:
    """docs/reference/mig-hardware.md 1.4: c <= g, and 2c <= g+1 when c < g; ids are the CI
    enum (1c=0, 2c=1, 3c=2, 4c=3, 7c=4); the full-size CI is the default."""
    ci_enum = {1: 0, 2: 1, 3: 2, 4: 3, 7: 4}
    expected = {
        1: {(1, 1)}, 2: {(1, 2), (2, 1)}, 3: {(1, 3), (2, 1), (3, 1)},
        4: {(1, 4), (2, 2), (4, 1)}, 7: {(1, 7), (2, 3), (3, 2), (4, 1), (7, 1)},
    }
    m = get_model(model_id)
    for g in {p.compute_slices for p in m.gi_profiles}:
        cis = m.ci_profiles[g]
        assert {(c.slice_count, c.instance_count) for c in cis} == expected[g]
        assert all(c.id == ci_enum[c.slice_count] for c in cis)
        assert [c.slice_count for c in cis if c.is_default] == [g]
        for c in cis:
            assert all(s + c.slice_count <= g for s in c.placements)
    assert "ci_profiles.placements" in m.uncertain


def _go_nvlib_gb(memory_mib: int, total_mib: int) -> int:
    """go-nvlib's name rule (docs/reference/mig-hardware.md 1.3), with Go's
    round-half-away-from-zero."""
    eighths = math.ceil(memory_mib * 8 / total_mib)
    return math.floor(eighths / 8 * math.ceil(total_mib / 1024) + 0.5)


@pytest.mark.parametrize("model_id", sorted(PROFILES))
def test_names_agree_with_memory_and_total(model_id: str) -> None:
    m = get_model(model_id)
    for p in m.gi_profiles:
        gb = int(re.match(r"\d+g\.(\d+)gb", p.name).group(1))  # type: ignore[union-attr]
        assert _go_nvlib_gb(p.memory_mib, m.memory_mib) == gb, p.name


@pytest.mark.parametrize("model_id", sorted(PROFILES))
def test_every_source_tag_is_explained(model_id: str) -> None:
    m = get_model(model_id)
    used: set[str] = set()
    for p in m.gi_profiles:
        assert p.source, p.name
        used |= {t.strip() for t in p.source.split(",")}
        for note in p.notes:
            used |= set(re.findall(r"\[([A-Z][A-Z0-9-]+)\]", note))
    for note in m.notes:
        used |= set(re.findall(r"\[([A-Z][A-Z0-9-]+)\]", note))
    assert used <= set(m.sources), used - set(m.sources)


def test_gb200_alternative_names_resolve() -> None:
    m: GpuModel = get_model("gb200-186gb")
    assert m.profile("1g.24gb") is m.profile("1g.23gb") is not None
    assert m.profile("MIG 7g.189gb") is m.profile("7g.186gb") is not None


@pytest.mark.parametrize("model_id", sorted(PROFILES))
def test_uncertain_lists_name_real_fields_and_are_explained(model_id: str) -> None:
    import dataclasses

    from planner.hardware.model import GiProfile

    m = get_model(model_id)
    gi_fields = {f.name for f in dataclasses.fields(GiProfile)}
    model_fields = {f.name for f in dataclasses.fields(GpuModel)} | {"ci_profiles.placements"}
    assert set(m.uncertain) <= model_fields
    for field in m.uncertain:
        if field != "ci_profiles.placements":
            assert any(field.split("_")[0] in n.lower() or "assum" in n.lower()
                       for n in m.notes), field
    for p in m.gi_profiles:
        assert set(p.uncertain) <= gi_fields, p.name
        if set(p.uncertain) - {"placements"}:
            assert p.notes, f"{p.name}: uncertain {p.uncertain} without a note"
        if "placements" in p.uncertain:
            assert any("placement" in n.lower() for n in m.notes)
