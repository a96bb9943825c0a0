"""The hostile-input campaign (issue 16): cases a careless or hostile user, or a failing
machine, would try. Each case builds its own files in a fresh directory, runs the real
``aihow`` CLI (or a GPU script) once, and is *clean* when:

- the exit status is non-zero (1; never a signal),
- there is no traceback and stderr is exactly one line,
- that line names where the problem is (the case's ``where``: a file, a path, an
  address),
- nothing changed: every file and directory under the case's directory (the simulated
  host, its state directory, the inputs) is as it was, and paths that must not be
  created were not.

``tests/campaign/test_hostile.py`` runs each case as a test; ``tests/campaign/run.py``
runs them all and prints a table (cases, clean, failures).
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
AIHOW = str(Path(sys.executable).parent / "aihow")
SIM_SPEC = REPO / "config" / "sim-a100.toml"
IMAGE = "/var/lib/images/hpc.qcow2"  # CONFIG's base image, held by every case's host
G0 = "0000:17:00.0"
TIMEOUT_S = 120
# The host lock records who last took it: a refused apply takes it too, and that is no
# change to the host.
LOCK_FILE = ("sim/state/lock",)


@dataclass
class Run:
    argv: list[str]
    where: str  # the error line must contain this
    cwd: Path | None = None
    stdout_to: str | None = None  # a path stdout is opened on (e.g. /dev/full)
    read_only_root: bool = False  # run without root's permission override (a 0500 dir bites)
    file_size_limit: int | None = None  # RLIMIT_FSIZE: a full disk, for every file written
    must_not_exist: list[Path] = field(default_factory=list)
    ignore: tuple[str, ...] = ()  # relative paths whose change is expected (none by default)


@dataclass(frozen=True)
class Case:
    name: str
    issue_words: str  # the words of the issue this case stands for
    build: Callable[[Path], Run]


# --- helpers used by the builders ------------------------------------------------------


def aihow_ok(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([AIHOW, *args], capture_output=True, text=True, cwd=cwd,
                          timeout=TIMEOUT_S, stdin=subprocess.DEVNULL, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"setup `aihow {' '.join(args)}` failed: {proc.stderr}")
    return proc


def sim_host(d: Path) -> Path:
    sim = d / "sim"
    aihow_ok("sim", "init", str(sim), "--spec", str(SIM_SPEC), "--image", IMAGE)
    return sim


CONFIG = """\
version: "1.0"
metadata:
  name: "campaign"
  description: "hostile-input campaign"
global:
  gpus:
    - select: "0000:17:00.0"
      mig: enabled
      layout: "3g.20gb"
clusters:
  hpc:
    name: "{cluster}"
    base_image_path: "{image}"
    network:
      subnet: "192.168.100.0/24"
      bridge: "{bridge}"
    hardware:
      acceleration:
        enable_kvm: true
    controller:
      cpu_cores: {cpu}
      memory_gb: {mem}
      disk_gb: 20
      ip_address: "192.168.100.10"
    compute_nodes:
      - cpu_cores: 2
        memory_gb: 4
        disk_gb: 20
        ip: "192.168.100.11"
    slurm_config:
      partitions: ["gpu"]
      default_partition: "gpu"
      max_job_time: "24:00:00"
"""


def config(d: Path, name: str = "cfg.yaml", *, cluster: str = "hpc", bridge: str = "virbr100",
           cpu: str = "2", mem: str = "4") -> Path:
    path = d / name
    path.write_text(CONFIG.format(cluster=cluster, bridge=bridge, cpu=cpu, mem=mem, image=IMAGE))
    return path


def saved_plan(d: Path, sim: Path, cfg: Path) -> Path:
    out = d / "plan.json"
    aihow_ok("plan", str(cfg), "--host", f"sim:{sim}", "-o", str(out))
    return out


def applied(d: Path) -> tuple[Path, Path]:
    """A simulated host with the campaign config applied once (one generation)."""
    sim = sim_host(d)
    cfg = config(d)
    aihow_ok("apply", str(cfg), "--host", f"sim:{sim}", "--auto-approve", "--allow-reset")
    return sim, cfg


def resealed(plan_file: Path, edit: Callable[[dict], None]) -> Path:
    """The plan edited by ``edit`` with a recomputed, correct digest."""
    from planner.vocab.plan import digest, plan_text

    data = json.loads(plan_file.read_text())
    edit(data)
    data.pop("plan_sha256", None)
    data["plan_sha256"] = digest(data)
    plan_file.write_text(plan_text(data))
    return plan_file


# --- the cases ------------------------------------------------------------------------


def _yaml_deep(d: Path) -> Run:
    cfg = config(d)
    text = cfg.read_text().replace('description: "hostile-input campaign"',
                                   "description: " + "[" * 320 + "]" * 320)
    cfg.write_text(text)
    return Run(["validate", str(cfg)], str(cfg))


def _long_int(d: Path) -> Run:
    cfg = config(d, cpu="9" * 5000)
    return Run(["validate", str(cfg)], f"{cfg}:")


def _plan_json_deep(d: Path) -> Run:
    p = d / "deep.json"
    p.write_text('{"format_version": "2.0", "x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    return Run(["show", str(p)], str(p))


def _plan_out(target: str) -> Callable[[Path], Run]:
    def build(d: Path) -> Run:
        sim = sim_host(d)
        cfg = config(d)
        out = {"missing-dir": str(d / "no" / "such" / "plan.json"), "directory": str(d),
               "dev-full": "/dev/full"}[target]
        return Run(["plan", str(cfg), "--host", f"sim:{sim}", "-o", out], out,
                   must_not_exist=[d / "no"])
    return build


def _stdout_full(command: str) -> Callable[[Path], Run]:
    def build(d: Path) -> Run:
        cfg = config(d)
        if command == "validate":
            return Run(["validate", str(cfg)], "stdout", stdout_to="/dev/full")
        sim = sim_host(d)
        return Run(["plan", str(cfg), "--host", f"sim:{sim}"], "stdout", stdout_to="/dev/full")
    return build


def _state_dir_read_only(d: Path) -> Run:
    sim = sim_host(d)
    cfg = config(d)
    state = d / "ro-state"
    state.mkdir(mode=0o500)
    return Run(["apply", str(cfg), "--host", f"sim:{sim}", "--state-dir", str(state),
                "--auto-approve", "--allow-reset"], str(state), read_only_root=True)


def _state_dir_full(d: Path) -> Run:
    sim = sim_host(d)
    cfg = config(d)
    plan = saved_plan(d, sim, cfg)
    state = sim / "state"
    state.mkdir()
    return Run(["apply", str(plan), "--auto-approve", "--allow-reset"], str(state),
               file_size_limit=0)


def _in_state_dir_is_a_directory(name: str) -> Callable[[Path], Run]:
    def build(d: Path) -> Run:
        sim = sim_host(d)
        cfg = config(d)
        (sim / "state" / name).mkdir(parents=True)
        return Run(["apply", str(cfg), "--host", f"sim:{sim}", "--auto-approve",
                    "--allow-reset"], str(sim / "state" / name), ignore=LOCK_FILE)
    return build


def _generation_config_missing(d: Path) -> Run:
    sim, _ = applied(d)
    gone = sim / "state" / "generations" / "1" / "config.yaml"
    gone.unlink()
    return Run(["rollback", "--to", "1", "--host", f"sim:{sim}", "--auto-approve",
                "--allow-reset"], str(gone))


def _journal_begin_without_plan(d: Path) -> Run:
    from planner.apply.journal import _crc

    sim = sim_host(d)
    state = sim / "state"
    state.mkdir()
    record = {"seq": 1, "type": "begin", "apply_id": "x", "command": "aihow apply",
              "host_uri": f"sim:{sim}", "start_fingerprint": "0" * 64}
    record["crc"] = _crc(record)
    journal = state / "journal.jsonl"
    journal.write_text(json.dumps(record) + "\n")
    return Run(["recover", "--host", f"sim:{sim}"], str(journal), ignore=LOCK_FILE)


def _plan_damaged(kind: str) -> Callable[[Path], Run]:
    def build(d: Path) -> Run:
        sim = sim_host(d)
        plan = saved_plan(d, sim, config(d))
        text = plan.read_text()
        plan.write_text({"truncated": text[: len(text) // 2], "empty": "",
                         "not-json": "this is not a plan\n"}[kind])
        return Run(["apply", str(plan), "--auto-approve"], str(plan))
    return build


def _plan_graph(kind: str) -> Callable[[Path], Run]:
    def edit(data: dict) -> None:
        actions = data["actions"]
        if kind == "duplicate-ids":
            actions[1]["id"] = actions[0]["id"]
        elif kind == "cycle":  # the step a step waits for now waits for it
            waiting = next(a for a in actions if a["depends_on"])
            first = next(a for a in actions if a["id"] == waiting["depends_on"][0])
            first["depends_on"] = [*first["depends_on"], waiting["id"]]
        else:  # a depends_on naming no step
            actions[-1]["depends_on"] = [*actions[-1]["depends_on"], 999]

    def build(d: Path) -> Run:
        sim = sim_host(d)
        plan = resealed(saved_plan(d, sim, config(d)), edit)
        return Run(["show", str(plan)], str(plan))
    return build


def _vm_name(name: str) -> Callable[[Path], Run]:
    def build(d: Path) -> Run:
        cfg = config(d, cluster=name)
        return Run(["validate", str(cfg)], f"{cfg}:")
    return build


def _bridge(d: Path) -> Run:
    cfg = config(d, bridge="virbr 100;x")
    return Run(["validate", str(cfg)], f"{cfg}:")


def _huge_number(key: str) -> Callable[[Path], Run]:
    def build(d: Path) -> Run:
        cfg = {"cpu": lambda: config(d, cpu="1e40"), "mem": lambda: config(d, mem="1e17"),
               "cpu-int": lambda: config(d, cpu="9" * 20),
               "mem-int": lambda: config(d, mem="1" + "0" * 17)}[key]()
        return Run(["validate", str(cfg)], f"{cfg}:")
    return build


def _profiles_newline(d: Path) -> Run:
    sim_host(d)  # its nvidia-smi comes first in PATH
    script = REPO / "scripts" / "gpu" / "create-mig-slices.sh"
    return Run([str(script), "--gpu", G0, "--profiles", "1g.5gb\n2g.10gb"], "--profiles")


def _sim_reboot_nowhere(d: Path) -> Run:
    missing = d / "nonexistent"
    return Run(["sim", "reboot", str(missing)], str(missing), must_not_exist=[missing])


def _duplicate_key(d: Path) -> Run:
    cfg = config(d)
    cfg.write_text(cfg.read_text().replace('  name: "campaign"\n',
                                           '  name: "campaign"\n  name: "again"\n'))
    return Run(["validate", str(cfg)], f"{cfg}:")


def _plan_missing_config(d: Path) -> Run:
    sim = sim_host(d)
    cfg = config(d)
    plan = saved_plan(d, sim, cfg)
    cfg.unlink()
    return Run(["apply", str(plan), "--auto-approve"], str(cfg))


def _state_symlink(name: str) -> Callable[[Path], Run]:
    def build(d: Path) -> Run:
        sim = sim_host(d)
        cfg = config(d)
        (sim / "state").mkdir()
        victim = d / "victim"
        if name == "lock":
            victim.write_text("precious\n")
        else:
            victim.mkdir()
        (sim / "state" / name).symlink_to(victim)
        return Run(["apply", str(cfg), "--host", f"sim:{sim}", "--auto-approve",
                    "--allow-reset"], str(sim / "state" / name))
    return build


def _journal_corrupt_middle(d: Path) -> Run:
    from planner.apply.journal import JournalWriter

    sim = sim_host(d)
    state = sim / "state"
    state.mkdir()
    writer = JournalWriter.create(state, {"host_uri": f"sim:{sim}", "plan": {"actions": []}})
    writer.note("one")
    writer.note("two")
    writer.release()
    journal = state / "journal.jsonl"
    lines = journal.read_text().splitlines(keepends=True)
    lines[1] = lines[1].replace('"', "'")
    journal.write_text("".join(lines))
    return Run(["recover", "--host", f"sim:{sim}"], f"{journal}:2", ignore=LOCK_FILE)


CASES: tuple[Case, ...] = (
    Case("yaml-nested-320-levels", "YAML nested 300+ levels", _yaml_deep),
    Case("yaml-5000-digit-integer", "a 5,000-digit integer", _long_int),
    Case("plan-json-nested-100k", "a plan JSON nested 100k deep", _plan_json_deep),
    Case("plan-out-missing-directory", "plan -o to a missing directory",
         _plan_out("missing-dir")),
    Case("plan-out-is-a-directory", "plan -o to a directory", _plan_out("directory")),
    Case("plan-out-dev-full", "plan -o to /dev/full", _plan_out("dev-full")),
    Case("stdout-dev-full-validate", "stdout on /dev/full", _stdout_full("validate")),
    Case("stdout-dev-full-plan", "stdout on /dev/full", _stdout_full("plan")),
    Case("state-dir-read-only", "read-only --state-dir", _state_dir_read_only),
    Case("state-dir-full", "full --state-dir", _state_dir_full),
    Case("journal-is-a-directory", "journal.jsonl being a directory",
         _in_state_dir_is_a_directory("journal.jsonl")),
    Case("lock-is-a-directory", "lock being a directory",
         _in_state_dir_is_a_directory("lock")),
    Case("generation-config-missing", "a missing generations/N/config.yaml",
         _generation_config_missing),
    Case("journal-begin-without-plan", "a journal begin record without its plan",
         _journal_begin_without_plan),
    Case("plan-truncated", "a truncated plan", _plan_damaged("truncated")),
    Case("plan-empty", "an empty plan", _plan_damaged("empty")),
    Case("plan-not-json", "a non-JSON plan", _plan_damaged("not-json")),
    Case("plan-duplicate-ids", "duplicate action ids in a plan", _plan_graph("duplicate-ids")),
    Case("plan-depends-on-cycle", "depends_on cycles in a plan", _plan_graph("cycle")),
    Case("plan-depends-on-missing-id", "missing ids in a plan", _plan_graph("missing")),
    Case("vm-name-space", "VM names plan rejects", _vm_name("hpc lab")),
    Case("vm-name-unicode", "VM names plan rejects", _vm_name("hpc\u00e9")),
    Case("vm-name-leading-dash", "VM names plan rejects", _vm_name("-hpc")),
    Case("vm-name-slash", "VM names plan rejects", _vm_name("hpc/x")),
    Case("vm-name-64-chars", "VM names plan rejects", _vm_name("h" * 64)),
    Case("vm-name-quote", "VM names plan rejects", _vm_name("hpc'x")),
    Case("vm-name-colon", "VM names plan rejects", _vm_name("hpc:x")),
    Case("vm-name-ampersand", "VM names plan rejects", _vm_name("hpc&x")),
    Case("bridge-name", "a bridge name plan rejects", _bridge),
    Case("cpu-cores-1e40", "cpu_cores: 1e40", _huge_number("cpu")),
    Case("memory-gb-1e17", "memory_gb: 1e17", _huge_number("mem")),
    Case("cpu-cores-20-digits", "cpu_cores: 1e40 (as an integer)", _huge_number("cpu-int")),
    Case("memory-gb-10-to-17", "memory_gb: 1e17 (as an integer)", _huge_number("mem-int")),
    Case("profiles-newline", "a newline inside --profiles", _profiles_newline),
    Case("sim-reboot-nonexistent", "sim reboot /x", _sim_reboot_nowhere),
    Case("duplicate-key", "a duplicate-key error dumps the whole mapping", _duplicate_key),
    Case("plan-config-gone", "a plan whose config is gone", _plan_missing_config),
    Case("state-lock-symlink", "a state/lock symlink", _state_symlink("lock")),
    Case("state-generations-symlink", "generations/ as a directory symlink",
         _state_symlink("generations")),
    Case("state-journals-symlink", "journals/ as a directory symlink",
         _state_symlink("journals")),
    Case("journal-corrupt-middle", "a truly damaged journal", _journal_corrupt_middle),
)


# --- running and judging --------------------------------------------------------------


def snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root``: a file's digest, a link's target, or 'dir'."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "-> " + os.readlink(p)
            elif p.is_dir():
                out[rel] = "dir"
            elif p.is_file():
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                out[rel] = "special"
    return out


@dataclass
class Verdict:
    case: str
    problems: list[str]
    stderr: str
    returncode: int

    @property
    def clean(self) -> bool:
        return not self.problems


def _preexec(run: Run) -> Callable[[], None] | None:
    if run.file_size_limit is None:
        return None
    limit = run.file_size_limit

    def set_limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit: EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return set_limit


def execute(case: Case, d: Path) -> Verdict:
    d.mkdir(parents=True, exist_ok=True)
    try:
        run = case.build(d)
    except Exception as exc:  # noqa: BLE001 - a broken setup is a failure of the case
        return Verdict(case.name, [f"setup failed: {exc}"], "", -1)
    before = snapshot(d)
    argv = list(run.argv)
    if not argv[0].startswith("/"):
        argv = [AIHOW, *argv]
    if run.read_only_root and os.geteuid() == 0 and shutil.which("setpriv"):
        argv = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *argv]
    env = dict(os.environ)
    env.pop("AIHOW_TEST_CRASH_AFTER", None)
    env["PATH"] = f"{d / 'sim' / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
    stdout = open(run.stdout_to, "w") if run.stdout_to else subprocess.PIPE  # noqa: SIM115
    try:
        proc = subprocess.run(argv, stdout=stdout, stderr=subprocess.PIPE, text=True,
                              cwd=run.cwd or d, env=env, timeout=TIMEOUT_S,
                              stdin=subprocess.DEVNULL, preexec_fn=_preexec(run), check=False)
    except subprocess.TimeoutExpired:
        return Verdict(case.name, [f"did not finish in {TIMEOUT_S}s"], "", -1)
    finally:
        if run.stdout_to:
            stdout.close()  # type: ignore[union-attr]
    err = proc.stderr or ""
    problems: list[str] = []
    if proc.returncode == 0:
        problems.append("exit status 0")
    elif proc.returncode < 0 or proc.returncode > 125:
        problems.append(f"killed or crashed (exit {proc.returncode})")
    if "Traceback" in err:
        problems.append("traceback")
    lines = err.splitlines()
    if len(lines) != 1:
        problems.append(f"{len(lines)} stderr lines, not 1")
    elif len(lines[0]) > 400:
        problems.append(f"error line of {len(lines[0])} characters")
    if run.where not in err:
        problems.append(f"error does not name {run.where!r}")
    after = snapshot(d)
    changed = sorted(k for k in set(before) | set(after)
                     if before.get(k) != after.get(k) and k not in run.ignore)
    if changed:
        problems.append("changed: " + ", ".join(changed[:5]))
    for path in run.must_not_exist:
        if path.exists():
            problems.append(f"created {path}")
    return Verdict(case.name, problems, err, proc.returncode)
