"""Random MIG layout transitions and their brute-force minimum, for the benchmark and tests.

A transition turns the instances ``before`` (on a GPU aihow manages) into the profile
multiset ``after`` (a ``global.gpus[].layout``). The fewest instance creates + deletes any
tool can do is ``|before| + |after| - 2 * k`` where ``k`` is the largest number of
``before`` instances that can stay while the rest of ``after`` still fits around them;
``minimum`` finds ``k`` by trying subsets, largest first (independent of the planner's
``place_preserving`` search). mig-parted rebuilds a GPU whose profile multiset differs, so
it needs ``|before| + |after|`` unless the multisets are equal.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from itertools import combinations

from planner.hardware.model import GiProfile, GpuModel
from planner.hardware.placement import fits
from planner.host.state import ComputeInstance, Gpu, GpuInstance, HostState
from planner.lang import parse_layout, parse_selector
from planner.plan.make import plan_requests
from planner.plan.request import GpuPolicy, Requests

Instance = tuple[GiProfile, int]


def random_layout(model: GpuModel, rng: random.Random) -> list[Instance]:
    """Instances added one by one at random legal, free starts until the dice say stop."""
    placed: list[Instance] = []
    target = rng.randint(0, model.max_instances)
    for _ in range(40):
        if len(placed) >= target:
            break
        p = rng.choice(model.gi_profiles)
        s = rng.choice(p.placements)
        if fits(model, [*placed, (p, s)]):
            placed.append((p, s))
    return sorted(placed, key=lambda i: i[1])


def _completes(model: GpuModel, kept: list[Instance], rest: list[GiProfile]) -> bool:
    if not rest:
        return True
    p, others = rest[0], rest[1:]
    return any(fits(model, [*kept, (p, s)]) and _completes(model, [*kept, (p, s)], others)
               for s in p.placements)


def minimum(model: GpuModel, before: Sequence[Instance], after: Sequence[GiProfile]) -> int:
    """The fewest creates + deletes that turn ``before`` into ``after`` (brute force)."""
    want = Counter(p.id for p in after)
    for k in range(min(len(before), len(after)), -1, -1):
        for subset in combinations(before, k):
            have = Counter(p.id for p, _ in subset)
            if any(have[i] > want[i] for i in have):
                continue
            rest = list(after)
            for p, _ in subset:
                rest.remove(next(q for q in rest if q.id == p.id))
            rest.sort(key=lambda q: -q.placement_size)
            if _completes(model, list(subset), rest):
                return len(before) + len(after) - 2 * k
    raise ValueError("the wanted layout does not fit at all")


def rebuild_cost(before: Sequence[Instance], after: Sequence[GiProfile]) -> int:
    """mig-parted: a GPU whose profile multiset differs is cleared and rebuilt."""
    if Counter(p.id for p, _ in before) == Counter(p.id for p in after):
        return 0
    return len(before) + len(after)


def gpu_state(model: GpuModel, before: Sequence[Instance], bus: int = 0x17,
              index: int = 0, gi_base: int = 0) -> Gpu:
    instances = []
    for n, (p, s) in enumerate(before):
        ci = next(c for c in model.ci_profiles_for(p) if c.is_default)
        instances.append(GpuInstance(
            gi_id=gi_base + n, profile_id=p.id, profile_name=p.name, placement_start=s,
            placement_size=p.placement_size,
            compute_instances=(ComputeInstance(ci_id=0, profile_id=ci.id, placement_start=0,
                                               placement_size=ci.slice_count),)))
    return Gpu(index=index, pci=f"0000:{bus >> 8:02x}:{bus & 0xff:02x}.0"
               if bus > 0xff else f"0000:{bus:02x}:00.0",
               uuid=f"GPU-{bus:08x}-0000-0000-0000-000000000000", name=model.product_names[0],
               model=model.id, mig_capable=True, mig_current=True, mig_pending=True,
               gpu_instances=tuple(instances))


def planned_cost(model: GpuModel, before: Sequence[Instance], after: Sequence[GiProfile]) -> int:
    """GPU-instance creates + deletes in aihow's plan for this transition."""
    state = HostState(uri="sim:bench", gpus=(gpu_state(model, before),))
    layout = parse_layout(" + ".join(p.name for p in after)) if after else None
    policy = GpuPolicy(key="global.gpus[0]", select=parse_selector("0000:17:00.0"),
                       layout=layout)
    plan = plan_requests(Requests(policies=(policy,)), state, config_path="bench.yaml",
                         config_sha256="0" * 64, host_uri="sim:bench")
    return sum(1 for a in plan.actions
               if a.kind == "gpu_instance" and a.action in ("create", "delete"))


def transition(model: GpuModel, rng: random.Random) -> tuple[list[Instance], list[GiProfile]]:
    before = random_layout(model, rng)
    after = [p for p, _ in random_layout(model, rng)]
    rng.shuffle(after)
    return before, after
