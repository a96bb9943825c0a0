"""Give a simulated host the base images a config's VMs are overlays of (empty files:
libvirt's test driver never reads them), as a host where ai-how's images were built."""

from __future__ import annotations

from pathlib import Path


def give_base_images(sim_dir: Path, config: Path) -> None:
    from planner.cli.host_opts import open_environment
    from planner.config import expand_vms, load_config

    env = open_environment(f"sim:{sim_dir}")
    for vm in expand_vms(load_config(config)):
        if vm.base_image_path:
            image = env.host_path(vm.base_image_path)  # where plan-making looks for it
            image.parent.mkdir(parents=True, exist_ok=True)
            image.touch()
