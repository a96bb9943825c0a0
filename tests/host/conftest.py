from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from planner.sim.host import GpuSpec, HostSpec, init_host


@pytest.fixture
def make_host(tmp_path: Path) -> Callable[..., Path]:
    """make_host(GpuSpec(...), ..., vgpu=None) -> a fresh simulated host's DIR."""
    counter = iter(range(1000))

    def make(*gpus: GpuSpec, vgpu: str | None = None) -> Path:
        root = tmp_path / f"host{next(counter)}"
        init_host(root, HostSpec(gpus=gpus, vgpu=vgpu))
        return root

    return make
