"""``aihow probe --format prometheus``: the host as Prometheus text exposition, for node
exporter's textfile collector (write it to ``*.prom`` in its directory from a timer).

Pure: the probed HostState and what the state directory says (the latest generation,
the last apply, the drift found by planning the latest generation's config against the
probe) in, text out. A value that is not known (no generation yet, a snapshot host
without a state directory) is left out rather than made up.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from planner.hardware.catalog import UnknownModelError, get_model
from planner.host.overview import free_slices, slices_by_domain
from planner.host.render import grid_size
from planner.host.state import Gpu, HostState


@dataclass(frozen=True)
class StateFacts:
    """What the state directory says; None: not known."""

    generation: int | None = None
    generation_time: float | None = None
    drift_changes: int | None = None  # changes a plan of the latest generation's config has
    last_apply_time: float | None = None
    last_apply_ok: bool | None = None


def _labels(**kv: str) -> str:
    def esc(v: str) -> str:
        return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return "{" + ",".join(f'{k}="{esc(v)}"' for k, v in kv.items()) + "}"


def _available(gpu: Gpu) -> dict[str, int]:
    """For each profile of the GPU's model: how many more instances of it alone could be
    created now (legal placements in free memory slices, compute slices and the
    profile's instance count permitting)."""
    if gpu.model is None or not gpu.mig_current:
        return {}
    try:
        model = get_model(gpu.model)
    except UnknownModelError:
        return {}
    free = set(free_slices(gpu))
    compute_used = sum(p.compute_slices for gi in gpu.gpu_instances
                       if (p := model.profile_by_id(gi.profile_id)) is not None)
    have = Counter(gi.profile_name for gi in gpu.gpu_instances)
    out: dict[str, int] = {}
    for p in model.gi_profiles:
        taken: set[int] = set()
        fits = 0
        for start in p.placements:
            span = set(p.span(start))
            if span <= free and not span & taken:
                taken |= span
                fits += 1
        by_compute = (model.compute_slices - compute_used) // max(p.compute_slices, 1)
        out[p.name] = max(0, min(fits, by_compute, p.instance_count - have[p.name]))
    return out


def render_metrics(state: HostState, facts: StateFacts) -> str:
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str,
               samples: list[tuple[dict[str, str], float]]) -> None:
        if not samples:
            return
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            text = str(int(value)) if value.is_integer() else repr(value)
            lines.append(f"{name}{_labels(**labels) if labels else ''} {text}")

    metric("aihow_drift", "gauge", "1 when the host differs from the config of the latest "
           "generation (a plan of it has changes), else 0.",
           [] if facts.drift_changes is None else [({}, float(facts.drift_changes > 0))])
    metric("aihow_drift_changes", "gauge", "Changes a plan of the latest generation's "
           "config has against the host now.",
           [] if facts.drift_changes is None else [({}, float(facts.drift_changes))])
    metric("aihow_generation", "gauge", "Number of the latest generation (0: none yet).",
           [] if facts.generation is None else [({}, float(facts.generation))])
    metric("aihow_generation_timestamp_seconds", "gauge",
           "When the latest generation was recorded (Unix time).",
           [] if facts.generation_time is None else [({}, facts.generation_time)])
    metric("aihow_last_apply_timestamp_seconds", "gauge",
           "When the last apply or rollback on this host ended (Unix time).",
           [] if facts.last_apply_time is None else [({}, facts.last_apply_time)])
    metric("aihow_last_apply_success", "gauge",
           "1 when the last apply or rollback succeeded, 0 when it failed.",
           [] if facts.last_apply_ok is None else [({}, float(facts.last_apply_ok))])

    held = {(g.pci, gi.gi_id) for g, gi in slices_by_domain(state).values()}
    Samples = list[tuple[dict[str, str], float]]
    mig: Samples = []
    slices: Samples = []
    used: Samples = []
    spare: Samples = []
    avail: Samples = []
    for gpu in state.gpus:
        base = {"gpu": gpu.pci, "model": gpu.model or "unknown"}
        if not gpu.mig_capable:
            continue
        mig.append((base, float(gpu.mig_current)))
        if not gpu.mig_current:
            continue
        free = len(free_slices(gpu))
        slices += [({**base, "state": "used"}, float(grid_size(gpu) - free)),
                   ({**base, "state": "free"}, float(free))]
        by_profile: Counter[tuple[str, bool]] = Counter(
            (gi.profile_name, (gpu.pci, gi.gi_id) in held) for gi in gpu.gpu_instances)
        for (profile, is_held), n in sorted(by_profile.items()):
            (used if is_held else spare).append(({**base, "profile": profile}, float(n)))
        avail += [({**base, "profile": p}, float(n))
                  for p, n in sorted(_available(gpu).items())]
    metric("aihow_gpu_mig_enabled", "gauge", "1 when MIG mode is on (current mode).", mig)
    metric("aihow_mig_memory_slices", "gauge", "Memory slices of the GPU held by a GPU "
           "instance (state=used) or free.", slices)
    metric("aihow_mig_instances_used", "gauge", "GPU instances of a profile a VM holds "
           "through a vGPU device or VF.", used)
    metric("aihow_mig_instances_spare", "gauge", "GPU instances of a profile no VM holds.",
           spare)
    metric("aihow_mig_instances_available", "gauge", "More instances of a profile that "
           "could be created now, each counted alone.", avail)
    return "\n".join(lines) + "\n"
