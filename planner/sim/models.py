"""GPU models the simulator can host: every catalog model, plus a few GPUs without MIG.

The non-MIG entries exist so that the simulator can show NVIDIA's behaviour on such GPUs
(``nvmlDeviceSetMigMode`` raises NOT_SUPPORTED, nvidia-smi says "No MIG-enabled devices
found."). They have no profile table, so they are not catalog material.
"""

from __future__ import annotations

from planner.hardware.catalog import UnknownModelError, all_models, get_model
from planner.hardware.model import GiProfile, GpuModel
from planner.hardware.vgpu import vgpu_type_name as catalog_name

_NON_MIG: tuple[GpuModel, ...] = (
    GpuModel(
        id="l40s",
        display_name="NVIDIA L40S",
        product_names=("NVIDIA L40S",),
        pci_device_ids=("26b9",),
        architecture="ada",
        memory_slices=0,
        compute_slices=0,
        memory_mib=46068,
        sm_count=142,
        max_instances=0,
        min_driver="525.85.12",
        mig_mode_persists_reboot=False,
        mode_change_needs_reset=False,
        gi_profiles=(),
        notes=("No MIG. Simulator-only entry.",),
    ),
)


def sim_models() -> tuple[GpuModel, ...]:
    return tuple(sorted((*all_models(), *_NON_MIG), key=lambda m: m.id))


def sim_model(model_id: str) -> GpuModel:
    for model in _NON_MIG:
        if model.id == model_id:
            return model
    try:
        return get_model(model_id)
    except UnknownModelError:
        known = ", ".join(m.id for m in sim_models())
        raise UnknownModelError(f"unknown GPU model {model_id!r} (known: {known})") from None


def mig_capable(model: GpuModel) -> bool:
    return bool(model.gi_profiles)


def product_name(model: GpuModel) -> str:
    """The name NVML reports: the catalog's first product name that is not a glob."""
    for name in model.product_names:
        if not any(c in name for c in "*?["):
            return name
    return model.display_name


def pci_device_id(model: GpuModel) -> int:
    return int(model.pci_device_ids[0], 16) if model.pci_device_ids else 0x0000


def vgpu_type_name(model: GpuModel, profile: GiProfile) -> str | None:
    """NVIDIA's MIG-backed vGPU type name ("NVIDIA A100-1-5C"), from the catalog."""
    return catalog_name(model, profile)


def version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for p in text.strip().split("."):
        if not p.isdigit():
            raise ValueError(f"not a driver version: {text!r}")
        parts.append(int(p))
    return tuple(parts)


def driver_at_least(driver: str, minimum: str | None) -> bool:
    """Compare only the parts ``minimum`` names: "525" means any 525.x or later."""
    if not minimum:
        return True
    need = version_tuple(minimum)
    have = version_tuple(driver)[: len(need)]
    return have >= need
