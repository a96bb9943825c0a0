from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from planner.sim.fake_nvml import FakeNvml
from planner.sim.host import GpuSpec, HostSpec, init_host


@pytest.fixture
def make_host(tmp_path: Path) -> Callable[..., Path]:
    """make_host(GpuSpec(...), ..., vgpu=None, driver=None) -> the simulated host's DIR."""
    counter = iter(range(1000))

    def make(*gpus: GpuSpec, vgpu: str | None = None, driver: str | None = None) -> Path:
        root = tmp_path / f"host{next(counter)}"
        spec = HostSpec(gpus=gpus, vgpu=vgpu)
        if driver:
            spec = HostSpec(gpus=gpus, vgpu=vgpu, driver=driver)
        init_host(root, spec)
        return root

    return make


@pytest.fixture
def a100(make_host: Callable[..., Path]) -> Path:
    return make_host(GpuSpec("a100-40gb", "0000:17:00.0", mig=True, gi_ids="identity"))


@pytest.fixture
def nvml(a100: Path) -> FakeNvml:
    n = FakeNvml(a100)
    n.nvmlInit()
    return n
