"""aihow plan benchmarks: run ``python benchmarks/run.py`` (or ``make bench``) from the repo root.

Prints these figures, each measured in this one run:

(a) ``aihow plan`` on the example config against a simulated A100 host, as a ratio to the
    time Python needs just to import the third-party modules that command loads (target
    at most 1.5x: planning itself must be cheap next to start-up). The modules are read
    from ``sys.modules`` after running the command once in-process, so the floor is what
    the command really loads (networkx included), not a list kept by hand;
(b) planning a synthetic host of 1,024 GPUs and 7,168 slices (half already converged,
    half empty), in seconds, and the ratio when the input doubles (target at most 2.2x);
(c) 1,000 random layout transitions over every catalog model: the GPU-instance creates +
    deletes aihow plans against the brute-force minimum (must be equal on every one),
    beside the count mig-parted's rebuild-the-whole-GPU strategy needs;
(d)-(f) the simulator's probe and apply and the config loader at scale (``scale.py``);
(g)-(h) plan-making's peak memory at 4,096 GPUs against the baseline code, and reading a
    1,024-GPU plan (``aihow show``) against ``json.load`` (``plan_scale.py``);
(i) apply makespan of 8, 16 and 32 GPUs with the realistic latency model against one GPU
    alone, and against the floor NVIDIA's rules set (that GPU plus the other GPUs'
    sriov-manage and reset sections, which run one at a time); target at most 1.1x for
    each (``makespan.py``).

Each figure is a median of several runs (the two commands of (a), and the two sizes of
(b), interleaved so that a change in the machine's load hits both sides alike), printed
with its target and PASS or MISS, and the load average before and after.

Both commands of (a) run with Python's bytecode cached (in a temporary
``PYTHONPYCACHEPREFIX``, warmed by a first run), as an installed package has it: without
that, ``PYTHONDONTWRITEBYTECODE=1`` would make the plan command recompile aihow's own
modules on every start while the third-party ones load from their installed ``.pyc``
files. aihow's parser cache goes to a temporary ``XDG_CACHE_HOME``, warmed the same way.

Options: ``--quick`` runs smaller sizes (for a smoke test), ``--seed N``, ``--runs N``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from transitions import minimum, planned_cost, rebuild_cost, transition  # noqa: E402

from planner.hardware.catalog import all_models, get_model  # noqa: E402
from planner.host.state import (  # noqa: E402
    Domain,
    Hostdev,
    HostState,
    Mdev,
    VgpuParent,
    VgpuType,
)
from planner.lang import parse_profile, parse_selector  # noqa: E402
from planner.plan.make import plan_requests  # noqa: E402
from planner.plan.request import GpuPolicy, Requests, SliceRequest, mdev_uuid  # noqa: E402

PYTHON = sys.executable
AIHOW = str(Path(PYTHON).with_name("aihow"))
EXAMPLE = ROOT / "config" / "example-mig-cluster.yaml"
SIM_SPEC = ROOT / "config" / "sim-a100.toml"


TARGET_A = 1.5  # plan time / import time
TARGET_B_SECONDS = 3.0  # 1,024 GPUs
TARGET_B_RATIO = 2.2  # doubling the input at most doubles the time, +10 %


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def _load() -> str:
    try:
        one, five, _ = os.getloadavg()
    except OSError:
        return "unknown"
    cpus = os.cpu_count() or 1
    busy = " - busy machine: figures are noisier" if one > 0.75 * cpus else ""
    return f"{one:.2f} (1 min) / {five:.2f} (5 min) on {cpus} CPUs{busy}"


def _run(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT, env=env)
    return time.perf_counter() - t0


def _walls(cmds: list[list[str]], runs: int, env: dict[str, str]) -> list[list[float]]:
    """Wall times of each command, ``runs`` rounds of all commands in turn (one warm-up
    round first: it writes the bytecode and parser caches)."""
    for cmd in cmds:
        _run(cmd, env)
    times: list[list[float]] = [[] for _ in cmds]
    for _ in range(runs):
        for i, cmd in enumerate(cmds):
            times[i].append(_run(cmd, env))
    return times


def startup_ratio(runs: int) -> tuple[float, float, list[str], list[float]]:
    """(a): the plan command vs importing what it imports; also each round's ratio."""
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "pyc")
        env["XDG_CACHE_HOME"] = str(Path(tmp) / "cache")
        env.pop("AIHOW_NO_CACHE", None)
        sim = Path(tmp) / "host"
        subprocess.run([AIHOW, "sim", "init", str(sim), "--spec", str(SIM_SPEC)], check=True,
                       capture_output=True, cwd=ROOT, env=env)
        plan_cmd = [AIHOW, "plan", str(EXAMPLE), "--host", f"sim:{sim}", "--format", "json"]
        # Which third-party modules does the command load? Run it once, in-process, the
        # way the console script does (planner.cli.main builds only the named command),
        # and read sys.modules afterwards: the floor follows what aihow really imports
        # (networkx, which orders the plan, included), never a list kept by hand.
        probe = (
            "import sys\n"
            "from planner.cli import main\n"
            f"sys.argv = ['aihow', 'plan', {str(EXAMPLE)!r}, '--host', 'sim:{sim}', "
            "'--format', 'json']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "std = set(sys.stdlib_module_names) | {'planner', '__main__', '_distutils_hack'}\n"
            "mods = sorted(m for m, mod in list(sys.modules.items())\n"
            "              if m.split('.')[0] not in std and not m.split('.')[0].startswith('_')\n"
            "              and getattr(mod, '__spec__', None) is not None)\n"
            "sys.stderr.write(' '.join(mods))\n"
        )
        done = subprocess.run([PYTHON, "-c", probe], check=True, capture_output=True,
                              text=True, cwd=ROOT, env=env)
        # every third-party module (and submodule) the command loaded, imported alone;
        # one that cannot be imported alone fails the benchmark rather than shrinking
        # the floor unseen (modules an extension makes without a spec were left out)
        modules = done.stderr.split()
        import_cmd = [PYTHON, "-c", "\n".join(f"import {m}" for m in modules)]
        subprocess.run(import_cmd, check=True, capture_output=True, cwd=ROOT, env=env)
        t_plans, t_imports = _walls([plan_cmd, import_cmd], runs, env)
    rounds = [p / i for p, i in zip(t_plans, t_imports, strict=True)]
    return statistics.median(t_plans), statistics.median(t_imports), modules, rounds


def synthetic(n_gpus: int) -> tuple[HostState, Requests]:
    """n_gpus A100s with 7 VFs each; even GPUs already hold their seven 1g.5gb slices with
    vGPUs attached to running domains, odd GPUs are empty; 7 nodes per GPU want 1g.5gb."""
    model = get_model("a100-40gb")
    p1g = model.profile("1g.5gb")
    assert p1g is not None
    ci = next(c for c in model.ci_profiles_for(p1g) if c.is_default)
    from planner.host.state import ComputeInstance, Gpu, GpuInstance

    vtype = VgpuType(type_id="nvidia-474", name="NVIDIA A100-1-5C", available_instances=1,
                     gi_profile_id=p1g.id)
    gpus, parents, mdevs, domains, slices = [], [], [], [], []
    for g in range(n_gpus):
        pci = f"0000:{(g >> 5) + 1:02x}:{g & 31:02x}.0"
        names = [f"n{g * 7 + k:06d}" for k in range(7)]
        # VFs in PCI domain 0001 so no VF address collides with another GPU's
        vfs = [f"0001:{(g >> 5) + 1:02x}:{g & 31:02x}.{k}" for k in range(7)]
        instances = []
        if g % 2 == 0:
            for k in range(7):
                instances.append(GpuInstance(
                    gi_id=7 + k, profile_id=p1g.id, profile_name=p1g.name, placement_start=k,
                    placement_size=1, compute_instances=(ComputeInstance(
                        ci_id=0, profile_id=ci.id, placement_start=0, placement_size=1),)))
                uuid = mdev_uuid(f"bench/{names[k]}/gpu0")
                mdevs.append(Mdev(uuid=uuid, parent=vfs[k], type_id="nvidia-474", gi_id=7 + k))
                domains.append(Domain(name=names[k], uuid=uuid, state="running",
                                      hostdevs=(Hostdev(type="mdev", uuid=uuid),)))
        gpus.append(Gpu(index=g, pci=pci, uuid=f"GPU-{g:08x}-0000-0000-0000-000000000000",
                        name="NVIDIA A100-SXM4-40GB", model="a100-40gb", mig_capable=True,
                        mig_current=True, mig_pending=True, gpu_instances=tuple(instances)))
        parents += [VgpuParent(pci=v, physfn=pci, backend="mdev", types=(vtype,)) for v in vfs]
        slices += [SliceRequest(key=f"clusters.hpc.compute_nodes[{g * 7 + k}]", node=names[k],
                                profile=parse_profile("1g.5gb"),
                                vgpu_name=f"bench/{names[k]}/gpu0") for k in range(7)]
    state = HostState(uri="sim:bench", vgpu_backend="mdev", gpus=tuple(gpus),
                      vgpu_parents=tuple(parents), mdevs=tuple(mdevs), domains=tuple(domains))
    policy = GpuPolicy(key="global.gpus[0]", select=parse_selector("model=*A100*"))
    return state, Requests(policies=(policy,), slices=tuple(slices))


def time_synthetic(n_gpus: int) -> tuple[float, int, int]:
    state, req = synthetic(n_gpus)
    t0 = time.perf_counter()
    plan = plan_requests(req, state, config_path="bench.yaml", config_sha256="0" * 64,
                         host_uri="sim:bench")
    text = plan.to_json()
    elapsed = time.perf_counter() - t0
    assert plan.summary["delete"] == 0 and len(text) > 0
    return elapsed, len(req.slices), len(plan.actions)


def transitions(count: int, seed: int) -> tuple[int, int, int, int]:
    rng = random.Random(seed)
    models = all_models()
    planned = best = rebuild = mismatches = 0
    for i in range(count):
        model = models[i % len(models)]
        before, after = transition(model, rng)
        p, m = planned_cost(model, before, after), minimum(model, before, after)
        planned += p
        best += m
        rebuild += rebuild_cost(before, after)
        mismatches += p != m
    return planned, best, rebuild, mismatches


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--runs", type=int, default=0,
                    help="rounds per median (default 15 for (a), 5 for (b); --quick: 5, 1)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON too")
    ap.add_argument("--no-scale", action="store_true",
                    help="skip the simulator and config-loading figures (d)-(f) of scale.py")
    ap.add_argument("--no-makespan", action="store_true",
                    help="skip the apply makespan figure (i) of makespan.py")
    args = ap.parse_args()
    gpus, count = (64, 100) if args.quick else (1024, 1000)
    runs_a = args.runs or (5 if args.quick else 15)
    runs_b = args.runs or (1 if args.quick else 5)
    os.chdir(ROOT)
    print(f"load average before: {_load()}")

    t_plan, t_imports, modules, rounds = startup_ratio(runs_a)
    ratio_a = t_plan / t_imports
    tops = sorted({m.split(".")[0] for m in modules})
    ok_a = ratio_a <= TARGET_A
    print(f"(a) aihow plan on {EXAMPLE.name}: {t_plan:.3f} s; importing the {len(modules)} "
          f"third-party modules it loads, alone: {t_imports:.3f} s (medians of {runs_a}); "
          f"ratio {ratio_a:.2f}x (target <= {TARGET_A}x) {_verdict(ok_a)}  [per-round "
          f"ratios {min(rounds):.2f}..{max(rounds):.2f}; packages: {', '.join(tops)}]")

    times: dict[int, list[float]] = {gpus: [], 2 * gpus: []}
    sizes: dict[int, tuple[int, int]] = {}
    for _ in range(runs_b):
        for n in times:
            elapsed, slices, actions = time_synthetic(n)
            times[n].append(elapsed)
            sizes[n] = (slices, actions)
    t1, t2 = statistics.median(times[gpus]), statistics.median(times[2 * gpus])
    ratio_b = t2 / t1
    ok_b1 = args.quick or t1 < TARGET_B_SECONDS
    ok_b2 = ratio_b <= TARGET_B_RATIO
    print(f"(b) synthetic host, {gpus} GPUs / {sizes[gpus][0]} slices: {t1:.2f} s "
          f"({sizes[gpus][1]} actions; target < {TARGET_B_SECONDS:.0f} s at 1024 GPUs) "
          f"{'n/a (--quick)' if args.quick else _verdict(ok_b1)}; {2 * gpus} GPUs / "
          f"{sizes[2 * gpus][0]} slices: {t2:.2f} s; doubling ratio {ratio_b:.2f}x "
          f"(target <= {TARGET_B_RATIO}x) {_verdict(ok_b2)}  [medians of {runs_b}]")

    planned, best, rebuild, mismatches = transitions(count, args.seed)
    print(f"(c) {count} random layout transitions over {len(all_models())} catalog models: "
          f"aihow plans {planned} instance creates+deletes, the minimum is {best} "
          f"({'equal on every transition' if mismatches == 0 else f'{mismatches} NOT minimal'})"
          f"; mig-parted's rebuild strategy needs {rebuild} {_verdict(mismatches == 0)}")
    ok_scale = True
    if not args.no_scale:
        import plan_scale
        import scale

        ok_scale = scale.main(args.quick, args.runs)
        ok_scale = plan_scale.main(args.quick, args.runs) and ok_scale
    if not args.no_makespan:
        import makespan

        ok_scale = makespan.main(args.quick, args.runs) and ok_scale
    print(f"load average after: {_load()}")
    if args.json:
        print(json.dumps({"a_ratio": ratio_a, "a_plan_s": t_plan, "a_imports_s": t_imports,
                          "b_seconds": t1, "b_seconds_doubled": t2, "b_ratio": ratio_b,
                          "c_planned": planned, "c_minimum": best, "c_rebuild": rebuild,
                          "c_mismatches": mismatches, "pass": ok_a and ok_b1 and ok_b2
                          and mismatches == 0 and ok_scale}, sort_keys=True))
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
