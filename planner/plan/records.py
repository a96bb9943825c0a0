"""What aihow itself recorded about a host, outside the probed HostState.

Plan-making stays pure: the CLI reads these records (libvirt metadata, the allocation
ledger) at the edge and hands them to ``make_plan`` as a value.

- ``defined``: the domains aihow defined, read from the ``<aihow:defined-by>`` mark in
  their persistent XML (kept whole, so a planned delete can be undone by defining it
  again). A domain without the mark is never deleted by a plan.
- ``claims``: the ``GPUResourceAllocator`` ledger, ``(kind, key) -> "cluster/node"``.
  A slice another cluster's node holds is refused, naming both owners.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class DefinedDomain:
    name: str
    cluster: str  # the cluster the domain was defined for (its <aihow:cluster>)
    xml: str  # its persistent definition as libvirt returns it


@dataclass(frozen=True)
class HostRecords:
    defined: Mapping[str, DefinedDomain] = field(default_factory=dict)
    claims: Mapping[tuple[str, str], str] = field(default_factory=dict)


NO_RECORDS = HostRecords()
