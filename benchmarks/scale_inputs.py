"""Inputs for the scale benchmarks: a simulated host spec and a cluster config with seven
1g.5gb slices (one VM each) per A100, for any number of GPUs."""

from __future__ import annotations


def pci_of(g: int) -> str:
    """One GPU per bus (its VFs follow on the same bus), 200 buses per PCI domain."""
    return f"{g // 200:04x}:{(g % 200) + 0x10:02x}:00.0"


def sim_spec(n_gpus: int, *, mig: bool = True, gi_ids: str | None = None) -> str:
    """TOML host spec: ``n_gpus`` A100-40GB GPUs with the mdev vGPU backend; ``gi_ids``
    fixes every GPU's GI id numbering (default: the simulator's, drawn per GPU)."""
    lines = ['[host]', 'driver = "580.82.07"', 'vgpu = "mdev"',
             'images = ["/var/lib/images/hpc.qcow2"]', ""]  # the config's base image
    for g in range(n_gpus):
        lines += ["[[gpu]]", 'model = "a100-40gb"', f'pci = "{pci_of(g)}"',
                  f'mig = "{"enabled" if mig else "disabled"}"']
        if gi_ids is not None:
            lines.append(f'gi_ids = "{gi_ids}"')
        lines.append("")
    return "\n".join(lines)


def cluster_config(n_gpus: int) -> str:
    """A config managing every A100, with 7 compute nodes per GPU (7 * n_gpus + 1 VMs)."""
    head = f"""\
version: "1.0"
metadata:
  name: "scale-{n_gpus}"
  description: "{7 * n_gpus} MIG-backed compute nodes on {n_gpus} A100s"
global:
  host:
    vgpu_backend: mdev
  gpus:
    - select: "model=*A100*"
      mig: enabled
clusters:
  hpc:
    name: "hpc"
    base_image_path: "/var/lib/images/hpc.qcow2"
    network:
      subnet: "10.20.0.0/16"
      bridge: "virbr100"
    hardware:
      acceleration:
        enable_kvm: true
    controller:
      cpu_cores: 2
      memory_gb: 4
      disk_gb: 20
      ip_address: "10.20.0.10"
    compute_nodes:
"""
    nodes = []
    for k in range(7 * n_gpus):
        host = k + 11
        nodes.append(f"""\
      - cpu_cores: 2
        memory_gb: 4
        disk_gb: 20
        ip: "10.20.{host >> 8}.{host & 255}"
        gpu_config: {{mode: mig, mig_profile: 1g.5gb}}
""")
    tail = """\
    slurm_config:
      partitions: ["gpu"]
      default_partition: "gpu"
      max_job_time: "24:00:00"
"""
    return head + "".join(nodes) + tail


def populate(sim_dir: str, *, vgpus: bool = True) -> None:
    """Give every GPU of a simulated host seven 1g.5gb GPU instances with a compute
    instance each and (``vgpus``) seven VFs with an mdev each, as an apply of
    ``cluster_config`` leaves it, in one transaction through the simulator's own rules."""
    from planner.sim import driver, vgpu
    from planner.sim.state import SimMdev, SimStore

    store = SimStore(sim_dir)
    with store.transaction() as state:
        for gpu in state.gpus:
            profile = next(p for p in driver.offered_gi_profiles(state, gpu)
                           if p.name == "1g.5gb")
            for start in range(7):
                gi = driver.create_gi(state, gpu, profile.id, (start, 1))
                cp = driver.ci_profiles(state, gpu, gi)[0]
                driver.create_ci(state, gpu, gi, cp.id, None)
            if not vgpus:
                continue
            gpu.num_vfs = 7
            vtype = next(t for t in vgpu.vgpu_types(state, gpu) if t.profile.id == profile.id)
            for k, vf in enumerate(vgpu.vfs(gpu)):
                gi = vgpu.backing_gi(state, gpu, vtype)
                assert gi is not None
                state.mdevs.append(SimMdev(
                    uuid=f"{k:08x}-0000-4000-8000-{gpu.index:012x}", parent=vf,
                    type_id=vtype.mdev_id, gpu=gpu.pci, gi_serial=gi.serial))
