from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from planner.sim.fake_nvml import FakeNvml
from planner.sim.host import GpuSpec


@pytest.fixture
def a100(make_host: Callable[..., Path]) -> Path:
    return make_host(GpuSpec("a100-40gb", "0000:17:00.0", mig=True, gi_ids="identity"))


@pytest.fixture
def nvml(a100: Path) -> FakeNvml:
    n = FakeNvml(a100)
    n.nvmlInit()
    return n
