"""The host environment: every way aihow reaches a host, chosen once from the host URI.

As mdevctl's ``Environment`` does, one object holds the host's roots and hands out its
ports; the rest of the code asks it for what it needs and never looks at the URI:

- ``root()`` / ``proc_root()``: where sysfs and /proc are read;
- ``state_dir()``: where aihow keeps its lock, journal, generations and ledger;
- ``tools``: the paths of nvidia-smi, mdevctl and sriov-manage (None: not on this host);
- ``nvml_readonly()`` (query functions only) and ``nvml()`` (opened, mutating);
- ``sysfs_readonly()`` and ``sysfs()`` (writable);
- ``libvirt(read_only=...)``: a ``LibvirtSession``;
- ``mdev_store()``: where mdev definitions are kept (mdevctl on a real host);
- ``probe()`` and ``records()``: the HostState and what aihow recorded, built on the
  ports above.

Three environments exist: ``LocalEnvironment`` (this machine, here), the simulated host
(``SimEnvironment``, in the sim package, which imports this one and never the reverse)
and a saved probe (``planner.host.snapshot``). The command line builds the one its
``--host`` names (``planner.cli.host_opts.open_environment``) and hands it down to
probe, validation, plan-making and apply.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from planner.host.ledger import read_claims
from planner.host.libvirt_conn import LOCAL_LIBVIRT_URI, LibvirtSession, open_libvirt
from planner.host.mdev_persist import Mdevctl, MdevPersistence
from planner.host.nvml import NvmlHost, ReadOnlyNvml, nvidia_smi_reset
from planner.host.probe import probe as probe_host
from planner.host.records import HostRecords, read_defined
from planner.host.state import HostState
from planner.host.sysfs import Sysfs

LOCAL_STATE_DIR = Path("/var/lib/aihow")


@dataclass(frozen=True)
class ToolPaths:
    """The host's command-line tools; None where the host has none."""

    nvidia_smi: str | None = "nvidia-smi"
    mdevctl: str | None = "mdevctl"
    # a name is looked up on PATH, then at NVIDIA's documented /usr/lib/nvidia/sriov-manage
    sriov_manage: str | None = "sriov-manage"


class Environment(ABC):
    """One host, as the rest of aihow reaches it (see the module docstring)."""

    host_uri: str  # the URI plans, journals and HostState record for this host
    libvirt_uri: str | None  # the libvirt URI chosen over the host's own, if any

    @property
    @abstractmethod
    def tools(self) -> ToolPaths:
        """The paths of the host's tools."""

    # --- roots ---

    @abstractmethod
    def root(self) -> Path:
        """The filesystem root sysfs is read under (``/`` on a real host)."""

    def proc_root(self) -> Path:
        return self.root() / "proc"

    @abstractmethod
    def state_dir(self) -> Path:
        """aihow's state directory for this host (not created here)."""

    # --- ports ---

    @abstractmethod
    def nvml_module(self) -> Any:
        """The nvml module behind this host: pynvml, or a stand-in with pynvml's API."""

    def nvml_readonly(self) -> ReadOnlyNvml:
        """NVML with query functions only (the probe's view)."""
        return ReadOnlyNvml(self.nvml_module())

    def nvml(self) -> NvmlHost:
        """NVML opened for changes, with GPU resets through the host's nvidia-smi."""
        smi = self.tools.nvidia_smi
        reset = nvidia_smi_reset(smi) if smi is not None else None
        return NvmlHost(self.nvml_module(), reset=reset).open()

    def sysfs_readonly(self) -> Sysfs:
        return Sysfs(self.root(), writable=False)

    @abstractmethod
    def sysfs(self) -> Sysfs:
        """sysfs opened for writing (VFs, mdev create/remove, vGPU types)."""

    @abstractmethod
    def libvirt(self, *, read_only: bool = False) -> LibvirtSession:
        """A libvirt session; ``read_only`` opens it with ``virConnectOpenReadOnly``."""

    @abstractmethod
    def mdev_store(self) -> MdevPersistence:
        """Where mdev definitions are kept."""

    # --- built on the ports ---

    def probe(self, gpu: str | None = None) -> HostState:
        """The host's state, read through the read-only ports; with ``gpu`` (a PF's PCI
        address), only what concerns that GPU (see ``planner.host.probe.probe``)."""
        return probe_host(self, gpu)

    def host_path(self, path: str) -> Path:
        """Where a path the config names lies on this host: under the root (``/``, or DIR
        of ``sim:DIR``); a relative path is taken from the working directory on a real
        host (as ai-how does) and from DIR on a simulated one."""
        root = self.root()
        p = Path(path)
        if p.is_absolute():
            return root / p.relative_to("/")
        return (Path.cwd() if root == Path("/") else root) / p

    def config_path(self, host_path: str) -> str:
        """The inverse of ``host_path`` for an absolute path read off the host (a volume's
        backing file): as a config names it (on ``sim:DIR``, DIR/x is ``/x``)."""
        root = self.root()
        p = Path(host_path)
        if root == Path("/") or not p.is_relative_to(root):
            return host_path
        return "/" + str(p.relative_to(root))

    def base_images(self, paths: Iterable[str]) -> dict[str, bool]:
        """Whether each base image exists on the host (a regular file), by the path as
        written; what plan-making needs to refuse a VM whose disk cannot be made."""
        return {p: self.host_path(p).is_file() for p in sorted(set(paths))}

    def records(self, state_dir: Path | None = None) -> HostRecords:
        """What aihow recorded about the host: the domains it defined (read-only libvirt)
        and the allocation ledger of ``state_dir`` (default: the host's)."""
        with self.libvirt(read_only=True) as session:
            defined = read_defined(session.conn)
        sdir = state_dir if state_dir is not None else self.state_dir()
        return HostRecords(defined=defined, claims=read_claims(sdir))

    @abstractmethod
    def with_libvirt_uri(self, libvirt_uri: str | None) -> Environment:
        """The same host reached at another libvirt URI (recover uses the journal's)."""


@dataclass(frozen=True)
class LocalEnvironment(Environment):
    """This machine: pynvml, sysfs under ``/``, libvirt at ``qemu:///system`` (or
    ``libvirt_uri``), mdevctl, state in ``/var/lib/aihow``."""

    host_uri: str = "local"
    libvirt_uri: str | None = None
    tools: ToolPaths = ToolPaths()
    fs_root: Path = Path("/")
    state_directory: Path = LOCAL_STATE_DIR

    def root(self) -> Path:
        return self.fs_root

    def state_dir(self) -> Path:
        return self.state_directory

    def nvml_module(self) -> Any:
        import pynvml  # heavy: loaded when a local host's NVML is first asked for

        return pynvml

    def sysfs(self) -> Sysfs:
        return Sysfs(self.root(), writable=True)

    def libvirt(self, *, read_only: bool = False) -> LibvirtSession:
        return open_libvirt(self.libvirt_uri or LOCAL_LIBVIRT_URI, read_only=read_only)

    def mdev_store(self) -> MdevPersistence:
        return Mdevctl(self.tools.mdevctl or "mdevctl")

    def with_libvirt_uri(self, libvirt_uri: str | None) -> LocalEnvironment:
        return dataclasses.replace(self, libvirt_uri=libvirt_uri)
