"""Parse profile names, layout expressions and GPU selectors with the shipped lark grammars."""

from __future__ import annotations

from functools import cache
from importlib import resources

from lark import Lark, Token, Transformer, UnexpectedInput

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


@cache
def _parser(name: str) -> Lark:
    grammar = resources.files("planner.grammar").joinpath(f"{name}.lark").read_text()
    return Lark(grammar, parser="lalr", maybe_placeholders=False)


_EXPECTED = {
    "INT": "a number",
    "COUNT": "a count",
    "START": "a start slice",
    "PROFILE": "a profile name such as 1g.10gb",
    "PLUS": "'+'",
    "STAR": "'*'",
    "__ANON_0": "a profile name",
    "EXT": "an extension (+me, -me, +gfx, +me.all)",
    "MIG_PREFIX": "'MIG '",
    "PCI_ADDRESS": "a PCI address",
    "INDEX": "a GPU index",
    "GPU_UUID": "a GPU-<uuid>",
    "GLOB": "a model pattern",
}


def _describe(expected: set[str]) -> str:
    names = sorted({_EXPECTED.get(e, repr(e) if len(e) == 1 else e.lower()) for e in expected})
    if not names:
        return "end of input"
    return " or ".join(names)


def _run(name: str, what: str, text: str):  # type: ignore[no-untyped-def]
    try:
        return _parser(name).parse(text)
    except UnexpectedInput as exc:
        column = getattr(exc, "column", 0) or 0
        if column <= 0:  # unexpected end of input
            column = len(text) + 1
        expected = getattr(exc, "expected", None) or getattr(exc, "allowed", None) or set()
        raise LangError(what, text, column, _describe(set(expected))) from None


class _ProfileTx(Transformer):  # type: ignore[type-arg]
    def profile(self, children: list) -> MigProfile:  # type: ignore[type-arg]
        ci = gi = mem = None
        ext = ""
        for child in children:
            if isinstance(child, tuple):
                kind, value = child
                if kind == "ci":
                    ci = value
                elif kind == "gi":
                    gi = value
                elif kind == "mem":
                    mem = value
                else:
                    ext = value
        assert gi is not None and mem is not None
        return MigProfile(gi_slices=gi, memory_gb=mem, extension=ext, ci_slices=ci)

    def ci(self, c: list[Token]) -> tuple[str, int]:
        return ("ci", int(c[0]))

    def gi(self, c: list[Token]) -> tuple[str, int]:
        return ("gi", int(c[0]))

    def memory(self, c: list[Token]) -> tuple[str, int]:
        return ("mem", int(c[0]))

    def extension(self, c: list[Token]) -> tuple[str, str]:
        return ("ext", str(c[0]))


def parse_profile(text: str) -> MigProfile:
    """``1g.10gb+me`` -> MigProfile; ``MIG 3g.20gb`` (NVML's spelling) is accepted too."""
    tree = _run("profile", "MIG profile", text.strip())
    return _ProfileTx().transform(tree)  # type: ignore[no-any-return]


def _positive(value: int, what: str, text: str, token: Token) -> int:
    if value < 1:
        raise LangError("layout", text, (token.column or 1), f"{what} of at least 1")
    return value


def parse_layout(text: str) -> Layout:
    """``3g.40gb@4 + 2*1g.10gb`` -> Layout (whitespace-insensitive)."""
    tree = _run("layout", "layout", text)
    items: list[LayoutItem] = []
    for item in tree.children:
        count, start, profile = 1, None, None
        for tok in item.children:
            if tok.type == "COUNT":
                count = _positive(int(tok), "a count", text, tok)
            elif tok.type == "START":
                start = int(tok)
            else:
                profile = parse_profile(str(tok))
        assert profile is not None
        items.append(LayoutItem(profile=profile, count=count, start=start))
    return Layout(items=tuple(items))


def parse_selector(text: str) -> GpuSelector:
    """A PCI address, an index, a ``GPU-`` UUID or ``model=GLOB``."""
    stripped = text.strip()
    tree = _run("selector", "GPU selector", stripped)
    token = tree.children[0]
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
