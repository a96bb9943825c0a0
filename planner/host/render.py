"""HostState as text for people (slice bars per GPU) and as canonical JSON."""

from __future__ import annotations

import json

from planner.hardware.catalog import get_model
from planner.host.state import Gpu, GpuInstance, HostState

CELL = 8  # characters per memory slice in a slice bar


def host_state_json(state: HostState) -> str:
    """Canonical JSON: sorted keys, two-space indent, one trailing newline."""
    return json.dumps(state.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"


def grid_size(gpu: Gpu) -> int:
    if gpu.model is not None:
        return get_model(gpu.model).memory_slices
    ends = [gi.placement_start + gi.placement_size for gi in gpu.gpu_instances]
    return max([8, *ends])


def slice_bar(gpu: Gpu) -> tuple[str, str]:
    """A ruler and a bar: each GI is a bracketed box over the memory slices it holds;
    free slices show as dots."""
    size = grid_size(gpu)
    ruler = "".join(f"{i:<{CELL}}" for i in range(size)).rstrip()
    by_start: dict[int, GpuInstance] = {gi.placement_start: gi for gi in gpu.gpu_instances}
    bar = []
    pos = 0
    while pos < size:
        gi = by_start.get(pos)
        if gi is None:
            bar.append(f"{'.':^{CELL}}")
            pos += 1
            continue
        width = CELL * gi.placement_size - 2
        bar.append(f"[{gi.profile_name[:width]:<{width}}]")
        pos += max(gi.placement_size, 1)
    return ruler, "".join(bar).rstrip()


def _mig_line(gpu: Gpu) -> str:
    if not gpu.mig_capable:
        return "not MIG-capable"
    now = "enabled" if gpu.mig_current else "disabled"
    if gpu.mig_change_pending:
        after = "enabled" if gpu.mig_pending else "disabled"
        return f"{now} (pending: {after} after a GPU reset)"
    return now


def render_gpu(gpu: Gpu) -> list[str]:
    model = f"  [{gpu.model}]" if gpu.model else "  [not in the catalog]"
    lines = [f"GPU {gpu.index}  {gpu.pci}  {gpu.name}{model}"]
    lines.append(f"  uuid     {gpu.uuid}")
    if gpu.driver:
        lines.append(f"  driver   {gpu.driver}")
    lines.append(f"  MIG      {_mig_line(gpu)}")
    if gpu.mig_current:
        ruler, bar = slice_bar(gpu)
        lines.append(f"  slices   {ruler}")
        lines.append(f"           {bar}")
        for gi in gpu.gpu_instances:
            lines.append(
                f"  GI {gi.gi_id:<3} {gi.profile_name:<12} profile {gi.profile_id:<3} "
                f"placement {gi.placement_start}:{gi.placement_size}"
            )
            for ci in gi.compute_instances:
                uuid = ci.mig_uuid or "-"
                lines.append(
                    f"    CI {ci.ci_id:<3} profile {ci.profile_id:<3} "
                    f"placement {ci.placement_start}:{ci.placement_size}  {uuid}"
                )
    for proc in gpu.processes:
        lines.append(f"  process  {proc.pid} {proc.name}")
    return lines


def render_host_state(state: HostState) -> str:
    head = f"host {state.uri}"
    if state.driver_version:
        head += f"  driver {state.driver_version}"
    head += f"  vGPU {state.vgpu_backend or 'none'}"
    lines = [head]
    if not state.gpus:
        lines += ["", "no GPUs"]
    for gpu in state.gpus:
        lines.append("")
        lines += render_gpu(gpu)
    if state.vgpu_parents:
        lines += ["", "vGPU parents"]
        for parent in state.vgpu_parents:
            vf = f" (VF of {parent.physfn})" if parent.physfn else ""
            current = f"  holds type {parent.current_type}" if parent.current_type else ""
            if parent.current_type:
                current += _backing(state, parent.physfn, parent.gi_id, parent.gi_from)
            lines.append(f"  {parent.pci}{vf}  {parent.backend}{current}")
            for t in parent.types:
                gi = f"  GI profile {t.gi_profile_id}" if t.gi_profile_id is not None else ""
                lines.append(
                    f"    {t.type_id:<12} {t.name:<24} available {t.available_instances}{gi}"
                )
    if state.mdevs:
        lines += ["", "mdevs"]
        for m in state.mdevs:
            pf = next((p.physfn for p in state.vgpu_parents if p.pci == m.parent), None)
            gi = _backing(state, pf, m.gi_id, m.gi_from)
            kept = "  persistent" if m.persistent else ""
            lines.append(f"  {m.uuid}  {m.parent}  {m.type_id}{gi}{kept}")
    lines += ["", "domains" if state.domains else "no domains"]
    for d in state.domains:
        devs = ", ".join(f"{h.type} {h.key}" for h in d.hostdevs) or "no hostdevs"
        kind = "" if d.persistent else "  transient"
        lines.append(f"  {d.name:<24} {d.state:<10} {devs}{kind}")
    return "\n".join(lines) + "\n"


def _backing(state: HostState, pf: str | None, gi_id: int | None, source: str | None) -> str:
    """"  on GI 3 (1g.5gb@2, nvml)": the GPU instance behind a vGPU and how it is known."""
    if gi_id is None:
        return "  on an unknown GPU instance (its VM is not running)"
    gpu = state.gpu(pf) if pf else None
    gi = next((g for g in gpu.gpu_instances if g.gi_id == gi_id), None) if gpu else None
    where = f"{gi.profile_name}@{gi.placement_start}, " if gi else ""
    return f"  on GI {gi_id} ({where}{source})"
