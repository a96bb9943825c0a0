"""The simulated host as an Environment: ``sim:DIR``.

The same ports as a real host, served by the simulator: NVML is the simulator's fake
``libnvidia-ml`` under pynvml's own wrappers, sysfs is the tree in ``DIR/sys`` whose
writes go to the simulated kernel, libvirt is libvirt's test driver over the domains
kept in ``DIR/libvirt/``, mdev definitions live in ``DIR/etc/mdevctl.d``, nvidia-smi is
``DIR/bin/nvidia-smi`` and the state directory is ``DIR/state``. The real mdevctl and
``/etc`` are never touched for a host that is not there.

Each port checks only what it needs, so a directory holding just domains (no simulated
GPU) still serves libvirt.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from planner.host.environment import Environment, ToolPaths
from planner.host.errors import HostError
from planner.host.libvirt_conn import LibvirtSession, open_libvirt
from planner.host.mdev_persist import MdevPersistence
from planner.host.sysfs import Sysfs
from planner.sim.kernel import sysfs_write
from planner.sim.libvirt_session import open_sim_libvirt
from planner.sim.mdev_store import SimMdevDefinitions


@dataclass(frozen=True)
class SimEnvironment(Environment):
    host_uri: str  # "sim:DIR" as the user wrote it
    directory: Path  # absolute
    # a real libvirt, or another simulated host's (sim:DIR2), instead of this one's
    libvirt_uri: str | None = None

    @property
    def tools(self) -> ToolPaths:
        # mdevs are kept by the store below: the simulated host has no mdevctl to run.
        return ToolPaths(nvidia_smi=str(self.directory / "bin" / "nvidia-smi"),
                         mdevctl=None,
                         sriov_manage=str(self.directory / "bin" / "sriov-manage"))

    def host_dir(self) -> Path:
        """DIR, checked to hold a simulated host."""
        if not (self.directory / "state.json").is_file():
            raise HostError(f"{self.host_uri}: no simulated host in {self.directory} "
                            "(create one with 'aihow sim init')")
        return self.directory

    def root(self) -> Path:
        return self.directory

    def state_dir(self) -> Path:
        return self.directory / "state"

    def nvml_module(self) -> Any:
        # here, not at the top: the fake NVML loads pynvml (start-up), needed only once
        # NVML is asked for
        from planner.sim.fake_nvml import FakeNvml

        return FakeNvml(self.host_dir())

    def sysfs_readonly(self) -> Sysfs:
        return Sysfs(self.host_dir(), writable=False)

    def sysfs(self) -> Sysfs:
        directory = self.host_dir()

        def write(rel: str, value: str) -> None:
            sysfs_write(directory, rel, value)  # the simulated kernel reacts

        return Sysfs(directory, writer=write, writable=True)

    def libvirt(self, *, read_only: bool = False) -> LibvirtSession:
        if self.libvirt_uri is not None and self.libvirt_uri.startswith("sim:"):
            # another simulated host's libvirt, which keeps its state as this one's does
            # (a test:// node file forgets every change when the connection closes)
            other = Path(self.libvirt_uri.removeprefix("sim:")).expanduser().absolute()
            return open_sim_libvirt(self.libvirt_uri, other, read_only=read_only)
        if self.libvirt_uri is not None:
            return open_libvirt(self.libvirt_uri, read_only=read_only)
        return open_sim_libvirt(self.host_uri, self.directory, read_only=read_only)

    def mdev_store(self) -> MdevPersistence:
        return SimMdevDefinitions(self.directory)

    def with_libvirt_uri(self, libvirt_uri: str | None) -> SimEnvironment:
        return dataclasses.replace(self, libvirt_uri=libvirt_uri)


def sim_environment(directory: str | Path, libvirt_uri: str | None = None) -> SimEnvironment:
    """The environment of the simulated host in ``directory`` (named ``sim:DIR``)."""
    path = Path(directory).expanduser().absolute()
    return SimEnvironment(f"sim:{directory}", path, libvirt_uri)
