"""Give a simulated host the base images a config's VMs are overlays of (empty files:
libvirt's test driver never reads them), as a host where ai-how's images were built."""

from __future__ import annotations

from pathlib import Path


def give_base_images(sim_dir: Path, config: Path) -> None:
    from planner.config import expand_vms, load_config

    for vm in expand_vms(load_config(config)):
        if vm.base_image_path:
            p = Path(vm.base_image_path)
            image = sim_dir / (p.relative_to("/") if p.is_absolute() else p)
            image.parent.mkdir(parents=True, exist_ok=True)
            image.touch()
