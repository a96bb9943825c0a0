"""The latency model: an operation lasts as long as modelled, the simulator's own work
included, and the time is slept after the work (outside the state lock)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from planner.sim import latency


class Clock:
    """A stand-in for ``time``: the body's work advances it, sleeps are recorded."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 6))
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Clock:
    (tmp_path / latency.LATENCY_FILE).write_text(json.dumps({"sriov-manage": 1.0}))
    c = Clock()
    monkeypatch.setattr(latency, "time", c)
    return c


def test_the_simulators_work_counts_toward_the_modelled_time(clock: Clock,
                                                             tmp_path: Path) -> None:
    with latency.lasting(tmp_path, "sriov-manage"):
        clock.now += 0.3  # rendering the new VFs
    assert clock.slept == [0.7]


def test_work_slower_than_the_model_adds_no_sleep(clock: Clock, tmp_path: Path) -> None:
    with latency.lasting(tmp_path, "sriov-manage"):
        clock.now += 1.5
    assert clock.slept == []


def test_a_failing_operation_takes_its_time_too(clock: Clock, tmp_path: Path) -> None:
    with pytest.raises(OSError), latency.lasting(tmp_path, "sriov-manage"):
        raise OSError("refused")
    assert clock.slept == [1.0]


def test_unmodelled_operations_and_hosts_without_a_model_do_not_sleep(
        clock: Clock, tmp_path: Path) -> None:
    with latency.lasting(tmp_path, "virDomainDefineXML"):
        pass
    (tmp_path / latency.LATENCY_FILE).unlink()
    with latency.lasting(tmp_path, "sriov-manage"):
        pass
    assert clock.slept == []


def test_a_tools_start_up_counts_toward_its_modelled_time(clock: Clock,
                                                          tmp_path: Path) -> None:
    """sriov-manage's modelled second is the whole command's: counted from when the tool
    started (``since``), its imports included."""
    started = clock.now
    clock.now += 0.2  # the interpreter and the imports
    with latency.lasting(tmp_path, "sriov-manage", since=started):
        clock.now += 0.3
    assert clock.slept == [0.5]
