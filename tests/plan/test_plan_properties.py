"""Properties of plans over random hosts and requests: a plan either is made or fails with
one AihowError line; made plans are well-ordered, respect ownership, and converge."""

from __future__ import annotations

import json
import random

import jsonschema
from hosts import A100, H100, domain, gi, gpu, host, make, manage, mdev, node, pci, type_id, vf
from hypothesis import given, settings
from hypothesis import strategies as st

from planner.apply.steps import plan_steps
from planner.errors import AihowError
from planner.hardware.model import GpuModel
from planner.hardware.placement import fits
from planner.host.state import HostState
from planner.plan.model import dump_plan, plan_schema
from planner.plan.request import GpuPolicy, SliceRequest, mdev_uuid

SCHEMA = plan_schema()
BUSES = (0x17, 0x31, 0x4b)


def _layout(model: GpuModel, rng: random.Random) -> list[tuple[str, int]]:
    placed: list = []
    for _ in range(rng.randint(0, 9)):
        p = rng.choice(model.gi_profiles)
        s = rng.choice(p.placements)
        if p.vgpu_type and fits(model, [*placed, (p, s)]):
            placed.append((p, s))
    return [(p.name, s) for p, s in placed]


def _scenario(seed: int) -> tuple[HostState, list[SliceRequest], list[GpuPolicy]]:
    rng = random.Random(seed)
    gpus, mdevs, domains = [], [], []
    models = {}
    for i, bus in enumerate(BUSES):
        model = rng.choice((A100, H100))
        models[bus] = model
        mig = rng.random() < 0.7
        instances = [gi(name, s, model=model, gi_id=20 * i + n)
                     for n, (name, s) in enumerate(_layout(model, rng))] if mig else []
        gpus.append(gpu(bus, index=i, mig=mig, model=model, instances=instances,
                        processes=["dcgm"] if rng.random() < 0.3 else []))
        for n, inst in enumerate(instances):
            roll = rng.random()
            if roll < 0.5:  # a vGPU on it: a foreign VM's, or one of our nodes' (maybe stale)
                ours = roll < 0.25
                name = f"node-{rng.randint(0, 3)}" if ours else f"vm-{bus:x}-{n}"
                uuid = (mdev_uuid(f"hpc/{name}/gpu0") if ours
                        else f"0f0f0f0f-0000-4000-8000-{bus:06x}{n:06x}")
                if uuid in {m.uuid for m in mdevs}:
                    continue
                mdevs.append(mdev(uuid, vf(bus, n), type_id(model, inst.profile_name),
                                  inst.gi_id))
                domains = [d for d in domains if d.name != name]
                domains.append(domain(name, uuid, running=rng.random() < 0.5))
    state = host(*gpus, mdevs=mdevs, domains=domains)
    policies = []
    for i, bus in enumerate(rng.sample(BUSES, rng.randint(0, 3))):
        model = models[bus]
        mig = rng.choice(("enabled", "enabled", "enabled", "disabled"))
        layout = None
        if mig == "enabled" and rng.random() < 0.4:
            names = [n for n, _ in _layout(model, rng)][:2]
            layout = " + ".join(names) or None
        policies.append(manage(pci(bus), layout, mig=mig, i=i))
    slices = []
    for k in range(rng.randint(0, 4)):
        bus = rng.choice(BUSES)
        model = models[bus]
        small = [p for p in model.gi_profiles if p.vgpu_type and p.placement_size <= 2]
        profile = rng.choice(small).name
        pin = pci(bus) if rng.random() < 0.3 else None
        slices.append(node(f"node-{k}", profile, gpu=pin))
    return state, slices, policies


@settings(max_examples=120, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_random_plans_are_well_formed_or_fail_cleanly(seed: int) -> None:
    state, slices, policies = _scenario(seed)
    try:
        plan = make(state, *slices, policies=policies)
    except AihowError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    jsonschema.validate(json.loads(dump_plan(plan)), SCHEMA)
    # step ids (a replace has two) number the plan's steps 1..N, in execution order
    ids = sorted(i for a in plan.actions for i in (a.step_ids or (a.id,)))
    assert ids == list(range(1, len(ids) + 1))
    assert [a.id for a in plan.actions] == sorted(a.id for a in plan.actions)
    seen_make = False
    managed = {p.select.value for p in policies}
    for s in plan_steps(plan):
        assert all(d < s.id for d in s.depends_on)
        if s.phase == "delete":
            assert not seen_make, "a delete after a create or update"
            # ownership: nothing is deleted on a GPU no entry manages, except the first step
            # of replacing a device at an address the config wants (a node's own vGPU)
            assert s.branch in managed or s.change.action == "replace", s.address
        else:
            seen_make = True
        if s.kind == "mig_mode" and s.phase == "update":
            assert s.branch in managed
    # a plan made twice is the same bytes
    assert dump_plan(make(state, *slices, policies=policies)) == dump_plan(plan)
