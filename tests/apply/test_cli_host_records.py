"""`aihow apply` as the CLI runs it, with what it records about the host: the allocation
ledger after a successful apply (and `aihow plan` refusing another cluster's claim on a
held slice), and `--libvirt-uri` on apply and rollback agreeing with the plan's."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from planner.cli.host_opts import open_environment
from tests.apply.simhost import IMAGE, write_config
from tests.clirun import aihow

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "example-mig-cluster.yaml"
G0 = "0000:17:00.0"


# --- the allocation ledger after `aihow apply CONFIG` ---------------------------------------


@pytest.fixture(scope="module")
def example_applied(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sim = tmp_path_factory.mktemp("ledger") / "sim"
    init = aihow("sim", "init", str(sim), "--spec", str(ROOT / "config" / "sim-a100.toml"))
    assert init.returncode == 0, init.stderr
    res = aihow("apply", str(EXAMPLE), "--host", f"sim:{sim}", "--auto-approve",
                "--allow-reset")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "warning:" not in res.stderr, res.stderr
    return sim


def _ledger(sim: Path) -> dict[tuple[str, str], str]:
    doc = json.loads((sim / "state" / "allocations.json").read_text())
    return {(c["kind"], c["key"]): c["owner"] for c in doc["claims"]}


def test_apply_records_what_each_node_holds_in_the_ledger(example_applied: Path) -> None:
    claims = _ledger(example_applied)
    host = open_environment(f"sim:{example_applied}").probe()
    gpu = next(g for g in host.gpus if g.pci == G0)
    gis = {gi.gi_id: gi for gi in gpu.gpu_instances}
    mdevs = {m.uuid: m for m in host.mdevs}
    nodes = 0
    for dom in host.domains:
        for hd in dom.hostdevs:
            if hd.type != "mdev":
                continue
            nodes += 1
            owner = f"{dom.name.split('-', 1)[0]}/{dom.name}"
            gi = gis[mdevs[hd.uuid].gi_id]  # read back from the host, not from the plan
            assert claims[("vgpu", hd.uuid)] == owner
            assert claims[("gi_placement", f"{G0}/{gi.placement_start}")] == owner
            (ci,) = gi.compute_instances
            assert claims[("mig_uuid", ci.mig_uuid)] == owner
    assert nodes == 7  # 4 HPC compute nodes + 3 Kubernetes workers
    assert len(set(claims.values())) == 7 and len(claims) == 21


def test_plan_refuses_another_cluster_pinned_onto_a_held_slice(example_applied: Path,
                                                                tmp_path: Path) -> None:
    holder = _ledger(example_applied)[("gi_placement", f"{G0}/0")]
    text = EXAMPLE.read_text()
    # another config: its own metadata.name (a config's domains are known by it)
    pinned = (text.replace('name: "hpc"', 'name: "lab"').replace('name: "k8s"', 'name: "k8s2"')
              .replace('name: "mig-workstation"', 'name: "lab-workstation"')
              .replace("  gpus:\n    - select: \"0000:17:00.0\"    # the A100; GPUs not "
                       "listed here are never touched\n      mig: enabled\n", "  gpus: []\n")
              .replace("gpu_config: {mode: mig, mig_profile: 1g.5gb}",
                       f'gpu_config: {{mode: mig, mig_profile: 1g.5gb, gpu: "{G0}", '
                       "placement: 0}", 1))
    assert pinned.count("placement: 0") == 1 and "gpus: []" in pinned
    other = tmp_path / "lab.yaml"
    other.write_text(pinned)
    res = aihow("plan", str(other), "--host", f"sim:{example_applied}")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Traceback" not in res.stderr and res.stderr.count("\n") == 1, res.stderr
    assert re.search(rf"gi_placement\[{G0}/0\] is held by {holder}\b.*; it cannot also go to "
                     r"lab/lab-compute-01", res.stderr), res.stderr


# --- --libvirt-uri on apply and rollback ---------------------------------------------------

_DOMAIN = ("<domain type='test'><name>{}</name><memory>1048576</memory><vcpu>1</vcpu>"
           "<os><type>hvm</type></os></domain>")


# A domain itself (a define or undefine), not its running state or hostdevs.
BARE_DOMAIN = re.compile(r"domain\[[\w-]+\](?!\.)")


def _other_libvirt(tmp_path: Path) -> str:
    """Another simulated host's libvirt (``sim:DIR2``: it keeps its state, as a real
    libvirtd does) that already has everything write_config's VMs need: the config
    applied there once. Planned against it, the config needs no libvirt action."""
    other = tmp_path / "other"
    assert aihow("sim", "init", str(other), "--gpu", f"h100-80gb@{G0}",
                 "--image", IMAGE).returncode == 0
    cfg = write_config(tmp_path / "other.yaml", {G0: None})
    done = aihow("apply", str(cfg), "--host", f"sim:{other}", "--auto-approve")
    assert done.returncode == 0, done.stdout + done.stderr
    return f"sim:{other}"


def _mig_host(tmp_path: Path) -> str:
    sim = tmp_path / "host"
    assert aihow("sim", "init", str(sim), "--gpu", f"h100-80gb@{G0}",
                 "--image", IMAGE).returncode == 0
    on = subprocess.run([str(sim / "bin" / "nvidia-smi"), "-i", "0", "-mig", "1"],
                        capture_output=True, text=True, check=False)
    assert on.returncode == 0, on.stdout + on.stderr
    return f"sim:{sim}"


def test_a_plan_made_with_libvirt_uri_applies_with_the_same_uri(tmp_path: Path) -> None:
    uri, lv = _mig_host(tmp_path), _other_libvirt(tmp_path)
    cfg = write_config(tmp_path / "a.yaml", {G0: "3g.40gb@4 + 2*1g.10gb"})
    plan = tmp_path / "plan.json"
    made = aihow("plan", str(cfg), "--host", uri, "--libvirt-uri", lv, "-o", str(plan))
    assert made.returncode == 0, made.stderr
    assert not BARE_DOMAIN.search(made.stdout)  # the domains exist there

    # Without the same URI, apply probes the host's own libvirt: not what the plan saw.
    stale = aihow("apply", str(plan), "--auto-approve")
    assert stale.returncode == 1
    assert "the plan is stale" in stale.stderr and "hpc-controller" in stale.stderr
    assert "Traceback" not in stale.stderr

    done = aihow("apply", str(plan), "--auto-approve", "--libvirt-uri", lv)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Apply complete" in done.stdout
    again = aihow("plan", str(cfg), "--host", uri, "--libvirt-uri", lv, "--detailed-exitcode")
    assert again.returncode == 0, again.stdout + again.stderr


def test_apply_config_and_rollback_plan_with_the_libvirt_uri(tmp_path: Path) -> None:
    uri, lv = _mig_host(tmp_path), _other_libvirt(tmp_path)
    first = write_config(tmp_path / "a.yaml", {G0: "3g.40gb@4 + 2*1g.10gb"})
    second = write_config(tmp_path / "b.yaml", {G0: "4g.40gb@0 + 2g.20gb@4"})
    for cfg in (first, second):
        res = aihow("apply", str(cfg), "--host", uri, "--auto-approve", "--libvirt-uri", lv)
        assert res.returncode == 0, res.stdout + res.stderr
        assert not BARE_DOMAIN.search(res.stdout)  # planned against the other libvirt
    back = aihow("rollback", "--host", uri, "--auto-approve", "--libvirt-uri", lv)
    assert back.returncode == 0, back.stdout + back.stderr
    assert "domain[" not in back.stdout and "gi[3g.40gb@4]" in back.stdout
    assert aihow("plan", str(first), "--host", uri, "--libvirt-uri", lv,
                 "--detailed-exitcode").returncode == 0
