"""Read what aihow recorded about a host (``planner.plan.records.HostRecords``): the
domains it defined, from the ``<aihow:defined-by>`` mark in their persistent XML, and the
allocation ledger's claims. I/O at the edge: the CLI calls this and hands the value to
``make_plan``, which stays pure."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from planner.plan.records import DefinedDomain, HostRecords
from planner.vm.vm_factory import AIHOW_VM_NS, CLUSTER_TAG, DEFINED_BY_TAG

_INACTIVE = 2  # libvirt.VIR_DOMAIN_XML_INACTIVE: the persistent definition


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


def read_claims(state_dir: Path) -> dict[tuple[str, str], str]:
    """The ledger's claims (none when it was never written; reading creates nothing)."""
    from planner.apply.state_dir import LEDGER_NAME

    path = Path(state_dir) / LEDGER_NAME
    if not path.exists():
        return {}
    # Imported only now: most plans run on hosts without a ledger, and start-up counts.
    from planner.apply.allocator import GPUResourceAllocator

    return dict(GPUResourceAllocator(path).read().claims)


def read_host_records(host_uri: str, *, libvirt_uri: str | None = None,
                      state_dir: Path | None = None) -> HostRecords:
    from planner.apply.state_dir import default_state_dir
    from planner.host.libvirt_conn import open_libvirt

    with open_libvirt(host_uri, libvirt_uri, read_only=True) as session:
        defined = read_defined(session.conn)
    sdir = state_dir if state_dir is not None else default_state_dir(host_uri)
    return HostRecords(defined=defined, claims=read_claims(sdir))
