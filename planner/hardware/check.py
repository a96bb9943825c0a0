"""Compare a GPU's MIG profiles, as read through NVML, with the catalog (pure).

The host layer reads ``nvmlDeviceGetGpuInstanceProfileInfo`` for every profile enum and
``...PossiblePlacements`` for every profile id and hands the records here; this module only
compares. Profiles are matched by NVML enum (the id, name and numbers are then compared),
because names are derived and differ between drivers. Memory sizes also differ between
drivers and between bare metal and vGPU hosts, so a memory difference within a tolerance
is a note, not a difference.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from planner.hardware.model import GiProfile, GpuModel


@dataclass(frozen=True)
class ObservedProfile:
    """One GI profile as the driver reports it (nvmlGpuInstanceProfileInfo_v2 + placements):
    what ``NvmlHost.gi_profiles`` returns and what ``check_profiles`` compares."""

    enum: int
    id: int
    name: str  # "MIG 1g.5gb" or "1g.5gb" (NvmlHost strips the prefix)
    instance_count: int
    memory_mib: int
    sm_count: int
    copy_engines: int
    decoders: int
    encoders: int
    jpegs: int
    ofas: int
    slice_count: int | None = None
    placements: tuple[int, ...] | None = None  # None when not read (needs root)
    placement_size: int | None = None
    p2p: bool = False


@dataclass(frozen=True)
class CatalogCheck:
    model_id: str
    differences: tuple[str, ...]  # the catalog is wrong (or the GPU is not this model)
    notes: tuple[str, ...]  # expected variation: memory within tolerance, names, old driver

    @property
    def ok(self) -> bool:
        return not self.differences

    def lines(self) -> list[str]:
        return [f"difference: {d}" for d in self.differences] + [f"note: {n}" for n in self.notes]


_EXACT = ("id", "instance_count", "sm_count", "copy_engines", "decoders", "encoders", "jpegs",
          "ofas")


def driver_at_least(version: str, minimum: str) -> bool:
    """"535.183.01" >= "525" compares dotted numbers prefix-wise."""

    def parts(v: str) -> tuple[int, ...]:
        return tuple(int(x) for x in v.split(".") if x.isdigit())

    have, need = parts(version), parts(minimum)
    return have[: len(need)] >= need


def _gib(mib: int) -> str:
    return f"{mib / 1024:.2f} GiB"


def _compare(model: GpuModel, cat: GiProfile, obs: ObservedProfile, tolerance: float,
             diffs: list[str], notes: list[str]) -> None:
    where = f"{model.id} {cat.name} (enum {cat.enum})"
    for field in _EXACT:
        want, have = getattr(cat, field), getattr(obs, field)
        if want != have:
            flag = " (marked uncertain in the catalog)" if field in cat.uncertain else ""
            diffs.append(f"{where}: {field} is {want} in the catalog, {have} on the GPU{flag}")
    if obs.slice_count is not None and obs.slice_count != cat.compute_slices:
        diffs.append(f"{where}: compute slices are {cat.compute_slices} in the catalog, "
                     f"{obs.slice_count} on the GPU")
    name = obs.name.removeprefix("MIG ")
    if name != cat.name:
        known = " (a known alias)" if name in cat.aliases else ""
        notes.append(f"{where}: the GPU names it {name}{known}")
    if obs.memory_mib != cat.memory_mib:
        gap = abs(obs.memory_mib - cat.memory_mib) / max(cat.memory_mib, 1)
        text = (f"{where}: memory is {cat.memory_mib} MiB ({_gib(cat.memory_mib)}) in the "
                f"catalog, {obs.memory_mib} MiB ({_gib(obs.memory_mib)}) on the GPU")
        if gap <= tolerance:
            notes.append(f"{text}; within {tolerance:.0%}, which drivers vary by")
        else:
            flag = " (marked uncertain in the catalog)" if "memory_mib" in cat.uncertain else ""
            diffs.append(text + flag)
    if obs.placements is not None:
        size = obs.placement_size if obs.placement_size is not None else cat.placement_size
        if sorted(obs.placements) != sorted(cat.placements) or size != cat.placement_size:
            starts = ",".join(str(s) for s in cat.placements)
            seen = ",".join(str(s) for s in sorted(obs.placements))
            diffs.append(f"{where}: placements are {{{starts}}}:{cat.placement_size} in the "
                         f"catalog, {{{seen}}}:{size} on the GPU")


def check_profiles(
    model: GpuModel,
    observed: Iterable[ObservedProfile],
    *,
    driver_version: str | None = None,
    memory_tolerance: float = 0.10,
) -> CatalogCheck:
    """Every difference between the catalog's profiles of ``model`` and what the GPU reports.

    ``memory_tolerance`` is relative: 10% covers every driver-to-driver and vGPU-host
    difference in the reference (B200 1g: 22.00 vs 20.50 GiB is 7%). A catalog profile the
    GPU lacks is only a note when ``driver_version`` is older than the profile's minimum.
    """
    by_enum: dict[int, ObservedProfile] = {}
    diffs: list[str] = []
    notes: list[str] = []
    for obs in observed:
        if obs.enum in by_enum:
            diffs.append(f"{model.id}: the GPU reports profile enum {obs.enum} twice")
        by_enum[obs.enum] = obs
    for cat in model.gi_profiles:
        seen = by_enum.pop(cat.enum, None)
        if seen is not None:
            _compare(model, cat, seen, memory_tolerance, diffs, notes)
            continue
        missing = f"{model.id} {cat.name} (enum {cat.enum}, id {cat.id}) is not reported by the GPU"
        need = cat.min_driver
        if need and driver_version and not driver_at_least(driver_version, need):
            notes.append(f"{missing}; it needs driver {need}+ and this is {driver_version}")
        else:
            diffs.append(missing)
    for enum, obs in sorted(by_enum.items()):
        diffs.append(f"{model.id}: the GPU reports {obs.name.removeprefix('MIG ')} (enum {enum}, "
                     f"id {obs.id}) that the catalog lacks")
    if driver_version and not driver_at_least(driver_version, model.min_driver):
        notes.append(f"{model.id}: driver {driver_version} is older than the catalog's minimum "
                     f"{model.min_driver}")
    return CatalogCheck(model.id, tuple(diffs), tuple(notes))


def observed_from_model(model: GpuModel) -> list[ObservedProfile]:
    """The records a GPU that matches the catalog exactly would give (for simulators)."""
    return [
        ObservedProfile(
            enum=p.enum, id=p.id, name=p.nvml_name, instance_count=p.instance_count,
            memory_mib=p.memory_mib, sm_count=p.sm_count, copy_engines=p.copy_engines,
            decoders=p.decoders, encoders=p.encoders, jpegs=p.jpegs, ofas=p.ofas,
            slice_count=p.compute_slices, placements=p.placements,
            placement_size=p.placement_size, p2p=p.p2p,
        )
        for p in model.gi_profiles
    ]


# --- compute-instance profiles -------------------------------------------------------------


@dataclass(frozen=True)
class ObservedCi:
    """One compute-instance profile as the driver reports it inside a GI of ``gi_id``
    (``nvmlGpuInstanceGetComputeInstanceProfileInfo`` + possible placements)."""

    gi_profile_id: int
    id: int
    name: str
    slice_count: int
    instance_count: int
    placements: tuple[int, ...] | None = None  # None when not read


def check_ci_profiles(model: GpuModel, observed: Iterable[ObservedCi]) -> CatalogCheck:
    """Every difference between the catalog's CI profiles and those the driver reports
    inside the GIs that exist (NVML can only list CI profiles of a real GI, so a GI
    profile with no instance on the GPU is not compared). Matched by CI profile id, which
    is also its NVML enum."""
    diffs: list[str] = []
    notes: list[str] = []
    by_gi: dict[int, dict[int, ObservedCi]] = {}
    for ci in observed:
        by_gi.setdefault(ci.gi_profile_id, {})[ci.id] = ci
    for gi_id, seen in sorted(by_gi.items()):
        gi = model.profile_by_id(gi_id)
        if gi is None:
            continue  # the GI profile itself is reported by check_profiles
        where = f"{model.id} {gi.name}"
        for cat in model.ci_profiles_for(gi):
            obs = seen.pop(cat.id, None)
            name = cat.name(gi)
            if obs is None:
                diffs.append(f"{where}: CI profile {name} (id {cat.id}) is not reported")
                continue
            for field, want, have in (("slices", cat.slice_count, obs.slice_count),
                                      ("instance count", cat.instance_count,
                                       obs.instance_count)):
                if want != have:
                    diffs.append(f"{where}: CI {name} {field} is {want} in the catalog, "
                                 f"{have} on the GPU")
            if obs.placements is not None and sorted(obs.placements) != sorted(cat.placements):
                flag = (" (marked uncertain in the catalog)"
                        if "ci_profiles.placements" in model.uncertain else "")
                diffs.append(f"{where}: CI {name} placements are {list(cat.placements)} in "
                             f"the catalog, {sorted(obs.placements)} on the GPU{flag}")
            if obs.name.removeprefix("MIG ") != name:
                notes.append(f"{where}: the GPU names CI id {cat.id} "
                             f"{obs.name.removeprefix('MIG ')}")
        for ci_id, obs in sorted(seen.items()):
            diffs.append(f"{where}: the GPU reports CI profile {obs.name} (id {ci_id}) that "
                         "the catalog lacks")
    return CatalogCheck(model.id, tuple(diffs), tuple(notes))


# --- vGPU type -> GPU-instance profile ---------------------------------------------------


@dataclass(frozen=True)
class ObservedVgpuType:
    """A vGPU type as NVML maps it: ``nvmlVgpuTypeGetGpuInstanceProfileId`` (None: a
    time-sliced type) and its name, for display."""

    type_id: int
    name: str
    gi_profile_id: int | None


_VGPU_SHORT = re.compile(r"^(?P<board>[A-Za-z0-9]+)-(?P<g>\d+)-(?P<gb>\d+)[A-Z]+$")
_GI_NAME = re.compile(r"^(?P<g>\d+)g\.(?P<gb>\d+)gb")


def check_vgpu_types(model: GpuModel, types: Iterable[ObservedVgpuType]) -> CatalogCheck:
    """The driver's vGPU type -> GI profile map against the catalog: the profile must be
    one the catalog has, a +gfx one on a ``vgpu_needs_gfx`` model, and of the slice count
    the type's name says (``A100-3-20C``: 3). Names are display only: another framebuffer
    figure or an unlisted board prefix is a note."""
    diffs: list[str] = []
    notes: list[str] = []
    mig_backed = [t for t in types if t.gi_profile_id is not None]
    boards = model.vgpu_boards or ((model.vgpu_board,) if model.vgpu_board else ())
    for t in sorted(mig_backed, key=lambda t: t.type_id):
        short = t.name.split()[-1] if t.name.split() else ""
        what = f"{model.id} vGPU type {t.type_id} ({short})"
        profile = model.profile_by_id(t.gi_profile_id or 0)
        if profile is None:
            diffs.append(f"{what}: the driver maps it to GI profile id {t.gi_profile_id}, "
                         "which the catalog lacks")
            continue
        if model.vgpu_needs_gfx and profile.media != "gfx":
            diffs.append(f"{what}: runs on {profile.name}; the catalog says MIG-backed types "
                         "need a +gfx instance on this model")
        m, g = _VGPU_SHORT.match(short), _GI_NAME.match(profile.name)
        if m is None or g is None:
            notes.append(f"{what}: on {profile.name} (name not in the <board>-<g>-<GB> form)")
            continue
        if m["g"] != g["g"]:
            diffs.append(f"{what}: its name says {m['g']} slices, the driver maps it to "
                         f"{profile.name}")
        elif m["gb"] != g["gb"] and profile.vgpu_type != short:
            notes.append(f"{what}: on {profile.name} (the name gives {m['gb']} GB)")
        if boards and m["board"] not in boards:
            notes.append(f"{what}: board prefix {m['board']} is not in the catalog's list "
                         f"({', '.join(boards)}); names are for display only")
    if not mig_backed:
        notes.append(f"{model.id}: the driver maps no vGPU type to a GI profile (no vGPU "
                     "host driver, or no MIG-backed types)")
    return CatalogCheck(model.id, tuple(diffs), tuple(notes))
