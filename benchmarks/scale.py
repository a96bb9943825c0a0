"""Scale figures of the simulator and the config loader (issue 12, items 1, 2 and 8).

(d) ``aihow probe`` of a simulated host of n and 2n A100s (n = 512), each with seven
    1g.5gb GPU instances, compute instances, VFs and mdevs: seconds at 2n = 1,024 (target
    < 15 s) and the doubling ratio time(2n)/time(n) (target <= 2.2);
(e) ``aihow apply`` of 8 GPUs x 7 slices with their 57 domains on a fresh simulated host
    (target < 5 s);
(f) loading the 7,169-VM config of 1,024 GPUs (target < 2 s), beside ruamel.yaml's
    pure-Python round-trip loader alone on the same text, the way it was loaded before.

Every command runs as a subprocess; each figure gives its wall time and the CPU time
(user + system) the command used. The verdict is on CPU time: on a machine shared with
other work, wall time measures the neighbours as much as aihow (the load average is
printed). ``run.py`` calls ``main`` after its own figures.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scale_inputs import cluster_config, populate, sim_spec

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
AIHOW = str(Path(PYTHON).with_name("aihow"))

TARGET_PROBE_S = 15.0  # 1,024 GPUs
TARGET_PROBE_RATIO = 2.2
TARGET_APPLY_S = 5.0  # 8 GPUs x 7 slices, with domains
TARGET_LOAD_S = 2.0  # 7,169 VMs


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def _timed(cmd: list[str]) -> tuple[float, float]:
    """(wall, CPU) seconds of one command; it must succeed."""
    before = os.times()
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    after = os.times()
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system)
    return wall, cpu


def _host(tmp: Path, n_gpus: int, *, populated: bool) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    spec = tmp / f"spec{n_gpus}.toml"
    spec.write_text(sim_spec(n_gpus))
    root = tmp / f"host{n_gpus}"
    subprocess.run([AIHOW, "sim", "init", str(root), "--spec", str(spec)], check=True,
                   capture_output=True, cwd=ROOT)
    if populated:
        populate(str(root))
    return root


def probe_scaling(n: int, runs: int) -> tuple[dict[int, tuple[float, float]], float]:
    """(d): {gpus: (median wall, median CPU)} and the CPU doubling ratio."""
    with tempfile.TemporaryDirectory() as tmp:
        hosts = {k: _host(Path(tmp), k, populated=True) for k in (n, 2 * n)}
        walls: dict[int, list[float]] = {n: [], 2 * n: []}
        cpus: dict[int, list[float]] = {n: [], 2 * n: []}
        for _ in range(runs):
            for k, root in hosts.items():  # interleaved: load changes hit both alike
                wall, cpu = _timed([AIHOW, "probe", "--host", f"sim:{root}"])
                walls[k].append(wall)
                cpus[k].append(cpu)
    out = {k: (statistics.median(walls[k]), statistics.median(cpus[k])) for k in walls}
    return out, out[2 * n][1] / out[n][1]


def apply_8(runs: int) -> tuple[float, float, int, list[str]]:
    """(e): median wall and CPU seconds of the applies that succeeded, the action count,
    and the last error line of each apply that failed (each run is on a fresh host)."""
    walls, cpus = [], []
    failures: list[str] = []
    actions = 0
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "c8.yaml"
        config.write_text(cluster_config(8))
        for i in range(runs):
            root = _host(Path(tmp) / str(i), 8, populated=False)
            plan = root / "plan.json"
            subprocess.run([AIHOW, "plan", str(config), "--host", f"sim:{root}", "-o",
                            str(plan)], check=True, capture_output=True, cwd=ROOT)
            actions = len(json.loads(plan.read_text())["actions"])
            try:
                wall, cpu = _timed([AIHOW, "apply", str(plan), "--host", f"sim:{root}",
                                    "--auto-approve", "--allow-reset"])
            except subprocess.CalledProcessError as exc:
                errors = [x for x in exc.stderr.decode().splitlines() if x.startswith("error")]
                failures.append(errors[-1] if errors else f"exit {exc.returncode}")
                continue
            walls.append(wall)
            cpus.append(cpu)
    if not walls:
        return float("nan"), float("nan"), actions, failures
    return statistics.median(walls), statistics.median(cpus), actions, failures


def config_load(n_gpus: int, runs: int) -> tuple[float, float, float, float]:
    """(f): median wall and CPU of ``aihow validate`` on the config, and of the pure
    round-trip loader reading the same text (the loader alone, in a subprocess)."""
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "big.yaml"
        config.write_text(cluster_config(n_gpus))
        pure = [PYTHON, "-c", "import sys; from ruamel.yaml import YAML; "
                "y = YAML(typ='rt', pure=True); y.preserve_quotes = True; "
                "y.load(open(sys.argv[1]).read())", str(config)]
        ours, theirs = [], []
        for _ in range(runs):
            ours.append(_timed([AIHOW, "validate", str(config)]))
            theirs.append(_timed(pure))
    return (statistics.median(w for w, _ in ours), statistics.median(c for _, c in ours),
            statistics.median(w for w, _ in theirs), statistics.median(c for _, c in theirs))


def main(quick: bool, runs: int = 0) -> bool:
    n = 64 if quick else 512  # and 2n: the target is at 1,024
    runs = runs or (1 if quick else 3)
    probes, ratio = probe_scaling(n, runs)
    wall_2n, cpu_2n = probes[2 * n]
    ok_d1 = quick or cpu_2n < TARGET_PROBE_S
    ok_d2 = ratio <= TARGET_PROBE_RATIO
    print(f"(d) aihow probe, simulated host of {2 * n} GPUs (7 slices, VFs, mdevs each): "
          f"{cpu_2n:.2f} s CPU ({wall_2n:.2f} s wall; target < {TARGET_PROBE_S:.0f} s at "
          f"1024) {'n/a (--quick)' if quick else _verdict(ok_d1)}; {n} GPUs: "
          f"{probes[n][1]:.2f} s CPU ({probes[n][0]:.2f} s wall); doubling ratio "
          f"{ratio:.2f}x (target <= {TARGET_PROBE_RATIO}x) {_verdict(ok_d2)}  [medians of {runs}]")
    wall_e, cpu_e, actions, failures = apply_8(runs)
    ok_e = cpu_e < TARGET_APPLY_S and not failures
    failed = (f"; {len(failures)} of {runs} applies FAILED: {' | '.join(failures)}"
              if failures else "")
    print(f"(e) aihow apply, 8 GPUs x 7 slices with their domains on the simulator "
          f"({actions} actions): {cpu_e:.2f} s CPU ({wall_e:.2f} s wall; target < "
          f"{TARGET_APPLY_S:.0f} s) {_verdict(ok_e)}  [median of {runs - len(failures)}]"
          f"{failed}")
    gpus_f = 128 if quick else 1024
    wall_f, cpu_f, wall_p, cpu_p = config_load(gpus_f, runs)
    ok_f = quick or cpu_f < TARGET_LOAD_S
    print(f"(f) aihow validate of a {7 * gpus_f + 1}-VM config: {cpu_f:.2f} s CPU "
          f"({wall_f:.2f} s wall; target < {TARGET_LOAD_S:.0f} s at 7169 VMs) "
          f"{'n/a (--quick)' if quick else _verdict(ok_f)}; ruamel.yaml's pure round-trip "
          f"loader alone on the same text: {cpu_p:.2f} s CPU ({wall_p:.2f} s wall)  "
          f"[medians of {runs}]")
    return ok_d1 and ok_d2 and ok_e and ok_f
