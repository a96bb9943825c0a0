"""Plan-file figures at scale (issue 12, item 7): memory of plan-making, speed of reading.

(g) peak RSS of making and writing the plan of the synthetic host of (b) at 4,096 GPUs
    (137,216 changes), this code against the baseline code (the commit before each
    change was serialised once), both measured in this run: the baseline's ``planner``
    is taken from git (``git archive``) into a temporary directory and run on the same
    input by the same script. Target: at least 30 % lower. Without git or that commit
    the recorded baseline figure is used, and the line says so.
(h) ``aihow show`` of the 1,024-GPU plan (34,304 changes) against a bare ``json.load`` of
    the same file: CPU seconds of each command minus its start-up (``aihow show`` of a
    one-GPU plan; ``python -c pass``), so the ratio is the reading and rendering work
    against the parsing alone. Target: at most 2x.

``run.py`` calls ``main`` after its own figures.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
PYTHON = sys.executable
AIHOW = str(Path(PYTHON).with_name("aihow"))

# The code before issue 12 item 7 (each change built, dumped and encoded twice).
BASELINE_COMMIT = "e85884a1f3e0a6d91204001d0d5a758d49d1fb55"
# Its figure at 4,096 GPUs, measured on 2026-12-03 (used only when git cannot give it).
RECORDED_BASELINE_MIB = 1304.0
TARGET_MEMORY_CUT = 0.30
TARGET_SHOW_RATIO = 2.0

# Run in a fresh interpreter: build the synthetic host, make and write the plan, print
# the peak RSS (MiB) after the input and after the plan. PYTHONPATH picks the planner.
_MEASURE = """
import resource, sys
sys.path.insert(0, {here!r})
from run import synthetic
import planner
from planner.plan.make import plan_requests
assert planner.__file__.startswith({root!r}), planner.__file__
state, req = synthetic({gpus})
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
plan = plan_requests(req, state, config_path="bench.yaml", config_sha256="0" * 64,
                     host_uri="sim:bench")
with open({out!r}, "w") as f:
    f.write(plan.to_json())
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(before / 1024, after / 1024, len(plan.actions))
"""


def _peak(gpus: int, planner_root: Path, out: Path) -> tuple[float, float, int]:
    env = dict(os.environ, PYTHONPATH=str(planner_root))
    code = _MEASURE.format(here=str(HERE), gpus=gpus, out=str(out), root=str(planner_root))
    # cwd: python -c puts it first on sys.path, so it must not hold another planner
    done = subprocess.run([PYTHON, "-c", code], check=True, capture_output=True, text=True,
                          cwd=out.parent, env=env)
    before, after, actions = done.stdout.split()
    return float(before), float(after), int(actions)


def _baseline_tree(tmp: Path) -> Path | None:
    """The baseline commit's ``planner`` package, unpacked under ``tmp``; None without
    git or the commit."""
    try:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", BASELINE_COMMIT,
                                  "planner", "grammar"], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    tmp.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive.stdout, check=True)
    # the wheel's layout: grammar/ is the package planner.grammar
    (tmp / "grammar").rename(tmp / "planner" / "grammar")
    return tmp


def memory(gpus: int) -> tuple[float, float, float, float, int, bool, bool]:
    """(g): (peak MiB now, input MiB now, baseline peak MiB, baseline input MiB, changes,
    whether the baseline was measured in this run, whether both plans make the same
    changes)."""
    with tempfile.TemporaryDirectory() as tmp:
        now_out, base_out = Path(tmp) / "now.json", Path(tmp) / "base.json"
        now_input, now_peak, actions = _peak(gpus, ROOT, now_out)
        base_root = _baseline_tree(Path(tmp) / "baseline")
        if base_root is None:
            return now_peak, now_input, RECORDED_BASELINE_MIB, float("nan"), actions, False, \
                True
        base_input, base_peak, _ = _peak(gpus, base_root, base_out)
        same = _changes(now_out) == _changes(base_out)
    return now_peak, now_input, base_peak, base_input, actions, True, same


def _changes(plan: Path) -> list[tuple[str, str]]:
    """A plan's changes as (address, action), in order: the work both codes must do (the
    bytes differ since the plan format gained attributes after the baseline, such as a
    vGPU's ``gi``)."""
    return [(a["address"], a["action"]) for a in json.loads(plan.read_text())["actions"]]


def _cpu(cmd: list[str]) -> float:
    before = os.times()
    subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
    after = os.times()
    return (after.children_user - before.children_user) + (
        after.children_system - before.children_system)


def show_speed(gpus: int, runs: int) -> tuple[float, float, float, float, int]:
    """(h): median CPU seconds of (aihow show big, aihow show small, json.load big,
    python -c pass), and the big plan's change count."""
    sys.path.insert(0, str(HERE))
    from run import synthetic

    from planner.plan.make import plan_requests

    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for n in (gpus, 1):
            state, req = synthetic(n)
            plan = plan_requests(req, state, config_path="bench.yaml",
                                 config_sha256="0" * 64, host_uri="sim:bench")
            files[n] = Path(tmp) / f"plan{n}.json"
            files[n].write_text(plan.to_json())
        changes = len(json.loads(files[gpus].read_text())["actions"])
        cmds = [[AIHOW, "show", str(files[gpus])], [AIHOW, "show", str(files[1])],
                [PYTHON, "-c", "import json, sys; json.load(open(sys.argv[1]))",
                 str(files[gpus])],
                [PYTHON, "-c", "pass"]]
        for cmd in cmds:  # warm-up: bytecode and the page cache
            _cpu(cmd)
        times: list[list[float]] = [[] for _ in cmds]
        for _ in range(runs):
            for i, cmd in enumerate(cmds):  # interleaved: load changes hit all alike
                times[i].append(_cpu(cmd))
    big, small, load, bare = (statistics.median(t) for t in times)
    return big, small, load, bare, changes


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main(quick: bool, runs: int = 0, only: str | None = None) -> bool:
    """Figures (g) and (h), or only the one named by ``only``."""
    ok_g = ok_h = True
    if only in (None, "g"):
        ok_g = _figure_g(quick)
    if only in (None, "h"):
        ok_h = _figure_h(quick, runs)
    return ok_g and ok_h


def _figure_g(quick: bool) -> bool:
    gpus_g = 512 if quick else 4096
    now, now_in, base, base_in, actions, measured, same = memory(gpus_g)
    cut = 1 - now / base
    ok_g = cut >= TARGET_MEMORY_CUT and same
    where = (f"baseline {BASELINE_COMMIT[:8]} measured in this run: {base:.0f} MiB "
             f"(input {base_in:.0f} MiB)" if measured else
             f"baseline recorded, not measured here (no git or no commit {BASELINE_COMMIT[:8]}"
             f"): {base:.0f} MiB")
    print(f"(g) peak RSS making and writing the plan of {gpus_g} GPUs ({actions} changes): "
          f"{now:.0f} MiB (input {now_in:.0f} MiB); {where}; {cut:.0%} lower (target >= "
          f"{TARGET_MEMORY_CUT:.0%}){'' if same else '; the two plans make DIFFERENT changes'} "
          f"{_verdict(ok_g)}")
    return ok_g


def _figure_h(quick: bool, runs: int) -> bool:
    gpus_h = 256 if quick else 1024
    runs_h = runs or (1 if quick else 5)
    big, small, load, bare, changes = show_speed(gpus_h, runs_h)
    ratio = (big - small) / (load - bare)
    ok_h = ratio <= TARGET_SHOW_RATIO
    print(f"(h) aihow show of the {gpus_h}-GPU plan ({changes} changes): {big:.2f} s CPU, "
          f"{big - small:.2f} s above its start-up ({small:.2f} s); json.load of it: "
          f"{load:.2f} s, {load - bare:.2f} s above python's ({bare:.2f} s); ratio "
          f"{ratio:.2f}x (target <= {TARGET_SHOW_RATIO:.0f}x) {_verdict(ok_h)}  "
          f"[medians of {runs_h}]")
    return ok_h


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Figures (g) and (h) of benchmarks/README.md.")
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke test)")
    parser.add_argument("--only", choices=("g", "h"), help="run only this figure")
    parser.add_argument("--runs", type=int, default=0, help="runs of (h) (default 5)")
    args = parser.parse_args()
    sys.exit(0 if main(args.quick, args.runs, args.only) else 1)
