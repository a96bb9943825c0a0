"""Which changes are exactly as aihow writes them, checked in one pass of pydantic-core.

``plan_validator().validate_json(text)`` parses a plan file and accepts it when every
change in its ``actions`` is in canonical form: the keys and value types ``change_json`` writes,
nothing else (no bool for an int, no float, no null for an attribute left out when
unset), the kind's attribute model, an address of the change's kind spelled as the
builders spell it. Such a change is one the typed model (``Change``) accepts and writes
back as the same values, so a reader that only renders a plan can keep the values as
they are instead of building tens of thousands of models. Anything else (a malformed or
merely unusual file) fails here, and the caller reads it through the typed model, which
accepts it or says what is wrong. The schema is derived from the models (``Change``'s
fields, the attribute dataclasses, ``address.SHAPES``), so it cannot drift from them;
``tests/plan/test_plan_canonical.py`` checks both directions on every golden plan and on
generated ones.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from enum import Enum
from typing import Any, Literal, Union

from pydantic import BaseModel
from pydantic_core import CoreSchema, SchemaValidator
from pydantic_core import core_schema as cs

from planner.vocab.address import SHAPES, Address
from planner.vocab.attrs import MODELS
from planner.vocab.kinds import Kind
from planner.vocab.plan import Change

__all__ = ["plan_validator"]


def _strict(tp: Any) -> CoreSchema:
    """The schema of ``tp``'s canonical JSON value."""
    origin = typing.get_origin(tp)
    if tp is str:
        return cs.str_schema(strict=True)
    if tp is bool:
        return cs.bool_schema(strict=True)
    if tp is int:
        return cs.int_schema(strict=True)
    if origin is Literal:
        return cs.literal_schema(list(typing.get_args(tp)))
    if isinstance(tp, type) and issubclass(tp, Enum):
        return cs.literal_schema([m.value for m in tp])
    if origin in (Union, types.UnionType):
        members = [a for a in typing.get_args(tp) if a is not type(None)]
        inner = _strict(members[0]) if len(members) == 1 else cs.union_schema(
            [_strict(a) for a in members])
        return cs.nullable_schema(inner) if len(members) < len(typing.get_args(tp)) else inner
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return cs.list_schema(_strict(args[0]), strict=True)
        # a fixed tuple is a JSON array of its length (lax: a list is accepted), kept as
        # the list json.loads gives
        return cs.no_info_after_validator_function(
            list, cs.tuple_schema([_strict(a) for a in args]))
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return _typed_dict({name: (_strict(f.annotation), True)
                            for name, f in tp.model_fields.items()})
    if dataclasses.is_dataclass(tp):
        return _attrs(tp)
    raise TypeError(f"no canonical JSON schema for {tp!r}")


def _typed_dict(fields: dict[str, tuple[CoreSchema, bool]]) -> CoreSchema:
    return cs.typed_dict_schema(
        {name: cs.typed_dict_field(schema, required=required)
         for name, (schema, required) in fields.items()},
        extra_behavior="forbid", strict=True)


def _attrs(model: Any) -> CoreSchema:
    """An attribute model as ``to_json`` writes it: every field, except the OPTIONAL ones
    when unset (so one that is present is never null)."""
    hints = typing.get_type_hints(model)
    fields = {}
    for f in dataclasses.fields(model):
        tp = hints[f.name]
        if f.name in model.OPTIONAL:
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            fields[f.name] = (_strict(args[0] if len(args) == 1 else tp), False)
        else:
            fields[f.name] = (_strict(tp), True)
    return _typed_dict(fields)


def _change(kind: Kind) -> CoreSchema:
    models: list[CoreSchema | tuple[CoreSchema, str]] = [_attrs(m) for m in MODELS[kind]]
    attrs = cs.nullable_schema(cs.union_schema(models) if len(models) > 1 else _attrs(
        MODELS[kind][0]))
    hints = typing.get_type_hints(Change)
    fields: dict[str, tuple[CoreSchema, bool]] = {}
    for name, info in Change.model_fields.items():
        schema: CoreSchema
        if name == "kind":
            schema = cs.literal_schema([kind.value])
        elif info.annotation is Address:
            schema = cs.str_schema(strict=True, pattern=f"^(?:{SHAPES[kind]})$")
        elif name in ("before", "after"):
            schema = attrs
        else:
            schema = _strict(hints[name] if info.annotation is None else info.annotation)
        fields[name] = (schema, True)  # change_json writes every field
    return _typed_dict(fields)


_VALIDATOR: SchemaValidator | None = None


def plan_validator() -> SchemaValidator:
    """The validator of a plan file's text (``validate_json``) whose ``actions`` are in
    canonical form; the other keys are parsed, not checked (the typed ``Plan`` reads
    them). Its JSON parser gives the values ``json.loads`` gives, or fails: it refuses
    NaN and lone surrogates, and a repeated key keeps its last value as there. Built on
    first use: only reading a plan needs it."""
    global _VALIDATOR
    if _VALIDATOR is None:
        changes = cs.list_schema(
            cs.tagged_union_schema({k.value: _change(k) for k in Kind}, discriminator="kind"),
            strict=True)
        _VALIDATOR = SchemaValidator(cs.typed_dict_schema(
            {"actions": cs.typed_dict_field(changes, required=True)}, extra_behavior="allow"))
    return _VALIDATOR
