"""What ``plan``, ``apply``, ``recover`` and ``rollback`` share about reaching a host: the
``--libvirt-uri`` option, the libvirt URI it resolves to, and the host records (domains
aihow defined, the allocation ledger) plan-making is given. Light: heavy imports stay
inside the functions."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from planner.plan.records import HostRecords

LibvirtOpt = Annotated[
    str | None,
    typer.Option("--libvirt-uri",
                 help="libvirt URI to use instead of the host's (default: "
                      "global.host.libvirt_uri, else qemu:///system or the simulator's)."),
]


def libvirt_uri_for(cfg: Any, override: str | None = None) -> str | None:
    """``--libvirt-uri`` if given, else the config's ``global.host.libvirt_uri`` (None: the
    host URI's own libvirt)."""
    if override:
        return override
    if cfg is None:
        return None
    return getattr(getattr(cfg.global_, "host", None), "libvirt_uri", None)


def host_records(host_uri: str, libvirt_uri: str | None,
                 state_dir: Path | None = None) -> HostRecords:
    """What aihow recorded about the host: the domains it defined (read from
    ``libvirt_uri``) and the allocation ledger of ``state_dir`` (default: the host's)."""
    from planner.vm.records import read_host_records

    return read_host_records(host_uri, libvirt_uri=libvirt_uri, state_dir=state_dir)
