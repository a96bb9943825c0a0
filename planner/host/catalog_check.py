"""``aihow probe --check-catalog``: read each GPU's MIG profiles and placements through
NVML (query calls only, through ``ReadOnlyNvml``) and compare them with the catalog: GI
profiles and placements, the CI profiles inside every GI profile that has an instance
(NVML lists CI profiles only of a real GI; the check never creates one), and the vGPU
type -> GI profile map of a vGPU host driver (``nvmlVgpuTypeGetGpuInstanceProfileId``).

Possible placements are answered "regardless of whether MIG is enabled", but need root;
without permission the profiles are still compared and the report says placements were
not read.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from planner.hardware.catalog import get_model
from planner.hardware.check import (
    CatalogCheck,
    ObservedCi,
    ObservedProfile,
    ObservedVgpuType,
    check_ci_profiles,
    check_profiles,
    check_vgpu_types,
)
from planner.host.errors import HostError
from planner.host.nvml import NvmlHost, nvml_message
from planner.host.state import Gpu

if TYPE_CHECKING:
    from planner.host.environment import Environment


@dataclass(frozen=True)
class GpuCheck:
    gpu: Gpu
    observed: tuple[ObservedProfile, ...]
    check: CatalogCheck | None  # None when the GPU is not in the catalog or not checked
    notes: tuple[str, ...] = ()
    checked: bool = True  # False: not MIG-capable, or profiles unreadable (MIG disabled)
    cis: tuple[ObservedCi, ...] = ()
    vgpu_types: tuple[ObservedVgpuType, ...] = ()

    @property
    def differences(self) -> tuple[str, ...]:
        if not self.checked:
            return ()
        if self.check is None:
            return (f"{self.gpu.name} (device id {self.gpu.pci_device_id}) is not in the "
                    "catalog",)
        return self.check.differences


def read_observed(host: NvmlHost, handle: Any) -> tuple[tuple[ObservedProfile, ...], list[str]]:
    """Every GI profile the driver reports, with its possible placements where allowed."""
    n = host.nvml
    notes: list[str] = []
    observed = []
    for p in host.gi_profiles(handle):
        starts: tuple[int, ...] | None = None
        size: int | None = None
        try:
            placements = host.gi_placements(handle, p.id)
        except n.NVMLError_NoPermission:
            if not notes:
                notes.append("placements not read: NVML needs root for possible placements")
        except n.NVMLError_NotSupported:
            notes.append(f"placements of profile {p.id} not supported by this driver")
        else:
            starts = tuple(s for s, _ in placements)
            sizes = {sz for _, sz in placements}
            size = sizes.pop() if len(sizes) == 1 else None
        observed.append(replace(p, placements=starts, placement_size=size))
    return tuple(observed), notes


def read_observed_cis(host: NvmlHost, handle: Any) -> tuple[ObservedCi, ...]:
    """The CI profiles (with possible placements) inside one GI of each GI profile that
    has an instance on the GPU."""
    out: list[ObservedCi] = []
    seen: set[int] = set()
    for profile, gi, _info in host.gi_handles(handle):
        if profile.id in seen:
            continue
        seen.add(profile.id)
        for ci in host.ci_profiles(gi):
            starts: tuple[int, ...] | None = None  # None: compared without placements
            with contextlib.suppress(host.nvml.NVMLError_NotSupported,
                                     host.nvml.NVMLError_NoPermission):
                starts = tuple(s for s, _ in host.ci_placements(gi, ci.id))
            out.append(ObservedCi(profile.id, ci.id, ci.name, ci.slice_count,
                                  ci.instance_count, starts))
    return tuple(out)


def read_vgpu_types(host: NvmlHost, handle: Any) -> tuple[ObservedVgpuType, ...]:
    return tuple(ObservedVgpuType(t.type_id, t.name, t.gi_profile_id)
                 for t in host.vgpu_types(handle).values())


def _merged(*checks: CatalogCheck) -> CatalogCheck:
    return CatalogCheck(checks[0].model_id, tuple(d for c in checks for d in c.differences),
                        tuple(n for c in checks for n in c.notes))


def check_host(env: Environment) -> tuple[str | None, tuple[GpuCheck, ...]]:
    """(driver version, one check per GPU in PCI order)."""
    nvml = env.nvml_readonly()
    try:
        return _check_host(nvml)
    except nvml.NVMLError as err:
        raise HostError(f"{env.host_uri}: reading the GPUs through NVML failed: "
                        f"{nvml_message(err)}") from err


def _check_host(nvml: Any) -> tuple[str | None, tuple[GpuCheck, ...]]:
    results = []
    with NvmlHost(nvml) as host:
        driver = host.driver_version()
        for index, handle in host.handles():
            gpu = host.read_gpu(index, handle)
            if not gpu.mig_capable:
                results.append(GpuCheck(gpu, (), None, ("not MIG-capable: nothing to check",),
                                        checked=False))
                continue
            observed, notes = read_observed(host, handle)
            if not observed and not gpu.mig_current:
                # nvml.h: profile info is NOT_SUPPORTED while MIG mode is disabled.
                note = ("MIG mode is disabled and the driver reports no profiles without it; "
                        "nothing compared (enable MIG mode and run the check again)")
                results.append(GpuCheck(gpu, (), None, (note,), checked=False))
                continue
            cis = read_observed_cis(host, handle) if gpu.mig_current else ()
            types = read_vgpu_types(host, handle)
            check = None
            if gpu.model is not None:
                model = get_model(gpu.model)
                check = _merged(check_profiles(model, observed, driver_version=driver),
                                check_ci_profiles(model, cis), check_vgpu_types(model, types))
            if not cis:
                notes.append("compute-instance profiles not compared: no GPU instance exists "
                             "(NVML lists them only inside one; the check creates none)")
            results.append(GpuCheck(gpu, observed, check, tuple(notes), cis=cis,
                                    vgpu_types=types))
    return driver, tuple(sorted(results, key=lambda r: r.gpu.pci))


def render_checks(uri: str, driver: str | None, checks: tuple[GpuCheck, ...]) -> str:
    lines = [f"host {uri}  driver {driver or 'unknown'}"]
    if not checks:
        lines.append("no GPUs")
    for c in checks:
        model = c.gpu.model or "not in the catalog"
        verdict = "differs from the catalog" if c.differences else "matches the catalog"
        if not c.gpu.mig_capable:
            verdict = "not MIG-capable"
        elif not c.checked:
            verdict = "not checked"
        lines += ["", f"GPU {c.gpu.index}  {c.gpu.pci}  {c.gpu.name}  [{model}]: {verdict}"]
        for p in c.observed:
            where = ("{" + ",".join(map(str, p.placements)) + f"}}:{p.placement_size}"
                     if p.placements is not None else "not read")
            lines.append(
                f"  enum {p.enum:<3} id {p.id:<3} {p.name:<14} count {p.instance_count:<2} "
                f"mem {p.memory_mib:>6} MiB  SM {p.sm_count:<3} CE {p.copy_engines} "
                f"DEC {p.decoders} ENC {p.encoders} JPG {p.jpegs} OFA {p.ofas}  "
                f"placements {where}"
            )
        for ci in c.cis:
            where = ("{" + ",".join(map(str, ci.placements)) + "}"
                     if ci.placements is not None else "not read")
            lines.append(f"  CI in GI profile {ci.gi_profile_id:<3} id {ci.id:<2} {ci.name:<14} "
                         f"slices {ci.slice_count} count {ci.instance_count}  "
                         f"placements {where}")
        for t in sorted(c.vgpu_types, key=lambda t: t.type_id):
            if t.gi_profile_id is not None:
                lines.append(f"  vGPU type {t.type_id:<5} {t.name}  -> GI profile id "
                             f"{t.gi_profile_id}")
        lines += [f"  difference: {d}" for d in c.differences]
        if c.check is not None:
            lines += [f"  note: {n}" for n in c.check.notes]
        lines += [f"  note: {n}" for n in c.notes]
    return "\n".join(lines) + "\n"


def check_catalog(env: Environment) -> tuple[str, int]:
    """The report for ``aihow probe --check-catalog`` and the number of differences."""
    driver, checks = check_host(env)
    return render_checks(env.host_uri, driver, checks), sum(len(c.differences) for c in checks)
