"""Which catalog model a probed GPU is, and whether a GPU selector picks it."""

from __future__ import annotations

from planner.hardware.catalog import get_model, match_model
from planner.hardware.model import GpuModel
from planner.host.state import Gpu
from planner.lang import GpuSelector


def model_of(gpu: Gpu) -> GpuModel | None:
    if gpu.model:
        try:
            return get_model(gpu.model)
        except KeyError:
            return None
    return match_model(gpu.name, gpu.pci_device_id)


def _gpu_names(gpu: Gpu, model: GpuModel | None) -> tuple[str, ...]:
    names = [gpu.name]
    if model is not None:
        names += [model.id, model.display_name]
    elif gpu.model:
        names.append(gpu.model)
    return tuple(names)


def selects(selector: GpuSelector, gpu: Gpu, model: GpuModel | None) -> bool:
    return bool(selector.matches(pci=gpu.pci, index=gpu.index, uuid=gpu.uuid,
                                 names=_gpu_names(gpu, model)))
