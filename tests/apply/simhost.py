"""Helpers for the apply tests: simulated hosts, configs, plans, the CLI as a subprocess."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from planner.apply.executor import ApplyInput, ApplyResult, apply_plan
from planner.apply.state_dir import resolve_state_dir
from planner.cli.host_opts import open_environment
from planner.config import load_config
from planner.config.digest import config_digest
from planner.plan.fingerprint import fingerprint
from planner.plan.make import make_plan
from planner.plan.model import Plan
from planner.sim.host import GpuSpec, HostSpec, init_host
from tests.clirun import aihow

# The base image write_config's VMs are overlays of: every test host holds it
# (``aihow sim init --image IMAGE``; libvirt's test driver never reads it).
IMAGE = "/var/lib/images/hpc.qcow2"

_CONFIG_HEAD = """\
version: "1.0"
metadata:
  name: "apply-test"
  description: "a config made by tests/apply"
global:
  gpus:
"""

_CONFIG_TAIL = """\
clusters:
  hpc:
    name: "hpc"
    base_image_path: "/var/lib/images/hpc.qcow2"
    network:
      subnet: "192.168.100.0/24"
      bridge: "virbr100"
    hardware:
      acceleration:
        enable_kvm: true
    controller:
      cpu_cores: 2
      memory_gb: 4
      disk_gb: 20
      ip_address: "192.168.100.10"
    compute_nodes:
      - cpu_cores: 2
        memory_gb: 4
        disk_gb: 20
        ip: "192.168.100.11"
    slurm_config:
      partitions: ["gpu"]
      default_partition: "gpu"
      max_job_time: "24:00:00"
"""


def config_text(gpus: dict[str, str | None]) -> str:
    """A config managing each PCI address: layout text, or None for MIG disabled."""
    lines = [_CONFIG_HEAD]
    for pci, layout in gpus.items():
        lines.append(f'    - select: "{pci}"\n')
        if layout is None:
            lines.append("      mig: disabled\n")
        else:
            lines.append("      mig: enabled\n")
            if layout:
                lines.append(f'      layout: "{layout}"\n')
    lines.append(_CONFIG_TAIL)
    return "".join(lines)


def write_config(path: Path, gpus: dict[str, str | None]) -> Path:
    path.write_text(config_text(gpus))
    return path


@dataclass
class SimHost:
    """A simulated host directory and its URI."""

    dir: Path

    @property
    def uri(self) -> str:
        return f"sim:{self.dir}"

    @property
    def state_dir(self) -> Path:
        return self.dir / "state"

    @classmethod
    def create(cls, path: Path, gpus: list[tuple[str, str, bool]]) -> SimHost:
        """gpus: (model, pci, mig enabled)."""
        init_host(path, HostSpec(gpus=tuple(GpuSpec(m, pci, mig) for m, pci, mig in gpus),
                                 images=(IMAGE,)))
        return cls(path)

    @classmethod
    def build(cls, path: Path, gpus: list[tuple[str, str, bool]],
              first: Path | None = None) -> SimHost:
        """A fresh host, with the config ``first`` applied when given (never copied from
        another host: the simulated sysfs is full of links into its own directory)."""
        host = cls.create(path, gpus)
        if first is not None:
            result = host.apply(host.plan(first), first)
            assert result.outcome == "applied", result
        return host

    def probe(self) -> Any:
        return open_environment(self.uri).probe()

    def fingerprint(self, config: Path) -> str:
        return fingerprint(self.probe(), load_config(config))

    def plan(self, config: Path) -> Plan:
        text = config.read_text()
        return make_plan(load_config(config), self.probe(), config_path=str(config),
                         config_sha256=config_digest(text),
                         host_uri=self.uri, records=open_environment(self.uri).records())

    def apply(self, plan: Plan, config: Path, *, parallel: bool = True,
              allow_reset: bool = True, events: list[Any] | None = None,
              restart_running_vms: bool = False) -> ApplyResult:
        sink = events.append if events is not None else (lambda e: None)
        return apply_plan(
            ApplyInput(plan, plan.to_json(), load_config(config), config.read_text(),
                       str(config), allow_reset=allow_reset, parallel=parallel,
                       restart_running_vms=restart_running_vms),
            open_environment(self.uri),
            resolve_state_dir(open_environment(self.uri).state_dir()),
            sink,
        )

    def layout(self) -> dict[str, Any]:
        """GPU -> (mode, pending, sorted (GI profile, start, [CI starts]))."""
        out = {}
        for g in self.probe().gpus:
            out[g.pci] = (g.mig_current, g.mig_pending, sorted(
                (gi.profile_name, gi.placement_start,
                 tuple(sorted((c.profile_id, c.placement_start) for c in gi.compute_instances)))
                for gi in g.gpu_instances))
        return out




def applied_example(tmp_path: Path) -> SimHost:
    """A simulated A100 host (``config/sim-a100.toml``) with the example config applied
    through the CLI, as an operator's first day leaves it."""
    root = Path(__file__).resolve().parents[2]
    out = aihow("sim", "init", str(tmp_path / "host"), "--spec",
                str(root / "config/sim-a100.toml"))
    assert out.returncode == 0, out.stderr
    host = SimHost(tmp_path / "host")
    done = aihow("apply", str(root / "config/example-mig-cluster.yaml"), "--host", host.uri,
                 "--auto-approve", "--allow-reset")
    assert done.returncode == 0, done.stdout + done.stderr
    return host
