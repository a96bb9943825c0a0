"""aihow's small languages: MIG profile names, layout expressions and GPU selectors.

Each is parsed by a lark grammar shipped in ``planner.grammar`` into a frozen value
whose ``str()`` parses back to an equal value. This package is a leaf: it imports
nothing else of the project, so config and hardware may both use it.

The names below load on first use: importing ``planner.lang.pci`` (the simulated
nvidia-smi and sriov-manage, started once per call) must not load lark.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from planner.lang.parse import LangError, parse_layout, parse_profile, parse_selector
    from planner.lang.pci import normalize_pci
    from planner.lang.values import (
        GpuSelector,
        Layout,
        LayoutItem,
        MigProfile,
        SelectorKind,
    )

_WHERE = {
    "LangError": "parse", "parse_layout": "parse", "parse_profile": "parse",
    "parse_selector": "parse", "normalize_pci": "pci", "GpuSelector": "values",
    "Layout": "values", "LayoutItem": "values", "MigProfile": "values",
    "SelectorKind": "values",
}

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


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'planner.lang' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"planner.lang.{module}"), name)
    globals()[name] = value  # once
    return value
