"""Fixtures every test directory shares. Plain helpers (the CLI runner) are in
``tests/clirun.py``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from planner.sim.host import DEFAULT_DRIVER, GpuSpec, HostSpec, init_host


@pytest.fixture
def make_host(tmp_path: Path) -> Callable[..., Path]:
    """make_host(GpuSpec(...), ..., vgpu=None, driver=None) -> a fresh simulated host's
    DIR (``sim:DIR``), each call a new one under the test's tmp_path. It holds the base
    image of ``tests/apply/simhost.py``'s configs."""
    from tests.apply.simhost import IMAGE

    counter = iter(range(1000))

    def make(*gpus: GpuSpec, vgpu: str | None = None, driver: str | None = None) -> Path:
        root = tmp_path / f"host{next(counter)}"
        init_host(root, HostSpec(gpus=gpus, vgpu=vgpu, driver=driver or DEFAULT_DRIVER,
                                 images=(IMAGE,)))
        return root

    return make
