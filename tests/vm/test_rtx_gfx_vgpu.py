"""RTX PRO 6000 on a simulated vendor-VFIO host: MIG-backed vGPU types run only on +gfx GPU
instances (docs/reference/vgpu-on-mig.md section 1.6). A node asking for 1g.24gb+gfx gets a
DC-1-24C vGPU on a +gfx instance; one asking for plain 1g.24gb is refused with the profile
it needs, before anything on the host changes."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from planner.apply.executor import ApplyInput, apply_plan
from planner.apply.state_dir import resolve_state_dir
from planner.cli.host_opts import open_environment
from planner.config import load_config
from planner.config.vms import expand_vms
from planner.errors import AihowError
from planner.hardware.catalog import get_model
from planner.host import libvirt_domains as ld
from planner.plan.make import make_plan
from planner.vm.vm_factory import VMSpec, render_domain_xml
from planner.vocab import Kind, VgpuAttrs
from planner.vocab.plan import Plan
from tests.vm.base_images import give_base_images

AIHOW = str(Path(sys.executable).with_name("aihow"))
GPU = "0000:65:00.0"
SPEC = f"""
[host]
driver = "580.82.07"
vgpu = "vfio-vf"

[[gpu]]
model = "rtx-pro-6000"
pci = "{GPU}"
mig = "disabled"
"""


def _config(profile: str) -> str:
    nodes = "".join(
        f"""
      - cpu_cores: 4
        memory_gb: 8
        disk_gb: 50
        ip: "192.168.100.{11 + k}"
        gpu_config: {{mode: mig, mig_profile: "{profile}"}}"""
        for k in range(2)
    )
    return f"""version: "1.0"
metadata: {{name: "rtx-lab", description: "two vGPU nodes on an RTX PRO 6000"}}
global:
  host: {{vgpu_backend: vfio-vf}}
  gpus:
    - select: "{GPU}"
      mig: enabled
clusters:
  hpc:
    name: "hpc"
    base_image_path: "build/packer/hpc-compute/hpc-compute/hpc-compute.qcow2"
    network: {{subnet: "192.168.100.0/24", bridge: "virbr100"}}
    controller: {{cpu_cores: 2, memory_gb: 4, disk_gb: 50, ip_address: "192.168.100.10"}}
    compute_nodes:{nodes}
    slurm_config: {{partitions: ["gpu"], default_partition: "gpu", max_job_time: "1:00:00"}}
"""


def _host(tmp_path: Path, profile: str) -> tuple[str, Path]:
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    res = subprocess.run([AIHOW, "sim", "init", str(tmp_path / "sim"), "--spec", str(spec)],
                         capture_output=True, text=True, check=False, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    config = tmp_path / "cluster.yaml"
    config.write_text(_config(profile))
    give_base_images(tmp_path / "sim", config)
    uri = f"sim:{tmp_path / 'sim'}"
    # the domains exist beforehand, as ai-how creates them
    with open_environment(uri).libvirt() as s:
        for decl in expand_vms(load_config(config)):
            ld.define(s.conn, render_domain_xml(VMSpec.from_decl(decl)))
        s.commit()
    return uri, config


def _plan(uri: str, config: Path) -> Plan:
    return make_plan(load_config(config), open_environment(uri).probe(), config_path=str(config),
                     config_sha256=hashlib.sha256(config.read_bytes()).hexdigest(),
                     host_uri=uri)


def test_gfx_nodes_get_dc_types_on_gfx_instances(tmp_path: Path) -> None:
    uri, config = _host(tmp_path, "1g.24gb+gfx")
    plan = _plan(uri, config)
    result = apply_plan(
        ApplyInput(plan, plan.to_json(), load_config(config), config.read_text(), str(config),
                   allow_reset=True),
        open_environment(uri), resolve_state_dir(open_environment(uri).state_dir()))
    assert result.outcome == "applied", result.failed
    state = open_environment(uri).probe()
    rtx = get_model("rtx-pro-6000")
    gis = {gi.gi_id: gi for g in state.gpus for gi in g.gpu_instances}
    assigned = [p for p in state.vgpu_parents if p.current_type]
    assert len(assigned) == 2
    for vf in assigned:
        assert vf.gi_id in gis
        profile = rtx.profile_by_id(gis[vf.gi_id].profile_id)
        assert profile is not None and profile.name == "1g.24gb+gfx" and profile.id == 47
    names = {c.after.type_name for c in plan.changes
             if c.kind == Kind.VGPU and isinstance(c.after, VgpuAttrs)}
    assert {n.split()[-1] for n in names if n} == {"DC-1-24C"}


def test_a_plain_instance_is_refused_naming_the_gfx_profile(tmp_path: Path) -> None:
    uri, config = _host(tmp_path, "1g.24gb")
    before = open_environment(uri).probe()
    with pytest.raises(AihowError) as err:
        _plan(uri, config)
    message = str(err.value)
    assert "1g.24gb" in message and "ask for 1g.24gb+gfx" in message, message
    assert "\n" not in message
    assert open_environment(uri).probe() == before
