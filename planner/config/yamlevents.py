"""The fast path of ``yamlpos.load_yaml``: libyaml's parser (ruamel.yaml's C extension,
``ruamel.yaml.clib``) read as a stream of events, built into plain values in one loop.

Each event carries the line and column where it starts, which is all the position table
needs, so no node tree and no round-trip objects are made (the pure-Python round-trip
loader spent 94% of a 7,000-VM config's load there). The loop keeps its own stack, so a
deeply nested document cannot overflow anything; it stops at ``MAX_DEPTH`` levels.

Plain scalars are typed with ruamel.yaml's YAML 1.2 rules and, where they are not plain
decimal integers or strings, built by ruamel.yaml's own round-trip constructor, so values
are exactly what the round-trip loader gives. Documents that use what only the round-trip
loader handles the same way — anchors and aliases, merge keys, explicit tags,
``%YAML``/``%TAG`` directives, complex or duplicate keys, more than one document — and
documents libyaml refuses are left to the round-trip loader (``Fallback``): its results and
its messages stay the reference.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from ruamel.yaml.constructor import RoundTripConstructor
from ruamel.yaml.error import YAMLError
from ruamel.yaml.events import (
    AliasEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)
from ruamel.yaml.nodes import ScalarNode
from ruamel.yaml.resolver import BaseResolver, VersionedResolver
from ruamel.yaml.tag import Tag

from planner.errors import Diagnostic

MAX_DEPTH = 64  # nesting levels of mappings and sequences
MAX_INT_DIGITS = 100  # digits of an integer literal

Pos = tuple[int, int]

try:
    from _ruamel_yaml import CParser  # ruamel.yaml.clib
except ImportError:  # not CPython, or the extension is not installed: the pure loader only
    CParser = None


class Fallback(Exception):
    """The document needs the round-trip loader (see the module doc)."""


class Refused(Exception):
    """The document is refused whatever loader reads it: too deep, or an integer too long."""

    def __init__(self, diagnostic: Diagnostic) -> None:
        self.diagnostic = diagnostic
        super().__init__(str(diagnostic))


def available() -> bool:
    return CParser is not None


_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_DECIMAL = re.compile(r"^[-+]?(?:0|[1-9][0-9]*)$")
_DIGITS = re.compile(r"[0-9a-fA-F]")
_resolvers: dict[Any, list[tuple[str, Any]]] | None = None
_constructor: Any = None


def _implicit_tag(value: str) -> str:
    """The YAML 1.2 tag of a plain scalar, as ruamel.yaml's resolver decides it."""
    global _resolvers
    if _resolvers is None:
        _resolvers = VersionedResolver(version=(1, 2)).versioned_resolver
    for tag, regexp in _resolvers.get(value[:1], ()):
        if regexp.match(value):
            return str(tag)
    return _STR


def _construct(tag: str, value: str) -> Any:
    """A plain scalar of a non-string tag, built by ruamel.yaml's round-trip constructor."""
    global _constructor
    if _constructor is None:
        class _Loader:  # what the constructor asks its loader for
            pass

        loader = _Loader()
        loader._resolver = VersionedResolver(version=(1, 2), loader=loader)  # type: ignore[attr-defined]
        _constructor = RoundTripConstructor(preserve_quotes=True, loader=loader)
    return _constructor.construct_object(ScalarNode(Tag(suffix=tag), value), deep=True)


class Scalar:
    """What the converter needs of one scalar: its text, how it was written, its value."""

    __slots__ = ("block", "quoted", "text", "value")

    def __init__(self, text: str, style: str | None, value: Any) -> None:
        self.text = text
        self.quoted = style in ("'", '"')
        self.block = style in ("|", ">")
        self.value = value  # the typed value of a plain scalar, else the text


def _scalar(event: Any, file: str, path: str) -> Scalar:
    if event.tag is not None or event.anchor is not None:
        raise Fallback
    text = event.value
    style = event.style or None
    if not event.implicit[0]:  # quoted or block: a string
        return Scalar(text, style, text)
    tag = _implicit_tag(text)
    if tag == _STR:
        return Scalar(text, None, text)
    if tag == _INT:
        if sum(1 for _ in _DIGITS.finditer(text)) > MAX_INT_DIGITS:
            line, col = _pos(event)
            raise Refused(Diagnostic(file, line, col, path, f"integer literal too long "
                                     f"({len(text)} characters; at most {MAX_INT_DIGITS} "
                                     "digits)"))
        if _DECIMAL.match(text):
            return Scalar(text, None, int(text))
    if tag.endswith(":merge"):
        raise Fallback
    return Scalar(text, None, _construct(tag, text))


def _pos(event: Any) -> Pos:
    mark = event.start_mark
    return (mark.line + 1, mark.column + 1)


class _Frame:
    __slots__ = ("container", "flow", "key", "keys", "path")

    def __init__(self, container: Any, path: str, flow: bool) -> None:
        self.container = container
        self.path = path
        self.flow = flow
        self.key: tuple[str, Any] | None = None  # a mapping's key waiting for its value
        self.keys: set[Any] = set()


def build(text: str, file: str, sink: Any) -> Any:
    """Build the document in ``text`` through ``sink`` (the converter of ``yamlpos``):

    * ``sink.key(scalar, path, pos) -> str`` names a mapping key (expanding variables);
    * ``sink.value(scalar, path, pos) -> Any`` gives a scalar's value;
    * ``sink.enter(path, pos) -> bool`` records a node, False once too many nodes;
    * ``sink.child(parent, key) -> str`` is the key path of a child.

    Raises ``Fallback`` for what the round-trip loader must read, ``Refused`` for a document
    too deep or with an integer literal too long. libyaml's own errors raise ``Fallback``
    too, so that messages come from the round-trip loader as they always did.
    """
    if CParser is None:
        raise Fallback
    try:
        return _build(_Parser(text), file, sink)
    except YAMLError:
        raise Fallback from None
    except Fallback:
        _check_depth(text, file)  # the round-trip loader recurses: bound it the same way
        raise


def _check_depth(text: str, file: str) -> None:
    """Raise Refused when the document nests deeper than MAX_DEPTH (as far as libyaml
    reads it)."""
    parser = _Parser(text)
    depth = 0
    try:
        while parser.check_event():
            event = parser.get_event()
            kind = type(event)
            if kind is MappingStartEvent or kind is SequenceStartEvent:
                depth += 1
                if depth > MAX_DEPTH:
                    line, col = _pos(event)
                    raise Refused(Diagnostic(file, line, col, "",
                                             f"nested deeper than {MAX_DEPTH} levels"))
            elif kind is MappingEndEvent or kind is SequenceEndEvent:
                depth -= 1
    except YAMLError:
        return


class _Parser(CParser if CParser is not None else object):  # type: ignore[misc]
    """libyaml's parser; the C parser asks its owner for a resolver it does not use here."""

    def __init__(self, text: str) -> None:
        CParser.__init__(self, text)
        self._resolver = BaseResolver(loadumper=self)

    def descend_resolver(self, *args: Any) -> None:
        pass

    def ascend_resolver(self) -> None:
        pass


def _build(parser: Any, file: str, sink: Any) -> Any:
    get: Callable[[], Any] = parser.get_event
    stack: list[_Frame] = []
    root: Any = None
    documents = 0
    stopped = False  # too many nodes: read on only to check the depth
    empty: str | None = None  # the path of an empty plain scalar just read
    while True:
        event = get()
        kind = type(event)
        if empty is not None:
            # The round-trip parser places an empty value where the next token starts.
            sink.positions.values[empty] = _pos(event)
            empty = None
        if kind is StreamEndEvent:
            return root
        if kind is DocumentStartEvent:
            documents += 1
            if documents > 1 or getattr(event, "version", None) or getattr(event, "tags", None):
                raise Fallback
            continue
        if kind is MappingEndEvent or kind is SequenceEndEvent:
            stack.pop()
            continue
        if kind is AliasEvent:
            raise Fallback
        if kind is not ScalarEvent and kind is not MappingStartEvent and (
                kind is not SequenceStartEvent):
            continue  # stream and document ends
        pos = _pos(event)
        top = stack[-1] if stack else None
        if top is not None and type(top.container) is dict and top.key is None:
            # a mapping key
            if kind is not ScalarEvent:
                raise Fallback  # a complex key
            scalar = _scalar(event, file, top.path)
            if scalar.value in top.keys:
                raise Fallback  # a duplicate key: the round-trip loader's message
            top.keys.add(scalar.value)
            top.key = (sink.key(scalar, top.path, pos), pos)
            continue
        if top is None:
            path = ""
        elif top.key is not None:
            name, kpos = top.key
            path = sink.child(top.path, name)
            sink.positions.keys[path] = kpos
        else:
            path = sink.child(top.path, len(top.container))
        if kind is ScalarEvent:
            scalar = _scalar(event, file, path)
            value = None if stopped else sink.value(scalar, path, pos)
            if path and not event.value and not event.style:
                if top is None or top.flow or type(top.container) is not dict:
                    raise Fallback  # where the parsers place it differently
                empty = path
        else:
            if event.tag is not None or event.anchor is not None:
                raise Fallback
            if len(stack) >= MAX_DEPTH:
                raise Refused(Diagnostic(file, pos[0], pos[1], "", f"nested deeper than "
                                         f"{MAX_DEPTH} levels"))  # (the key path is as long)
            value = {} if kind is MappingStartEvent else []
        if not stopped:
            stopped = not sink.enter(path, pos)
        if top is None:
            root = value
        elif top.key is not None:
            top.container[top.key[0]] = value
            top.key = None
        else:
            top.container.append(value)
        if kind is not ScalarEvent:
            stack.append(_Frame(value, path, bool(event.flow_style)))
