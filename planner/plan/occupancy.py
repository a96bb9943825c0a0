"""Draw a GPU's memory slices as text, for error messages: ``[3g.20gb ][2g  ][1g][  ]``.

Each instance is one bracketed cell two characters wide per memory slice (its name,
shortened to ``Ng`` when it does not fit); each free slice is ``[  ]``.
"""

from __future__ import annotations

from collections.abc import Iterable

from planner.hardware.model import GiProfile


def draw(memory_slices: int, instances: Iterable[tuple[GiProfile, int]]) -> str:
    by_start = {start: profile for profile, start in instances}
    cells: list[str] = []
    slice_ = 0
    while slice_ < memory_slices:
        profile = by_start.get(slice_)
        if profile is None:
            cells.append("[  ]")
            slice_ += 1
            continue
        width = 2 * profile.placement_size
        label = profile.name if len(profile.name) <= width else f"{profile.compute_slices}g"
        cells.append(f"[{label[:width].ljust(width)}]")
        slice_ += max(1, profile.placement_size)
    return "".join(cells)
