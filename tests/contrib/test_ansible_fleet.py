"""The Ansible collection in contrib/ansible, run for real: ansible-playbook drives the
example playbooks over three inventory hosts that are simulated aihow hosts (local
connection, one ``sim:DIR`` each), and ansible-lint checks the collection.

Ansible is kept inside the test's tmp dir: its home, local and remote temp, and the
collections path point there or at the repository, and it never reaches a network.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.clirun import AIHOW, aihow

ROOT = Path(__file__).resolve().parents[2]
CONTRIB = ROOT / "contrib" / "ansible"
BIN = Path(sys.executable).parent
HOSTS = ("gpu-01", "gpu-02", "gpu-03")
A100 = "0000:17:00.0"  # the GPU of config/sim-a100.toml
# Day 2: the third Kubernetes worker goes, so its GI, CI, mdev and domain are deleted.
LAST_WORKER = """\
      - cpu_cores: 4
        memory_gb: 16
        disk_gb: 100
        ip: "192.168.200.13"
        gpu_config: {mode: mig, mig_profile: 1g.5gb}
"""


@dataclass
class Fleet:
    tmp: Path
    inventory: Path
    config: Path

    def uri(self, host: str) -> str:
        return f"sim:{self.tmp / host}"

    def probe(self, host: str) -> str:
        done = aihow("probe", "--host", self.uri(host), "--format", "json")
        assert done.returncode == 0, done.stderr
        return done.stdout

    def plan(self, host: str, config: Path | None = None) -> dict:
        done = aihow("plan", str(config or self.config), "--host", self.uri(host),
                     "--format", "json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def env(self) -> dict[str, str]:
        home = self.tmp / "ansible-home"
        return {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "HOME": str(home),
            "ANSIBLE_HOME": str(home),
            "ANSIBLE_LOCAL_TEMP": str(home / "tmp"),
            "ANSIBLE_REMOTE_TEMP": str(self.tmp / "remote-tmp"),
            "ANSIBLE_COLLECTIONS_PATH": str(CONTRIB / "collections"),
            "ANSIBLE_CONFIG": str(self.tmp / "no-ansible.cfg"),
            "ANSIBLE_RETRY_FILES_ENABLED": "0",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_GALAXY_DISABLE_GPG_VERIFY": "1",
            "ANSIBLE_DEPRECATION_WARNINGS": "0",
            "ANSIBLE_CALLBACK_RESULT_FORMAT": "json",
            "NO_COLOR": "1",
        }

    def playbook(self, name: str, *args: str) -> Run:
        done = subprocess.run(
            [str(BIN / "ansible-playbook"), "-i", str(self.inventory), str(CONTRIB / name),
             *args],
            capture_output=True, text=True, timeout=240, check=False, cwd=self.tmp,
            env=self.env())
        return Run(done.returncode, done.stdout + done.stderr)


@dataclass
class Run:
    rc: int
    output: str

    def recap(self) -> dict[str, dict[str, int]]:
        """PLAY RECAP counters per host (hosts a stopped rollout never reached are absent)."""
        rows = {}
        for host, counters in re.findall(r"^(\S+)\s+:\s+(ok=.*)$", self.output, re.M):
            rows[host] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", counters)}
        return rows

    def failure(self, host: str) -> dict:
        match = re.search(rf"^fatal: \[{re.escape(host)}\]: FAILED! => (.*)$", self.output,
                          re.M)
        assert match, self.output
        return json.loads(match.group(1))


def _make_fleet(tmp: Path) -> Fleet:
    assert (BIN / "ansible-playbook").exists(), "pip install -e '.[dev]' installs ansible-core"
    config = tmp / "cluster.yaml"
    shutil.copy(ROOT / "config" / "example-mig-cluster.yaml", config)
    hosts = {}
    for host in HOSTS:
        done = aihow("sim", "init", str(tmp / host), "--spec",
                     str(ROOT / "config" / "sim-a100.toml"))
        assert done.returncode == 0, done.stderr
        hosts[host] = {"aihow_host_uri": f"sim:{tmp / host}",
                       "aihow_plan_dest": str(tmp / host / "review" / "plan.json")}
    # The example inventory's group and its variables, with simulated hosts in it and
    # the approvals a fresh A100 needs (MIG mode on resets the GPU).
    example = yaml.safe_load((CONTRIB / "inventory.example.yml").read_text())
    group = example["all"]["children"]["gpu_hosts"]
    group["hosts"] = hosts
    group["vars"].update(
        ansible_connection="local", ansible_python_interpreter=sys.executable,
        aihow_config=str(config), aihow_executable=AIHOW, aihow_controller_executable=AIHOW,
        aihow_auto_approve=True, aihow_allow_reset=True,
        aihow_review_dir=str(tmp / "review"))
    inventory = tmp / "inventory.yml"
    inventory.write_text(yaml.safe_dump(example))
    return Fleet(tmp, inventory, config)


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    return _make_fleet(tmp_path)


def test_rollout_checks_converges_is_idempotent_and_stops_at_a_failed_host(
        fleet: Fleet) -> None:
    before = {h: fleet.probe(h) for h in HOSTS}

    # Check mode is plan: every host reports changed, --diff shows the plan, nothing moves.
    check = fleet.playbook("rollout.yml", "--check", "--diff")
    assert check.rc == 0, check.output
    assert all(fleet_row["changed"] == 1 for fleet_row in check.recap().values())
    assert set(check.recap()) == set(HOSTS)
    assert "Plan: 59 to create, 1 to update, 0 to replace, 0 to delete." in check.output
    assert {h: fleet.probe(h) for h in HOSTS} == before

    # Apply converges every host, one after the other; each has a generation.
    apply = fleet.playbook("rollout.yml")
    assert apply.rc == 0, apply.output
    assert {h: r["changed"] for h, r in apply.recap().items()} == dict.fromkeys(HOSTS, 1)
    for host in HOSTS:
        assert fleet.plan(host)["summary"]["no-op"] == 60
        gens = json.loads(aihow("generations", "--host", fleet.uri(host),
                                "--format", "json").stdout)
        assert [g["number"] for g in gens] == [1]
        assert f"generation 1, fingerprint {gens[0]['fingerprint'][:12]}" in apply.output
    assert apply.output.index("[gpu-01]") < apply.output.index("[gpu-02]") \
        < apply.output.index("[gpu-03]")

    # A second run changes nothing.
    again = fleet.playbook("rollout.yml")
    assert again.rc == 0, again.output
    assert {h: r["changed"] for h, r in again.recap().items()} == dict.fromkeys(HOSTS, 0)

    # Day 2 with a fault on the second host: the first converges, the second fails and is
    # rolled back, the rollout stops before the third.
    v2 = fleet.tmp / "cluster-v2.yaml"
    text = fleet.config.read_text()
    assert LAST_WORKER in text
    v2.write_text(text.replace(LAST_WORKER, ""))
    converged = {h: fleet.probe(h) for h in HOSTS}
    start = fleet.plan("gpu-02")["host"]["fingerprint"]
    armed = aihow("sim", "fail", str(fleet.tmp / "gpu-02"), "--op", "nvmlGpuInstanceDestroy",
                  "--at", "1")
    assert armed.returncode == 0, armed.stderr

    # The dropped worker runs (auto_start): its shutdown is part of the plan.
    day2 = fleet.playbook("rollout.yml", "-e", f"aihow_config={v2}",
                          "-e", "aihow_restart_running_vms=true")
    assert day2.rc != 0, day2.output
    recap = day2.recap()
    assert recap["gpu-01"]["changed"] == 1 and recap["gpu-01"]["failed"] == 0
    assert recap["gpu-02"]["failed"] == 1
    assert "gpu-03" not in recap or recap["gpu-03"]["ok"] == 0, day2.output
    failed = day2.failure("gpu-02")
    assert failed["msg"].endswith("nvmlGpuInstanceDestroy failed: In use by another client")
    assert "\n" not in failed["msg"]
    assert failed["rolled_back"] is True and failed["changed"] is False
    assert failed["fingerprint"] == start

    assert fleet.plan("gpu-01", v2)["summary"]["delete"] == 0  # converged to v2
    after = fleet.plan("gpu-02")  # back where it started: v1, nothing to do
    assert after["host"]["fingerprint"] == start and after["summary"]["no-op"] == 60
    assert fleet.probe("gpu-03") == converged["gpu-03"]  # never reached
    assert fleet.plan("gpu-03", v2)["summary"]["delete"] == 6  # with its shutdown


def test_review_renders_one_document_for_the_fleet(fleet: Fleet) -> None:
    before = {h: fleet.probe(h) for h in HOSTS}
    review = fleet.playbook("review.yml")
    assert review.rc == 0, review.output
    assert {h: fleet.probe(h) for h in HOSTS} == before

    doc = (fleet.tmp / "review" / "fleet-plan.md").read_text()
    assert doc.startswith("## aihow fleet plan\n")
    assert "3 hosts, 3 with changes · 3 GPU resets · 0 destructive steps" in doc
    for host in HOSTS:
        row = re.search(rf"^\| {host} \| (.*)$", doc, re.M)
        assert row and row.group(1).startswith("59 | 1 | 0 | 0 | 0 | 1 | 0 |"), doc
        assert f"\n### {host}\n\nHost `{fleet.uri(host)}`" in doc
    assert "| **total** | **177** | **3** |" in doc
    # Each host's plan stays where the controller collected it, intact (digest checked).
    shown = aihow("show", str(fleet.tmp / "review" / "gpu-02.json"), "--format", "json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["host"]["uri"] == fleet.uri(
        "gpu-02")


def test_a_risky_plan_without_approval_fails_and_changes_nothing(fleet: Fleet) -> None:
    before = fleet.probe("gpu-01")
    run = fleet.playbook("rollout.yml", "-e", "aihow_auto_approve=false")
    assert run.rc != 0
    failed = run.failure("gpu-01")
    assert failed["msg"] == ("the plan has 1 change(s) that delete, replace, undefine or "
                             f"reset (update gpu[{A100}].mig (GPU reset)); set auto_approve: "
                             "true to apply it (nothing was changed)")
    assert "gpu-02" not in run.recap() or run.recap()["gpu-02"]["ok"] == 0
    assert fleet.probe("gpu-01") == before

    # Approved but without allow_reset: aihow's own refusal, one line, nothing changed.
    run = fleet.playbook("rollout.yml", "-e", "aihow_allow_reset=false")
    assert run.rc != 0
    failed = run.failure("gpu-01")
    assert "--allow-reset" in failed["msg"] and "\n" not in failed["msg"]
    assert failed["rolled_back"] is True
    assert fleet.probe("gpu-01") == before

    # A config the host cannot read: aihow's located one-line error, before any change.
    missing = fleet.tmp / "missing.yaml"
    run = fleet.playbook("rollout.yml", "-e", f"aihow_config={missing}")
    assert run.rc != 0
    failed = run.failure("gpu-01")
    assert str(missing) in failed["msg"] and "\n" not in failed["msg"]
    assert "summary" not in failed
    assert fleet.probe("gpu-01") == before


def test_install_role_lays_out_tools_config_and_boot_unit(tmp_path: Path) -> None:
    fleet = _make_fleet(tmp_path)
    root = tmp_path / "root"
    playbook = tmp_path / "install.yml"
    playbook.write_text(yaml.safe_dump([{
        "name": "Install aihow", "hosts": "gpu-01", "gather_facts": False,
        "roles": [{"role": "aihow.fleet.aihow"}],
    }]))
    extra = {"aihow_install_package": False, "aihow_system_packages": [],
             "aihow_manage_systemd": False, "aihow_source_dir": str(ROOT),
             "aihow_venv": "/opt/aihow-test", "aihow_tools_dir": str(root / "libexec"),
             "aihow_config_dir": str(root / "etc-aihow"),
             "aihow_systemd_dir": str(root / "systemd"),
             "aihow_cluster_config": str(fleet.config)}
    args = ["-e", json.dumps(extra)]
    run = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(fleet.inventory), str(playbook), *args],
        capture_output=True, text=True, timeout=240, check=False, cwd=tmp_path,
        env=fleet.env())
    assert run.returncode == 0, run.stdout + run.stderr
    for tool in ("enable-mig.sh", "create-mig-slices.sh", "mig-common.sh"):
        installed = root / "libexec" / tool
        assert installed.read_bytes() == (ROOT / "scripts" / "gpu" / tool).read_bytes()
        assert os.access(installed, os.X_OK)
    assert (root / "etc-aihow" / "cluster.yaml").read_text() == fleet.config.read_text()
    unit = root / "systemd" / "aihow-apply.service"
    assert unit.read_bytes() == (ROOT / "contrib/systemd/aihow-apply.service").read_bytes()
    override = (root / "systemd" / "aihow-apply.service.d" / "override.conf").read_text()
    assert "\nExecStart=\nExecStart=/opt/aihow-test/bin/aihow apply --last-generation " \
        "--auto-approve --allow-reset --lock-timeout 5m\n" in override

    again = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(fleet.inventory), str(playbook), *args],
        capture_output=True, text=True, timeout=240, check=False, cwd=tmp_path,
        env=fleet.env())
    assert again.returncode == 0
    assert Run(0, again.stdout).recap()["gpu-01"]["changed"] == 0


def test_ansible_lint_passes_on_the_collection_and_playbooks(tmp_path: Path) -> None:
    # Linted in a copy: ansible-lint keeps a cache beside the project it lints.
    work = tmp_path / "ansible"
    shutil.copytree(CONTRIB, work)
    fleet = Fleet(tmp_path, tmp_path / "inventory.yml", tmp_path / "cluster.yaml")
    env = {**fleet.env(), "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "ANSIBLE_COLLECTIONS_PATH": str(work / "collections")}
    done = subprocess.run([str(BIN / "ansible-lint"), "--offline", "--nocolor", "-q"],
                          capture_output=True, text=True, timeout=240, check=False,
                          cwd=work, env=env)
    assert done.returncode == 0, done.stdout + done.stderr


def _module() -> Any:
    module = CONTRIB / "collections/ansible_collections/aihow/fleet/plugins/modules/apply.py"
    loaded = importlib.util.spec_from_file_location("aihow_fleet_apply", module)
    assert loaded and loaded.loader
    code = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(code)
    return code


def test_approval_follows_aihows_own_rule_deletes_and_undefines_too(fleet: Fleet) -> None:
    """A day-2 plan that only deletes (a worker goes: its slice, vGPU and domain) resets
    nothing and takes nothing from a running VM, yet aihow asks before it; so must the
    module, naming the same changes as aihow's prompt."""
    from planner.cli.apply_cmds import needs_approval
    from planner.cli.host_opts import open_environment
    from planner.host import libvirt_objects as lo
    from planner.plan.model import load_plan

    aihow("apply", fleet.config, "--host", fleet.uri("gpu-01"), "--auto-approve",
          "--allow-reset", ok=True)
    v2 = fleet.tmp / "cluster-v2.yaml"
    v2.write_text(fleet.config.read_text().replace(LAST_WORKER, ""))
    session = open_environment(fleet.uri("gpu-01")).libvirt()
    try:  # the operator shut the worker down first: the plan takes nothing that runs
        lo.shut_down_domain(session.conn, "k8s-cpu-worker-03", timeout=10)
        session.commit()
    finally:
        session.close()
    plan_file = fleet.tmp / "day2.json"
    aihow("plan", v2, "--host", fleet.uri("gpu-01"), "-o", plan_file, ok=True)
    plan = load_plan(plan_file)
    assert plan.summary["delete"] == 5 and plan.summary["destructive"] == 0 \
        and plan.summary["needs_reset"] == 0
    module = _module()
    for reviewed in [plan_file, *sorted((ROOT / "plans").glob("*.json"))]:
        ours = [line for line, _ in needs_approval(load_plan(reviewed))]
        assert module.needs_approval(json.loads(reviewed.read_text())) == ours, reviewed
    risky = module.needs_approval(json.loads(plan_file.read_text()))
    assert "undefine domain[k8s-cpu-worker-03]" in risky and len(risky) == 5

    before = fleet.probe("gpu-01")
    run = fleet.playbook("rollout.yml", "--limit", "gpu-01", "-e", f"aihow_config={v2}",
                         "-e", "aihow_auto_approve=false")
    assert run.rc != 0, run.output
    msg = run.failure("gpu-01")["msg"]
    assert msg.startswith("the plan has 5 change(s) that delete, replace, undefine or reset (")
    assert "undefine domain[k8s-cpu-worker-03]" in msg and "\n" not in msg
    assert msg.endswith("set auto_approve: true to apply it (nothing was changed)")
    assert fleet.probe("gpu-01") == before


def test_module_documentation_matches_its_arguments(tmp_path: Path) -> None:
    """ansible-doc reads the module's DOCUMENTATION; its options are the argument spec."""
    fleet = Fleet(tmp_path, tmp_path / "inventory.yml", tmp_path / "cluster.yaml")
    done = subprocess.run([str(BIN / "ansible-doc"), "--json", "aihow.fleet.apply"],
                          capture_output=True, text=True, timeout=120, check=False,
                          cwd=tmp_path, env=fleet.env())
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)["aihow.fleet.apply"]["doc"]
    module = CONTRIB / "collections/ansible_collections/aihow/fleet/plugins/modules/apply.py"
    loaded = importlib.util.spec_from_file_location("aihow_fleet_apply", module)
    assert loaded and loaded.loader
    code = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(code)
    assert set(doc["options"]) == set(code.ARGUMENT_SPEC)
    for name, arg in code.ARGUMENT_SPEC.items():
        assert doc["options"][name]["type"] == arg["type"], name
        assert doc["options"][name].get("default") == arg.get("default"), name
    assert doc["options"]["config"]["required"] is True
    assert doc["attributes"]["check_mode"]["support"] == "full"
