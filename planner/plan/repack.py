"""Repack: the fewest slices of shut-off VMs to move so that one more slice fits a GPU.

A GPU has at most 7-8 memory slices, so the search is exact: subsets of the movable
slices in rising size, the first size at which any subset fits wins, and among those the
one with the fewest instance creates + deletes, then the lowest position in the caller's
order (the caller sorts the movable slices by start, then node name). Pure code: what
"fits" means is the caller's ``cost`` (None: does not fit).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import combinations
from typing import TypeVar

T = TypeVar("T")

MOVABLE_STATE = "shut off"  # the only libvirt state whose slices a repack moves


def fewest_moves(movable: Sequence[T], cost: Callable[[tuple[T, ...]], int | None]
                 ) -> tuple[tuple[T, ...], int] | None:
    """The subset of ``movable`` to move (and its cost) with the fewest moves; None when
    even moving all of them does not make room."""
    for k in range(1, len(movable) + 1):
        best: tuple[int, tuple[int, ...], tuple[T, ...]] | None = None
        for picked in combinations(range(len(movable)), k):
            subset = tuple(movable[i] for i in picked)
            c = cost(subset)
            if c is not None and (best is None or (c, picked) < best[:2]):
                best = (c, picked, subset)
        if best is not None:
            return best[2], best[0]
    return None
