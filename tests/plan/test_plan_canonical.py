"""`aihow show` keeps a plan's changes as their JSON values when they are as aihow writes
them (``planner.vocab.canonical``, ``planner.plan.review``). That path must read exactly
what the typed path reads: the same values, the same renderings in every format, and for
a file it does not take, the typed path's verdict (the same one-line error). Checked on
every golden plan, on random plans, and on random edits of them with a correct digest.
"""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hosts import make
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic_core import SchemaValidator, ValidationError
from pydantic_core import core_schema as cs
from test_plan_properties import _scenario

from planner.errors import AihowError
from planner.plan.model import PlanFileError, dump_plan, parse_plan
from planner.plan.render import render, render_fleet_markdown, render_fleet_text, render_text
from planner.plan.review import PlanReview, _as_written, parse_review
from planner.vocab import Address, AddressError, Kind
from planner.vocab.plan import digest, file_digest, plan_text, summarize_json

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = sorted((ROOT / "plans").glob("*.json"))


def _typed(text: str) -> PlanReview:
    return PlanReview.of(parse_plan(text))


def _same(got: PlanReview, typed: PlanReview) -> None:
    assert got.actions == typed.actions
    assert got.plan == typed.plan
    for fmt in ("text", "markdown", "json"):
        assert render(got, fmt) == render(typed, fmt), fmt
    assert render_text(got, colour=True) == render_text(typed, colour=True)


def test_there_are_golden_plans() -> None:
    assert len(GOLDEN) >= 4


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.stem)
def test_golden_plans_are_read_as_written_and_render_as_typed(path: Path) -> None:
    text = path.read_text()
    fast = _as_written(text)
    assert fast is not None, "a plan aihow wrote takes the fast path"
    _same(fast, _typed(text))
    assert render(fast, "json") == text  # the file is the canonical text
    typed_plan = parse_plan(text)
    assert render(fast, "text") == render(typed_plan, "text")  # a typed Plan renders alike


def test_the_fleet_renderings_read_reviews_as_typed_plans() -> None:
    texts = [p.read_text() for p in GOLDEN]
    fast = [(p.stem, parse_review(t)) for p, t in zip(GOLDEN, texts, strict=True)]
    typed = [(p.stem, parse_plan(t)) for p, t in zip(GOLDEN, texts, strict=True)]
    assert render_fleet_markdown(fast) == render_fleet_markdown(typed)
    assert render_fleet_text(fast) == render_fleet_text(typed)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_random_plans_are_read_as_written_and_render_as_typed(seed: int) -> None:
    state, slices, policies = _scenario(seed)
    try:
        plan = make(state, *slices, policies=policies)
    except AihowError:
        return
    text = dump_plan(plan)
    fast = _as_written(text)
    assert fast is not None
    _same(fast, _typed(text))


# --- edits: the fast path may refuse what the typed path takes, never the reverse -----


def _variants(value: Any) -> list[Any]:
    """Values near ``value`` that a tool or an attacker might write instead."""
    out: list[Any] = [None, True, 0, 1.0, "", [], {}, "x", [1], {"a": 1}]
    if isinstance(value, bool):
        out += [int(value), str(value).lower()]
    elif isinstance(value, int):
        out += [float(value), str(value), value + 1, -value, bool(value), 2**70]
    elif isinstance(value, str):
        out += [value + "x", value.upper(), value + "]", "[" + value, value.replace("@", "@0"),
                value.replace("gpu[", "vgpu["), value.replace(".gi[", ".ci["),
                value.replace("0000:", "000g:"), value.replace("domain[", "domain[["),
                *(k.value for k in Kind), "replace", "no-op", "create", "delete", "update",
                "\ud800", value + "\n"]
    elif isinstance(value, list):
        out += [tuple(value), [*value, value[0] if value else 1], value[:-1],
                [str(v) for v in value], [[v] for v in value]]
    elif isinstance(value, dict):
        out += [{**value, "extra": 1}, dict(list(value.items())[1:]), dict.fromkeys(value)]
    return out


def _resealed(doc: dict[str, Any], recount: bool) -> str:
    if recount:
        with contextlib.suppress(KeyError, TypeError):
            doc["summary"] = summarize_json(doc["actions"])
    doc.pop("plan_sha256", None)
    body = dict(doc)
    if isinstance(body.get("host"), dict) and body["host"].get("snapshot", ...) is None:
        body["host"] = {k: v for k, v in body["host"].items() if k != "snapshot"}
    doc["plan_sha256"] = digest(body)
    return plan_text(doc)


def _reads_alike(text: str) -> None:
    """parse_review gives what the typed path gives: the same review or the same error."""
    try:
        typed = _typed(text)
    except PlanFileError as exc:
        assert _as_written(text) is None
        with pytest.raises(PlanFileError) as got:
            parse_review(text)
        assert str(got.value) == str(exc)
        return
    fast = _as_written(text)
    if fast is not None:
        _same(fast, typed)
    _same(parse_review(text), typed)


@settings(max_examples=400, deadline=None)
@given(path=st.sampled_from(GOLDEN), data=st.data())
def test_an_edited_plan_is_read_as_the_typed_path_reads_it(path: Path, data: Any) -> None:
    doc = json.loads(path.read_text())
    change = doc["actions"][data.draw(st.integers(0, len(doc["actions"]) - 1))]
    side = data.draw(st.sampled_from(["change", "before", "after", "delete_step"]))
    target = change[side] if isinstance(change.get(side), dict) else change
    key = data.draw(st.sampled_from([*sorted(target), "extra"]))
    if data.draw(st.booleans()):
        target.pop(key, None)
    else:
        target[key] = data.draw(st.sampled_from(_variants(target.get(key))))
    _reads_alike(_resealed(doc, recount=data.draw(st.booleans())))


def _sealed_raw(text: str) -> str:
    """``text`` (in the plan layout) with the digest its lines give, as written."""
    data = json.loads(text)
    want = file_digest(text, data)
    assert want is not None
    return text.replace(data["plan_sha256"], want)


@pytest.mark.parametrize("edit", [
    ('"reason":', '"reason":"hidden","reason":'),  # a repeated key: the last one counts
    ('"reason":"', '"reason":"\\ud800'),  # a lone surrogate, as json.loads reads it
    ('"id":', '"id":NaN,"x":'),
    ('"id":1,', '"id":1.0,'),
    ('"id":1,', '"id":1e0,'),
    ('"destructive":false', '"destructive":0'),
])
def test_json_the_two_parsers_could_read_differently_is_read_as_typed(edit: tuple[str, str]
                                                                       ) -> None:
    text = GOLDEN[0].read_text()
    old, new = edit
    assert old in text
    edited = text.replace(old, new, 1)
    # not JSON at all: the digest stays wrong, and both paths must still agree
    with contextlib.suppress(ValueError, AssertionError):
        edited = _sealed_raw(edited)
    _reads_alike(edited)


# --- addresses: each kind's shape is exactly what Address.parse reads as that kind -----

_PARTS = ["gpu[", "vgpu[", "domain[", "network[", "pool[", "]", ".", "mig", "vfs", "gi[",
          ".gi[", ".ci[", ".hostdev[", ".running", ".volume[", "running", "0000:17:00.0",
          "0000:17:00.8", "17:00.0", "1g.5gb", "@", "0", "04", "7", "x", "[", "\n", "é"]


def test_every_kind_has_an_address_shape_and_an_attribute_model() -> None:
    from planner.vocab.address import SHAPES
    from planner.vocab.attrs import MODELS

    assert set(SHAPES) == set(Kind) == set(MODELS)


@settings(max_examples=1500, deadline=None)
@given(text=st.lists(st.sampled_from(_PARTS), max_size=9).map("".join))
def test_address_shapes_match_what_parse_reads_as_that_kind(text: str) -> None:
    from planner.vocab.address import SHAPES

    for kind, shape in SHAPES.items():
        matched = re.fullmatch(shape, text) is not None
        assert matched == _rust_matches(shape, text), (kind, text)
        if matched:
            addr = Address.parse(text)
            assert addr.kind is kind and str(addr) == text
        else:
            try:
                addr = Address.parse(text)
            except AddressError:
                continue
            assert addr.kind is not kind or str(addr) != text, (kind, text)


_RUST: dict[str, SchemaValidator] = {}


def _rust_matches(shape: str, text: str) -> bool:
    """The match pydantic-core's regex engine makes (the one the canonical check uses)."""
    if shape not in _RUST:
        _RUST[shape] = SchemaValidator(cs.str_schema(pattern=f"^(?:{shape})$"))
    try:
        _RUST[shape].validate_python(text)
    except ValidationError:
        return False
    return True
