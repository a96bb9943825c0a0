"""What an action handler is and what it acts through: the ``ActionHandler`` protocol,
the ``ApplyContext`` and ``ActionFailed``. The handlers themselves live beside this
module (``mig_handlers``, ``vgpu_handlers``, ``domain_handlers``); ``handler_table``
maps each resource ``Kind`` to one of them.

A handler moves one resource to one side of a step (``planner.apply.steps``):
``ensure(ctx, step, "after")`` carries the step out, ``ensure(ctx, step, "before")`` is
its inverse. Both are idempotent (a resource already at the wanted side is left alone),
which is what lets ``recover`` re-run them after a crash without knowing whether the
last step landed. ``matches`` says whether a probed host has the resource in a given
state (the kind's attribute model, or None for absent): verification asks it once per
change, for the change's ``after``; ``handler_table.observe`` derives a step's side from it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from planner.apply.steps import Side, Step
from planner.errors import AihowError
from planner.host.environment import Environment
from planner.host.libvirt_objects import DEFAULT_SHUTDOWN_TIMEOUT
from planner.host.state import HostState
from planner.vocab import Address, Attrs, AttrsError, attrs_as
from planner.vocab.plan import Change

__all__ = ["ActionFailed", "ActionHandler", "ApplyContext", "Side", "Step", "step_state"]


class ActionFailed(AihowError):
    """One action (or its undo) could not be carried out; the message names the resource."""


@dataclass
class ApplyContext:
    """What handlers act through: the host's Environment, whose mutating ports open
    lazily (on first use) and are shared by the branch threads."""

    env: Environment
    allow_reset: bool = False
    restart_running_vms: bool = False  # the plan's steps may shut running domains down
    # Seconds a guest gets to shut down (ACPI) before it is destroyed.
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT
    # What each step's "do" returned, by step id (filled as steps finish, and by recover
    # from the journal): an undo that must put back what the step found reads it here.
    done: dict[int, dict[str, Any]] = field(default_factory=dict)
    _opened: dict[str, Any] = field(default_factory=dict)
    _closers: list[Callable[[], None]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def host_uri(self) -> str:
        return self.env.host_uri

    def adapter(self, name: str) -> Any:
        """The port ``name`` ("nvml", "sysfs", "libvirt", "mdev_store"), opened on first
        use."""
        with self._lock:
            if name not in self._opened:
                opener = _PORTS.get(name)
                if opener is None:
                    raise AihowError(f"{self.host_uri}: no {name} adapter for this host")
                value = opener(self.env)
                self._opened[name] = value
                close = getattr(value, "close", None)
                if callable(close):
                    self._closers.append(close)
            return self._opened[name]

    def close(self) -> None:
        with self._lock:
            while self._closers:
                self._closers.pop()()
            self._opened.clear()


# The Environment's mutating ports, by the name handlers ask for.
_PORTS: dict[str, Callable[[Environment], Any]] = {
    "nvml": lambda env: env.nvml(),
    "sysfs": lambda env: env.sysfs(),
    "libvirt": lambda env: env.libvirt(),
    "mdev_store": lambda env: env.mdev_store(),
}


class ActionHandler(Protocol):
    def ensure(self, ctx: ApplyContext, step: Step, side: Side) -> dict[str, Any]:
        """Bring the resource to ``step.state(side)``; return facts for the journal."""
        ...

    def matches(self, host: HostState, address: Address, state: Attrs | None) -> bool:
        """Whether ``host`` has the resource in ``state`` (None: absent)."""
        ...

    def inverse(self, step: Step) -> str:
        """The undo in words, e.g. "delete GI 1g.5gb@0"."""
        ...

    def preflight(self, host: HostState, change: Change, ctx: ApplyContext) -> list[str]:
        """Problems that forbid starting the apply at all (empty when none)."""
        ...


A = TypeVar("A", bound=Attrs)


def step_state(step: Step, side: Side, model: type[A]) -> A | None:
    """The step's state on ``side`` as the kind's model (None: absent); ActionFailed when
    the plan holds something else there."""
    try:
        return attrs_as(step.state(side), model, str(step.address))
    except AttrsError as exc:
        raise ActionFailed(str(exc)) from None
