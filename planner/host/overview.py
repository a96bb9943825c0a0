"""The default ``aihow probe`` output: one table that answers "which VM has which slice".

One row per MIG slice (GPU instance, with its compute instance and MIG UUID), per GPU
given whole to a VM, per GPU with MIG off, and per domain that holds no GPU; columns
VM, cluster (from aihow's mark in the domain's definition), GPU, profile, placement,
MIG UUID, the vGPU device or VF that carries the slice, and the domain's state. Under the
table one line per GPU counts its memory slices used and free. Pure: a HostState and
the host's records in, text out. ``probe --verbose`` prints the full listing instead
(``planner.host.render``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from planner.host.records import HostRecords
from planner.host.render import grid_size
from planner.host.state import Domain, Gpu, GpuInstance, HostState

HEAD = ("VM", "CLUSTER", "GPU", "PROFILE", "PLACEMENT", "MIG UUID", "VGPU/VF", "STATE")


@dataclass(frozen=True)
class _User:
    """What carries a slice to a VM: an mdev or a VF, and the domain holding it."""

    device: str  # "mdev <uuid>" or "vf <pci>"
    domain: Domain | None


def _users(state: HostState) -> dict[tuple[str, int], list[_User]]:
    """(GPU PCI, GI id) -> the vGPU devices backed by that GPU instance."""
    pf_of = {p.pci: (p.physfn or p.pci) for p in state.vgpu_parents}
    holder: dict[str, Domain] = {}
    for d in state.domains:
        for h in d.hostdevs:
            holder.setdefault(h.key, d)
    out: dict[tuple[str, int], list[_User]] = {}
    for m in state.mdevs:
        if m.gi_id is not None:
            key = (pf_of.get(m.parent, m.parent), m.gi_id)
            out.setdefault(key, []).append(_User(f"mdev {m.uuid}", holder.get(m.uuid)))
    for p in state.vgpu_parents:
        if p.backend == "vfio-vf" and p.gi_id is not None and p.physfn is not None:
            out.setdefault((p.physfn, p.gi_id), []).append(
                _User(f"vf {p.pci}", holder.get(p.pci)))
    return out


def slices_by_domain(state: HostState) -> dict[str, tuple[Gpu, GpuInstance]]:
    """Domain name -> the GPU and GPU instance its vGPU device or VF is backed by."""
    out: dict[str, tuple[Gpu, GpuInstance]] = {}
    users = _users(state)
    for gpu in state.gpus:
        for gi in gpu.gpu_instances:
            for user in users.get((gpu.pci, gi.gi_id), []):
                if user.domain is not None:
                    out.setdefault(user.domain.name, (gpu, gi))
    return out


def free_slices(gpu: Gpu) -> list[int]:
    """The memory slices no GPU instance holds."""
    used = {gi.placement_start + i for gi in gpu.gpu_instances
            for i in range(gi.placement_size)}
    return [i for i in range(grid_size(gpu)) if i not in used]


def _vm(domain: Domain | None, records: HostRecords) -> tuple[str, str, str]:
    if domain is None:
        return "-", "-", "free"
    found = records.defined.get(domain.name)
    return domain.name, found.cluster if found else "-", domain.state


def overview_rows(state: HostState, records: HostRecords) -> list[tuple[str, ...]]:
    users = _users(state)
    whole = {h.pci: d for d in state.domains for h in d.hostdevs if h.type == "pci"}
    placed: set[str] = set()
    rows: list[tuple[str, ...]] = []
    for gpu in state.gpus:
        if gpu.pci in whole:
            d = whole[gpu.pci]
            placed.add(d.name)
            vm, cluster, st = _vm(d, records)
            rows.append((vm, cluster, gpu.pci, "whole GPU", "-", "-", "pci passthrough", st))
            continue
        if not gpu.mig_current:
            what = "MIG disabled" if gpu.mig_capable else "no MIG"
            rows.append(("-", "-", gpu.pci, what, "-", "-", "-", "-"))
            continue
        for gi in sorted(gpu.gpu_instances, key=lambda g: g.placement_start):
            mig_uuids = [ci.mig_uuid or "-" for ci in gi.compute_instances] or ["(no CI)"]
            where = f"{gi.placement_start}:{gi.placement_size}"
            holders = users.get((gpu.pci, gi.gi_id)) or [_User("-", None)]
            for user in holders:
                if user.domain is not None:
                    placed.add(user.domain.name)
                vm, cluster, st = _vm(user.domain, records)
                for mig_uuid in mig_uuids:
                    rows.append((vm, cluster, gpu.pci, gi.profile_name, where, mig_uuid,
                                 user.device, st))
    for d in state.domains:
        if d.name not in placed:
            vm, cluster, st = _vm(d, records)
            rows.append((vm, cluster, "-", "-", "-", "-", "-", st))
    return rows


def _table(rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in rows]


def _gpu_line(gpu: Gpu) -> str:
    head = f"GPU {gpu.index} {gpu.pci} {gpu.model or gpu.name}"
    if not gpu.mig_capable:
        return f"{head}: not MIG-capable"
    if not gpu.mig_current:
        pending = " (enabled after a GPU reset)" if gpu.mig_pending else ""
        return f"{head}: MIG disabled{pending}"
    free = free_slices(gpu)
    size = grid_size(gpu)
    spans = ",".join(str(i) for i in free) or "none"
    return (f"{head}: MIG enabled, {len(gpu.gpu_instances)} GPU instance(s), "
            f"{size - len(free)} of {size} memory slices used, {len(free)} free ({spans})")


def render_overview(state: HostState, records: HostRecords) -> str:
    head = f"host {state.uri}"
    if state.driver_version:
        head += f"  driver {state.driver_version}"
    head += f"  vGPU {state.vgpu_backend or 'none'}"
    lines = [head, ""]
    rows = overview_rows(state, records)
    lines += _table([HEAD, *rows]) if rows else ["no GPUs and no domains"]
    lines.append("")
    lines += [_gpu_line(g) for g in state.gpus] or ["no GPUs"]
    lines.append("(aihow probe --verbose: the full listing)")
    return "\n".join(lines) + "\n"
