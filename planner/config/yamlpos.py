"""Read YAML into plain Python values plus a map from key path to (line, column).

ruamel.yaml's round-trip loader keeps the position of every key and value. We copy the
document into plain dicts, lists and scalars (so nothing downstream depends on ruamel
types) and record, for each key path such as ``clusters.hpc.compute_nodes[2].ip``, where
its key and its value start (1-based line and column).

``${VAR}`` expansion happens here, per scalar, so an unset variable is reported at its own
line and column. ai-how expands the whole text before parsing instead; the results agree
because an expanded plain scalar is re-read as YAML (``${CORES:-4}`` gives the integer 4).
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.scalarstring import (
    DoubleQuotedScalarString,
    FoldedScalarString,
    LiteralScalarString,
    SingleQuotedScalarString,
)

from planner.config import yamlevents
from planner.config.expand import ExpandError, expand
from planner.errors import Diagnostic

# A document larger than this many nodes (after aliases are resolved) is refused: it is
# either a mistake or an alias bomb.
MAX_NODES = 200_000

Pos = tuple[int, int]


_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def join_path(parent: str, key: str | int) -> str:
    """``clusters.hpc`` + ``compute_nodes`` -> ``clusters.hpc.compute_nodes``; ints index;
    a key that is not a plain word is quoted: ``global["odd key"]``."""
    if isinstance(key, int):
        return f"{parent}[{key}]"
    if not _PLAIN_KEY.match(key):
        return f"{parent}[{json.dumps(key)}]"
    return f"{parent}.{key}" if parent else key


@dataclass
class Positions:
    """Where each key path's value (and, for mapping entries, its key) starts."""

    values: dict[str, Pos] = field(default_factory=dict)
    keys: dict[str, Pos] = field(default_factory=dict)
    quoted: set[str] = field(default_factory=set)  # values written as '...' or "..."

    def value(self, path: str) -> Pos:
        """Position of the value at ``path``, else of the nearest ancestor that has one."""
        return self._lookup(self.values, path)

    def key(self, path: str) -> Pos:
        """Position of the key of ``path`` (falls back to its value, then to ancestors)."""
        if path in self.keys:
            return self.keys[path]
        return self.value(path)

    def _lookup(self, table: Mapping[str, Pos], path: str) -> Pos:
        while path:
            if path in table:
                return table[path]
            path = _parent(path)
        return table.get("", (1, 1))


def _parent(path: str) -> str:
    if path.endswith("]"):
        return path[: path.rindex("[")]
    return path.rsplit(".", 1)[0] if "." in path else ""


class YamlLoadError(Exception):
    """Problems that stop loading; each one a Diagnostic."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = diagnostics
        super().__init__("; ".join(str(d) for d in diagnostics))


def load_yaml(
    text: str, file: str, env: Mapping[str, str] | None
) -> tuple[Any, Positions]:
    """Parse ``text``; expand variables with ``env`` (None: no expansion).

    Raises YamlLoadError with every problem found.
    """
    converter = _Converter(file, env)
    converter.positions.values[""] = (1, 1)
    try:
        data = yamlevents.build(text, file, converter)
    except yamlevents.Refused as exc:
        raise YamlLoadError([exc.diagnostic]) from None
    except yamlevents.Fallback:
        converter = _Converter(file, env)
        converter.positions.values[""] = (1, 1)
        data = converter.convert(_round_trip(text, file), "", (1, 1))
    if converter.diagnostics:
        raise YamlLoadError(converter.diagnostics)
    return data, converter.positions


def _round_trip(text: str, file: str) -> Any:
    """The document as ruamel.yaml's pure-Python round-trip loader reads it."""
    yaml = YAML(typ="rt", pure=True)
    yaml.preserve_quotes = True
    try:
        return yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        what = " ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
        raise YamlLoadError([Diagnostic(file, line, col, "", _one_line(what))]) from None
    except YAMLError as exc:
        message = _one_line(f"invalid YAML: {exc}")
        raise YamlLoadError([Diagnostic(file, 1, 1, "", message)]) from None
    except RecursionError:  # the event pass refuses deep nesting first, where it runs
        message = f"nested deeper than {yamlevents.MAX_DEPTH} levels"
        raise YamlLoadError([Diagnostic(file, 1, 1, "", message)]) from None
    except ValueError as exc:  # e.g. an integer literal longer than Python converts
        message = _one_line(f"invalid YAML: {exc}")
        raise YamlLoadError([Diagnostic(file, 1, 1, "", message)]) from None


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class _Converter:
    def __init__(self, file: str, env: Mapping[str, str] | None) -> None:
        self.file = file
        self.env = env
        self.positions = Positions()
        self.diagnostics: list[Diagnostic] = []
        self.count = 0
        self.active: set[int] = set()  # containers on the current path (alias cycles)

    def error(self, pos: Pos, path: str, message: str) -> None:
        self.diagnostics.append(Diagnostic(self.file, pos[0], pos[1], path, message))

    # -- the event builder's side (yamlevents.build)

    child = staticmethod(join_path)

    def enter(self, path: str, pos: Pos) -> bool:
        """Count one node; False (and one error) past MAX_NODES."""
        self.count += 1
        if path:
            self.positions.values[path] = pos
        if self.count > MAX_NODES:
            if self.count == MAX_NODES + 1:
                self.error(pos, path, f"document too large (more than {MAX_NODES} nodes)")
            return False
        return True

    def key(self, scalar: yamlevents.Scalar, path: str, pos: Pos) -> str:
        key = scalar.value
        if isinstance(key, str):
            if self.env is None:
                return key
            return str(self._text(key, scalar.quoted, scalar.block, path, pos))
        if not isinstance(key, bool | int | float) and key is not None:
            raise yamlevents.Fallback  # a date as a key: refused as the round-trip side does
        return _key_name(key)

    def value(self, scalar: yamlevents.Scalar, path: str, pos: Pos) -> Any:
        if scalar.quoted:
            self.positions.quoted.add(path)
        value = scalar.value
        if isinstance(value, str):
            return self._text(value, scalar.quoted, scalar.block, path, pos)
        return self._scalar(value, path, pos)

    # -- the round-trip loader's side

    def convert(self, node: Any, path: str, pos: Pos) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            if self.count == MAX_NODES + 1:
                self.error(pos, path, f"document too large (more than {MAX_NODES} nodes)")
            return None
        if isinstance(node, CommentedMap | CommentedSeq):
            if id(node) in self.active:
                self.error(pos, path, "recursive alias: a node contains itself")
                return None
            self.active.add(id(node))
            try:
                if isinstance(node, CommentedMap):
                    return self._mapping(node, path)
                return self._sequence(node, path)
            finally:
                self.active.discard(id(node))
        if isinstance(node, DoubleQuotedScalarString | SingleQuotedScalarString):
            self.positions.quoted.add(path)
        return self._scalar(node, path, pos)

    def _mapping(self, node: CommentedMap, path: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        base = _node_pos(node)
        for key, value in node.items():
            kpos = _lc(node, "key", key) or base
            vpos = _lc(node, "value", key) or kpos
            if isinstance(key, str):
                name = self._scalar(key, path, kpos) if self.env is not None else str(key)
                name = str(name)
            elif isinstance(key, bool | int | float) or key is None:
                name = _key_name(key)
            else:
                self.error(kpos, path, "a mapping key must be a plain scalar")
                continue
            child = join_path(path, name)
            self.positions.keys[child] = kpos
            self.positions.values[child] = vpos
            out[name] = self.convert(value, child, vpos)
        return out

    def _sequence(self, node: CommentedSeq, path: str) -> list[Any]:
        out: list[Any] = []
        base = _node_pos(node)
        for i, value in enumerate(node):
            pos = _lc(node, "item", i) or base
            child = join_path(path, i)
            self.positions.values[child] = pos
            out.append(self.convert(value, child, pos))
        return out

    def _scalar(self, node: Any, path: str, pos: Pos) -> Any:
        if isinstance(node, bool) or node is None:
            return node
        if isinstance(node, int):
            return int(node)
        if isinstance(node, float):
            return float(node)
        if isinstance(node, datetime.date):
            return node
        if not isinstance(node, str):
            return str(node)
        quoted = isinstance(node, DoubleQuotedScalarString | SingleQuotedScalarString)
        block = isinstance(node, LiteralScalarString | FoldedScalarString)
        return self._text(str(node), quoted, block, path, pos)

    def _text(self, text: str, quoted: bool, block: bool, path: str, pos: Pos) -> Any:
        """A string scalar, with ``${VAR}`` forms expanded (a plain one re-typed)."""
        if self.env is None or "$" not in text:
            return text
        try:
            expanded = expand(text, self.env)
        except ExpandError as exc:
            col = pos[1] if block else pos[1] + exc.offset + (1 if quoted else 0)
            self.error((pos[0], col), path, str(exc))
            return text
        if quoted or block:
            return expanded
        return _reread_plain(expanded)


def _key_name(key: Any) -> str:
    """The name of a mapping key that is not a string: ``null``, ``true``, ``3``..."""
    if key is None:
        return "null"
    return str(key).lower() if isinstance(key, bool) else str(key)


def _reread_plain(text: str) -> Any:
    """Type an expanded plain scalar as YAML would have typed it in the file."""
    try:
        value = YAML(typ="safe", pure=True).load(text)
    except Exception:  # not a scalar on its own (e.g. contains ': '); keep the text
        return text
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return text


def _node_pos(node: Any) -> Pos:
    try:
        return (node.lc.line + 1, node.lc.col + 1)
    except (AttributeError, TypeError):
        return (1, 1)


def _lc(node: Any, kind: str, key: Any) -> Pos | None:
    try:
        line, col = getattr(node.lc, kind)(key)
    except (KeyError, IndexError, TypeError, AttributeError):  # merged (<<) keys have none
        return None
    return (line + 1, col + 1)
