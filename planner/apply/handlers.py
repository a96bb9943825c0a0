"""Action handlers: one per plan action ``kind``, kept in a registry so other layers
(vGPU devices, domains, hostdevs) plug their kinds into the same executor.

A handler moves one resource to one side of its action: ``ensure(ctx, action, "after")``
carries the action out, ``ensure(ctx, action, "before")`` is its inverse. Both are
idempotent (a resource already at the wanted side is left alone), which is what lets
``recover`` re-run them after a crash without knowing whether the last step landed.
``observe`` says which side a probed host is at, for recovery and for verification.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from planner.errors import AihowError
from planner.host.environment import Environment
from planner.host.state import HostState

Side = Literal["before", "after"]


class ActionLike(Protocol):
    """The fields of a plan action the executor and handlers use."""

    id: int
    address: str
    kind: str
    action: str  # create | delete | update | replace
    before: Any
    after: Any
    needs_reset: bool
    destructive: bool


class ActionFailed(AihowError):
    """One action (or its undo) could not be carried out; the message names the resource."""


@dataclass
class ApplyContext:
    """What handlers act through: the host's Environment, whose mutating ports open
    lazily (on first use) and are shared by the branch threads."""

    env: Environment
    allow_reset: bool = False
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
    def ensure(self, ctx: ApplyContext, action: ActionLike, side: Side) -> dict[str, Any]:
        """Bring the resource to ``side`` of the action; return facts for the journal."""
        ...

    def observe(self, host: HostState, action: ActionLike) -> Side | None:
        """Which side of the action ``host`` is at (None: neither)."""
        ...

    def inverse(self, action: ActionLike) -> str:
        """The undo in words, e.g. "delete GI 1g.5gb@0"."""
        ...

    def preflight(self, host: HostState, action: ActionLike, ctx: ApplyContext) -> list[str]:
        """Problems that forbid starting the apply at all (empty when none)."""
        ...


_REGISTRY: dict[str, ActionHandler] = {}

# Modules whose import registers handlers. The VM layer appends its module name here
# (or calls ``register`` itself before apply runs).
HANDLER_MODULES: list[str] = ["planner.apply.mig_handlers", "planner.vm.handlers"]


def register(kind: str, handler: ActionHandler) -> None:
    _REGISTRY[kind] = handler


def load_handlers() -> dict[str, ActionHandler]:
    import importlib
    import importlib.util

    for module in HANDLER_MODULES:
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module)
    return dict(_REGISTRY)


def handler_for(action: ActionLike) -> ActionHandler:
    handler = _REGISTRY.get(action.kind)
    if handler is None:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise AihowError(
            f"{action.address}: no apply handler for action kind {action.kind!r} "
            f"(known kinds: {known})"
        )
    return handler


def side_present(action: ActionLike, side: Side) -> bool:
    """Whether the resource exists on that side of the action (absent is None or {})."""
    value = side_value(action, side)
    return value is not None and value != {}


def side_for_presence(action: ActionLike, present: bool) -> Side | None:
    """The side of the action at which the resource's existence is ``present``, if any."""
    if side_present(action, "after") == present:
        return "after"
    if side_present(action, "before") == present:
        return "before"
    return None


def side_value(action: ActionLike, side: Side) -> Any:
    """The resource's state on one side of the action. A ``replace`` step runs after the
    ``delete`` step at the same address took the old resource away, so its own "before"
    is "absent": doing it creates the new resource, undoing it removes that again (and the
    delete step's undo brings the old one back)."""
    if side == "before":
        return None if action.action == "replace" else action.before
    return action.after
