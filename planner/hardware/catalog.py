"""Load the GPU catalog from the TOML data files shipped in planner/hardware/data/.

One file per GPU model. A file's ``[model]`` table holds the GPU's facts, each
``[[gi_profile]]`` one GPU-instance profile and each ``[[ci_profile]]`` one
compute-instance profile for GIs of ``gi_compute_slices``. Numbers that the sources do
not confirm are listed in the entry's ``uncertain`` array with a note, never silently.
"""

from __future__ import annotations

import fnmatch
import tomllib
from functools import cache
from importlib import resources
from typing import Any

from planner.hardware.model import CiProfile, GiProfile, GpuModel


class UnknownModelError(KeyError):
    pass


def _gi(entry: dict[str, Any]) -> GiProfile:
    data = dict(entry)
    data["placements"] = tuple(data["placements"])
    data["uncertain"] = tuple(data.get("uncertain", ()))
    return GiProfile(**data)


def _ci(entry: dict[str, Any]) -> tuple[int, CiProfile]:
    data = dict(entry)
    gi_slices = data.pop("gi_compute_slices")
    data["placements"] = tuple(data["placements"])
    return gi_slices, CiProfile(**data)


def parse_model(text: str) -> GpuModel:
    doc = tomllib.loads(text)
    m = dict(doc["model"])
    cis: dict[int, list[CiProfile]] = {}
    for entry in doc.get("ci_profile", []):
        gi_slices, ci = _ci(entry)
        cis.setdefault(gi_slices, []).append(ci)
    return GpuModel(
        **{k: v for k, v in m.items() if k not in ("product_names", "pci_device_ids", "notes")},
        product_names=tuple(m.get("product_names", ())),
        pci_device_ids=tuple(d.lower() for d in m.get("pci_device_ids", ())),
        notes=tuple(m.get("notes", ())),
        gi_profiles=tuple(_gi(e) for e in doc.get("gi_profile", [])),
        ci_profiles={k: tuple(sorted(v, key=lambda c: c.id)) for k, v in sorted(cis.items())},
        sources=dict(doc.get("sources", {})),
    )


@cache
def all_models() -> tuple[GpuModel, ...]:
    """Every catalog model, sorted by id."""
    data = resources.files("planner.hardware").joinpath("data")
    models = [parse_model(f.read_text()) for f in data.iterdir() if f.name.endswith(".toml")]
    return tuple(sorted(models, key=lambda m: m.id))


def get_model(model_id: str) -> GpuModel:
    for model in all_models():
        if model.id == model_id:
            return model
    known = ", ".join(m.id for m in all_models())
    raise UnknownModelError(f"unknown GPU model {model_id!r} (known: {known})")


def match_model(product_name: str, pci_device_id: str | None = None) -> GpuModel | None:
    """The catalog model of a GPU as NVML reports it: by PCI device id when known, else by
    product name (exact or glob)."""
    if pci_device_id:
        # NVML's pciDeviceId packs device << 16 | vendor ("0x20B010DE"); sysfs gives "0x20b0".
        dev = pci_device_id.lower().removeprefix("0x")
        dev = dev[:4] if len(dev) == 8 else dev[-4:]
        for model in all_models():
            if dev in model.pci_device_ids:
                return model
    for model in all_models():
        for pattern in model.product_names:
            if fnmatch.fnmatchcase(product_name, pattern):
                return model
    return None
