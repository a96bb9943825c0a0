"""Parse the resource addresses plans and journals use (architecture.md, "Resource
addresses"): ``gpu[PCI].mig``, ``gpu[PCI].gi[PROFILE@START]``,
``gpu[PCI].gi[PROFILE@START].ci[PROFILE@START]``, ``vgpu[UUID]``, ``domain[NAME]``,
``domain[NAME].hostdev[KEY]``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from planner.errors import AihowError

_PART = re.compile(r"([a-z_]+)(?:\[([^\]]*)\])?")


@dataclass(frozen=True)
class Address:
    text: str
    parts: tuple[tuple[str, str | None], ...]  # (name, bracket value or None)

    def value(self, name: str) -> str | None:
        return next((v for n, v in self.parts if n == name), None)

    @property
    def gpu(self) -> str | None:
        return self.value("gpu")

    def slot(self, name: str) -> tuple[str, int] | None:
        """``gi[3g.40gb@4]`` -> ("3g.40gb", 4)."""
        raw = self.value(name)
        if raw is None or "@" not in raw:
            return None
        profile, _, start = raw.rpartition("@")
        if not start.isdigit():
            return None
        return profile, int(start)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(n for n, _ in self.parts)


def parse_address(text: str) -> Address:
    parts: list[tuple[str, str | None]] = []
    for index, chunk in enumerate(_split(text)):
        match = _PART.fullmatch(chunk)
        if match is None:
            raise AihowError(f"resource address {text!r}: cannot read part {index + 1} {chunk!r}")
        parts.append((match.group(1), match.group(2)))
    if not parts:
        raise AihowError("empty resource address")
    return Address(text, tuple(parts))


def _split(text: str) -> list[str]:
    """Split on dots outside brackets (PCI addresses and profiles contain dots)."""
    out: list[str] = []
    current: list[str] = []
    depth = 0
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == "." and depth == 0:
            out.append("".join(current))
            current = []
        else:
            current.append(ch)
    out.append("".join(current))
    return out
