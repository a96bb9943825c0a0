"""GPUResourceAllocator: who holds which GPU resource, across clusters and processes.

A ledger of claims ``(kind, key) -> owner``:

- ``pci``           a whole GPU or a VF, by normalised PCI address ``dddd:bb:dd.f``
- ``gi_placement``  a GPU instance slot, ``"PCI/START"`` (``0000:17:00.0/4``)
- ``mig_uuid``      a MIG device, ``MIG-<uuid>``
- ``vgpu``          a vGPU device: an mdev UUID, or a VF's PCI address (vfio-vf backend)

and an owner is ``"cluster/node"`` (``hpc/hpc-compute-01``). It replaces ai-how's
``global-state.json`` allocator (which it leaves untouched) and fixes its faults:

- One JSON file with a schema version, changed only under an ``fcntl`` lock on a
  sidecar ``.lock`` file and written atomically (temporary file, fsync, rename, fsync of
  the directory), so a crash leaves either the old or the new ledger, never a torn one.
- A generation number, as OpenStack Placement does it: every write carries the
  generation the caller read; if the ledger moved on since, the write fails with
  ``StaleGeneration`` and the caller re-reads, re-decides and retries. The lock makes
  each write atomic; the generation makes the read-decide-write of a caller atomic.
- libvirt is the other source of truth: a device that any domain references counts as
  taken even when the ledger lost its claim (pass the probed ``Domain`` values).
- Releases check the owner; conflicts name both owners.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TypeVar

from planner.apply.fsutil import write_atomic
from planner.config.vms import expand_vms
from planner.host.ledger import (  # the value and file format; re-exported for callers
    KINDS,
    LEDGER_NAME,
    SCHEMA,
    SCHEMA_VERSION,
    AllocationError,
    Claim,
    ClaimKind,
    Ledger,
    LedgerCorrupt,
    check_owner,
    load_ledger,
    normalize_key,
)
from planner.host.state import Domain, HostState
from planner.lang.pci import normalize_pci

__all__ = [
    "KINDS", "LEDGER_NAME", "SCHEMA", "SCHEMA_VERSION", "AllocationConflict",
    "AllocationError", "Claim", "ClaimKind", "GPUResourceAllocator", "Ledger",
    "LedgerCorrupt", "StaleGeneration", "check_owner", "domain_holdings", "holdings",
    "normalize_key", "record_applied", "record_holdings",
]

# A device held by a libvirt domain that the ledger does not know: its owner is written
# "libvirt/<domain>" (the cluster is unknown; the node is the domain's name).
LIBVIRT_OWNER_PREFIX = "libvirt/"

class AllocationConflict(AllocationError):
    """A resource is held by another owner."""


class StaleGeneration(AllocationError):
    """The ledger changed since the caller read it: re-read and retry."""

    def __init__(self, path: Path, expected: int, actual: int) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"{path}: the allocation ledger is at generation {actual}, not {expected}: "
            "another aihow changed it; re-read and retry"
        )


def _node(owner: str) -> str:
    return owner.split("/", 1)[1]


def _same_holder(a: str, b: str) -> bool:
    """Equal owners, or a libvirt-only owner and a ledger owner of the same node."""
    if a == b:
        return True
    if a.startswith(LIBVIRT_OWNER_PREFIX) or b.startswith(LIBVIRT_OWNER_PREFIX):
        return _node(a) == _node(b)
    return False


def _claim_ids(claims: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for kind, key in claims:
        item = (kind, normalize_key(kind, key))
        if item not in out:
            out.append(item)
    return out


def domain_holdings(domains: Iterable[Domain]) -> dict[tuple[str, str], str]:
    """What libvirt domains reference: mdev UUIDs as ``vgpu`` and PCI hostdevs as both
    ``pci`` and ``vgpu`` (a VF is a vGPU on the vfio-vf backend), each to its domain."""
    held: dict[tuple[str, str], str] = {}
    for dom in sorted(domains, key=lambda d: d.name):
        for dev in dom.hostdevs:
            if dev.type == "mdev" and dev.uuid:
                held.setdefault(("vgpu", normalize_key("vgpu", dev.uuid)), dom.name)
            elif dev.type == "pci" and dev.pci:
                pci = normalize_pci(dev.pci)
                held.setdefault(("pci", pci), dom.name)
                held.setdefault(("vgpu", pci), dom.name)
    return held


# --- the allocator -----------------------------------------------------------------------

T = TypeVar("T")


class GPUResourceAllocator:
    """The ledger at ``path`` (conventionally ``STATE_DIR/allocations.json``)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")

    @classmethod
    def for_state_dir(cls, state_dir: str | os.PathLike[str]) -> GPUResourceAllocator:
        """The ledger beside apply's lock, journal and generations
        (``planner.apply.state_dir.resolve_state_dir``)."""
        return cls(Path(state_dir) / LEDGER_NAME)

    # --- reading and locking ---

    def read(self) -> Ledger:
        """The ledger now (generation 0 and no claims if it was never written)."""
        with self._locked(shared=True):
            return self._load()

    def _load(self) -> Ledger:
        return load_ledger(self.path)

    @contextlib.contextmanager
    def _locked(self, *, shared: bool = False) -> Iterator[None]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise AllocationError(f"{self.lock_path}: cannot open: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the flock

    def _write(self, ledger: Ledger) -> None:
        """Atomically replace the ledger: a crash at any point leaves the old or the new."""
        write_atomic(self.path, ledger.to_json())

    def _update(
        self, generation: int, change: Callable[[Ledger], dict[tuple[str, str], str]]
    ) -> Ledger:
        with self._locked():
            current = self._load()
            if current.generation != generation:
                raise StaleGeneration(self.path, generation, current.generation)
            claims = change(current)
            new = Ledger(current.generation + 1, claims)
            self._write(new)
            # Temporary files of writers that crashed before their rename are garbage.
            for stale in self.path.parent.glob(f".{self.path.name}.tmp-*"):
                with contextlib.suppress(OSError):
                    stale.unlink()
            return new

    # --- writes (each needs the generation the caller decided on) ---

    def claim(
        self,
        owner: str,
        resources: Iterable[tuple[str, str]],
        *,
        generation: int,
        domains: Iterable[Domain] = (),
    ) -> Ledger:
        """Give every resource to ``owner``, all or none. Claiming what ``owner`` already
        holds is a no-op for that resource. Refused when another owner holds one in the
        ledger, or a libvirt domain other than the owner's node references it."""
        check_owner(owner)
        wanted = _claim_ids(resources)
        by_domain = domain_holdings(domains)

        def change(led: Ledger) -> dict[tuple[str, str], str]:
            claims = dict(led.claims)
            for kind, key in wanted:
                holder = claims.get((kind, key))
                if holder is None and (kind, key) in by_domain:
                    holder = LIBVIRT_OWNER_PREFIX + by_domain[(kind, key)]
                if holder is not None and not _same_holder(holder, owner):
                    raise AllocationConflict(_conflict(kind, key, holder, owner))
                claims[(kind, key)] = owner
            return claims

        return self._update(generation, change)

    def release(
        self, owner: str, resources: Iterable[tuple[str, str]], *, generation: int
    ) -> Ledger:
        """Drop ``owner``'s claims on the resources, all or none. Releasing something
        another owner holds is refused, naming both; releasing a free one is a no-op."""
        check_owner(owner)
        wanted = _claim_ids(resources)

        def change(led: Ledger) -> dict[tuple[str, str], str]:
            claims = dict(led.claims)
            for kind, key in wanted:
                holder = claims.get((kind, key))
                if holder is None:
                    continue
                if not _same_holder(holder, owner):
                    raise AllocationConflict(
                        f"{kind}[{key}] is held by {holder}; {owner} cannot release it"
                    )
                del claims[(kind, key)]
            return claims

        return self._update(generation, change)

    def release_owner(self, owner: str, *, generation: int) -> Ledger:
        """Drop every claim of ``owner`` (its node was removed)."""
        check_owner(owner)
        return self._update(
            generation, lambda led: {k: o for k, o in led.claims.items() if o != owner}
        )

    def reconcile(self, domains: Iterable[Domain], *, generation: int) -> Ledger:
        """Record every device a libvirt domain references that the ledger lost, owned by
        ``libvirt/<domain>``; a ledger owner of the same node keeps its claim."""
        held = domain_holdings(domains)

        def change(led: Ledger) -> dict[tuple[str, str], str]:
            claims = dict(led.claims)
            for ident, dom in sorted(held.items()):
                claims.setdefault(ident, LIBVIRT_OWNER_PREFIX + dom)
            return claims

        return self._update(generation, change)

    # --- the read-decide-write loop, for callers that decide from what they read ---

    def transact(
        self,
        decide: Callable[[Ledger], T],
        write: Callable[[T, int], Ledger],
        *,
        attempts: int = 20,
    ) -> tuple[T, Ledger]:
        """Read, let ``decide`` choose from that view, then ``write(choice, generation)``;
        on StaleGeneration start over (at most ``attempts`` times)."""
        for _ in range(attempts):
            view = self.read()
            choice = decide(view)
            try:
                return choice, write(choice, view.generation)
            except StaleGeneration:
                continue
        raise AllocationError(
            f"{self.path}: the ledger kept changing; gave up after {attempts} tries"
        )


def _conflict(kind: str, key: str, holder: str, wanted_by: str) -> str:
    if holder.startswith(LIBVIRT_OWNER_PREFIX):
        return (
            f"{kind}[{key}] is referenced by libvirt domain {_node(holder)} (not in the "
            f"ledger); it cannot also go to {wanted_by}"
        )
    return f"{kind}[{key}] is held by {holder}; it cannot also go to {wanted_by}"


# --- what an applied config holds, read back from the host ---------------------------------


def holdings(host: HostState, owners: Mapping[str, str]) -> dict[str, list[tuple[str, str]]]:
    """What each node holds on ``host``, read back (never assumed): for every domain named
    in ``owners`` (domain name -> ``cluster/node``) its vGPU devices (mdev UUID, or VF), the
    GPU instance backing each (``PCI/START``) and that instance's MIG UUIDs."""
    parents = {p.pci: p for p in host.vgpu_parents}
    mdevs = {m.uuid: m for m in host.mdevs}
    gis = {(g.pci, gi.gi_id): gi for g in host.gpus for gi in g.gpu_instances}
    out: dict[str, list[tuple[str, str]]] = {}
    for dom in host.domains:
        owner = owners.get(dom.name)
        if owner is None:
            continue
        held = out.setdefault(owner, [])
        for hd in dom.hostdevs:
            if hd.type == "mdev" and hd.uuid in mdevs:
                m = mdevs[hd.uuid]
                parent, gi_id = parents.get(m.parent), m.gi_id
                parent_pci = m.parent
            elif hd.type == "pci" and hd.pci in parents and parents[hd.pci].current_type:
                parent = parents[hd.pci]
                gi_id, parent_pci = parent.gi_id, hd.pci
            else:
                continue
            held.append(("vgpu", hd.key))
            gpu = (parent.physfn or parent.pci) if parent is not None else parent_pci
            gi = gis.get((gpu, gi_id)) if gi_id is not None else None
            if gi is None:
                continue
            held.append(("gi_placement", f"{gpu}/{gi.placement_start}"))
            held += [("mig_uuid", ci.mig_uuid) for ci in gi.compute_instances if ci.mig_uuid]
    return out


def record_holdings(alloc: GPUResourceAllocator, clusters: Iterable[str],
                    held: Mapping[str, Iterable[tuple[str, str]]]) -> Ledger:
    """Make the ledger say exactly ``held`` for the owners of ``clusters`` (an applied
    config is the truth for its own clusters: their other claims are dropped). Refused,
    naming both owners, when another cluster holds one of them; retried on a stale
    generation."""
    mine = set(clusters)
    wanted = {owner: _claim_ids(items) for owner, items in held.items()}
    for owner in wanted:
        check_owner(owner)

    def write(_: None, generation: int) -> Ledger:
        def change(led: Ledger) -> dict[tuple[str, str], str]:
            claims = {k: o for k, o in led.claims.items()
                      if o.split("/", 1)[0] not in mine or o.startswith(LIBVIRT_OWNER_PREFIX)}
            for owner, items in sorted(wanted.items()):
                for ident in items:
                    holder = claims.get(ident)
                    if holder is not None and not _same_holder(holder, owner):
                        raise AllocationConflict(_conflict(*ident, holder, owner))
                    claims[ident] = owner
            return claims

        return alloc._update(generation, change)

    return alloc.transact(lambda _view: None, write)[1]


def record_applied(state_dir: str | os.PathLike[str], host: HostState, cfg: object,
                   released: Iterable[str] = ()) -> Ledger:
    """After a successful apply: record what the config's nodes hold now, read back from
    the probed ``host``, in the ledger of ``state_dir``. ``released``: clusters the config
    dropped (the apply undefined their domains): their claims go too."""
    vms = expand_vms(cfg)  # type: ignore[arg-type]
    owners = {vm.name: f"{vm.cluster_name}/{vm.name}" for vm in vms}
    return record_holdings(GPUResourceAllocator.for_state_dir(state_dir),
                           {vm.cluster_name for vm in vms} | set(released),
                           holdings(host, owners))
