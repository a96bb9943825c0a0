"""Loading the catalog and matching a GPU to a model."""

from __future__ import annotations

from pathlib import Path

import pytest

from planner.errors import AihowError
from planner.hardware.catalog import (
    CatalogError,
    UnknownModelError,
    all_models,
    get_model,
    match_model,
    parse_model,
)


def test_match_by_pci_device_id_in_every_spelling() -> None:
    assert match_model("whatever", "0x20B010DE").id == "a100-40gb"  # type: ignore[union-attr]
    assert match_model("whatever", "0x2941").id == "gb200-186gb"  # type: ignore[union-attr]
    assert match_model("whatever", "2348").id == "gh200-144gb"  # type: ignore[union-attr]
    assert match_model("whatever", "0x233510DE").id == "h200-141gb"  # type: ignore[union-attr]


def test_match_by_product_name() -> None:
    assert match_model("NVIDIA H100 NVL").id == "h100-94gb"  # type: ignore[union-attr]
    assert match_model("NVIDIA H100 80GB HBM3").id == "h100-80gb"  # type: ignore[union-attr]
    assert match_model("NVIDIA A30").id == "a30"  # type: ignore[union-attr]
    assert match_model("NVIDIA GeForce RTX 4090", "0x268410DE") is None


def test_pci_ids_are_unique_across_models() -> None:
    ids = [d for m in all_models() for d in m.pci_device_ids]
    assert len(ids) == len(set(ids))


def test_unknown_model() -> None:
    with pytest.raises(UnknownModelError, match="known: a100-40gb"):
        get_model("v100")


def test_bad_data_file_names_the_file() -> None:
    with pytest.raises(CatalogError, match="x.toml") as err:
        parse_model("[model]\nid = 1\n", "x.toml")
    assert isinstance(err.value, AihowError)
    text = get_model_text("a100-40gb").replace("placements = [0, 4]", "placements = [0, 6]")
    with pytest.raises(CatalogError, match=r"3g.20gb: placement 6:4 is outside"):
        parse_model(text, "a100-40gb.toml")


def get_model_text(model_id: str) -> str:
    from importlib import resources

    return resources.files("planner.hardware").joinpath(f"data/{model_id}.toml").read_text()


def test_profile_lookup() -> None:
    m = get_model("a100-40gb")
    assert m.profile("MIG 3g.20gb") is m.profile_by_id(9) is m.profile_by_enum(2)
    assert m.profile("3g.40gb") is None
    p = m.profile("1g.5gb+me")
    assert p is not None and p.media == "me" and m.ci_profiles_for(p)[0].name(p) == "1g.5gb+me"
    three = m.profile("3g.20gb")
    assert three is not None
    assert [c.name(three) for c in m.ci_profiles_for(three)] == [
        "1c.3g.20gb", "2c.3g.20gb", "3g.20gb"]


def test_the_parsed_catalog_is_cached_and_a_bad_entry_is_parsed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk cache only saves start-up time: the same models come back from it, and an
    unusable entry means parsing the TOML files again."""
    from planner.hardware import catalog

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("AIHOW_NO_CACHE", raising=False)
    catalog.all_models.cache_clear()
    try:
        fresh = catalog.all_models()
        (entry,) = (tmp_path / "aihow").glob("catalog-*.pickle")
        catalog.all_models.cache_clear()
        assert catalog.all_models() == fresh
        entry.write_bytes(b"not a pickle")
        catalog.all_models.cache_clear()
        assert catalog.all_models() == fresh
    finally:
        catalog.all_models.cache_clear()
