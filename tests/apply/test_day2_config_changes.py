"""Issue 10 defects 4, 5 and 10, through the CLI on a simulated A100 with the example
cluster applied:

- 4: a cluster dropped from the config leaves the host in one apply (hostdevs, vGPUs,
  compute and GPU instances, the domains aihow defined, the ledger's claims); a domain
  aihow did not define is never undefined and is named in the plan;
- 5: removing a node from the middle of a list keeps ai-how's positional names, and the
  plan notes (code ``name-reused``) each name that now means another node;
- 10: the domains aihow defines carry the node's identity and MIG attachment in their
  metadata (kept current when the slice changes) and a GPU VM has no display.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from planner.cli.host_opts import open_environment
from planner.host import libvirt_domains as ld
from planner.host.records import AIHOW_VM_NS
from tests.apply.simhost import SimHost, applied_example
from tests.clirun import aihow

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config/example-mig-cluster.yaml"
NS = {"a": AIHOW_VM_NS}


def _xml(host: SimHost, name: str) -> ET.Element:
    session = open_environment(host.uri).libvirt()
    try:
        return ET.fromstring(ld.persistent_xml(session.conn, name))
    finally:
        session.close()


def _meta(root: ET.Element, field: str) -> str | None:
    return root.findtext(f"./metadata/a:vm/a:{field}", namespaces=NS)


def _ledger_owners(host: SimHost) -> set[str]:
    data = json.loads((host.state_dir / "allocations.json").read_text())
    return {c["owner"] for c in data["claims"]}


def test_a_dropped_cluster_leaves_the_host_in_one_apply(tmp_path: Path) -> None:
    host = applied_example(tmp_path)
    assert any(o.startswith("k8s/") for o in _ledger_owners(host))
    # a domain defined outside aihow holding a vGPU of the cloud cluster's GPU
    session = open_environment(host.uri).libvirt()
    try:
        xml = ld.persistent_xml(session.conn, "k8s-cpu-worker-03")
        root = ET.fromstring(xml)
        root.find("name").text = "by-hand"  # type: ignore[union-attr]
        root.remove(root.find("uuid"))  # type: ignore[arg-type]
        meta = root.find("metadata")
        assert meta is not None
        root.remove(meta)
        ld.undefine(session.conn, "k8s-cpu-worker-03", allow_stop=True)  # it ran (auto_start)
        ld.define(session.conn, ET.tostring(root, encoding="unicode"))
        session.commit()
    finally:
        session.close()
    text = EXAMPLE.read_text()
    config = tmp_path / "hpc-only.yaml"
    config.write_text(text[:text.index("  cloud:")])
    plan = tmp_path / "plan.json"
    made = aihow("plan", str(config), "--host", host.uri, "-o", str(plan))
    assert made.returncode == 0, made.stderr
    data = json.loads(plan.read_text())
    deletes = {a["address"] for a in data["actions"] if a["action"] == "delete"}
    for name in ("k8s-control-plane", "k8s-cpu-worker-01", "k8s-cpu-worker-02"):
        assert f"domain[{name}]" in deletes
        assert f"domain[{name}].running" in deletes  # shut down first: it runs
    assert "domain[by-hand]" not in deletes  # never undefined ...
    [note] = data["notes"]  # ... but named
    assert note["code"] == "domain-left-alone" and note["subject"] == "domain[by-hand]"
    assert "Note [domain-left-alone] domain[by-hand]: not defined by aihow" in made.stdout
    assert data["summary"]["delete"] == 18 and data["summary"]["create"] == 0

    done = aihow("apply", str(plan), "--auto-approve", "--restart-running-vms")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "warning" not in done.stderr
    names = {d.name for d in host.probe().domains}
    assert not {n for n in names if n.startswith("k8s-")} and "by-hand" in names
    assert not any(o.startswith("k8s/") for o in _ledger_owners(host))
    again = aihow("plan", str(config), "--host", host.uri, "--detailed-exitcode")
    assert again.returncode == 0, again.stdout + again.stderr


def test_a_name_that_now_means_another_node_is_noted(tmp_path: Path) -> None:
    host = applied_example(tmp_path)
    text = EXAMPLE.read_text()
    node2 = text[text.index("      - cpu_cores: 8\n        memory_gb: 16\n        disk_gb: 100\n"
                            "        ip: \"192.168.100.12\""):
                 text.index("      - cpu_cores: 8\n        memory_gb: 16\n        disk_gb: 100\n"
                            "        ip: \"192.168.100.13\"")]
    config = tmp_path / "minus-node-2.yaml"
    config.write_text(text.replace(node2, ""))
    plan = tmp_path / "plan.json"
    made = aihow("plan", str(config), "--host", host.uri, "-o", str(plan))
    assert made.returncode == 0, made.stderr
    data = json.loads(plan.read_text())
    notes = {n["subject"]: n for n in data["notes"]}
    assert set(notes) == {"domain[hpc-compute-02]", "domain[hpc-compute-03]"}
    assert {n["code"] for n in notes.values()} == {"name-reused"}
    assert "with ip 192.168.100.12 (clusters.hpc.compute_nodes[1])" in \
        notes["domain[hpc-compute-02]"]["message"]
    assert "now gives this name to the node with ip 192.168.100.13" in \
        notes["domain[hpc-compute-02]"]["message"]
    assert "Note [name-reused] domain[hpc-compute-02]" in made.stdout
    # the last name is gone with its node: its domain and slice go
    assert any(a["address"] == "domain[hpc-compute-04]" and a["action"] == "delete"
               for a in data["actions"])
    done = aihow("apply", str(plan), "--auto-approve")
    assert done.returncode == 0, done.stdout + done.stderr


def test_defined_gpu_domains_carry_their_attachment_and_no_display(tmp_path: Path) -> None:
    host = applied_example(tmp_path)
    gpu_vm, cpu_vm = _xml(host, "hpc-compute-01"), _xml(host, "hpc-controller")
    assert gpu_vm.find("./devices/graphics") is None and gpu_vm.find("./devices/video") is None
    assert cpu_vm.find("./devices/graphics") is not None  # no GPU: VNC as ai-how has it
    hostdev = gpu_vm.find("./devices/hostdev/source/address")
    assert hostdev is not None
    assert _meta(gpu_vm, "vgpu") == hostdev.get("uuid")
    assert _meta(gpu_vm, "mig-profile") == "1g.5gb"
    assert (_meta(gpu_vm, "gpu-instance") or "").startswith("gpu[0000:17:00.0].gi[1g.5gb@")
    assert (_meta(gpu_vm, "config"), _meta(gpu_vm, "ip"), _meta(gpu_vm, "role")) == \
        ("mig-workstation", "192.168.100.11", "compute")
    assert _meta(cpu_vm, "mig-profile") is None

    node1 = 'ip: "192.168.100.11"\n        gpu_config: {mode: mig, mig_profile: 1g.5gb}'
    config = tmp_path / "me.yaml"
    config.write_text(EXAMPLE.read_text().replace(node1, node1.replace("5gb}", "5gb+me}")))
    done = aihow("apply", str(config), "--host", host.uri, "--auto-approve",
                 "--restart-running-vms")  # hpc-compute-01 runs (auto_start)
    assert done.returncode == 0, done.stdout + done.stderr
    changed = _xml(host, "hpc-compute-01")
    assert _meta(changed, "mig-profile") == "1g.5gb+me"
    assert (_meta(changed, "gpu-instance") or "").startswith("gpu[0000:17:00.0].gi[1g.5gb+me@")
