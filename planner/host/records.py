"""What aihow itself recorded about a host, outside the probed HostState.

Plan-making stays pure: the records are read at the edge (``Environment.records``) and
handed to ``make_plan`` as a value.

- ``defined``: the domains aihow defined, read from the ``<aihow:defined-by>`` mark in
  their persistent XML (kept whole, so a planned delete can be undone by defining it
  again). A domain without the mark is never deleted by a plan.
- ``claims``: the ``GPUResourceAllocator`` ledger, ``(kind, key) -> "cluster/node"``.
  A slice another cluster's node holds is refused, naming both owners.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# The metadata namespace of aihow's domain XML (planner/vm/templates/domain.xml.j2 writes
# it), and the element that marks a domain aihow itself defined (only such a domain may
# ever be deleted by a plan).
AIHOW_VM_NS = "https://aihow.invalid/schemas/vm/1"
DEFINED_BY_TAG = f"{{{AIHOW_VM_NS}}}defined-by"
CLUSTER_TAG = f"{{{AIHOW_VM_NS}}}cluster"

_INACTIVE = 2  # libvirt.VIR_DOMAIN_XML_INACTIVE: the persistent definition


@dataclass(frozen=True)
class DefinedDomain:
    name: str
    cluster: str  # the cluster the domain was defined for (its <aihow:cluster>)
    xml: str  # its persistent definition as libvirt returns it

    def mark(self, field_name: str) -> str | None:
        """One element of the domain's ``<aihow:vm>`` metadata (``config``, ``role``,
        ``ip``, ``key-path``, ...); None when absent (a domain defined by an older aihow)."""
        return metadata_field(self.xml, field_name)

    @property
    def config(self) -> str | None:
        """The ``metadata.name`` of the config that defined it."""
        return self.mark("config")

    @property
    def identity(self) -> tuple[str, str | None, str | None]:
        """(cluster, role, ip): which node of the config the domain was defined as."""
        return (self.cluster, self.mark("role"), self.mark("ip"))


@dataclass(frozen=True)
class HostRecords:
    defined: Mapping[str, DefinedDomain] = field(default_factory=dict)
    claims: Mapping[tuple[str, str], str] = field(default_factory=dict)


NO_RECORDS = HostRecords()


def defined_by_aihow(xml_text: str) -> str | None:
    """The cluster a domain XML was defined for, if aihow defined it; else None."""
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError:
        return None
    vm = root.find(f"./metadata/{{{AIHOW_VM_NS}}}vm")
    if vm is None or (vm.findtext(DEFINED_BY_TAG) or "").strip() != "aihow":
        return None
    return (vm.findtext(CLUSTER_TAG) or "").strip() or None


def attachment_metadata(xml_text: str) -> dict[str, str]:
    """The slice the domain's ``<aihow:vm>`` metadata says it holds (``mig-profile``,
    ``mig-uuid``, ``gpu-instance``, ``vgpu``: what the hostdev step wrote), the fields
    present only."""
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError:
        return {}
    vm = root.find(f"./metadata/{{{AIHOW_VM_NS}}}vm")
    if vm is None:
        return {}
    out = {}
    for key in ("mig-profile", "mig-uuid", "gpu-instance", "vgpu"):
        text = (vm.findtext(f"{{{AIHOW_VM_NS}}}{key}") or "").strip()
        if text:
            out[key] = text
    return out


def metadata_field(xml_text: str, field_name: str) -> str | None:
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError:
        return None
    text = root.findtext(f"./metadata/{{{AIHOW_VM_NS}}}vm/{{{AIHOW_VM_NS}}}{field_name}")
    return text.strip() if text and text.strip() else None


def read_defined(conn: Any) -> dict[str, DefinedDomain]:
    """Every persistent domain on ``conn`` that aihow defined, by name."""
    out: dict[str, DefinedDomain] = {}
    for dom in conn.listAllDomains():
        if not dom.isPersistent():
            continue
        xml = dom.XMLDesc(_INACTIVE)
        cluster = defined_by_aihow(xml)
        if cluster is not None:
            out[dom.name()] = DefinedDomain(dom.name(), cluster, xml)
    return out
