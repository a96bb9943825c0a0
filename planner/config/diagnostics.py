"""Turn pydantic's validation errors into one-line Diagnostics at YAML positions."""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from planner.config.models import ClusterConfig, Clusters, GpuConfig, GpuEntry, HostConfig
from planner.config.yamlpos import Positions, join_path
from planner.errors import Diagnostic
from planner.lang import LangError


def known_keys(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()
            if f.exclude is not True]


def suggest(key: str, candidates: list[str]) -> str:
    """`` (did you mean 'mig_profile'?)`` or ``` (known keys: a, b)``."""
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    if close:
        return f"; did you mean '{close[0]}'?"
    return "; known keys: " + ", ".join(candidates)


def _closed_model_at(segments: list[str | int]) -> type[BaseModel] | None:
    """The closed model whose mapping holds the key at the end of ``segments``."""
    parent = segments[:-1]
    if not parent:
        return ClusterConfig
    if parent == ["clusters"]:
        return Clusters
    if parent == ["global", "host"]:
        return HostConfig
    if len(parent) == 3 and parent[:2] == ["global", "gpus"] and isinstance(parent[2], int):
        return GpuEntry
    if parent[-1] == "gpu_config":
        return GpuConfig
    return None


def _walk(loc: tuple[Any, ...], data: Any, etype: str) -> list[str | int]:
    """Keep the loc elements that are real keys/indexes in ``data`` (drop union tags)."""
    segments: list[str | int] = []
    node = data
    for i, element in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(node, dict) and isinstance(element, str):
            if element in node:
                segments.append(element)
                node = node[element]
                continue
            if last and etype in ("missing", "extra_forbidden"):
                segments.append(element)
            continue
        if isinstance(node, list) and isinstance(element, int) and 0 <= element < len(node):
            segments.append(element)
            node = node[element]
            continue
    return segments


def _path(segments: list[str | int]) -> str:
    path = ""
    for s in segments:
        path = join_path(path, s)
    return path


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _type_name(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number"}.get(type(value), type(value).__name__)


_EXPECT = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "string_type": "a string", "bool_type": "true or false", "bool_parsing": "true or false",
    "float_type": "a number", "dict_type": "a mapping", "model_type": "a mapping",
    "model_attributes_type": "a mapping", "tuple_type": "a list", "list_type": "a list",
}


def _message(err: ErrorDetails, key: str) -> str:
    etype = err["type"]
    value = err.get("input")
    ctx = err.get("ctx") or {}
    if etype == "missing":
        return f"required key '{key}' is missing"
    if etype in _EXPECT:
        return f"must be {_EXPECT[etype]}, got {_type_name(value)} {_show(value)}".replace(
            "nothing (null) None", "nothing (null)")
    if etype == "literal_error" and key == "version" and not isinstance(value, str):
        return f'must be the string "1.0" (quote it), got {_show(value)}'
    if etype == "literal_error":
        return f"must be one of {ctx.get('expected', '?')}, got {_show(value)}"
    if etype == "greater_than_equal":
        return f"must be at least {ctx.get('ge')}, got {_show(value)}"
    if etype == "less_than_equal":
        return f"must be at most {ctx.get('le')}, got {_show(value)}"
    if etype == "string_pattern_mismatch":
        return f"{_show(value)} does not match the pattern {ctx.get('pattern')}"
    if etype == "too_short":
        return f"must have at least {ctx.get('min_length')} item(s)"
    if etype == "value_error":
        error = ctx.get("error")
        return str(error) if error is not None else err["msg"].removeprefix("Value error, ")
    if etype == "union_tag_invalid":
        return "must be a list of nodes or a template mapping with count and ip: DHCP"
    return " ".join(str(err["msg"]).split())


def translate(exc: ValidationError, data: Any, positions: Positions, file: str) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    errors = exc.errors()
    located = [(_walk(tuple(e["loc"]), data, e["type"]), e) for e in errors]
    inner = {_path(segs) for segs, _ in located}
    for segments, err in located:
        etype = err["type"]
        path = _path(segments)
        # A list whose items failed is also reported "too short"; the items say it better.
        if etype == "too_short" and any(p.startswith(path + "[") for p in inner):
            continue
        key = str(segments[-1]) if segments else ""
        if etype == "missing":
            line, col = positions.key(_path(segments[:-1]))
            message = _message(err, key)
        elif etype == "extra_forbidden":
            line, col = positions.key(path)
            model = _closed_model_at(segments)
            message = f"unknown key '{key}'"
            if model is not None:
                message += suggest(key, known_keys(model))
        else:
            line, col = positions.value(path)
            message = _message(err, key)
            error = (err.get("ctx") or {}).get("error")
            if isinstance(error, LangError):
                col += error.column - 1 + _quote_offset(positions, path)
        out.append(Diagnostic(file, line, col, path, message))
    return out


def _quote_offset(positions: Positions, path: str) -> int:
    return 1 if path in positions.quoted else 0
