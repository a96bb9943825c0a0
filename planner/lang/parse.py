"""Parse profile names, layout expressions and GPU selectors with the shipped lark grammars.

A syntax error is a LangError naming the 1-based column and what was expected there.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

from lark import Lark, Token, Tree, UnexpectedEOF, UnexpectedInput, UnexpectedToken
from lark import __version__ as lark_version

from planner import diskcache
from planner.lang.pci import normalize_pci
from planner.lang.values import GpuSelector, Layout, LayoutItem, MigProfile, SelectorKind


class LangError(ValueError):
    """A syntax error in one of the small languages; ``column`` is 1-based."""

    def __init__(self, what: str, text: str, column: int, expected: str) -> None:
        self.what = what
        self.text = text
        self.column = column
        self.expected = expected
        super().__init__(f"invalid {what} {text!r}: at column {column}, expected {expected}")


_OPTIONS = {"parser": "lalr", "maybe_placeholders": False}

# The N of ``N*PROFILE`` in a layout: no GPU holds more than a handful of instances, and a
# huge N would be expanded into that many items (docs/config-reference.md, "Limits").
MAX_LAYOUT_REPEAT = 64


@cache
def _parser(name: str) -> Lark:
    """The LALR parser of ``grammar/<name>.lark``.

    Building the tables costs tens of milliseconds on every start, loading them back well
    under one, so the built parser is cached on disk. The cache is only an optimisation:
    a missing, unreadable or stale file means a rebuild, and a failed write is ignored.
    """
    grammar = resources.files("planner.grammar").joinpath(f"{name}.lark").read_text()
    path = diskcache.entry_path("lark", grammar, lark_version, repr(_OPTIONS))
    if path is not None:
        try:
            with path.open("rb") as f:
                return Lark.load(f)
        except Exception:  # noqa: BLE001 - absent or unusable cache: build instead
            pass
    parser = Lark(grammar, **_OPTIONS)
    if path is not None:
        diskcache.store(path, parser.save)
    return parser


# How each terminal reads in an error message.
_EXPECTED = {
    "$END": "end of input",
    "<END-OF-FILE>": "end of input",
    "INT": "a number",
    "COUNT": "a count",
    "START": "a start slice",
    "PROFILE": "a profile name such as 1g.10gb",
    "PLUS": "'+'",
    "STAR": "'*'",
    "AT": "'@'",
    "CI_UNIT": "'c.'",
    "GI_UNIT": "'g.'",
    "GB": "'gb'",
    "EXT": "an extension (+me, -me, +gfx, +me.all)",
    "MIG_PREFIX": "'MIG '",
    "PCI_ADDRESS": "a PCI address",
    "INDEX": "a GPU index",
    "GPU_UUID": "GPU-<uuid>",
    "MODEL_PREFIX": "model=GLOB",
    "GLOB": "a model pattern such as H100*",
}


def _describe(expected: set[str]) -> str:
    names = sorted({_EXPECTED.get(e, repr(e.lower())) for e in expected})
    if not names:
        return "end of input"
    if len(names) == 1:
        return names[0]
    return ", ".join(names[:-1]) + " or " + names[-1]


def _run(name: str, what: str, text: str) -> Tree[Token]:
    try:
        return _parser(name).parse(text)
    except UnexpectedInput as exc:
        column = getattr(exc, "column", 0) or 0
        at_end = isinstance(exc, UnexpectedEOF) or (
            isinstance(exc, UnexpectedToken) and exc.token.type == "$END"
        )
        if at_end or not isinstance(column, int) or column <= 0:
            column = len(text) + 1
        expected = set(getattr(exc, "expected", None) or getattr(exc, "allowed", None) or ())
        if not at_end and column > 1 and _parses(name, text[: column - 1]):
            expected.add("$END")  # the text would be complete right before the bad character
        raise LangError(what, text, column, _describe(expected)) from None


def _parses(name: str, text: str) -> bool:
    try:
        _parser(name).parse(text)
    except UnexpectedInput:
        return False
    return True


def _profile_from(tree: Tree[Token]) -> MigProfile:
    values: dict[str, int | str] = {}
    for child in tree.children:
        if isinstance(child, Tree):
            token = child.children[0]
            assert isinstance(token, Token)
            values[str(child.data)] = str(token) if child.data == "extension" else int(token)
    ci = values.get("ci")
    return MigProfile(
        gi_slices=int(values["gi"]),
        memory_gb=int(values["memory"]),
        extension=str(values.get("extension", "")),
        ci_slices=None if ci is None else int(ci),
    )


def parse_profile(text: str) -> MigProfile:
    """``1g.10gb+me`` -> MigProfile; ``MIG 3g.20gb`` (NVML's spelling) is accepted too."""
    stripped = text.strip()
    tree = _run("profile", "MIG profile", stripped)
    return _profile_from(tree)


def parse_layout(text: str) -> Layout:
    """``3g.40gb@4 + 2*1g.10gb`` -> Layout (whitespace-insensitive)."""
    tree = _run("layout", "layout", text)
    items: list[LayoutItem] = []
    for item in tree.children:
        if not isinstance(item, Tree):
            continue  # a PLUS between items
        count, start, profile = 1, None, None
        for tok in item.children:
            assert isinstance(tok, Token)
            if tok.type == "COUNT":
                if len(tok.lstrip("0")) > len(str(MAX_LAYOUT_REPEAT)) or (
                        int(tok) > MAX_LAYOUT_REPEAT):
                    raise LangError("layout", text, tok.column or 1,
                                    f"a count of at most {MAX_LAYOUT_REPEAT}")
                count = int(tok)
                if count < 1:
                    raise LangError("layout", text, tok.column or 1, "a count of at least 1")
            elif tok.type == "START":
                start = int(tok)
            elif tok.type == "PROFILE":
                profile = parse_profile(str(tok))
        assert profile is not None
        items.append(LayoutItem(profile=profile, count=count, start=start))
    return Layout(items=tuple(items))


# Character templates for diagnosing a selector that looks like a PCI address or UUID:
# h = hex digit, f = PCI function 0-7, anything else literal.
_UUID_TEMPLATE = "GPU-hhhhhhhh-hhhh-hhhh-hhhh-hhhhhhhhhhhh"
_SELECTOR_HINT = "a PCI address (dddd:bb:dd.f or bb:dd.f), a GPU index, GPU-<uuid> or model=GLOB"


def _walk_template(text: str, template: str, offset: int = 0) -> tuple[int, str] | None:
    """(1-based column, expectation) of the first character of ``text`` that breaks
    ``template``; None when it fits."""
    for i, want in enumerate(template):
        got = text[i] if i < len(text) else ""
        ok = (
            (want == "h" and got != "" and got in "0123456789abcdefABCDEF")
            or (want == "f" and got != "" and got in "01234567")
            or (want not in "hf" and got.upper() == want.upper() and got != "")
        )
        if not ok:
            expected = {"h": "a hex digit", "f": "a PCI function 0-7"}.get(want, repr(want))
            return offset + i + 1, expected
    if len(text) > len(template):
        return offset + len(template) + 1, "end of input"
    return None


def _selector_error(text: str) -> LangError:
    what = "GPU selector"
    if text.lower().startswith("model="):
        return LangError(what, text, 7, _EXPECTED["GLOB"])
    if text[:4].upper() == "GPU-":
        where = _walk_template(text, _UUID_TEMPLATE) or (1, _SELECTOR_HINT)
        return LangError(what, text, where[0], where[1])
    if ":" in text:
        head = text.split(":", 1)[0]
        if len(head) in range(4, 9) and text.count(":") >= 2:
            template = "h" * len(head) + ":hh:hh.f"
        else:
            template = "hh:hh.f"
        broken = _walk_template(text, template)
        if broken is not None:
            return LangError(what, text, broken[0], f"{broken[1]} (in a PCI address)")
    m = re.match(r"[0-9]+", text)
    if m:
        return LangError(what, text, m.end() + 1, "a digit, ':' (PCI address) or end of input")
    return LangError(what, text, 1, _SELECTOR_HINT)


def parse_selector(text: str) -> GpuSelector:
    """A PCI address, an index, a ``GPU-`` UUID or ``model=GLOB``."""
    stripped = text.strip()
    try:
        tree = _run("selector", "GPU selector", stripped)
    except LangError:
        raise _selector_error(stripped) from None
    token = tree.children[-1]
    assert isinstance(token, Token)
    kind = SelectorKind(tree.data)
    value = str(token)
    if kind is SelectorKind.PCI:
        value = normalize_pci(value)
    elif kind is SelectorKind.INDEX:
        value = str(int(value))
    elif kind is SelectorKind.UUID:
        value = "GPU-" + value[4:].lower()
    else:
        value = value.strip()
    return GpuSelector(kind=kind, value=value)
