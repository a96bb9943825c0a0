"""Frozen values of the small languages. ``str(value)`` is canonical and parses back."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from enum import Enum

# Extension suffixes as NVIDIA prints them, in canonical spelling.
EXTENSIONS = ("", "+me", "-me", "+gfx", "+me.all")


@dataclass(frozen=True, order=True)
class MigProfile:
    """A MIG profile name such as ``1g.10gb+me`` or, for a compute instance, ``1c.3g.20gb``.

    Matching against hardware goes by the catalog's NVML enum and profile id; the name
    is what users write and what nvidia-smi prints.
    """

    gi_slices: int
    memory_gb: int
    extension: str = ""
    ci_slices: int | None = None

    def __post_init__(self) -> None:
        if self.extension not in EXTENSIONS:
            raise ValueError(f"unknown profile extension {self.extension!r}")

    @property
    def gi_name(self) -> str:
        """The GPU-instance part, e.g. ``3g.20gb`` for ``1c.3g.20gb``."""
        return f"{self.gi_slices}g.{self.memory_gb}gb{self.extension}"

    @property
    def is_compute_instance(self) -> bool:
        return self.ci_slices is not None

    def __str__(self) -> str:
        prefix = f"{self.ci_slices}c." if self.ci_slices is not None else ""
        return prefix + self.gi_name


@dataclass(frozen=True)
class LayoutItem:
    """``count * profile @ start``; ``start`` is a memory-slice index (a pin) or None."""

    profile: MigProfile
    count: int = 1
    start: int | None = None

    def __str__(self) -> str:
        text = str(self.profile)
        if self.count != 1:
            text = f"{self.count}*{text}"
        if self.start is not None:
            text = f"{text}@{self.start}"
        return text


@dataclass(frozen=True)
class Layout:
    """The instances wanted on one GPU: ``3g.40gb@4 + 2*1g.10gb + 2g.20gb``."""

    items: tuple[LayoutItem, ...]

    def profiles(self) -> list[tuple[MigProfile, int | None]]:
        """Each wanted instance once: (profile, pinned start or None)."""
        out: list[tuple[MigProfile, int | None]] = []
        for item in self.items:
            out.extend((item.profile, item.start) for _ in range(item.count))
        return out

    def __str__(self) -> str:
        return " + ".join(str(i) for i in self.items)


class SelectorKind(str, Enum):  # noqa: UP042 (kept: str() and format() stay as they were)
    PCI = "pci"
    INDEX = "index"
    UUID = "uuid"
    MODEL = "model"


@dataclass(frozen=True)
class GpuSelector:
    """Which GPU(s): a PCI address (normalised ``dddd:bb:dd.f``), an index, a ``GPU-`` UUID,
    or a model glob matched case-insensitively against the product name and catalog id."""

    kind: SelectorKind
    value: str

    def matches(self, *, pci: str, index: int, uuid: str, names: tuple[str, ...]) -> bool:
        if self.kind is SelectorKind.PCI:
            return pci == self.value
        if self.kind is SelectorKind.INDEX:
            return index == int(self.value)
        if self.kind is SelectorKind.UUID:
            return uuid.lower() == self.value.lower()
        pattern = self.value.lower()
        return any(fnmatch.fnmatchcase(n.lower(), pattern) for n in names)

    def __str__(self) -> str:
        if self.kind is SelectorKind.MODEL:
            return f"model={self.value}"
        return self.value
