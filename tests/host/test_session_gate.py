"""The NVML session gate (``planner.host.nvml._SessionGate``): tools that need NVML closed
(sriov-manage, a GPU reset) are not kept waiting by a stream of calls, the tools waiting at
one time share one closed window, and they never run two at once."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from planner.host.nvml import _SessionGate


class Counts:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.closes = 0
        self.reopens = 0
        self.session_open = True
        self.tools_now = 0
        self.most_tools = 0
        self.log: list[str] = []

    def close(self) -> None:
        self.closes += 1
        self.session_open = False

    def reopen(self) -> None:
        self.reopens += 1
        self.session_open = True

    def tool(self, name: str, seconds: float = 0.05) -> Callable[[], None]:
        def run() -> None:
            with self.lock:
                assert not self.session_open, "a tool ran with the session open"
                self.tools_now += 1
                self.most_tools = max(self.most_tools, self.tools_now)
                self.log.append(name)
            time.sleep(seconds)
            with self.lock:
                self.tools_now -= 1
        return run


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out waiting"
        time.sleep(0.005)


def start(fn: Callable[[], None]) -> threading.Thread:
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    return t


def run_tool(gate: _SessionGate, c: Counts, run: Callable[[], None]) -> Callable[[], None]:
    def body() -> None:
        with gate.exclusive(c.close, c.reopen):
            run()
    return body


def test_tools_waiting_together_share_one_window_one_at_a_time() -> None:
    c = Counts()
    gate = _SessionGate()
    release = threading.Event()

    def call_in_flight() -> None:
        with gate.shared():
            release.wait(5)

    caller = start(call_in_flight)
    wait_for(lambda: gate._users == 1)
    tools = [start(run_tool(gate, c, c.tool(f"t{i}"))) for i in range(4)]
    wait_for(lambda: gate._tools_waiting == 4)
    assert c.closes == 0, "a tool started while a call was in flight"
    release.set()
    for t in [caller, *tools]:
        t.join(5)
    assert sorted(c.log) == ["t0", "t1", "t2", "t3"]
    assert (c.closes, c.reopens) == (1, 1)
    assert c.most_tools == 1
    assert c.session_open


def test_a_waiting_tool_keeps_new_calls_out_but_not_nested_ones() -> None:
    c = Counts()
    gate = _SessionGate()
    events: list[str] = []
    inside = threading.Event()
    go_on = threading.Event()

    def long_call() -> None:
        with gate.shared():
            inside.set()
            go_on.wait(5)
            with gate.shared():  # a method calling another: must not wait for the tool
                events.append("nested")

    def new_call() -> None:
        with gate.shared():
            events.append("new call")

    caller = start(long_call)
    inside.wait(5)
    tool = start(run_tool(gate, c, lambda: events.append("tool")))
    wait_for(lambda: gate._tools_waiting == 1)
    late = start(new_call)
    time.sleep(0.05)
    assert events == []  # the new call waits behind the tool
    go_on.set()
    for t in (caller, tool, late):
        t.join(5)
    assert events == ["nested", "tool", "new call"]


def test_tools_at_different_times_each_get_their_window() -> None:
    c = Counts()
    gate = _SessionGate()
    for i in range(3):
        with gate.exclusive(c.close, c.reopen):
            c.tool(f"t{i}", 0)()
        with gate.shared():
            assert c.session_open
    assert (c.closes, c.reopens) == (3, 3)


def test_a_failing_tool_leaves_the_session_open_again() -> None:
    c = Counts()
    gate = _SessionGate()
    try:
        with gate.exclusive(c.close, c.reopen):
            raise RuntimeError("sriov-manage failed")
    except RuntimeError:
        pass
    assert (c.closes, c.reopens) == (1, 1) and c.session_open
    with gate.shared():  # and calls go on
        pass
