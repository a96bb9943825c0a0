"""The allocation ledger as a value and a file format (``STATE_DIR/allocations.json``).

Reading it is a host fact plan-making needs (which slice another cluster's node holds),
so the value and its parser live here; ``planner.apply.allocator`` changes the file under
a lock. Writes replace the file by an atomic rename, so a reader without the lock sees
either the old or the new ledger, never a torn one.
"""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from planner.errors import AihowError
from planner.lang.pci import normalize_pci

LEDGER_NAME = "allocations.json"  # the GPUResourceAllocator ledger in the state directory

SCHEMA = "aihow-gpu-allocations"
SCHEMA_VERSION = 1

ClaimKind = Literal["pci", "gi_placement", "mig_uuid", "vgpu"]
KINDS: tuple[ClaimKind, ...] = ("pci", "gi_placement", "mig_uuid", "vgpu")
_OWNER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_MIG = re.compile(r"^MIG-([0-9a-fA-F-]{36})$")
_MIG_LEGACY = re.compile(r"^MIG-GPU-([0-9a-fA-F-]{36})/(\d+)/(\d+)$")


class AllocationError(AihowError):
    """A claim or release that the ledger refuses."""


class LedgerCorrupt(AllocationError):
    """The ledger file exists but cannot be read as a ledger."""


# --- keys ----------------------------------------------------------------------------


def normalize_key(kind: str, key: str) -> str:
    """The canonical text of a resource key of ``kind``; AllocationError if invalid."""
    text = key.strip() if isinstance(key, str) else ""
    try:
        if kind == "pci":
            return normalize_pci(text)
        if kind == "gi_placement":
            pci, sep, start = text.rpartition("/")
            if not sep or not start.isdigit():
                raise ValueError("expected PCI/START")
            return f"{normalize_pci(pci)}/{int(start)}"
        if kind == "mig_uuid":
            m = _MIG.match(text)
            if m:
                return f"MIG-{uuid.UUID(m[1])}"
            m = _MIG_LEGACY.match(text)
            if m:
                return f"MIG-GPU-{uuid.UUID(m[1])}/{int(m[2])}/{int(m[3])}"
            raise ValueError("expected MIG-<uuid>")
        if kind == "vgpu":
            # An mdev UUID, or a VF address for the vfio-vf backend.
            with contextlib.suppress(ValueError):
                return str(uuid.UUID(text))
            return normalize_pci(text)
    except ValueError as exc:
        raise AllocationError(f"invalid {kind} key {key!r}: {exc}") from None
    raise AllocationError(f"unknown claim kind {kind!r} (expected one of {', '.join(KINDS)})")


def check_owner(owner: str) -> str:
    if not isinstance(owner, str) or not _OWNER.match(owner):
        raise AllocationError(f"invalid owner {owner!r}: expected 'cluster/node'")
    return owner


@dataclass(frozen=True, order=True)
class Claim:
    kind: str  # one of KINDS
    key: str
    owner: str

    @property
    def address(self) -> str:
        return f"{self.kind}[{self.key}]"


# --- the ledger value ------------------------------------------------------------------


@dataclass(frozen=True)
class Ledger:
    generation: int = 0
    claims: Mapping[tuple[str, str], str] = field(default_factory=dict)

    def owner_of(self, kind: str, key: str) -> str | None:
        return self.claims.get((kind, normalize_key(kind, key)))

    def held_by(self, owner: str) -> list[Claim]:
        return sorted(Claim(k, key, o) for (k, key), o in self.claims.items() if o == owner)

    def all_claims(self) -> list[Claim]:
        return sorted(Claim(k, key, o) for (k, key), o in self.claims.items())

    def to_json(self) -> str:
        doc = {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "generation": self.generation,
            "claims": [{"kind": c.kind, "key": c.key, "owner": c.owner} for c in self.all_claims()],
        }
        return json.dumps(doc, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, path: Path) -> Ledger:
        try:
            doc = json.loads(text)
            if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
                raise ValueError(f"not an aihow allocation ledger (schema {SCHEMA!r} missing)")
            if doc.get("schema_version") != SCHEMA_VERSION:
                raise ValueError(
                    f"schema_version {doc.get('schema_version')!r} is not {SCHEMA_VERSION} "
                    "(written by another aihow version)"
                )
            gen = doc["generation"]
            if not isinstance(gen, int) or gen < 0:
                raise ValueError("generation must be a non-negative integer")
            claims: dict[tuple[str, str], str] = {}
            for item in doc["claims"]:
                kind, key = item["kind"], normalize_key(item["kind"], item["key"])
                claims[(kind, key)] = check_owner(item["owner"])
        except (ValueError, KeyError, TypeError, AllocationError) as exc:
            raise LedgerCorrupt(f"{path}: cannot read the allocation ledger: {exc}") from None
        return cls(gen, claims)


def load_ledger(path: Path) -> Ledger:
    """The ledger at ``path`` (generation 0 and no claims if it was never written)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Ledger()
    except OSError as exc:
        raise AllocationError(f"{path}: cannot read: {exc.strerror}") from None
    return Ledger.from_json(text, path)


def read_claims(state_dir: Path) -> dict[tuple[str, str], str]:
    """The claims of the ledger in ``state_dir`` (none when it was never written; reading
    creates nothing)."""
    return dict(load_ledger(Path(state_dir) / LEDGER_NAME).claims)
