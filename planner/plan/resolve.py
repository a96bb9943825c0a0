"""Resolve: requests + HostState + catalog -> the desired MIG instances and vGPU devices.

Ownership rule (docs/plan-format.md): a GPU selected by a ``global.gpus`` entry with
``select`` is *managed* and the config is the whole truth on it; any other GPU only gets
additions (never a mode change, never a delete); a GPU nothing selects is never touched.

Choice of GPU and placement: every request is matched in a fixed order (host layout
instances, ``mig_uuid`` bindings, nodes already attached to a fitting instance, then the
other nodes in config order). A node without a pin goes to the GPU where it costs the
fewest instance creates + deletes, reusing an existing instance of its profile when one
is free; ties go to the lowest PCI address. On each GPU ``place_preserving`` picks the
placements that keep as many existing instances as possible.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from planner.errors import AihowError
from planner.hardware.catalog import get_model, match_model
from planner.hardware.model import CiProfile, GiProfile, GpuModel
from planner.hardware.placement import Placement, free_starts, place_preserving, why_not_fits
from planner.hardware.vgpu import gfx_profile_for, vgpu_type_name
from planner.host.state import Gpu, GpuInstance, HostState, VgpuParent, VgpuType
from planner.lang import GpuSelector, MigProfile
from planner.plan.claims import conflict, foreign, gi_key
from planner.plan.occupancy import draw
from planner.plan.request import GpuPolicy, Requests, SliceRequest, mdev_uuid

_MAX_REASONS = 8


class ResolveError(AihowError):
    """A request that cannot be met on this host."""


@dataclass(frozen=True)
class PlannedGi:
    """One GPU instance of the desired state, with its one compute instance."""

    gpu: str
    profile: GiProfile
    start: int
    ci: CiProfile
    ci_start: int
    owner: SliceRequest
    existing: GpuInstance | None  # the instance kept, None when it is to be created


@dataclass(frozen=True)
class PlannedVgpu:
    backend: str  # "mdev" | "vfio-vf"
    key: str  # mdev UUID, or the VF's PCI address for vfio-vf
    parent: str  # the VF (or PF) the device lives on
    type_id: str | None  # None where the VFs are still to be enabled: apply looks it up by name
    type_name: str
    node: str
    gi: PlannedGi
    enables_vfs: bool = False  # its parent is a VF that the plan enables first


@dataclass(frozen=True)
class GpuDecision:
    gpu: Gpu
    model: GpuModel | None
    policy: GpuPolicy | None
    instances: tuple[PlannedGi, ...] = ()

    @property
    def managed(self) -> bool:
        return self.policy is not None

    @property
    def want_mig(self) -> bool | None:
        """The MIG mode the config asks for; None where aihow leaves the mode alone."""
        return None if self.policy is None else self.policy.mig == "enabled"

    @property
    def touched(self) -> bool:
        return self.managed or bool(self.instances)


@dataclass(frozen=True)
class Resolution:
    host: HostState
    requests: Requests
    gpus: tuple[GpuDecision, ...]
    vgpus: tuple[PlannedVgpu, ...]
    bindings: Bindings = field(compare=False, repr=False)
    held: Mapping[tuple[str, str], str] = field(default_factory=dict, compare=False, repr=False)

    def gpu(self, pci: str) -> GpuDecision | None:
        return next((g for g in self.gpus if g.gpu.pci == pci), None)


# ----------------------------------------------------------------------------- internals


@dataclass
class _Slot:
    req: SliceRequest
    profile: GiProfile
    ci: CiProfile
    pin: int | None
    claim: int | None = None  # index into _Work.existing of the instance this slot keeps
    ci_start: int | None = None


@dataclass
class _Work:
    """The planning state of one GPU while requests are being placed."""

    gpu: Gpu
    model: GpuModel | None
    policy: GpuPolicy | None
    existing: list[GpuInstance]
    profiles: list[GiProfile | None]
    bound: list[frozenset[str]]  # domains using each existing instance
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
        idx: list[int] = []
        keep_only: list[tuple[GiProfile, int | None]] = []
        for i, (gi, prof) in enumerate(zip(self.existing, self.profiles, strict=True)):
            if prof is None:
                continue
            if i in claimed:
                idx.append(i)
            elif self.managed:
                if not self.bound[i]:
                    idx.append(i)  # free: reusable, else deleted
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
        """Add a slot; ``cost`` is ``self.cost(slot)`` when the caller has just computed it."""
        self.slots.append(slot)
        self._cost = cost

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
    """A "no free placement" reason, drawn only if an error shows it (drawing is costly)."""

    def __init__(self, w: _Work, profile: GiProfile) -> None:
        self.text: str | None = None
        self.w, self.profile = w, profile
        self.snapshot = list(w.slots)  # the occupancy at the time of the refusal

    def __str__(self) -> str:
        if self.text is None:
            now, self.w.slots = self.w.slots, list(self.snapshot)
            try:
                self.text = f"{self.w.gpu.pci}: {self.w.no_room(self.profile)}"
            finally:
                self.w.slots = now
        return self.text


class Bindings:
    """Which domains use which GPU instance, through an mdev or a vfio-vf VF."""

    def __init__(self, host: HostState) -> None:
        self.parents = {p.pci: p for p in host.vgpu_parents}
        users: dict[str, set[str]] = {}
        for dom in host.domains:
            for hd in dom.hostdevs:
                users.setdefault(hd.key, set()).add(dom.name)
        self.users = users
        by_gi: dict[tuple[str, int], set[str]] = {}
        self.gi_of_mdev: dict[str, tuple[str, int]] = {}
        for mdev in host.mdevs:
            gpu = self.gpu_of_parent(mdev.parent)
            if mdev.gi_id is None:
                continue
            self.gi_of_mdev[mdev.uuid] = (gpu, mdev.gi_id)
            by_gi.setdefault((gpu, mdev.gi_id), set()).update(users.get(mdev.uuid, ()))
        for p in host.vgpu_parents:
            if p.backend == "vfio-vf" and p.current_type and p.gi_id is not None:
                by_gi.setdefault((self.gpu_of_parent(p.pci), p.gi_id), set()).update(
                    users.get(p.pci, ()))
        self.by_gi = by_gi
        mdev_gpu = {m.uuid: self.gpu_of_parent(m.parent) for m in host.mdevs}
        gpu_users: dict[str, set[str]] = {}
        for (gpu, _), names in by_gi.items():
            gpu_users.setdefault(gpu, set()).update(names)
        for dom in host.domains:
            for hd in dom.hostdevs:
                if hd.type == "mdev" and hd.uuid in mdev_gpu:
                    gpu_users.setdefault(mdev_gpu[hd.uuid], set()).add(dom.name)
                elif hd.pci:  # the GPU itself (passthrough) or one of its VFs
                    gpu_users.setdefault(self.gpu_of_parent(hd.pci), set()).add(dom.name)
        self.gpu_users = gpu_users
        self.mdev_by_uuid = {m.uuid: m for m in host.mdevs}

    def gpu_of_parent(self, parent_pci: str) -> str:
        p = self.parents.get(parent_pci)
        return (p.physfn or p.pci) if p is not None else parent_pci

    def domains_of(self, gpu: str, gi: GpuInstance) -> frozenset[str]:
        return frozenset(self.by_gi.get((gpu, gi.gi_id), ()))

    def domains_on_gpu(self, gpu: str) -> set[str]:
        """Domains that use the GPU: by passthrough, or through a vGPU device on it."""
        return set(self.gpu_users.get(gpu, ()))




class _Resolver:
    def __init__(self, requests: Requests, host: HostState,
                 held: Mapping[tuple[str, str], str] | None = None) -> None:
        self.requests = requests
        self.host = host
        self.bindings = Bindings(host)
        self.held = dict(held or {})
        self.works: list[_Work] = []
        for gpu in sorted(host.gpus, key=lambda g: g.pci):
            model = model_of(gpu)
            existing = sorted(gpu.gpu_instances, key=lambda g: g.placement_start)
            profiles = [model.profile_by_id(g.profile_id) if model else None for g in existing]
            # An instance another cluster holds in the ledger is as taken as one a domain uses.
            bound = [self.bindings.domains_of(gpu.pci, g)
                     | self._holder(gi_key(gpu.pci, g.placement_start)) for g in existing]
            self.works.append(_Work(gpu, model, None, existing, profiles, bound))
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

    def _try(self, w: _Work, req: SliceRequest) -> tuple[int, _Slot, int] | str | _NoRoom:
        """(extra creates + deletes, slot, new cost) for ``req`` on ``w``, or why it cannot go
        there.
        A reason returned here stays true while more requests are placed (they only add)."""
        assert req.profile is not None
        why = self._eligible(w, req)
        slot = why or self._slot(w, req, req.profile, req.placement)
        if isinstance(slot, str):
            return slot
        base = w.cost()
        if base is None:  # cannot happen: every slot was checked when added
            return "already over-committed"
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
        return _NoRoom(w, slot.profile)

    def _has_free(self, w: _Work, name: str) -> bool:
        claimed = w.claimed()
        return any(p is not None and p.name == name and i not in claimed and not w.bound[i]
                   for i, p in enumerate(w.profiles))

    def place_free(self, req: SliceRequest) -> None:
        """Reuse first (GPUs holding a free instance of the profile, by address), then the
        cheapest GPU by address; a plain create (cost 1) on the first GPU that allows it
        ends the search. GPUs that cannot take the profile are remembered per (profile,
        pin), so placing many slices on a large host stays linear."""
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
                    planned.append(PlannedGi(
                        gpu=w.gpu.pci, profile=slot.profile, start=start, ci=slot.ci,
                        ci_start=self._ci_start(w, slot, existing), owner=slot.req,
                        existing=existing))
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


def vf_address(pf: str, k: int, offset: int = 4, stride: int = 1) -> str:
    """The k-th VF of a PF once SR-IOV is on: routing id + offset + k * stride. NVIDIA
    data-center GPUs use offset 4, stride 1 (0000:41:00.0 -> 0000:41:00.4, ...)."""
    domain, bus, devfn_text = pf.split(":")
    dev, fn = devfn_text.split(".")
    routing = (int(bus, 16) << 8) | (int(dev, 16) << 3) | int(fn)
    routing += offset + k * stride
    return f"{domain}:{routing >> 8:02x}:{(routing & 0xFF) >> 3:02x}.{routing & 7}"


def _type_for(parent: VgpuParent, gi: GiProfile) -> VgpuType | None:
    for t in parent.types:
        if t.gi_profile_id is not None:
            if t.gi_profile_id == gi.id:
                return t
        elif gi.vgpu_type and t.name.split()[-1] == gi.vgpu_type:
            return t
    return None


def vf_type_name(parent: VgpuParent, gis: Sequence[GpuInstance], model: GpuModel | None,
                 known: dict[str, str]) -> str | None:
    """The name of the vGPU type a vfio-vf VF holds. An assigned VF no longer lists its type
    as creatable, so the name comes from another VF that lists it or else from the catalog,
    by the profile of the GI the driver reports behind the VF."""
    if parent.current_type is None:
        return None
    found = next((t.name for t in parent.types if t.type_id == parent.current_type), None)
    if found is None:
        found = known.get(parent.current_type)
    if found is None and model is not None and parent.gi_id is not None:
        gi = next((g for g in gis if g.gi_id == parent.gi_id), None)
        prof = model.profile_by_id(gi.profile_id) if gi is not None else None
        found = vgpu_type_name(model, prof) if prof is not None else None
    return found


def _vf_holding(gi: PlannedGi, parents: Sequence[VgpuParent], used: set[str],
                attached: dict[str, set[str]], model: GpuModel | None
                ) -> tuple[VgpuParent, VgpuType] | None:
    """A VF that already holds this node's vGPU: attached to the node's domain and backed
    by the very GPU instance the plan keeps for the node."""
    if gi.existing is None:
        return None
    for parent in parents:
        if (parent.pci in used or parent.current_type is None or parent.gi_id is None
                or parent.gi_id != gi.existing.gi_id
                or gi.owner.node not in attached.get(parent.pci, set())):
            continue
        name = vf_type_name(parent, (gi.existing,), model, {}) or parent.current_type
        return parent, VgpuType(type_id=parent.current_type, name=name, available_instances=0,
                                gi_profile_id=gi.profile.id)
    return None


def _gfx_hint(model: GpuModel | None, profile: GiProfile) -> str:
    """"; ..." naming the +gfx profile a vGPU needs on a model where only those back one."""
    gfx = gfx_profile_for(model, profile) if model is not None else None
    if model is None or gfx is None:
        return ""
    return (f"; on {model.display_name} MIG-backed vGPUs run only on +gfx instances: "
            f"ask for {gfx.name}")


def _plan_vgpus(requests: Requests, host: HostState, gpus: Sequence[GpuDecision],
                bindings: Bindings) -> tuple[PlannedVgpu, ...]:
    order = {s.node: n for n, s in enumerate(requests.slices)}
    node_gis = sorted((gi for d in gpus for gi in d.instances if gi.owner.vgpu_name),
                      key=lambda gi: order.get(gi.owner.node, len(order)))
    if not node_gis:
        return ()
    backend = requests.vgpu_backend
    if host.vgpu_backend is not None and host.vgpu_backend != backend:
        raise ResolveError(
            f"global.host.vgpu_backend: {backend} asked for, but host {host.uri} offers "
            f"{host.vgpu_backend} vGPUs"
        )
    managed = {d.gpu.pci for d in gpus if d.managed}
    parents_of: dict[str, list[VgpuParent]] = {}
    for p in sorted(host.vgpu_parents, key=lambda p: p.pci):
        if p.backend == backend:
            parents_of.setdefault(bindings.gpu_of_parent(p.pci), []).append(p)
    mdevs_on: dict[str, list[str]] = {}
    for m in host.mdevs:
        mdevs_on.setdefault(m.parent, []).append(m.uuid)
    attached: dict[str, set[str]] = bindings.users

    any_vf = {bindings.gpu_of_parent(p.pci) for p in host.vgpu_parents}
    models = {d.gpu.pci: d.model for d in gpus}
    used: set[str] = set()
    chosen: dict[int, tuple[VgpuParent, VgpuType, str]] = {}
    predicted: set[int] = set()

    def key_for(gi: PlannedGi, parent: VgpuParent) -> str:
        assert gi.owner.vgpu_name is not None
        return mdev_uuid(gi.owner.vgpu_name) if backend == "mdev" else parent.pci

    # First pass: devices that exist already and still fit stay where they are.
    for n, gi in enumerate(node_gis):
        own = mdev_uuid(gi.owner.vgpu_name or "")
        for parent in parents_of.get(gi.gpu, []):
            t = _type_for(parent, gi.profile)
            if t is None or parent.pci in used:
                continue  # (an assigned VF lists no creatable type: _vf_holding sees it)
            if backend == "mdev":
                here = own in mdevs_on.get(parent.pci, [])
                cur = bindings.mdev_by_uuid.get(own)
                fits = here and cur is not None and cur.type_id == t.type_id
            else:
                fits = (parent.current_type == t.type_id
                        and gi.owner.node in attached.get(parent.pci, set()))
            if fits:
                chosen[n] = (parent, t, key_for(gi, parent))
                used.add(parent.pci)
                break
        else:
            if backend == "vfio-vf":
                held = _vf_holding(gi, parents_of.get(gi.gpu, []), used, attached,
                                   models.get(gi.gpu))
                if held is not None:
                    chosen[n] = (held[0], held[1], key_for(gi, held[0]))
                    used.add(held[0].pci)

    def busy(parent: VgpuParent, own: str) -> bool:
        if parent.pci in used:
            return True
        if bindings.gpu_of_parent(parent.pci) in managed:
            return False  # whatever is there and not planned is removed
        if backend == "mdev":
            return any(u != own for u in mdevs_on.get(parent.pci, []))
        return parent.current_type is not None

    for n, gi in enumerate(node_gis):
        if n in chosen:
            continue
        own = mdev_uuid(gi.owner.vgpu_name or "")
        parents = parents_of.get(gi.gpu, [])
        if not parents and gi.gpu not in any_vf:  # SR-IOV is off: the plan turns it on
            model = models.get(gi.gpu)
            name = vgpu_type_name(model, gi.profile) if model else None
            if name is None:
                raise ResolveError(f"{gi.owner.describe()}: no MIG-backed vGPU type is known "
                                   f"for {gi.profile.name} on GPU {gi.gpu}"
                                   f"{_gfx_hint(model, gi.profile)}")
            k = 0
            while vf_address(gi.gpu, k) in used:
                k += 1
            parent = VgpuParent(pci=vf_address(gi.gpu, k), physfn=gi.gpu, backend=backend)
            chosen[n] = (parent, VgpuType(type_id="", name=name, available_instances=1,
                                          gi_profile_id=gi.profile.id), key_for(gi, parent))
            used.add(parent.pci)
            predicted.add(n)
            continue
        for parent in parents:
            t = _type_for(parent, gi.profile)
            if t is not None and not busy(parent, own):
                chosen[n] = (parent, t, key_for(gi, parent))
                used.add(parent.pci)
                break
        else:
            what = "SR-IOV VF" if parents or backend == "vfio-vf" else "vGPU parent device"
            hint = _gfx_hint(models.get(gi.gpu), gi.profile)
            raise ResolveError(
                f"{gi.owner.describe()}: no free {backend} {what} offering a {gi.profile.name} "
                f"vGPU type on GPU {gi.gpu} ({len(parents)} {backend} parents there; "
                + (hint.removeprefix("; ") if hint else
                   "enable the VFs with sriov-manage -e, or free one") + ")"
            )
    out = []
    for n, gi in enumerate(node_gis):
        parent, t, key = chosen[n]
        out.append(PlannedVgpu(backend=backend, key=key, parent=parent.pci,
                               type_id=None if n in predicted else t.type_id, type_name=t.name,
                               node=gi.owner.node, gi=gi, enables_vfs=n in predicted))
    return tuple(sorted(out, key=lambda v: (v.node, v.key)))


def _check_held(gpus: Sequence[GpuDecision], vgpus: Sequence[PlannedVgpu],
                held: Mapping[tuple[str, str], str]) -> None:
    """Nothing the plan gives a node may be held by another cluster's node."""
    for d in gpus:
        for gi in d.instances:
            if gi.owner.for_host:
                continue
            key = gi_key(gi.gpu, gi.start)
            if ("gi_placement", key) in held:
                raise ResolveError(conflict(gi.owner, "gi_placement", key,
                                            held[("gi_placement", key)]))
            for ci in gi.existing.compute_instances if gi.existing else ():
                if ci.mig_uuid and ("mig_uuid", ci.mig_uuid) in held:
                    raise ResolveError(conflict(gi.owner, "mig_uuid", ci.mig_uuid,
                                                held[("mig_uuid", ci.mig_uuid)]))
    for v in vgpus:
        if ("vgpu", v.key) in held:
            raise ResolveError(conflict(v.gi.owner, "vgpu", v.key, held[("vgpu", v.key)]))


def resolve(requests: Requests, host: HostState,
            claims: Mapping[tuple[str, str], str] | None = None) -> Resolution:
    """The desired state for ``requests`` on ``host``; raises ResolveError when impossible.
    ``claims`` is the allocation ledger: what another cluster holds is never given out."""
    held = foreign(claims or {}, requests.clusters)
    r = _Resolver(requests, host, held)
    r.check_pins()
    r.place_layouts()
    for req in requests.slices:
        if req.mig_uuid:
            r.place_uuid(req)
    rest = [s for s in requests.slices if not s.mig_uuid]
    for req in rest:
        if req.profile is None:
            raise ResolveError(f"{req.describe()}: gpu_config needs mig_profile or mig_uuid")
    unbound = [req for req in rest if not r.place_bound(req)]
    for req in unbound:
        r.place_free(req)
    gpus = r.decisions()
    vgpus = _plan_vgpus(requests, host, gpus, r.bindings)
    _check_held(gpus, vgpus, held)
    return Resolution(host=host, requests=requests, gpus=gpus, vgpus=vgpus, bindings=r.bindings,
                      held=held)


_model_of = model_of  # the name apply's plan_api imports
