"""The allocation ledger's claims in plan-making: a slice another cluster holds is refused.

Claims come from ``GPUResourceAllocator`` (the CLI reads the ledger and passes it in as a
value). The config is the whole truth for its own clusters, so only claims whose owner
belongs to another cluster count here ("foreign"); claims written ``libvirt/<domain>``
are what libvirt already shows, and the probed domains speak for those.

Keys follow the ledger: ``gi_placement`` ``"PCI/START"``, ``mig_uuid`` ``"MIG-<uuid>"``,
``vgpu`` an mdev UUID or a VF's PCI address.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from planner.lang.pci import normalize_pci
from planner.plan.request import SliceRequest

Claims = Mapping[tuple[str, str], str]


def foreign(claims: Claims, clusters: Iterable[str]) -> dict[tuple[str, str], str]:
    """The claims held by owners outside ``clusters``."""
    mine = set(clusters)
    out: dict[tuple[str, str], str] = {}
    for ident, owner in claims.items():
        if owner.startswith("libvirt/") or owner.split("/", 1)[0] in mine:
            continue
        out[ident] = owner
    return out


def gi_key(gpu: str, start: int) -> str:
    return f"{normalize_pci(gpu)}/{start}"


def conflict(req: SliceRequest, kind: str, key: str, holder: str) -> str:
    """The refusal, naming both owners."""
    return (f"{req.describe()}: {kind}[{key}] is held by {holder} (allocation ledger); "
            f"it cannot also go to {req.owner}")
