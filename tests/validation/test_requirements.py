"""What a config asks of the host, read from real config files through the config loader."""

from __future__ import annotations

from pathlib import Path

from planner.config import load_config
from planner.host.validation import requirements_from_config

REPO = Path(__file__).resolve().parents[2]


def test_example_mig_cluster() -> None:
    req = requirements_from_config(load_config(REPO / "config/example-mig-cluster.yaml"))
    assert [str(g.selector) for g in req.gpus] == ["0000:17:00.0"]
    assert req.gpus[0].mig and req.gpus[0].where == "global.gpus[0]"
    assert [r.profile for r in req.mig] == ["1g.5gb"] * 7
    assert all(r.selector is None and r.mig_uuid is None for r in req.mig)
    assert req.vgpu_backend == "mdev" and req.passthrough == ()
    assert "hpc-compute-01" in req.vm_names and "k8s-cpu-worker-03" in req.vm_names


def test_vfio_vf_backend_is_carried() -> None:
    req = requirements_from_config(load_config(REPO / "config/example-h100-vfio.yaml"))
    assert req.vgpu_backend == "vfio-vf"
    assert {r.profile for r in req.mig} == {"1g.10gb"}


def test_cloud_worker_passthrough_is_checked_too(tmp_path: Path) -> None:
    """ai-how's validator looked only at compute_nodes; cloud workers count here."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("""\
version: "1.0"
metadata: {name: t, description: t}
global: {}
clusters:
  cloud:
    name: k8s
    network: {subnet: "192.168.200.0/24", bridge: virbr200}
    control_plane: {cpu_cores: 2, memory_gb: 4, disk_gb: 20, ip_address: "192.168.200.10"}
    worker_nodes:
      - cpu_cores: 4
        memory_gb: 8
        disk_gb: 40
        ip: "192.168.200.11"
        pcie_passthrough:
          enabled: true
          devices:
            - {pci_address: "0000:41:00.0", device_type: gpu}
            - {pci_address: "41:00.1", device_type: audio}
    kubernetes_config: {cni: calico, ingress: nginx, storage_class: local-path}
""")
    req = requirements_from_config(load_config(cfg))
    assert [(d.vm, d.pci, d.device_type) for d in req.passthrough] == [
        ("k8s-gpu-worker-01", "0000:41:00.0", "gpu"),
        ("k8s-gpu-worker-01", "0000:41:00.1", "audio"),
    ]
