"""A saved probe as a read-only host: ``aihow probe -o FILE`` and ``--host snapshot:FILE``.

A snapshot holds what plan-making reads from a host: the probed ``HostState`` and the
records aihow keeps about it (domains it defined, the allocation ledger's claims). A plan
made against it is the plan the live host would have given at that moment, with the live
host's URI in it, so it can be reviewed away from the GPU host (a pull request) and then
applied on the host itself, where apply's fingerprint check refuses it if the host has
changed since.

The format (JSON, sorted keys, two-space indent; docs/plan-format.md):

    {"format": "aihow-host-snapshot", "format_version": 1,
     "aihow_version": "...", "host_uri": "sim:/srv/gpu1",
     "state": {... HostState, as `aihow probe --format json` prints it ...},
     "records": {"defined": [{"name", "cluster", "xml"}, ...],
                 "claims": [{"kind", "key", "owner"}, ...]}}

``SnapshotEnvironment`` serves ``probe()`` and ``records()`` from the file; every other
port, the mutating ones first, refuses with one line naming the snapshot.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from planner import __version__
from planner.host.environment import Environment, ToolPaths
from planner.host.errors import HostError
from planner.host.records import DefinedDomain, HostRecords
from planner.host.state import HostState

if TYPE_CHECKING:
    from planner.host.libvirt_conn import LibvirtSession
    from planner.host.mdev_persist import MdevPersistence
    from planner.host.nvml import NvmlHost
    from planner.host.sysfs import Sysfs

FORMAT = "aihow-host-snapshot"
FORMAT_VERSION = 1


def snapshot_json(state: HostState, records: HostRecords) -> str:
    """The snapshot file's text: canonical, so the same host gives the same bytes."""
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "aihow_version": __version__,
        "host_uri": state.uri,
        "state": state.model_dump(mode="json"),
        "records": {
            "defined": [{"name": d.name, "cluster": d.cluster, "xml": d.xml}
                        for _, d in sorted(records.defined.items())],
            "claims": [{"kind": kind, "key": key, "owner": owner}
                       for (kind, key), owner in sorted(records.claims.items())],
        },
    }
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def load_snapshot(path: Path) -> tuple[HostState, HostRecords]:
    """The state and records saved in ``path``; any problem is one HostError line."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise HostError(f"{path}: cannot read the snapshot: {exc.strerror}") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise HostError(f"{path}: not a host snapshot (not JSON: {exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise HostError(f"{path}: not a host snapshot (no \"format\": \"{FORMAT}\"; "
                        "write one with 'aihow probe -o FILE')")
    if doc.get("format_version") != FORMAT_VERSION:
        raise HostError(f"{path}: snapshot format_version {doc.get('format_version')!r} is "
                        f"not {FORMAT_VERSION} (written by aihow {doc.get('aihow_version')}); "
                        "probe the host again")
    try:
        state = HostState.model_validate(doc["state"])
        rec = doc["records"]
        defined = {d["name"]: DefinedDomain(str(d["name"]), str(d["cluster"]), str(d["xml"]))
                   for d in rec["defined"]}
        claims = {(str(c["kind"]), str(c["key"])): str(c["owner"]) for c in rec["claims"]}
    except (KeyError, TypeError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise HostError(f"{path}: damaged host snapshot: {first}") from None
    return state, HostRecords(defined=defined, claims=claims)


@dataclass(frozen=True)
class SnapshotEnvironment(Environment):
    """A saved probe: ``probe()`` and ``records()`` answer from it, nothing else does.

    ``host_uri`` is the URI of the host the snapshot was taken from, so a plan made here
    names that host; ``source`` is the ``snapshot:FILE`` text the user gave."""

    source: str
    path: Path
    state: HostState
    saved_records: HostRecords
    libvirt_uri: str | None = None  # ignored: a snapshot has no libvirt to reach

    @property
    def host_uri(self) -> str:  # type: ignore[override]
        return self.state.uri

    @property
    def tools(self) -> ToolPaths:
        return ToolPaths(nvidia_smi=None, mdevctl=None, sriov_manage=None)

    def _refuse(self, what: str) -> NoReturn:
        raise HostError(f"{self.source}: a saved probe is a read-only host and cannot "
                        f"{what}; use the host it was taken from ({self.host_uri})")

    def probe(self, gpu: str | None = None) -> HostState:
        return self.state  # the whole saved host: a superset of any one GPU's part

    def records(self, state_dir: Path | None = None) -> HostRecords:
        return self.saved_records

    def root(self) -> Path:
        self._refuse("show its filesystem (sysfs, /proc)")

    def state_dir(self) -> Path:
        self._refuse("keep a state directory (lock, journal, generations)")

    def nvml_module(self) -> Any:
        self._refuse("reach NVML")

    def nvml(self) -> NvmlHost:
        self._refuse("change GPUs through NVML")

    def sysfs(self) -> Sysfs:
        self._refuse("write sysfs")

    def libvirt(self, *, read_only: bool = False) -> LibvirtSession:
        self._refuse("open libvirt" if read_only else "change libvirt domains")

    def mdev_store(self) -> MdevPersistence:
        self._refuse("define mdevs")

    def with_libvirt_uri(self, libvirt_uri: str | None) -> SnapshotEnvironment:
        return self


def snapshot_environment(source: str, path: Path) -> SnapshotEnvironment:
    """The read-only host saved in ``path`` (``source``: the ``snapshot:FILE`` text)."""
    state, records = load_snapshot(path)
    return SnapshotEnvironment(source, path, state, records)
