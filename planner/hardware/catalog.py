"""Load the GPU catalog from the TOML data files shipped in planner/hardware/data/.

One file per GPU model. A file's ``[model]`` table holds the GPU's facts, each
``[[gi_profile]]`` one GPU-instance profile and each ``[[ci_profile]]`` one
compute-instance profile for GIs of ``gi_compute_slices``. GI profiles are listed in the
order a real ``nvidia-smi mig -lgip`` prints them (it follows neither enum nor id; the
simulator prints them in this order). Numbers that the sources do
not confirm are listed in the entry's ``uncertain`` array with a note, never silently.
"""

from __future__ import annotations

import fnmatch
import pickle
import tomllib
from functools import cache
from importlib import resources
from typing import Any

from planner import diskcache
from planner.errors import AihowError
from planner.hardware.model import CiProfile, GiProfile, GpuModel


class UnknownModelError(KeyError):
    pass


class CatalogError(AihowError):
    """A catalog data file that cannot be read or contradicts itself."""


def _tuples(entry: dict[str, Any]) -> dict[str, Any]:
    """TOML arrays become tuples so the frozen dataclasses stay hashable."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in entry.items()}


def _gi(entry: dict[str, Any]) -> GiProfile:
    return GiProfile(**_tuples(entry))


def _ci(entry: dict[str, Any]) -> tuple[int, CiProfile]:
    data = dict(entry)
    gi_slices = data.pop("gi_compute_slices")
    data["placements"] = tuple(data["placements"])
    return gi_slices, CiProfile(**data)


def parse_model(text: str, where: str = "<catalog>") -> GpuModel:
    """One model from a data file's text; a bad file raises CatalogError naming ``where``."""
    try:
        model = _parse(tomllib.loads(text))
    except (tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as exc:
        raise CatalogError(f"{where}: {type(exc).__name__}: {exc}") from None
    problems = validate_model(model)
    if problems:
        raise CatalogError(f"{where}: {problems[0]}")
    return model


def validate_model(model: GpuModel) -> list[str]:
    """Self-consistency problems of a model: placements off the grid, duplicate ids."""
    problems: list[str] = []
    seen_ids: set[int] = set()
    seen_enums: set[int] = set()
    for p in model.gi_profiles:
        if p.id in seen_ids or p.enum in seen_enums:
            problems.append(f"profile {p.name}: duplicate profile id {p.id} or enum {p.enum}")
        seen_ids.add(p.id)
        seen_enums.add(p.enum)
        if not p.placements:
            problems.append(f"profile {p.name}: no placements")
        for start in p.placements:
            if start < 0 or start + p.placement_size > model.memory_slices:
                problems.append(f"profile {p.name}: placement {start}:{p.placement_size} "
                                f"is outside the {model.memory_slices}-slice grid")
        if p.instance_count < 1 or p.compute_slices > model.compute_slices:
            problems.append(f"profile {p.name}: bad instance count or compute slices")
    return problems


def _parse(doc: dict[str, Any]) -> GpuModel:
    m = _tuples(doc["model"])
    cis: dict[int, list[CiProfile]] = {}
    for entry in doc.get("ci_profile", []):
        gi_slices, ci = _ci(entry)
        cis.setdefault(gi_slices, []).append(ci)
    m["pci_device_ids"] = tuple(d.lower() for d in m.get("pci_device_ids", ()))
    return GpuModel(
        **m,
        gi_profiles=tuple(_gi(e) for e in doc.get("gi_profile", [])),
        ci_profiles={k: tuple(sorted(v, key=lambda c: c.id)) for k, v in sorted(cis.items())},
        sources=dict(doc.get("sources", {})),
    )


@cache
def all_models() -> tuple[GpuModel, ...]:
    """Every catalog model, sorted by id.

    Parsing and checking the TOML files costs every command start-up more than loading
    the result back, so the parsed catalog is kept in the disk cache, keyed by the files'
    text (any edit misses)."""
    data = resources.files("planner.hardware").joinpath("data")
    files = sorted((f.name, f.read_text()) for f in data.iterdir() if f.name.endswith(".toml"))
    path = diskcache.entry_path("catalog", *(f"{name}\0{text}" for name, text in files))
    if path is not None:
        try:
            cached = pickle.loads(path.read_bytes())
            if isinstance(cached, tuple) and all(isinstance(m, GpuModel) for m in cached):
                return cached
        except Exception:  # noqa: BLE001 - absent or unusable entry: parse instead
            pass
    models = tuple(sorted((parse_model(text, f"planner/hardware/data/{name}")
                           for name, text in files), key=lambda m: m.id))
    if path is not None:
        diskcache.store(path, lambda f: pickle.dump(models, f))
    return models


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
