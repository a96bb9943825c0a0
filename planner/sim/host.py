"""Create a simulated host: from ``--gpu MODEL[@PCI]`` arguments or a TOML host spec.

Host spec format (``config/sim-*.toml``)::

    [host]
    driver = "580.82.07"        # optional; NVIDIA driver version the host reports
    vgpu = "mdev"               # optional; "mdev" | "vfio-vf" (vGPU backend), absent = none
    vfio = true                 # optional; false: vfio_pci and vfio_iommu_type1 not loaded
    images = ["build/img.qcow2"]  # optional; files the host holds (VM base images): made
                                # empty under DIR (absolute paths too), as host_path finds
                                # them; libvirt's test driver never reads a disk

    [[gpu]]
    model = "a100-40gb"         # catalog id (``aihow sim models``)
    pci = "0000:17:00.0"        # optional; default 0000:17:00.0, 0000:31:00.0, ... by position
    mig = "disabled"            # optional; initial MIG mode, "enabled" | "disabled"
    gi_ids = "identity"         # optional; "identity" | "swapped-halves" GI id numbering

    [[holder]]                  # optional; processes holding a GPU open
    gpu = "0000:17:00.0"
    name = "nvidia-persistenced"
    pid = 1234                  # optional
"""

from __future__ import annotations

import os
import shutil
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from planner.hardware.catalog import UnknownModelError
from planner.lang.pci import normalize_pci
from planner.sim import driver, ids
from planner.sim.codes import DriverError
from planner.sim.models import driver_at_least, mig_capable, sim_model, version_tuple
from planner.sim.state import STATE_FILE, SimError, SimGpu, SimState, SimStore, atomic_write

DEFAULT_DRIVER = "580.82.07"


@dataclass(frozen=True)
class GpuSpec:
    model: str
    pci: str | None = None
    mig: bool = False
    gi_ids: str | None = None


@dataclass(frozen=True)
class HolderSpec:
    gpu: str
    name: str
    pid: int | None = None


@dataclass(frozen=True)
class HostSpec:
    gpus: tuple[GpuSpec, ...]
    driver: str = DEFAULT_DRIVER
    vgpu: str | None = None
    holders: tuple[HolderSpec, ...] = field(default_factory=tuple)
    vfio: bool = True
    nvswitch: bool = False  # HGX: GPUs joined by NVSwitch (Fabric Manager matters for reset)
    images: tuple[str, ...] = ()  # base image files the host holds (empty files under DIR)


def parse_gpu_arg(text: str) -> GpuSpec:
    model, _, pci = text.partition("@")
    if not model:
        raise SimError(f"--gpu {text!r}: expected MODEL[@PCI]")
    try:
        return GpuSpec(model=model, pci=normalize_pci(pci) if pci else None)
    except ValueError as exc:
        raise SimError(f"--gpu {text!r}: {exc}") from None


def _keys(where: str, table: dict[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(table) - allowed)
    if extra:
        raise SimError(f"{where}: unknown key {extra[0]!r} (allowed: {', '.join(sorted(allowed))})")


def load_spec(path: str | os.PathLike[str]) -> HostSpec:
    where = str(path)
    try:
        doc = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise SimError(f"{where}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SimError(f"{where}: {exc}") from None
    _keys(where, doc, {"host", "gpu", "holder"})
    host = doc.get("host", {})
    _keys(f"{where}: [host]", host, {"driver", "vgpu", "vfio", "nvswitch", "images"})
    if not isinstance(host.get("vfio", True), bool):
        raise SimError(f"{where}: [host] vfio must be true or false")
    images = host.get("images", [])
    if not isinstance(images, list) or not all(isinstance(i, str) and i for i in images):
        raise SimError(f"{where}: [host] images must be a list of file paths")
    gpus = []
    for i, g in enumerate(doc.get("gpu", [])):
        at = f"{where}: gpu[{i}]"
        _keys(at, g, {"model", "pci", "mig", "gi_ids"})
        if "model" not in g:
            raise SimError(f"{at}: missing key 'model'")
        if g.get("mig", "disabled") not in ("enabled", "disabled"):
            raise SimError(f"{at}: mig must be 'enabled' or 'disabled', not {g['mig']!r}")
        try:
            pci = normalize_pci(g["pci"]) if "pci" in g else None
        except ValueError as exc:
            raise SimError(f"{at}: pci: {exc}") from None
        gpus.append(
            GpuSpec(
                model=g["model"], pci=pci, mig=g.get("mig") == "enabled", gi_ids=g.get("gi_ids")
            )
        )
    holders = []
    for i, h in enumerate(doc.get("holder", [])):
        at = f"{where}: holder[{i}]"
        _keys(at, h, {"gpu", "name", "pid"})
        if "gpu" not in h or "name" not in h:
            raise SimError(f"{at}: needs 'gpu' and 'name'")
        holders.append(HolderSpec(gpu=h["gpu"], name=h["name"], pid=h.get("pid")))
    if not gpus:
        raise SimError(f"{where}: no [[gpu]] entries")
    return HostSpec(
        gpus=tuple(gpus),
        driver=host.get("driver", DEFAULT_DRIVER),
        vgpu=host.get("vgpu"),
        holders=tuple(holders),
        vfio=host.get("vfio", True),
        nvswitch=bool(host.get("nvswitch", False)),
        images=tuple(images),
    )


def build_state(spec: HostSpec) -> SimState:
    try:
        version_tuple(spec.driver)
    except ValueError as exc:
        raise SimError(f"--driver: {exc}") from None
    if spec.vgpu not in (None, "mdev", "vfio-vf"):
        raise SimError(f"--vgpu must be 'mdev' or 'vfio-vf', not {spec.vgpu!r}")
    gpus: list[SimGpu] = []
    seen: set[str] = set()
    for i, g in enumerate(spec.gpus):
        try:
            model = sim_model(g.model)
        except UnknownModelError as exc:
            raise SimError(str(exc.args[0])) from None
        if not driver_at_least(spec.driver, model.min_driver):
            raise SimError(
                f"{model.id} needs driver {model.min_driver} or later, not {spec.driver}"
            )
        try:
            pci = g.pci or ids.default_pci(i)
        except ValueError as exc:
            raise SimError(str(exc)) from None
        if pci in seen:
            raise SimError(f"two GPUs at PCI address {pci}")
        seen.add(pci)
        uuid = ids.gpu_uuid(model.id, pci)
        gi_map = g.gi_ids or ids.default_gi_id_map(uuid)
        if gi_map not in ("identity", "swapped-halves"):
            raise SimError(f"gi_ids must be 'identity' or 'swapped-halves', not {gi_map!r}")
        if g.mig and not mig_capable(model):
            raise SimError(f"{model.id} at {pci} has no MIG; it cannot start with MIG enabled")
        gpus.append(
            SimGpu(
                index=0,
                pci=pci,
                model=model.id,
                uuid=uuid,
                gi_id_map=gi_map,
                mig_current=g.mig,
                mig_pending=g.mig,
            )
        )
    gpus.sort(key=lambda g: g.pci)  # NVML enumerates GPUs in PCI bus order
    for index, gpu in enumerate(gpus):
        gpu.index = index
    state = SimState(driver_version=spec.driver, vgpu_backend=spec.vgpu, gpus=gpus,
                     vfio_loaded=spec.vfio, nvswitch=spec.nvswitch)
    for h in spec.holders:
        try:
            held = state.gpu(normalize_pci(h.gpu))
        except ValueError as exc:
            raise SimError(f"holder {h.name}: {exc}") from None
        if held is None:
            raise SimError(f"holder {h.name}: no GPU at {h.gpu}")
        try:
            driver.hold(held, h.name, h.pid)
        except DriverError as exc:
            raise SimError(f"holder {h.name}: {exc.detail}") from None
    return state


NVIDIA_SMI_SCRIPT = """#!/bin/sh
# Simulated nvidia-smi for the aihow simulated host in {root}
exec {python} -m planner.sim.nvidia_smi --root {root} "$@"
"""


def _give_file(root: Path, path: str) -> None:
    """An empty file at ``path`` on the simulated host: under DIR, where
    ``Environment.host_path`` looks for it (an absolute path below DIR too)."""
    p = Path(path)
    target = (root / p.relative_to("/")) if p.is_absolute() else root / p
    if root.resolve() not in target.resolve().parents:
        raise SimError(f"images: {path} is outside the simulated host")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.touch()


SRIOV_MANAGE_SCRIPT = """#!/bin/sh
# Simulated sriov-manage for the aihow simulated host in {root}
exec {python} -m planner.sim.sriov_manage --root {root} "$@"
"""


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def init_host(root: str | os.PathLike[str], spec: HostSpec, *, force: bool = False) -> SimState:
    store = SimStore(root)
    state = build_state(spec)  # validate everything before touching DIR
    if store.exists() and not force:
        raise SimError(f"{store.root}: already a simulated host (use --force to replace it)")
    with store.locked():
        # Replacing a host replaces all of it: its kernel views, its libvirt domains, its
        # mdevctl definitions and the aihow state directory kept on it.
        for sub in ("sys", "proc", "bin", "libvirt", "etc", "state"):
            shutil.rmtree(store.root / sub, ignore_errors=True)
        (store.root / STATE_FILE).unlink(missing_ok=True)
        store.save(state)
        for image in spec.images:
            _give_file(store.root, image)
        (store.root / "bin").mkdir(exist_ok=True)
        atomic_write(
            store.root / "bin" / "nvidia-smi",
            NVIDIA_SMI_SCRIPT.format(root=_quote(str(store.root)), python=_quote(sys.executable)),
            mode=0o755,
        )
        atomic_write(
            store.root / "bin" / "sriov-manage",
            SRIOV_MANAGE_SCRIPT.format(root=_quote(str(store.root)),
                                       python=_quote(sys.executable)),
            mode=0o755,
        )
    return state
