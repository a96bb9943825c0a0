"""aihow's small languages: MIG profile names, layout expressions and GPU selectors.

Each is parsed by a lark grammar shipped in ``planner.grammar`` into a frozen value
whose ``str()`` parses back to an equal value. This package is a leaf: it imports
nothing else of the project, so config and hardware may both use it.
"""

from planner.lang.parse import LangError, parse_layout, parse_profile, parse_selector
from planner.lang.pci import normalize_pci
from planner.lang.values import (
    GpuSelector,
    Layout,
    LayoutItem,
    MigProfile,
    SelectorKind,
)

__all__ = [
    "GpuSelector",
    "LangError",
    "Layout",
    "LayoutItem",
    "MigProfile",
    "SelectorKind",
    "normalize_pci",
    "parse_layout",
    "parse_profile",
    "parse_selector",
]
