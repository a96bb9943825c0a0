"""The small languages: every form of issue 2 parses, prints canonically and parses back;
syntax errors name the column and what was expected."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from planner.lang import (
    GpuSelector,
    LangError,
    Layout,
    LayoutItem,
    MigProfile,
    SelectorKind,
    parse_layout,
    parse_profile,
    parse_selector,
)
from planner.lang.values import EXTENSIONS

PROFILES = {
    "1g.5gb": MigProfile(1, 5),
    "1g.10gb+me": MigProfile(1, 10, "+me"),
    "1g.24gb-me": MigProfile(1, 24, "-me"),
    "1g.24gb+gfx": MigProfile(1, 24, "+gfx"),
    "1g.24gb+me.all": MigProfile(1, 24, "+me.all"),
    "7g.141gb": MigProfile(7, 141),
    "1c.3g.20gb": MigProfile(3, 20, "", 1),
    "MIG 3g.20gb": MigProfile(3, 20),
}


@pytest.mark.parametrize(("text", "value"), PROFILES.items())
def test_profile_forms(text: str, value: MigProfile) -> None:
    parsed = parse_profile(text)
    assert parsed == value
    assert parse_profile(str(parsed)) == parsed
    assert str(parsed) == text.removeprefix("MIG ")


def test_layout_example_from_issue() -> None:
    layout = parse_layout("3g.40gb@4 + 2*1g.10gb + 2g.20gb")
    assert layout.items == (
        LayoutItem(MigProfile(3, 40), 1, 4),
        LayoutItem(MigProfile(1, 10), 2, None),
        LayoutItem(MigProfile(2, 20), 1, None),
    )
    assert str(layout) == "3g.40gb@4 + 2*1g.10gb + 2g.20gb"
    assert layout.profiles() == [
        (MigProfile(3, 40), 4),
        (MigProfile(1, 10), None),
        (MigProfile(1, 10), None),
        (MigProfile(2, 20), None),
    ]


def test_layout_is_whitespace_insensitive() -> None:
    assert parse_layout(" 2 * 1g.5gb @ 3 +1c.3g.20gb") == parse_layout("2*1g.5gb@3 + 1c.3g.20gb")


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("0000:17:00.0", SelectorKind.PCI, "0000:17:00.0"),
        ("17:00.0", SelectorKind.PCI, "0000:17:00.0"),
        ("00000000:3B:00.0", SelectorKind.PCI, "0000:3b:00.0"),
        ("0", SelectorKind.INDEX, "0"),
        ("007", SelectorKind.INDEX, "7"),
        (
            "GPU-0123ABCD-0123-0123-0123-0123456789AB",
            SelectorKind.UUID,
            "GPU-0123abcd-0123-0123-0123-0123456789ab",
        ),
        ("model=H100*", SelectorKind.MODEL, "H100*"),
        ("model=NVIDIA A100-PCIE-40GB", SelectorKind.MODEL, "NVIDIA A100-PCIE-40GB"),
    ],
)
def test_selector_forms(text: str, kind: SelectorKind, value: str) -> None:
    sel = parse_selector(text)
    assert (sel.kind, sel.value) == (kind, value)
    assert parse_selector(str(sel)) == sel


@pytest.mark.parametrize(
    ("parse", "text", "column", "expected"),
    [
        (parse_profile, "1g.5xb", 5, "'gb'"),
        (parse_profile, "1g5gb", 2, "'c.' or 'g.'"),
        (parse_profile, "1g.5gb+xx", 7, "an extension (+me, -me, +gfx, +me.all) or end of input"),
        (parse_profile, "1g.5gb+me.al", 10, "end of input"),
        (parse_profile, "", 1, "'MIG ' or a number"),
        (parse_layout, "3g.40gb@", 9, "a start slice"),
        (parse_layout, "2*", 3, "a profile name such as 1g.10gb"),
        (parse_layout, "1g.5gb,2g.10gb", 7, "'+', '@' or end of input"),
        (parse_layout, "0*1g.5gb", 1, "a count of at least 1"),
        (parse_selector, "0000:17:00.9", 12, "a PCI function 0-7 (in a PCI address)"),
        (parse_selector, "0000:1G:00.0", 7, "a hex digit (in a PCI address)"),
        (parse_selector, "17:00", 6, "'.' (in a PCI address)"),
        (parse_selector, "GPU-123", 8, "a hex digit"),
        (parse_selector, "model=", 7, "a model pattern such as H100*"),
        (parse_selector, "0x17", 2, "a digit, ':' (PCI address) or end of input"),
    ],
)
def test_syntax_error_names_column_and_expectation(parse, text, column, expected) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(LangError) as info:
        parse(text)
    assert (info.value.column, info.value.expected) == (column, expected)
    message = str(info.value)
    assert "\n" not in message and f"at column {column}, expected {expected}" in message


# --- property tests: str(parse(x)) parses back equal ------------------------------------

profiles = st.builds(
    MigProfile,
    gi_slices=st.integers(1, 8),
    memory_gb=st.integers(1, 999),
    extension=st.sampled_from(EXTENSIONS),
    ci_slices=st.none() | st.integers(1, 8),
)
items = st.builds(
    LayoutItem, profile=profiles, count=st.integers(1, 9), start=st.none() | st.integers(0, 7)
)
layouts = st.builds(Layout, items=st.lists(items, min_size=1, max_size=5).map(tuple))
hexdig = st.sampled_from("0123456789abcdef")
selectors = st.one_of(
    st.builds(
        lambda b, d, f: GpuSelector(SelectorKind.PCI, f"0000:{b}:{d}.{f}"),
        st.text(hexdig, min_size=2, max_size=2),
        st.text(hexdig, min_size=2, max_size=2),
        st.integers(0, 7),
    ),
    st.integers(0, 64).map(lambda i: GpuSelector(SelectorKind.INDEX, str(i))),
    st.uuids().map(lambda u: GpuSelector(SelectorKind.UUID, f"GPU-{u}")),
    st.from_regex(r"[A-Za-z0-9*?_.-][A-Za-z0-9*?_. -]{0,20}[A-Za-z0-9*?_.-]", fullmatch=True).map(
        lambda g: GpuSelector(SelectorKind.MODEL, g)
    ),
)


@settings(max_examples=150)
@given(profiles)
def test_profile_round_trip(profile: MigProfile) -> None:
    assert parse_profile(str(profile)) == profile
    assert str(parse_profile(str(profile))) == str(profile)


@settings(max_examples=150)
@given(layouts)
def test_layout_round_trip(layout: Layout) -> None:
    assert parse_layout(str(layout)) == layout


@settings(max_examples=150)
@given(selectors)
def test_selector_round_trip(selector: GpuSelector) -> None:
    assert parse_selector(str(selector)) == selector


@settings(max_examples=200)
@given(st.text(max_size=30))
def test_arbitrary_text_gives_value_or_lang_error(text: str) -> None:
    for parse in (parse_profile, parse_layout, parse_selector):
        try:
            value = parse(text)
        except LangError as exc:
            assert 1 <= exc.column <= len(text.strip()) + 1 or exc.column <= len(text) + 1
        else:
            assert parse(str(value)) == value
