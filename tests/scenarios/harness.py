"""The day-2 scenario harness (issue 10's acceptance suite).

A scenario starts from a simulated host with a small two-cluster config applied (A100 with
``mdev`` or H100 with ``vfio-vf``), optionally does something to the host (start a VM,
reboot, make an instance by hand), edits the config, and then:

1. drives the CLI: ``aihow plan -o``, ``aihow show`` (its text against a golden file under
   ``golden/``; ``AIHOW_UPDATE_GOLDEN=1`` rewrites them), ``aihow apply`` (exit 0),
   ``aihow plan --detailed-exitcode`` (0: nothing left) and ``aihow probe --format json``;
2. checks from the probe that every GPU VM holds exactly one vGPU, on its own GPU instance,
   of the profile its config asks for, on the instance its ``mig_uuid`` or ``placement``
   pins (``backing_problems``);
3. before that, runs the same plan with a fault injected at each of its steps in turn
   (in process, steps one after another), each ending rolled back at the plan's starting
   fingerprint; the host being back at the start is what lets the next case reuse the plan.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from planner.apply.steps import Step, plan_steps
from planner.config import load_config
from planner.config.vms import expand_vms
from planner.plan.model import load_plan
from planner.sim import faults
from planner.sim.host import GpuSpec, HostSpec, init_host
from planner.sim.state import SimStore
from tests.apply.simhost import IMAGE, SimHost

GOLDEN = Path(__file__).parent / "golden"
A100, H100 = "0000:17:00.0", "0000:65:00.0"
SECOND = "0000:31:00.0"


@dataclass(frozen=True)
class Kind:
    """A simulated host kind: its GPU model, backend and profile names by size."""

    name: str
    model: str
    pci: str
    backend: str
    small: str  # 1 slice
    medium: str  # 2 slices
    small_me: str  # 1 slice with the media engines


KINDS = {
    "a100": Kind("a100", "a100-40gb", A100, "mdev", "1g.5gb", "2g.10gb", "1g.5gb+me"),
    "h100": Kind("h100", "h100-80gb", H100, "vfio-vf", "1g.10gb", "2g.20gb", "1g.10gb+me"),
}


@dataclass
class Node:
    ip: str
    gpu: str | None = None  # a gpu_config flow mapping, e.g. "{mode: mig, mig_profile: 1g.5gb}"


@dataclass
class Config:
    """A small two-cluster config: hpc (controller + compute nodes), cloud (control plane +
    workers); ``gpus`` are the managed GPUs (PCI address -> layout or None)."""

    backend: str
    gpus: dict[str, str | None]
    hpc: list[Node]
    cloud: list[Node] | None
    repack: bool = False  # global.gpus[] entries say repack: shut-off

    def text(self) -> str:
        out = ['version: "1.0"', "metadata: {name: day2, description: day-2 scenarios}",
               "global:", f"  host: {{vgpu_backend: {self.backend}}}", "  gpus:"]
        for pci, layout in self.gpus.items():
            out.append(f'    - {{select: "{pci}", mig: enabled'
                       + (f', layout: "{layout}"' if layout else "")
                       + (", repack: shut-off" if self.repack else "") + "}")
        out += ["clusters:", "  hpc:", "    name: hpc", f'    base_image_path: "{IMAGE}"',
                '    network: {subnet: "192.168.100.0/24", bridge: virbr100}',
                "    controller: {cpu_cores: 2, memory_gb: 4, disk_gb: 20, "
                'ip_address: "192.168.100.10"}', "    compute_nodes:"]
        out += [_node(n) for n in self.hpc]
        out.append("    slurm_config: {partitions: [gpu], default_partition: gpu}")
        if self.cloud is not None:
            out += ["  cloud:", "    name: k8s", f'    base_image_path: "{IMAGE}"',
                    '    network: {subnet: "192.168.200.0/24", bridge: virbr200}',
                    "    control_plane: {cpu_cores: 2, memory_gb: 4, disk_gb: 20, "
                    'ip_address: "192.168.200.10"}', "    worker_nodes:"]
            out += [_node(n) for n in self.cloud]
            out.append("    kubernetes_config: {cni: calico, ingress: nginx, "
                       "storage_class: local-path}")
        return "\n".join(out) + "\n"


def _node(n: Node) -> str:
    # auto_start: false, so a slice change needs no restart (a100-running-vm starts one)
    gpu = f", gpu_config: {n.gpu}" if n.gpu else ""
    return (f'      - {{cpu_cores: 2, memory_gb: 4, disk_gb: 20, ip: "{n.ip}", '
            f'auto_start: false{gpu}}}')


def mig(profile: str, **pins: Any) -> str:
    extra = "".join(f", {k}: {v}" for k, v in pins.items())
    return f"{{mode: mig, mig_profile: {profile}{extra}}}"


def base(kind: Kind) -> Config:
    """Three hpc compute nodes and one cloud worker, each with the smallest slice."""
    return Config(kind.backend, {kind.pci: None},
                  [Node(f"192.168.100.{11 + i}", mig(kind.small)) for i in range(3)],
                  [Node("192.168.200.11", mig(kind.small))])


@dataclass
class Ctx:
    """What a scenario's steps see: the host, the kind, a working directory."""

    host: SimHost
    kind: Kind
    tmp: Path
    facts: dict[str, str] = field(default_factory=dict)

    def smi(self, *args: str) -> str:
        import subprocess

        out = subprocess.run([str(self.host.dir / "bin" / "nvidia-smi"), *args],
                             capture_output=True, text=True, check=False, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout

    def probe(self) -> dict[str, Any]:
        out = cli("probe", "--host", self.host.uri, "--format", "json")
        assert out.returncode == 0, out.stderr
        data: dict[str, Any] = json.loads(out.stdout)
        return data

    def gi_of(self, domain: str) -> dict[str, Any]:
        """The GPU instance backing ``domain``'s one vGPU, from the probe."""
        backing = backing_of(self.probe())
        (gi,) = backing[domain]
        return gi


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str
    change: Callable[[Config, Ctx], Config]  # the config edit (may act on the host first)
    apply_args: tuple[str, ...] = ("--auto-approve",)
    before: Callable[[Ctx], None] | None = None  # acts on the host before planning
    second_gpu: bool = False


def build(tmp: Path, kind: Kind, second_gpu: bool) -> tuple[Ctx, Path]:
    """A fresh simulated host (MIG on) with the base config applied; (ctx, base config)."""
    gpus = [GpuSpec(kind.model, kind.pci, True)]
    if second_gpu:
        gpus.append(GpuSpec(kind.model, SECOND, True))
    init_host(tmp / "host", HostSpec(gpus=tuple(gpus), vgpu=kind.backend, images=(IMAGE,)))
    host = SimHost(tmp / "host")
    cfg = tmp / "base.yaml"
    cfg.write_text(base(kind).text())
    result = host.apply(host.plan(cfg), cfg)
    assert result.outcome == "applied", result
    return Ctx(host, kind, tmp), cfg


# --- the CLI, in process -------------------------------------------------------------------

@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str


def cli(*args: str) -> Ran:
    """Run ``aihow ARGS`` through the real typer app in this process (stdin is not a
    terminal), as ``planner.cli.main`` does, without starting an interpreter each time:
    the suite runs the CLI some hundred times."""
    from typer.testing import CliRunner

    import planner.cli
    from planner.errors import AihowError

    result = CliRunner().invoke(planner.cli.app, list(args), catch_exceptions=True)
    stderr = result.stderr
    code = result.exit_code
    if isinstance(result.exception, AihowError):
        exc = result.exception
        stderr += "".join(f"{line if ':' in line.split(' ', 1)[0] else 'error: ' + line}\n"
                          for line in str(exc).splitlines())
        code = exc.exit_code
    elif result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Ran(code, result.stdout, stderr)


# --- faults at each step ----------------------------------------------------------------

def _op(step: Step, backend: str) -> str:
    kind, phase = str(step.kind), step.phase
    table = {
        ("mig_mode", "update"): "nvmlDeviceSetMigMode",
        ("gpu_instance", "create"): "nvmlDeviceCreateGpuInstanceWithPlacement",
        ("gpu_instance", "delete"): "nvmlGpuInstanceDestroy",
        ("compute_instance", "create"): "nvmlGpuInstanceCreateComputeInstanceWithPlacement",
        ("compute_instance", "delete"): "nvmlComputeInstanceDestroy",
        ("sriov", "create"): "sriov-manage",
        ("domain", "create"): "virDomainDefineXML",
        ("domain", "delete"): "virDomainUndefine",
        ("hostdev", "create"): "virDomainAttachDeviceFlags",
        ("hostdev", "delete"): "virDomainDetachDeviceFlags",
        ("network", "create"): "virNetworkDefineXML",
        ("network", "update"): "virNetworkUpdate",
        ("pool", "create"): "virStoragePoolDefineXML",
        ("volume", "create"): "virStorageVolCreateXML",
        ("running", "create"): "virDomainCreate",
        ("running", "delete"): "virDomainShutdown",
    }
    if kind == "vgpu":
        if backend == "vfio-vf":
            return "sysfs.current_vgpu_type"
        return "sysfs.mdev_create" if phase == "create" else "sysfs.mdev_remove"
    return table[(kind, phase)]


def fault_points(plan: Any, backend: str) -> list[tuple[Step, str, int]]:
    """(step, operation, which call of it) for every step in the order apply runs them
    (in plan order, as ``parallel=False`` runs them). On libvirt's test driver an attach falls back
    to defining the domain again, so each earlier attach counts as a define too."""
    seen: Counter[str] = Counter()
    out = []
    steps = plan_steps(plan)
    for s in steps:
        op = _op(s, backend)
        seen[op] += 1
        out.append((s, op, seen[op]))
        if op == "virDomainAttachDeviceFlags":
            seen["virDomainDefineXML"] += 1
    return out


def fault_campaign(ctx: Ctx, plan_path: Path, config: Path, **apply_kw: Any) -> int:
    """Apply the plan once per step with a fault at that step; every apply must roll back
    to the plan's starting fingerprint. Returns the number of cases.

    A vGPU create may first park placeholder vGPUs on lower free GPU instances (so that
    the driver picks the planned one; planner.apply.vgpu_placement), which the plan does
    not show: a fault that lands in an earlier step than meant says such calls came
    before, so the count of that operation moves on by one and the case is tried again."""
    plan = load_plan(plan_path)
    start = plan.host.fingerprint
    points = fault_points(plan, ctx.kind.backend)
    order = {str(step.address): k for k, (step, _, _) in enumerate(points)}
    extra: Counter[str] = Counter()  # calls of each operation the plan does not show
    for k, (step, op, nth) in enumerate(points, 1):
        for _retry in range(16):
            with SimStore(ctx.host.dir).transaction() as state:
                faults.clear(state, None)
                faults.arm(state, op, nth + extra[op])
            result = ctx.host.apply(plan, config, parallel=False, **apply_kw)
            where = f"fault {k}/{len(points)} ({op} call {nth + extra[op]}, {step.address})"
            assert result.outcome == "rolled-back", (where, result)
            assert result.back_at_start, (where, result.resource_states)
            assert ctx.host.fingerprint(config) == start, where
            hit = str(result.failed[0][0]) if result.failed else ""
            if order.get(hit, len(points)) < k - 1:  # an earlier step: unseen calls
                extra[op] += 1
                continue
            assert hit == str(step.address), (where, result.failed)
            break
        else:
            raise AssertionError(f"fault {k}: never reached {step.address}")
    with SimStore(ctx.host.dir).transaction() as state:
        faults.clear(state, None)
    return len(points)


# --- the binding check --------------------------------------------------------------------

def backing_of(probe: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Domain -> the GPU instances behind its vGPU hostdevs (with "gpu" added), as the
    probe reads them from the host."""
    parents = {p["pci"]: p for p in probe["vgpu_parents"]}
    mdevs = {m["uuid"]: m for m in probe["mdevs"]}
    gis = {(g["pci"], gi["gi_id"]): dict(gi, gpu=g["pci"])
           for g in probe["gpus"] for gi in g["gpu_instances"]}
    out: dict[str, list[dict[str, Any]]] = {}
    for d in probe["domains"]:
        found = out.setdefault(d["name"], [])
        for h in d["hostdevs"]:
            if h["type"] == "mdev" and h["uuid"] in mdevs:
                m = mdevs[h["uuid"]]
                parent, gi_id = parents.get(m["parent"], {}), m["gi_id"]
            elif h["type"] == "pci" and parents.get(h["pci"], {}).get("current_type"):
                parent = parents[h["pci"]]
                gi_id = parent["gi_id"]
            else:
                continue
            gpu = parent.get("physfn") or parent.get("pci")
            found.append(gis.get((gpu, gi_id), {"gpu": gpu, "gi_id": gi_id,
                                                "profile_name": "?"}))
    return out


def backing_problems(probe: dict[str, Any], config: Path) -> list[str]:
    """Every GPU VM holds exactly one vGPU, on a GPU instance no other VM holds, of its
    config's profile, and on the instance its mig_uuid or placement pins."""
    backing = backing_of(probe)
    problems: list[str] = []
    taken: dict[tuple[str, int], str] = {}
    for vm in expand_vms(load_config(config)):
        gc = vm.gpu_config
        held = backing.get(vm.name, [])
        if gc is None or gc.mode != "mig":
            if held:
                problems.append(f"{vm.name}: holds {len(held)} slice(s) but asks for none")
            continue
        if len(held) != 1:
            problems.append(f"{vm.name}: holds {len(held)} slices, not one")
            continue
        gi = held[0]
        other = taken.setdefault((gi["gpu"], gi["gi_id"]), vm.name)
        if other != vm.name:
            problems.append(f"{vm.name}: shares GI {gi['gi_id']} with {other}")
        if gc.mig_profile is not None and gi["profile_name"] != str(gc.mig_profile):
            problems.append(f"{vm.name}: on a {gi['profile_name']}, asks for {gc.mig_profile}")
        if gc.placement is not None and gi.get("placement_start") != gc.placement:
            problems.append(f"{vm.name}: on start {gi.get('placement_start')}, pinned to "
                            f"{gc.placement}")
        if gc.mig_uuid is not None and not any(
                ci.get("mig_uuid") == gc.mig_uuid for ci in gi.get("compute_instances", [])):
            problems.append(f"{vm.name}: not on {gc.mig_uuid}")
    return problems


# --- golden plan texts --------------------------------------------------------------------

def normalised(text: str, tmp: Path) -> str:
    text = text.replace(str(tmp), "<tmp>")
    return re.sub(r"\((fingerprint|sha256) [0-9a-f]{12}\)", r"(\1 <digest>)", text)


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / f"{name}.txt"
    if os.environ.get("AIHOW_UPDATE_GOLDEN") == "1":
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} missing: run with AIHOW_UPDATE_GOLDEN=1 and review it"
    assert text == path.read_text(), f"{name}: the plan differs from {path}"
