"""Openers for the mutating adapters of a host URI, used lazily by action handlers:
``nvml`` (NvmlHost with a GPU reset through the host's nvidia-smi), ``sysfs`` (writable),
``libvirt`` (a read-write LibvirtSession)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from planner.host.uri import parse_host_uri


def adapter_openers(host_uri: str, libvirt_uri: str | None = None) -> dict[str, Callable[[], Any]]:
    uri = parse_host_uri(host_uri)

    def nvml() -> Any:
        from planner.host.nvml import NvmlHost, nvidia_smi_reset
        from planner.host.probe import nvml_for

        smi = str(uri.sim_dir / "bin" / "nvidia-smi") if uri.sim_dir else "nvidia-smi"
        return NvmlHost(nvml_for(uri), reset=nvidia_smi_reset(smi)).open()

    def sysfs() -> Any:
        from planner.host.probe import sysfs_root
        from planner.host.sysfs import Sysfs

        if uri.sim_dir is None:
            return Sysfs(sysfs_root(uri), writable=True)
        sim_dir = uri.sim_dir

        def write(rel: str, value: str) -> None:
            from planner.sim.kernel import sysfs_write  # the simulated kernel reacts

            sysfs_write(sim_dir, rel, value)

        return Sysfs(sysfs_root(uri), writer=write, writable=True)

    def libvirt() -> Any:
        from planner.host.libvirt_conn import open_libvirt

        return open_libvirt(host_uri, libvirt_uri)

    return {"nvml": nvml, "sysfs": sysfs, "libvirt": libvirt}
