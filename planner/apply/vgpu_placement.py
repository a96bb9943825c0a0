"""Create a MIG-backed vGPU on exactly the GPU instance the plan chose.

The driver, not the caller, picks the GI behind a new vGPU: at create time (mdev
``create`` or a ``current_vgpu_type`` write), the GI of the type's profile with the lowest
GI id that no vGPU holds yet (docs/reference/vgpu-on-mig.md section 2.3, from the open
kernel driver, releases 550 and 595). NVML reports the binding only once the VM runs
(section 2.4), so apply cannot simply read it back after the write. Instead it makes the
driver's choice the plan's: before the write it works out the free GIs of the profile, and
when GIs with lower ids than the target are free, it first occupies each with a
placeholder vGPU on a spare VF, creates the real one (now the target is the lowest free
GI), and removes the placeholders. The binding is then recorded
(``planner.host.vgpu_bindings``); when NVML can already tell (the vGPU is active), it is
checked, and a mismatch fails the step, which rolls back.

A vGPU whose GI is unknown (made by hand, its VM stopped) may hold any GI of its profile;
then no prediction is possible and the step fails, naming it.
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass

from planner.errors import AihowError
from planner.host.state import Gpu, GpuInstance, HostState, VgpuParent
from planner.vocab import VgpuAttrs


class PlacementError(AihowError):
    """The driver cannot be brought to pick the planned GI."""


@dataclass(frozen=True)
class Target:
    gpu: Gpu
    gi: GpuInstance


def parse_gi(text: str) -> tuple[str, int]:
    """"1g.5gb@3" -> ("1g.5gb", 3)."""
    name, _, start = text.rpartition("@")
    if not name or not start.isdigit():
        raise PlacementError(f"not a GPU instance PROFILE@START: {text!r}")
    return name, int(start)


def target_of(host: HostState, attrs: VgpuAttrs) -> Target:
    if attrs.gi is None:
        raise PlacementError("the plan names no GPU instance for this vGPU")
    name, start = parse_gi(attrs.gi)
    gpu = host.gpu(attrs.gpu)
    gi = next((g for g in gpu.gpu_instances if g.placement_start == start), None) if gpu else None
    if gpu is None or gi is None:
        raise PlacementError(f"GPU instance {attrs.gi} does not exist on {attrs.gpu}")
    return Target(gpu, gi)


def _profile_of_type(parents: dict[str, VgpuParent], parent: str, type_id: str) -> int | None:
    p = parents.get(parent)
    t = next((t for t in p.types if t.type_id == type_id), None) if p else None
    return t.gi_profile_id if t else None


def lower_free_gis(host: HostState, target: Target, key: str) -> list[GpuInstance]:
    """The GIs of the target's profile that the driver would pick before the target: free
    of vGPUs and with a lower GI id. Raises when the target is taken, or when a vGPU of
    unknown binding could hold a GI of that profile."""
    pf = target.gpu.pci
    parents = {p.pci: p for p in host.vgpu_parents}
    held: dict[int, str] = {}
    unknown: list[str] = []

    def note(k: str, gi_id: int | None, profile: int | None) -> None:
        if k.lower() == key.lower():
            return
        if gi_id is not None:
            held[gi_id] = k
        elif profile in (None, target.gi.profile_id):
            unknown.append(k)

    for m in host.mdevs:
        p = parents.get(m.parent)
        if p is not None and p.physfn == pf:
            note(m.uuid, m.gi_id, _profile_of_type(parents, m.parent, m.type_id))
    for p in host.vgpu_parents:
        if p.backend == "vfio-vf" and p.physfn == pf and p.current_type is not None:
            note(p.pci, p.gi_id, None)
    if unknown:
        raise PlacementError(
            f"cannot tell which GPU instance vGPU {', '.join(sorted(unknown))} holds (its VM "
            f"is not running and aihow did not create it), so the driver's choice among the "
            f"{target.gi.profile_name} instances cannot be foreseen; start its VM or remove it")
    if target.gi.gi_id in held:
        raise PlacementError(f"GPU instance {target.gi.profile_name}@"
                             f"{target.gi.placement_start} already backs vGPU "
                             f"{held[target.gi.gi_id]}")
    return sorted((g for g in target.gpu.gpu_instances
                   if g.profile_id == target.gi.profile_id and g.gi_id not in held
                   and g.gi_id < target.gi.gi_id), key=lambda g: g.gi_id)


def spare_parents(host: HostState, pf: str, backend: str, exclude: str) -> list[str]:
    """VFs of ``pf`` that hold no vGPU, other than ``exclude``: room for placeholders."""
    busy = {m.parent for m in host.mdevs}
    out = []
    for p in sorted(host.vgpu_parents, key=lambda p: p.pci):
        if p.physfn != pf or p.pci == exclude or p.backend != backend:
            continue
        if p.current_type is None and p.pci not in busy:
            out.append(p.pci)
    return out


def with_placeholders(host: HostState, target: Target, attrs: VgpuAttrs, key: str,
                      create: Callable[[str, str | None], None],
                      remove: Callable[[str, str | None], None]) -> list[int]:
    """Run ``create(parent, None)`` for the real vGPU so that the driver lands it on the
    target: placeholders first fill each lower free GI (``create(parent, uuid)``), and are
    removed again (``remove(parent, uuid)``) whatever happens. Returns the GI ids the
    placeholders held."""
    lower = lower_free_gis(host, target, key)
    spare = spare_parents(host, target.gpu.pci, attrs.backend, attrs.parent)
    if len(spare) < len(lower):
        raise PlacementError(
            f"{len(lower)} free {target.gi.profile_name} instance(s) with lower GI ids than "
            f"the target ({', '.join(str(g.gi_id) for g in lower)}) would be picked first, "
            f"and only {len(spare)} spare VF(s) can hold a placeholder meanwhile")
    made: list[tuple[str, str | None]] = []
    try:
        for parent in spare[: len(lower)]:
            token = str(uuidlib.uuid4()) if attrs.backend == "mdev" else None
            create(parent, token)
            made.append((parent, token))
        create(attrs.parent, None)
    finally:
        for parent, token in reversed(made):
            remove(parent, token)
    return [g.gi_id for g in lower]
