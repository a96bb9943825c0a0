"""When each step of a plan may start: dependency-driven, serialised only where the
host serialises.

A step may start as soon as every step it ``depends_on`` has finished. Beyond that only
what the host itself serialises stays serial, in plan order:

- every step on one GPU (MIG mode, GPU and compute instances, SR-IOV VFs, vGPU
  devices): the driver takes one GPU's operations one at a time, and a GPU's steps rely
  on plan order among themselves (its deletes before its creations);
- every step on one libvirt domain (its define or undefine and its hostdevs): libvirt
  runs one job at a time on a domain.

Nothing else waits: GPUs run side by side, and so do domains, whatever the plan's
``branch`` says (the branch is for reading a plan; the ``host`` branch holding every
domain is not a lock). Pure code: the executor asks ``ready()``, marks what it started and
what finished, and runs the steps in its threads.
"""

from __future__ import annotations

from collections.abc import Sequence

from planner.apply.steps import Step
from planner.vocab import Kind

# Kinds whose steps act through libvirt on one domain; every other kind acts on one GPU.
_DOMAIN_KINDS = (Kind.DOMAIN, Kind.HOSTDEV)


def serial_key(step: Step) -> str:
    """The queue a step waits in: its domain for libvirt steps, else its GPU."""
    if step.kind in _DOMAIN_KINDS:
        return f"domain:{step.address.domain_name}"
    return f"gpu:{step.branch}"


class Schedule:
    """The state of one run: which steps are done, running, or waiting. Each call costs
    about what it changes (no scan of every queue), so a plan of thousands of GPUs
    schedules in linear time."""

    def __init__(self, steps: Sequence[Step], *, parallel: bool = True) -> None:
        self._steps = list(steps)
        self._parallel = parallel
        self._keys = [serial_key(s) for s in self._steps]
        index_of = {s.id: i for i, s in enumerate(self._steps)}
        # Dependencies on steps that are not in the run (no-op changes) are met already.
        self._waiting_on = [{index_of[d] for d in s.depends_on if d in index_of}
                            for s in self._steps]
        self._dependants: list[list[int]] = [[] for _ in self._steps]
        for i, deps in enumerate(self._waiting_on):
            for d in deps:
                self._dependants[d].append(i)
        self._queues: dict[str, list[int]] = {}
        for i, key in enumerate(self._keys):
            self._queues.setdefault(key, []).append(i)
        self._head = dict.fromkeys(self._queues, 0)  # position of each queue's next step
        self._busy: set[str] = set()
        self._running: set[int] = set()
        self._ready: set[int] = {q[0] for q in self._queues.values() if not self._waiting_on[q[0]]}
        self._left = len(self._steps)

    @property
    def queues(self) -> int:
        """How many queues (GPUs and domains) there are: the most steps that can run at once."""
        return len(self._queues)

    def ready(self) -> list[int]:
        """Indexes of the steps that may start now, in plan order (one at a time, in plan
        order, when not parallel)."""
        if not self._parallel:
            return [min(self._ready)] if self._ready and not self._running else []
        return sorted(self._ready)

    def start(self, index: int) -> None:
        key = self._keys[index]
        assert index in self._ready, "only a ready step starts"
        self._ready.discard(index)
        self._busy.add(key)
        self._head[key] += 1
        self._running.add(index)

    def finish(self, index: int) -> None:
        """Mark a started step finished (whether it succeeded is the executor's business:
        after a failure it starts nothing more)."""
        key = self._keys[index]
        self._running.discard(index)
        self._busy.discard(key)
        self._left -= 1
        for j in self._dependants[index]:
            self._waiting_on[j].discard(index)
            self._check(j)
        queue = self._queues[key]
        if self._head[key] < len(queue):
            self._check(queue[self._head[key]])

    def _check(self, i: int) -> None:
        key = self._keys[i]
        queue = self._queues[key]
        if (key not in self._busy and self._head[key] < len(queue)
                and queue[self._head[key]] == i and not self._waiting_on[i]):
            self._ready.add(i)

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def done(self) -> bool:
        return self._left == 0


def chains(steps: Sequence[Step]) -> dict[str, list[int]]:
    """Each queue's steps in plan order (for benchmarks and messages)."""
    out: dict[str, list[int]] = {}
    for i, s in enumerate(steps):
        out.setdefault(serial_key(s), []).append(i)
    return out
