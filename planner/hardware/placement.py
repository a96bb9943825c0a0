"""Placement math for GPU instances, computed from a model's profile table (pure).

A GPU's memory is a row of ``model.memory_slices`` units; a GI of a profile occupies
``placement_size`` units from one of the profile's legal starts. The driver refuses a GI
when (nvml.h; docs/reference/mig-hardware.md section 2.1):

- its start is not one of the profile's placements, or it overlaps an occupied unit;
- the profile already has ``instance_count`` instances, or the GPU ``max_instances``;
- it is a +me (REV1) instance and one already exists (one media-engine set per GPU);
- an +me.all instance exists and it is not a -me profile, or it is +me.all and anything
  but -me instances exists ("prevents allocation of all but _NO_ME profiles").

These rules are order-independent, so a set of instances fits exactly when adding them one
by one in any order does. Layouts are never hard-coded: ``maximal_layouts`` enumerates the
packings of the table, and ``place_preserving`` searches them (8 units keep that small).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from planner.hardware.model import GiProfile, GpuModel

Instance = tuple[GiProfile, int]
NewRef = tuple[str, int]  # ("new", k): the k-th entry of Placement.create


@dataclass(frozen=True)
class Placement:
    """How to turn ``existing`` into ``wanted``: which existing instances (by index) stay,
    which go, what is created where, and, per wanted item in order, the existing index
    that serves it or ``("new", k)`` for ``create[k]``."""

    keep: tuple[int, ...]
    delete: tuple[int, ...]
    create: tuple[Instance, ...]
    assignment: tuple[int | NewRef, ...]


@dataclass
class _Occupancy:
    """What is placed so far, reduced to what the rules look at."""

    used: int = 0  # bitmask of occupied units
    total: int = 0
    me: int = 0  # +me (REV1) instances
    all_me: int = 0  # +me.all instances
    not_no_me: int = 0  # instances that are not -me
    counts: dict[int, int] | None = None  # profile id -> instances

    def copy(self) -> _Occupancy:
        return _Occupancy(self.used, self.total, self.me, self.all_me, self.not_no_me,
                          dict(self.counts or {}))


def _mask(profile: GiProfile, start: int) -> int:
    return ((1 << profile.placement_size) - 1) << start


def _foreign(model: GpuModel, profile: GiProfile) -> str | None:
    if model.profile_by_id(profile.id) != profile:
        return f"profile {profile.name} (id {profile.id}) is not a {model.id} profile"
    return None


def _refusal(model: GpuModel, occ: _Occupancy, profile: GiProfile, start: int) -> str | None:
    """Why the driver would refuse ``profile`` at ``start`` on top of ``occ``; None if it fits.
    The profile is taken to belong to ``model`` (see ``_foreign``)."""
    if start not in profile.placements:
        return f"{profile.name} cannot start at {start} (legal starts: {list(profile.placements)})"
    if occ.used & _mask(profile, start):
        return f"{profile.name}@{start} overlaps an occupied memory slice"
    counts = occ.counts or {}
    if counts.get(profile.id, 0) >= profile.instance_count:
        return f"{profile.name} allows at most {profile.instance_count} instance(s)"
    if occ.total >= model.max_instances:
        return f"{model.id} allows at most {model.max_instances} GPU instances"
    media = profile.media
    if media == "me" and occ.me:
        return f"{profile.name}: only one +me instance per GPU"
    if media == "me.all" and occ.not_no_me:
        return f"{profile.name}: +me.all cannot share the GPU with anything but -me profiles"
    if media != "no-me" and occ.all_me:
        return f"{profile.name}: an +me.all instance allows only -me profiles beside it"
    return None


def _add(occ: _Occupancy, profile: GiProfile, start: int) -> None:
    occ.used |= _mask(profile, start)
    occ.total += 1
    if occ.counts is None:
        occ.counts = {}
    occ.counts[profile.id] = occ.counts.get(profile.id, 0) + 1
    media = profile.media
    occ.me += media == "me"
    occ.all_me += media == "me.all"
    occ.not_no_me += media != "no-me"


def _remove(occ: _Occupancy, profile: GiProfile, start: int) -> None:
    occ.used &= ~_mask(profile, start)
    occ.total -= 1
    assert occ.counts is not None
    occ.counts[profile.id] -= 1
    media = profile.media
    occ.me -= media == "me"
    occ.all_me -= media == "me.all"
    occ.not_no_me -= media != "no-me"


def why_not_fits(model: GpuModel, instances: Iterable[Instance]) -> str | None:
    """The first rule a set of instances breaks, as a readable line; None when it fits."""
    occ = _Occupancy()
    for profile, start in instances:
        reason = _foreign(model, profile) or _refusal(model, occ, profile, start)
        if reason:
            return reason
        _add(occ, profile, start)
    return None


def fits(model: GpuModel, instances: Iterable[Instance]) -> bool:
    """Whether the driver accepts all these instances on one GPU at once."""
    return why_not_fits(model, instances) is None


def free_starts(model: GpuModel, profile: GiProfile, occupied: Iterable[Instance]) -> list[int]:
    """The legal starts of ``profile`` given the instances already there, ascending."""
    occ = _Occupancy()
    for p, s in occupied:
        _add(occ, p, s)
    if _foreign(model, profile):
        return []
    return [s for s in sorted(profile.placements) if _refusal(model, occ, profile, s) is None]


def maximal_layouts(
    model: GpuModel, profiles: Iterable[str] | None = None
) -> list[tuple[tuple[str, int], ...]]:
    """Every layout to which no further instance of ``profiles`` (default: all of the
    model's) can be added, each as sorted ``(name, start)`` pairs; the list is sorted."""
    if profiles is None:
        chosen = list(model.gi_profiles)
    else:
        chosen = []
        for name in profiles:
            p = model.profile(name)
            if p is None:
                raise KeyError(f"{model.id} has no profile {name!r}")
            chosen.append(p)
    candidates = sorted({(s, p.id): (p, s) for p in chosen for s in p.placements}.items())
    cands = [c for _, c in candidates]
    found: list[tuple[tuple[str, int], ...]] = []
    occ = _Occupancy()
    layout: list[Instance] = []

    def walk(first: int) -> None:
        if all(_refusal(model, occ, p, s) for p, s in cands):
            found.append(tuple(sorted((p.name, s) for p, s in layout)))
            return
        for i in range(first, len(cands)):
            p, s = cands[i]
            if _refusal(model, occ, p, s) is None:
                _add(occ, p, s)
                layout.append((p, s))
                walk(i + 1)  # noqa: F821 - deleted after the search, to free it
                layout.pop()
                _remove(occ, p, s)

    walk(0)
    del walk  # break the recursive closure's reference cycle (see place_preserving)
    return sorted(set(found), key=lambda lay: [(s, n) for n, s in lay])


def _could_fit(model: GpuModel, profiles: list[GiProfile]) -> bool:
    """Cheap necessary conditions, so hopeless requests skip the search."""
    if len(profiles) > model.max_instances:
        return False
    if sum(p.placement_size for p in profiles) > model.memory_slices:
        return False
    counts: dict[int, int] = {}
    for p in profiles:
        counts[p.id] = counts.get(p.id, 0) + 1
        if counts[p.id] > p.instance_count:
            return False
    return True


def place_preserving(
    model: GpuModel,
    existing: Sequence[Instance],
    wanted: Sequence[tuple[GiProfile, int | None]],
) -> Placement | None:
    """A placement of exactly the ``wanted`` profiles (a start when pinned) that keeps as
    many ``existing`` instances as possible; None when the wanted set cannot fit at all.

    Ties are broken deterministically: wanted items are placed pinned first, then larger
    before smaller (by profile id, then input order), and among the plans that keep the
    most, the one whose starts in that order are lexicographically lowest wins. An
    existing instance is kept only where a wanted item of the same profile id lands on its
    start, so keeping one never costs a create.
    """
    if not _could_fit(model, [p for p, _ in wanted]):
        return None
    order = sorted(
        range(len(wanted)),
        key=lambda i: (wanted[i][1] is None, -wanted[i][0].placement_size, wanted[i][0].id,
                       -1 if wanted[i][1] is None else wanted[i][1], i),
    )
    items = [wanted[i] for i in order]
    by_slot: dict[tuple[int, int], int] = {}  # (profile id, start) -> existing index
    for idx, (p, s) in enumerate(existing):
        by_slot.setdefault((p.id, s), idx)
    choices: list[list[tuple[int, int]]] = []  # per item: (start, existing index or -1)
    for p, pin in items:
        if _foreign(model, p):
            return None
        legal = sorted(p.placements) if pin is None else [pin] if pin in p.placements else []
        if not legal:
            return None
        choices.append([(s, by_slot.get((p.id, s), -1)) for s in legal])
    # same profile and pin as the previous item: interchangeable, so starts must ascend
    twin = [i > 0 and items[i][0].id == items[i - 1][0].id and items[i][1] == items[i - 1][1]
            for i in range(len(items))]
    keepable = [int(any(k >= 0 for _, k in c)) for c in choices]
    suffix = [0] * (len(items) + 1)
    for i in range(len(items) - 1, -1, -1):
        suffix[i] = suffix[i + 1] + keepable[i]

    best: list[int] = [-1]
    best_starts: list[list[int]] = [[]]
    starts: list[int] = []
    occ = _Occupancy()

    def walk(i: int, kept: int) -> bool:
        """Depth-first in tie-break order; True stops the search (every item kept)."""
        if i == len(items):
            if kept > best[0]:
                best[0] = kept
                best_starts[0] = list(starts)
            return kept == suffix[0]
        if kept + suffix[i] <= best[0]:
            return False
        p = items[i][0]
        low = starts[-1] if twin[i] else -1
        for s, k in choices[i]:
            if s <= low or _refusal(model, occ, p, s) is not None:
                continue
            _add(occ, p, s)
            starts.append(s)
            done = walk(i + 1, kept + (k >= 0))  # noqa: F821 - deleted after the search
            starts.pop()
            _remove(occ, p, s)
            if done:
                return True
        return False

    walk(0, 0)
    del walk  # a recursive closure is a reference cycle: plan-making runs without the
    # cyclic collector, so break it (emptying the cell frees the search's state now)
    if best[0] < 0:
        return None
    keep: list[int] = []
    create: list[Instance] = []
    assignment: list[int | NewRef] = [0] * len(wanted)
    for pos, s in sorted(zip(order, best_starts[0], strict=True)):
        p = wanted[pos][0]
        k = by_slot.get((p.id, s), -1)
        if k >= 0:
            keep.append(k)
            assignment[pos] = k
        else:
            assignment[pos] = ("new", len(create))
            create.append((p, s))
    kept = set(keep)
    return Placement(
        keep=tuple(sorted(keep)),
        delete=tuple(i for i in range(len(existing)) if i not in kept),
        create=tuple(create),
        assignment=tuple(assignment),
    )
