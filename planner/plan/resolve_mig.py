"""MIG resolution: on which GPU and at which placement every requested slice lives.

Choice of GPU and placement: every request is matched in a fixed order (host layout
instances, ``mig_uuid`` bindings, nodes already attached to a fitting instance, then the
other nodes in config order). A node without a pin goes to the GPU where it costs the
fewest instance creates + deletes, reusing an existing instance of its profile when one
is free; ties go to the lowest PCI address. On each GPU ``place_preserving`` picks the
placements that keep as many existing instances as possible.

Repack: on a GPU whose entry says ``repack: shut-off``, a slice that finds no free
placement may move the slices of shut-off VMs (never running or paused ones, never a
``mig_uuid`` or ``placement`` pin, never a layout instance), the fewest of them
(``planner.plan.repack``); each moved slot remembers the instance it left (``home``) and
whom it made room for. Without it, the refusal names which slice blocks each legal start
and what would make room.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

from planner.hardware.model import CiProfile, GiProfile, GpuModel
from planner.hardware.placement import Placement, free_starts, place_preserving, why_not_fits
from planner.host.state import Gpu, GpuInstance, HostState
from planner.lang import MigProfile
from planner.plan.bindings import Bindings
from planner.plan.claims import conflict, gi_key
from planner.plan.gpu_select import model_of, selects
from planner.plan.occupancy import draw
from planner.plan.repack import MOVABLE_STATE, fewest_moves
from planner.plan.request import GpuPolicy, Requests, SliceRequest, mdev_uuid
from planner.plan.resolution import GpuDecision, PlannedGi, ResolveError

_MAX_REASONS = 8


@dataclass
class _Slot:
    req: SliceRequest
    profile: GiProfile
    ci: CiProfile
    pin: int | None
    claim: int | None = None  # index into _Work.existing of the instance this slot keeps
    ci_start: int | None = None
    home: int | None = None  # repack: the existing instance this slot held before it moved
    moved_for: str | None = None  # repack: the node it made room for
    displace: tuple[_Slot, ...] = ()  # repack: slots this one moves when it is added


@dataclass
class _Work:
    """The planning state of one GPU while requests are being placed."""

    gpu: Gpu
    model: GpuModel | None
    policy: GpuPolicy | None
    existing: list[GpuInstance]
    profiles: list[GiProfile | None]
    bound: list[frozenset[str]]  # domains using each existing instance
    states: Mapping[str, str] = field(default_factory=dict)  # domain -> libvirt state
    slots: list[_Slot] = field(default_factory=list)
    _cost: int | None = None

    @property
    def managed(self) -> bool:
        return self.policy is not None

    def claimed(self) -> set[int]:
        return {s.claim for s in self.slots if s.claim is not None}

    def _problem(self) -> tuple[list[tuple[GiProfile, int]], list[int],
                                list[tuple[GiProfile, int | None]], int]:
        """(existing, their indexes, wanted, number of leading keep-only entries)."""
        assert self.model is not None
        claimed = self.claimed()
        homes = {s.home for s in self.slots if s.home is not None}
        idx: list[int] = []
        keep_only: list[tuple[GiProfile, int | None]] = []
        for i, (gi, prof) in enumerate(zip(self.existing, self.profiles, strict=True)):
            if prof is None:
                continue
            if i in claimed:
                idx.append(i)
            elif self.managed:
                if not self.bound[i] or i in homes:
                    idx.append(i)  # free (or a moved slot's own): reusable, else deleted
            else:
                idx.append(i)  # unlisted GPU: everything there stays
                keep_only.append((prof, gi.placement_start))
        existing: list[tuple[GiProfile, int]] = []
        for i in idx:
            prof = self.profiles[i]
            assert prof is not None
            existing.append((prof, self.existing[i].placement_start))
        wanted: list[tuple[GiProfile, int | None]] = list(keep_only)
        for s in self.slots:
            pin = self.existing[s.claim].placement_start if s.claim is not None else s.pin
            wanted.append((s.profile, pin))
        return existing, idx, wanted, len(keep_only)

    def arrange(self, extra: _Slot | None = None) -> tuple[Placement, list[int], int] | None:
        """The placement of every slot (plus ``extra``), the existing indexes it refers to
        and how many keep-only entries lead ``wanted``; None when they do not fit."""
        if extra is not None:
            self.slots.append(extra)
        try:
            existing, idx, wanted, n_keep = self._problem()
            assert self.model is not None
            placement = place_preserving(self.model, existing, wanted)
        finally:
            if extra is not None:
                self.slots.pop()
        if placement is None or (not self.managed and placement.delete):
            return None
        return placement, idx, n_keep

    def cost(self, extra: _Slot | None = None) -> int | None:
        if extra is None and self._cost is not None:
            return self._cost
        got = self.arrange(extra)
        if got is None:
            return None
        placement = got[0]
        value = len(placement.delete) + len(placement.create)
        if extra is None:
            self._cost = value
        return value

    def add(self, slot: _Slot, cost: int | None = None) -> None:
        """Add a slot; ``cost`` is ``self.cost(slot)`` when the caller has just computed it.
        The slots a repack displaces for it give up their instances now (as new slot
        values: a refusal's snapshot of the slots keeps showing the occupancy it saw)."""
        if slot.displace:
            moved = {id(s) for s in slot.displace}
            self.slots = [replace(s, home=s.claim, claim=None, moved_for=slot.req.node)
                          if id(s) in moved else s for s in self.slots]
            slot.displace = ()
        self.slots.append(slot)
        self._cost = cost

    # -- repack
    def movable(self, any_state: bool = False) -> list[_Slot]:
        """Slots a repack may move: a VM's unpinned slot on the instance its domain uses
        now, the domain shut off (``any_state``: whatever its state, for advice), by start."""
        out = [s for s in self.slots
               if s.claim is not None and not s.req.for_host and s.req.mig_uuid is None
               and s.req.placement is None
               and (any_state or self.states.get(s.req.node) == MOVABLE_STATE)]
        return sorted(out, key=lambda s: (self.existing[s.claim or 0].placement_start,
                                          s.req.node))

    @contextmanager
    def _moved(self, subset: tuple[_Slot, ...]) -> Iterator[None]:
        for s in subset:
            s.home, s.claim = s.claim, None
        try:
            yield
        finally:
            for s in subset:
                s.claim, s.home = s.home, None

    def repack(self, slot: _Slot, any_state: bool = False
               ) -> tuple[tuple[_Slot, ...], int] | None:
        """The fewest movable slots to move so that ``slot`` fits, and the new cost."""
        def cost(subset: tuple[_Slot, ...]) -> int | None:
            with self._moved(subset):
                return self.cost(slot)

        return fewest_moves(self.movable(any_state), cost)

    def owners(self) -> list[tuple[GiProfile, int, str]]:
        """The planned instances with who holds each, as the refusal names them."""
        got = self.arrange()
        if got is None:
            return []
        placement, idx, n_keep = got
        existing, _, wanted, _ = self._problem()
        out: list[tuple[GiProfile, int, str]] = []
        for j, where in enumerate(placement.assignment):
            prof = wanted[j][0]
            start = existing[where][1] if isinstance(where, int) else placement.create[where[1]][1]
            if j < n_keep:
                assert isinstance(where, int)
                users = sorted(self.bound[idx[where]])
                who = (f"used by {', '.join(users)}" if users else "unused") + \
                    ", on a GPU global.gpus does not manage"
                out.append((prof, start, f"{prof.name}@{start} {who}"))
                continue
            req = self.slots[j - n_keep].req
            if req.for_host:
                out.append((prof, start, f"{req.key} ({prof.name}@{start})"))
                continue
            pins = [p for p, on in (("mig_uuid", req.mig_uuid), ("placement",
                    req.placement is not None)) if on]
            why = self.states.get(req.node, "no domain yet")
            if pins:
                why += ", pinned by " + " and ".join(pins)
            out.append((prof, start, f"{req.node} ({prof.name}@{start}, {why})"))
        return out

    def blocked_starts(self, profile: GiProfile) -> str:
        """Each legal start of ``profile`` and what blocks it."""
        assert self.model is not None
        owners = self.owners()
        by: dict[str, list[int]] = {}  # what blocks -> the starts it blocks
        for start in sorted(profile.placements):
            span = set(range(start, start + profile.placement_size))
            who = [w for p, s, w in owners if span & set(range(s, s + p.placement_size))]
            if who:
                text = "by " + " and ".join(who)
            else:
                rule = why_not_fits(self.model, [*((p, s) for p, s, _ in owners),
                                                 (profile, start)])
                text = f"by the rule {rule}" if rule else "free"
            by.setdefault(text, []).append(start)
        parts = [", ".join(f"@{s}" for s in starts) + f" {text}" for text, starts in by.items()]
        return "legal starts blocked: " + ", ".join(parts)

    def advice(self, slot: _Slot) -> str:
        """What would make room for ``slot`` on this GPU."""
        other = "or choose another GPU (gpu_config.gpu)"
        if self.policy is None:
            return (f"aihow only adds instances on a GPU global.gpus does not manage: free one "
                    f"by hand, {other}")
        got = self.repack(slot, any_state=True)
        if got is None:
            return (f"moving the unpinned VMs' slices would not make room: shrink or drop a "
                    f"slice on this GPU, {other}")
        names = [s.req.node for s in got[0]]
        running = [n for n in names if self.states.get(n) != MOVABLE_STATE]
        steps = []
        if running:
            steps.append(f"shut off {', '.join(running)} (a repack never moves a VM that "
                         "is not shut off)")
        if self.policy.repack != "shut-off":
            steps.append(f"set repack: shut-off on {self.policy.key}")
        if not steps:  # not reached: with the opt-in and all of them shut off it fits
            return f"moving the slice of {', '.join(names)} would make room, {other}"
        return (f"to make room, {' and '.join(steps)} so that the plan moves the slice of "
                f"{', '.join(names)}, {other}")

    def planned(self) -> list[tuple[GiProfile, int]]:
        """The instances the GPU would hold with the slots placed so far."""
        got = self.arrange()
        if got is None:
            return [(p, g.placement_start) for g, p in zip(self.existing, self.profiles,
                                                           strict=True) if p is not None]
        placement, idx, _ = got
        instances: list[tuple[GiProfile, int]] = []
        for k in placement.keep:
            prof = self.profiles[idx[k]]
            assert prof is not None
            instances.append((prof, self.existing[idx[k]].placement_start))
        return instances + list(placement.create)

    def occupancy(self) -> str:
        assert self.model is not None
        return draw(self.model.memory_slices, self.planned())

    def no_room(self, profile: GiProfile) -> str:
        """Why ``profile`` finds no place: the drawing, and the rule in the way when it is
        not plain lack of free slices (one +me per GPU, an instance limit, ...)."""
        assert self.model is not None
        planned = self.planned()
        text = f"no free placement for {profile.name} {draw(self.model.memory_slices, planned)}"
        if free_starts(self.model, profile, planned):
            return text + " (it fits only by moving instances that must stay)"
        rules = [why_not_fits(self.model, [*planned, (profile, s)]) for s in profile.placements]
        other = next((r for r in rules if r and "overlaps" not in r), None)
        return f"{text} ({other})" if other else text

    def label(self) -> str:
        name = self.model.display_name if self.model else self.gpu.name
        return f"{self.gpu.pci} ({name})"


def _gi_profile(model: GpuModel, profile: MigProfile) -> GiProfile | None:
    return model.profile(profile.gi_name)


def _ci_profile(model: GpuModel, gi: GiProfile, profile: MigProfile | None) -> CiProfile | None:
    cis = model.ci_profiles_for(gi)
    if profile is None or profile.ci_slices is None:
        default = [c for c in cis if c.is_default] or [c for c in cis
                                                         if c.slice_count == gi.compute_slices]
        return default[0] if default else None
    return next((c for c in cis if c.slice_count == profile.ci_slices), None)


class _NoRoom:
    """A "no free placement" reason, drawn only if an error shows it (drawing is costly):
    the occupancy, what blocks each legal start, and what would make room."""

    def __init__(self, w: _Work, slot: _Slot) -> None:
        self.text: str | None = None
        self.w, self.slot = w, slot
        self.snapshot = list(w.slots)  # the occupancy at the time of the refusal

    def __str__(self) -> str:
        if self.text is None:
            now, self.w.slots = self.w.slots, list(self.snapshot)
            try:
                w, profile = self.w, self.slot.profile
                self.text = (f"{w.gpu.pci}: {w.no_room(profile)}; "
                             f"{w.blocked_starts(profile)}; {w.advice(self.slot)}")
            finally:
                self.w.slots = now
        return self.text


class MigResolver:
    """Places every MIG request on a GPU and a placement (see the module docstring)."""

    def __init__(self, requests: Requests, host: HostState,
                 held: Mapping[tuple[str, str], str] | None = None) -> None:
        self.requests = requests
        self.host = host
        self.bindings = Bindings(host)
        self.held = dict(held or {})
        states = {d.name: d.state for d in host.domains}
        self.works: list[_Work] = []
        for gpu in sorted(host.gpus, key=lambda g: g.pci):
            model = model_of(gpu)
            existing = sorted(gpu.gpu_instances, key=lambda g: g.placement_start)
            profiles = [model.profile_by_id(g.profile_id) if model else None for g in existing]
            # An instance another cluster holds in the ledger is as taken as one a domain uses.
            bound = [self.bindings.domains_of(gpu.pci, g)
                     | self._holder(gi_key(gpu.pci, g.placement_start)) for g in existing]
            self.works.append(_Work(gpu, model, None, existing, profiles, bound, states))
        # instances each domain (or a node's own vGPU device) uses, for place_bound
        self.bound_to: dict[str, list[tuple[_Work, int]]] = {}
        self.by_gi: dict[tuple[str, int], tuple[_Work, int]] = {}
        for w in self.works:
            for i, names in enumerate(w.bound):
                self.by_gi[(w.gpu.pci, w.existing[i].gi_id)] = (w, i)
                for name in names:
                    self.bound_to.setdefault(name, []).append((w, i))
        self.free_of: dict[str, list[int]] = {}  # profile -> works with a free instance
        for n, w in enumerate(self.works):
            for name in sorted({p.name for i, p in enumerate(w.profiles)
                                if p is not None and not w.bound[i]}):
                self.free_of.setdefault(name, []).append(n)
        self._frontier: dict[tuple[str, int | None], int] = {}
        self._skipped: dict[tuple[str, int | None], list[str | _NoRoom]] = {}
        self._assign_policies()

    def _holder(self, key: str) -> frozenset[str]:
        owner = self.held.get(("gi_placement", key))
        return frozenset((owner,)) if owner else frozenset()

    def check_pins(self) -> None:
        """A request pinned (``mig_uuid``, or ``gpu`` + ``placement``) to a held slice."""
        for req in self.requests.slices:
            if req.for_host:
                continue
            if req.mig_uuid and ("mig_uuid", req.mig_uuid) in self.held:
                raise ResolveError(conflict(req, "mig_uuid", req.mig_uuid,
                                            self.held[("mig_uuid", req.mig_uuid)]))
            if req.gpu is not None and req.placement is not None:
                for w in self.works:
                    key = gi_key(w.gpu.pci, req.placement)
                    if ("gi_placement", key) in self.held and selects(req.gpu, w.gpu, w.model):
                        raise ResolveError(conflict(req, "gi_placement", key,
                                                    self.held[("gi_placement", key)]))

    # -- management entries
    def _assign_policies(self) -> None:
        for policy in self.requests.policies:
            chosen = [w for w in self.works if selects(policy.select, w.gpu, w.model)]
            if not chosen:
                raise ResolveError(
                    f"{policy.key}.select: {policy.select} matches no GPU on host "
                    f"{self.host.uri} (GPUs: {', '.join(w.gpu.pci for w in self.works) or 'none'})"
                )
            for w in chosen:
                if w.policy is not None:
                    raise ResolveError(
                        f"{policy.key}.select: GPU {w.gpu.pci} is already selected by "
                        f"{w.policy.key}; each GPU may be managed by one entry"
                    )
                w.policy = policy
                if policy.mig == "enabled" and (w.model is None or not w.gpu.mig_capable):
                    why = "is not MIG-capable" if not w.gpu.mig_capable else \
                        f"is not in the GPU catalog ({w.gpu.name})"
                    raise ResolveError(f"{policy.key}: GPU {w.label()} {why}")
                if policy.mig == "enabled" and any(p is None for p in w.profiles):
                    ids = sorted(g.profile_id for g, p in zip(w.existing, w.profiles,
                                                               strict=True) if p is None)
                    raise ResolveError(
                        f"{policy.key}: GPU {w.label()} holds instances of profile id(s) "
                        f"{ids} unknown to the catalog for this model"
                    )

    # -- slots
    def _slot(self, w: _Work, req: SliceRequest, profile: MigProfile,
              pin: int | None) -> _Slot | str:
        """A slot for ``req`` on ``w``, or why there can be none."""
        if w.model is None:
            return f"not in the GPU catalog ({w.gpu.name})"
        if not w.gpu.mig_capable:
            return "not MIG-capable"
        gi = _gi_profile(w.model, profile)
        if gi is None:
            known = ", ".join(p.name for p in w.model.gi_profiles)
            return f"profile {profile.gi_name} unknown for {w.model.display_name} (has {known})"
        ci = _ci_profile(w.model, gi, profile)
        if ci is None:
            return f"compute profile {profile} unknown for {w.model.display_name}"
        if pin is not None and pin not in gi.placements:
            legal = ", ".join(str(s) for s in gi.placements)
            return f"{gi.name} cannot start at slice {pin} (legal starts: {legal})"
        return _Slot(req=req, profile=gi, ci=ci, pin=pin)

    def _eligible(self, w: _Work, req: SliceRequest) -> str | None:
        if w.model is None:
            return f"not in the GPU catalog ({w.gpu.name})"
        if not w.gpu.mig_capable:
            return "not MIG-capable"
        if w.policy is not None:
            if w.policy.mig != "enabled":
                return f"MIG disabled by {w.policy.key}"
            return None
        if not w.gpu.mig_current:
            return ("not listed in global.gpus and MIG is off (aihow changes the MIG mode "
                    "only on listed GPUs)")
        if any(p is None for p in w.profiles):
            return "holds instances of a profile unknown to the catalog"
        return None

    def place_layouts(self) -> None:
        for w in self.works:
            if w.policy is None or w.policy.layout is None:
                continue
            if w.policy.mig != "enabled":
                raise ResolveError(f"{w.policy.key}.layout: a layout needs mig: enabled")
            req = SliceRequest(key=f"{w.policy.key}.layout", node="host")
            for profile, start in w.policy.layout.profiles():
                slot = self._slot(w, req, profile, start)
                if isinstance(slot, str):
                    raise ResolveError(f"{req.key}: {profile} on GPU {w.gpu.pci}: {slot}")
                w.add(slot)
            if w.cost() is None:
                raise ResolveError(
                    f"{req.key}: {w.policy.layout} does not fit on GPU {w.label()} "
                    f"({w.model.memory_slices if w.model else '?'} memory slices)"
                )

    def _candidates(self, req: SliceRequest) -> list[_Work]:
        if req.gpu is None:
            return self.works  # read only
        chosen = [w for w in self.works if selects(req.gpu, w.gpu, w.model)]
        if not chosen:
            raise ResolveError(
                f"{req.describe()}: gpu_config.gpu {req.gpu} matches no GPU on host "
                f"{self.host.uri}"
            )
        return chosen

    def place_uuid(self, req: SliceRequest) -> None:
        assert req.mig_uuid is not None
        for w in self.works:
            for i, gi in enumerate(w.existing):
                ci = next((c for c in gi.compute_instances
                           if (c.mig_uuid or "").lower() == req.mig_uuid.lower()), None)
                if ci is None:
                    continue
                prefix = f"{req.describe()}: mig_uuid {req.mig_uuid}"
                if req.gpu is not None and not selects(req.gpu, w.gpu, w.model):
                    raise ResolveError(f"{prefix} is on GPU {w.gpu.pci}, not on {req.gpu}")
                if req.placement is not None and req.placement != gi.placement_start:
                    raise ResolveError(
                        f"{prefix} starts at slice {gi.placement_start}, not {req.placement}")
                why = self._eligible(w, req)
                if why:
                    raise ResolveError(f"{prefix} is on GPU {w.label()}: {why}")
                others = w.bound[i] - {req.node}
                if others:
                    raise ResolveError(f"{prefix} is in use by domain {sorted(others)[0]}")
                if i in w.claimed():
                    raise ResolveError(f"{prefix} is asked for by two requests")
                prof = w.profiles[i]
                assert w.model is not None and prof is not None
                cip = next((c for c in w.model.ci_profiles_for(prof) if c.id == ci.profile_id),
                           None)
                if cip is None:
                    raise ResolveError(f"{prefix}: compute profile id {ci.profile_id} unknown")
                w.add(_Slot(req=req, profile=prof, ci=cip, pin=gi.placement_start, claim=i,
                            ci_start=ci.placement_start))
                return
        raise ResolveError(f"{req.describe()}: no MIG device {req.mig_uuid} on host "
                           f"{self.host.uri}")

    def place_bound(self, req: SliceRequest) -> bool:
        """Keep a node on the instance its domain (or its own vGPU device) already uses."""
        assert req.profile is not None
        found = list(self.bound_to.get(req.node, ()))
        if req.vgpu_name:
            got = self.bindings.gi_of_mdev.get(mdev_uuid(req.vgpu_name))
            if got and got in self.by_gi:
                found.append(self.by_gi[got])
        if not found:
            return False
        allowed = None if req.gpu is None else {id(w) for w in self._candidates(req)}
        found.sort(key=lambda t: (t[0].gpu.pci, t[0].existing[t[1]].placement_start))
        for w, i in found:
            gi = w.existing[i]
            if (allowed is not None and id(w) not in allowed) or self._eligible(w, req):
                continue
            if i in w.claimed() or w.bound[i] - {req.node}:
                continue
            if req.placement is not None and gi.placement_start != req.placement:
                continue
            slot = self._slot(w, req, req.profile, req.placement)
            if isinstance(slot, str) or slot.profile != w.profiles[i]:
                continue
            slot.claim = i
            if all(s.claim is not None for s in w.slots):
                w.add(slot)  # instances that coexist today still fit together: no search
                return True
            cost = w.cost(slot)
            if cost is None:
                continue
            w.add(slot, cost)
            return True
        return False

    def _try(self, w: _Work, req: SliceRequest, repack: bool = False
             ) -> tuple[int, _Slot, int] | str | _NoRoom:
        """(extra creates + deletes, slot, new cost) for ``req`` on ``w``, or why it cannot go
        there. ``repack``: only by moving shut-off VMs' slices (the caller found no place
        without).
        A reason returned here stays true while more requests are placed (they only add)."""
        assert req.profile is not None
        why = self._eligible(w, req)
        slot = why or self._slot(w, req, req.profile, req.placement)
        if isinstance(slot, str):
            return slot
        base = w.cost()
        if base is None:  # cannot happen: every slot was checked when added
            return "already over-committed"
        if repack:
            moved = w.repack(slot)
            if moved is None:
                return _NoRoom(w, slot)
            slot.displace = moved[0]
            return moved[1] - base, slot, moved[1]
        options = [slot]
        if not w.managed:  # an unlisted GPU keeps its free instances unless one is reused
            claimed = w.claimed()
            for i, gi in enumerate(w.existing):
                if (w.profiles[i] == slot.profile and i not in claimed and not w.bound[i]
                        and (slot.pin is None or slot.pin == gi.placement_start)):
                    options.insert(0, _Slot(req=req, profile=slot.profile, ci=slot.ci,
                                            pin=gi.placement_start, claim=i))
                    break
        for option in options:
            cost = w.cost(option)
            if cost is not None:
                return cost - base - (1 if option.claim is not None else 0), option, cost
        return _NoRoom(w, slot)

    def _has_free(self, w: _Work, name: str) -> bool:
        claimed = w.claimed()
        return any(p is not None and p.name == name and i not in claimed and not w.bound[i]
                   for i, p in enumerate(w.profiles))

    def place_free(self, req: SliceRequest) -> None:
        """Reuse first (GPUs holding a free instance of the profile, by address), then the
        cheapest GPU by address; a plain create (cost 1) on the first GPU that allows it
        ends the search. Only where no GPU has room does a repack move slices (on each GPU
        the fewest moves; the GPU where that costs least, then by address). GPUs that
        cannot take the profile are remembered per (profile, pin), so placing many slices
        on a large host stays linear."""
        assert req.profile is not None
        candidates = self._candidates(req)
        name = req.profile.gi_name
        key = (name, req.placement) if req.gpu is None else None
        reasons: list[str | _NoRoom] = list(self._skipped.get(key, [])) if key else []
        best: tuple[int, int, _Work, _Slot, int] | None = None  # (delta, order, work, slot, cost)
        if req.gpu is None:  # candidates are all the works, in order
            free = [n for n in self.free_of.get(name, []) if self._has_free(self.works[n], name)]
        else:
            free = [n for n, w in enumerate(candidates) if self._has_free(w, name)]
        for order in free:
            got = self._try(candidates[order], req)
            if isinstance(got, tuple) and (best is None or got[0] < best[0]):
                best = (got[0], order, candidates[order], got[1], got[2])
        if best is None or best[0] > 0:
            frontier = self._frontier.get(key, 0) if key else 0
            free_set = set(free)
            for order in range(frontier, len(candidates)):
                if order in free_set:
                    continue
                w = candidates[order]
                got = self._try(w, req)
                if isinstance(got, str | _NoRoom):
                    reasons.append(f"{w.gpu.pci}: {got}" if isinstance(got, str) else got)
                    if key and order == frontier:  # no later request of the kind fits here
                        frontier += 1
                        self._frontier[key] = frontier
                        self._skipped.setdefault(key, []).append(reasons[-1])
                    continue
                delta, option, cost = got
                if best is None or (delta, order) < (best[0], best[1]):
                    best = (delta, order, w, option, cost)
                if best[0] <= 1:
                    break  # nothing later can beat a plain create without destroying
        if best is None:  # no place without moving: GPUs that allow a repack, by address
            for order, w in enumerate(candidates):
                if w.policy is None or w.policy.repack != "shut-off":
                    continue
                got = self._try(w, req, repack=True)
                if isinstance(got, tuple) and (best is None or got[0] < best[0]):
                    best = (got[0], order, w, got[1], got[2])
        if best is None:
            shown = reasons[:_MAX_REASONS]
            if len(reasons) > _MAX_REASONS:
                shown.append(f"and {len(reasons) - _MAX_REASONS} more")
            considered = "; ".join(str(r) for r in shown) or "no GPUs on this host"
            pin = f" at slice {req.placement}" if req.placement is not None else ""
            raise ResolveError(
                f"{req.describe()}: cannot place {req.profile}{pin}: {considered}")
        best[2].add(best[3], best[4])

    # -- final arrangement
    def decisions(self) -> tuple[GpuDecision, ...]:
        out: list[GpuDecision] = []
        for w in self.works:
            planned: list[PlannedGi] = []
            if w.slots:
                got = w.arrange()
                assert got is not None
                placement, idx, n_keep = got
                for k, slot in enumerate(w.slots):
                    where = placement.assignment[n_keep + k]
                    if isinstance(where, int):
                        gi = w.existing[idx[where]]
                        start = gi.placement_start
                        existing: GpuInstance | None = gi
                    else:
                        _, start = placement.create[where[1]]
                        existing = None
                    home = w.existing[slot.home] if slot.home is not None else None
                    moved = home is not None and existing is not home
                    planned.append(PlannedGi(
                        gpu=w.gpu.pci, profile=slot.profile, start=start, ci=slot.ci,
                        ci_start=self._ci_start(w, slot, existing), owner=slot.req,
                        existing=existing,
                        moved_from=home.placement_start if moved and home else None,
                        moved_for=slot.moved_for if moved else None))
            planned.sort(key=lambda p: p.start)
            out.append(GpuDecision(w.gpu, w.model, w.policy, tuple(planned)))
        return tuple(out)

    @staticmethod
    def _ci_start(w: _Work, slot: _Slot, existing: GpuInstance | None) -> int:
        if slot.ci_start is not None:
            return slot.ci_start
        taken: set[int] = set()
        if existing is not None:
            for ci in existing.compute_instances:
                if ci.profile_id == slot.ci.id:
                    return ci.placement_start
                if not w.managed:
                    taken.update(range(ci.placement_start, ci.placement_start + ci.placement_size))
        for start in slot.ci.placements:
            if not taken & set(range(start, start + slot.ci.slice_count)):
                return start
        return slot.ci.placements[0]
