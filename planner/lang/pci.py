"""PCI address normalisation: every comparison in aihow uses ``dddd:bb:dd.f`` in lowercase."""

from __future__ import annotations

import re

_PCI = re.compile(
    r"^(?:(?P<domain>[0-9a-fA-F]{4,8}):)?(?P<bus>[0-9a-fA-F]{2}):(?P<dev>[0-9a-fA-F]{2})"
    r"\.(?P<fn>[0-7])$"
)


def normalize_pci(text: str) -> str:
    """``17:00.0`` -> ``0000:17:00.0``; nvidia-smi's ``00000000:3B:00.0`` -> ``0000:3b:00.0``.

    Raises ValueError for anything that is not a PCI address.
    """
    m = _PCI.match(text.strip())
    if not m:
        raise ValueError(f"not a PCI address: {text!r} (expected dddd:bb:dd.f or bb:dd.f)")
    domain = int(m["domain"] or "0", 16)
    if domain > 0xFFFF:
        raise ValueError(f"PCI domain out of range in {text!r}")
    return f"{domain:04x}:{m['bus'].lower()}:{m['dev'].lower()}.{m['fn']}"
