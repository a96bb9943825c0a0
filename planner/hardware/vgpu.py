"""MIG-backed vGPU type names (pure).

NVIDIA names a MIG-backed vGPU type ``<board>-<g>-<GB><series>[<variant>]``: "A100-1-5C",
"A100-1-5CME", "H100XM-3-40C", "H200X-1-18C", "DC-1-24QGFX" (mig-hardware.md section 5.2).
``<g>`` and ``<GB>`` come from the GI profile's name (``1g.5gb`` -> 1, 5), the series is C
(compute) or Q (graphics, for +gfx profiles), and the variant follows the profile's media
engines: ME (+me), MEALL (+me.all), NOME (-me), GFX (+gfx). sysfs shows the name with an
"NVIDIA " prefix on current drivers and "GRID " on older ones.

Only the board prefixes the catalog lists are known; a model without one has no name here.
Where a catalog profile records a name confirmed by a source (``vgpu_type``), that name wins.
"""

from __future__ import annotations

import re

from planner.hardware.catalog import all_models
from planner.hardware.model import GiProfile, GpuModel

_VARIANT = {"me": "ME", "me.all": "MEALL", "no-me": "NOME", "gfx": "GFX"}
_PROFILE_NAME = re.compile(r"^(?P<g>\d+)g\.(?P<gb>\d+)gb")
_TYPE_NAME = re.compile(
    r"^(?:(?:NVIDIA|GRID)\s+)?(?P<board>[A-Za-z0-9]+)-(?P<g>\d+)-(?P<gb>\d+)"
    r"(?P<series>[CQ])(?P<variant>MEALL|NOME|ME|GFX)?$"
)


def _short_name(profile: GiProfile, board: str) -> str | None:
    m = _PROFILE_NAME.match(profile.name)
    if m is None:
        return None
    media = profile.media
    series = "Q" if media == "gfx" else "C"
    return f"{board}-{m['g']}-{m['gb']}{series}{_VARIANT.get(media, '')}"


def vgpu_type_name(model: GpuModel, profile: GiProfile, board: str | None = None) -> str | None:
    """The MIG-backed vGPU type name for ``profile`` on ``model`` ("NVIDIA A100-1-5C"), for
    ``board`` (default: the model's first board prefix); None when no prefix is known."""
    board = board or model.vgpu_board
    if board is None or board not in (model.vgpu_boards or (model.vgpu_board,)):
        return None
    if profile.vgpu_type and profile.vgpu_type.startswith(f"{board}-"):
        return f"NVIDIA {profile.vgpu_type}"
    short = _short_name(profile, board)
    return f"NVIDIA {short}" if short else None


def lookup_vgpu_type(
    name: str, models: tuple[GpuModel, ...] | None = None
) -> tuple[GpuModel, GiProfile] | None:
    """The catalog model and GI profile behind a MIG-backed vGPU type name (with or without
    the "NVIDIA "/"GRID " prefix); None for time-sliced or unknown types. A board prefix
    shared by several models (none today) resolves to the first by model id."""
    m = _TYPE_NAME.match(name.strip())
    if m is None:
        return None
    short = name.strip().split()[-1]
    for model in models if models is not None else all_models():
        boards = model.vgpu_boards or ((model.vgpu_board,) if model.vgpu_board else ())
        if m["board"] not in boards:
            continue
        for profile in model.gi_profiles:
            if profile.vgpu_type == short or _short_name(profile, m["board"]) == short:
                return model, profile
    return None
