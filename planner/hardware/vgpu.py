"""MIG-backed vGPU type names (pure).

NVIDIA names a MIG-backed vGPU type ``<board>-<g>-<GB>C[<variant>]``: "A100-1-5C",
"A100-1-5CME", "H100XM-3-40C", "H200X-1-18C", "DC-1-24C" (docs/reference/vgpu-on-mig.md
section 1.5, from the driver's own type table). ``<g>`` and ``<GB>`` come from the GI
profile's name (``1g.5gb`` -> 1, 5), the series is C (compute, the one aihow gives a VM),
and the variant follows the profile's media engines: ME (+me), MEALL (+me.all), NOME (-me).
sysfs and NVML show the name with a prefix: "NVIDIA " or "GRID " (Ampere types), or a
spaced board name ("NVIDIA RTX Pro 6000 Blackwell DC-1-24C"); NVIDIA's own tools compare
only the last whitespace-separated word, and so does ``lookup_vgpu_type``.

+gfx profiles carry no suffix: on a model with ``vgpu_needs_gfx`` (RTX PRO 6000) every
MIG-backed type runs on a +gfx GPU instance and no other profile has one (vgpu-on-mig.md
section 1.6); "DC-1-24QGFX" is only a vgpu-device-manager config spelling, not a type.

Only the board prefixes the catalog lists are known; a model without one has no name here.
Where a catalog profile records a name confirmed by a source (``vgpu_type``), that name wins.
"""

from __future__ import annotations

import re

from planner.hardware.catalog import all_models
from planner.hardware.model import GiProfile, GpuModel

_VARIANT = {"me": "ME", "me.all": "MEALL", "no-me": "NOME"}
_PROFILE_NAME = re.compile(r"^(?P<g>\d+)g\.(?P<gb>\d+)gb")
# The last word of a type name: board, slices, framebuffer GB, series (C compute, Q/A/B
# graphics and virtual apps), variant.
_TYPE_NAME = re.compile(r"^(?P<board>[A-Za-z0-9]+)-(?P<g>\d+)-(?P<gb>\d+)[A-Z]+$")


def _short_name(model: GpuModel, profile: GiProfile, board: str) -> str | None:
    m = _PROFILE_NAME.match(profile.name)
    if m is None:
        return None
    media = profile.media
    if model.vgpu_needs_gfx and media != "gfx":
        return None  # no MIG-backed type runs on this profile
    return f"{board}-{m['g']}-{m['gb']}C{_VARIANT.get(media, '')}"


def short_type_name(name: str) -> str:
    """The part of a vGPU type name NVIDIA's tools compare: its last word ("NVIDIA RTX Pro
    6000 Blackwell DC-1-24C" -> "DC-1-24C", "GRID A100D-1-10C" -> "A100D-1-10C")."""
    words = name.split()
    return words[-1] if words else ""


def gfx_profile_for(model: GpuModel, profile: GiProfile) -> GiProfile | None:
    """On a ``vgpu_needs_gfx`` model, the +gfx profile of ``profile``'s size, which is what
    a vGPU of that size needs; None when ``profile`` already is one or the model has no rule."""
    if not model.vgpu_needs_gfx or profile.media == "gfx":
        return None
    return next((p for p in model.gi_profiles
                 if p.media == "gfx" and p.compute_slices == profile.compute_slices
                 and p.placement_size == profile.placement_size), None)


def vgpu_type_name(model: GpuModel, profile: GiProfile, board: str | None = None) -> str | None:
    """The MIG-backed vGPU type name for ``profile`` on ``model`` ("NVIDIA A100-1-5C"), for
    ``board`` (default: the model's first board prefix); None when no prefix is known."""
    board = board or model.vgpu_board
    if board is None or board not in (model.vgpu_boards or (model.vgpu_board,)):
        return None
    short = _board_name(model, profile, board)
    return f"NVIDIA {short}" if short else None


def _board_name(model: GpuModel, profile: GiProfile, board: str) -> str | None:
    """The short type name on ``board``: the one a source confirmed, else the pattern's
    (GB200's confirmed names use other numbers than its profiles: GB200-1-24C on 1g.23gb)."""
    if profile.vgpu_type and profile.vgpu_type.startswith(f"{board}-"):
        return profile.vgpu_type
    return _short_name(model, profile, board)


def lookup_vgpu_type(
    name: str, models: tuple[GpuModel, ...] | None = None
) -> tuple[GpuModel, GiProfile] | None:
    """The catalog model and GI profile behind the MIG-backed vGPU type aihow uses for it
    (compared by the name's last word, so any "NVIDIA "/"GRID "/board prefix is fine); None
    for time-sliced, other-series or unknown types. A board prefix shared by several models
    (none today) resolves to the first by model id."""
    short = short_type_name(name)
    m = _TYPE_NAME.match(short)
    if m is None:
        return None
    for model in models if models is not None else all_models():
        boards = model.vgpu_boards or ((model.vgpu_board,) if model.vgpu_board else ())
        if m["board"] not in boards:
            continue
        for profile in model.gi_profiles:
            if _board_name(model, profile, m["board"]) == short:
                return model, profile
    return None
