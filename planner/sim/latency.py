"""An optional latency model for the simulated host: how long each changing operation
takes, so a benchmark can measure an apply's makespan (``aihow sim init … --latency
realistic``).

The model is ``DIR/latency.json`` (operation name → seconds, the names ``aihow sim fail
--list`` shows); without it every operation returns at once, as before. A modelled
duration is the whole operation's: the simulator's own work for it (its state
transaction, the sysfs it renders) counts toward it and only the rest is slept, after
that work and outside the simulator's state lock, so independent GPUs overlap as they do
on a real host, two operations on one GPU each take their own time, and the time an
operation takes does not depend on how fast the simulator renders it. No NVIDIA document
states these durations: every figure below is ASSUMED, chosen for its order of
magnitude (what an operator sees: seconds for anything that resets a GPU or creates
PCI functions, tenths of a second for a MIG instance, hundredths for a libvirt
definition). Change them by editing ``latency.json``.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from planner.sim.state import SimError

LATENCY_FILE = "latency.json"

PROFILES: dict[str, dict[str, float]] = {
    "none": {},
    "realistic": {
        # ASSUMED: a MIG mode change; where the driver resets the GPU itself (Hopper and
        # later) this includes the reset, which takes seconds.
        "nvmlDeviceSetMigMode": 2.0,
        # ASSUMED: an explicit GPU reset (nvidia-smi -r), seconds.
        "nvidia-smi.gpu-reset": 3.0,
        # ASSUMED: GPU instance create/destroy, a few tenths of a second each.
        "nvmlDeviceCreateGpuInstance": 0.3,
        "nvmlDeviceCreateGpuInstanceWithPlacement": 0.3,
        "nvmlGpuInstanceDestroy": 0.2,
        # ASSUMED: compute instance create/destroy, faster than a GPU instance.
        "nvmlGpuInstanceCreateComputeInstance": 0.15,
        "nvmlGpuInstanceCreateComputeInstanceWithPlacement": 0.15,
        "nvmlComputeInstanceDestroy": 0.1,
        # ASSUMED: sriov-manage enabling SR-IOV VFs (the PF is unbound and rebound and
        # the kernel probes every new PCI function).
        "sriov-manage": 1.0,
        # ASSUMED: an mdev create/remove or a VF's vGPU type.
        "sysfs.mdev_create": 0.2,
        "sysfs.mdev_remove": 0.1,
        "sysfs.current_vgpu_type": 0.2,
        # ASSUMED: libvirt changes to a domain's persistent definition.
        "virDomainDefineXML": 0.05,
        "virDomainUndefine": 0.03,
        "virDomainAttachDeviceFlags": 0.05,
        "virDomainDetachDeviceFlags": 0.05,
    },
}

_cache: dict[str, tuple[tuple[int, int], dict[str, float]]] = {}
_cache_lock = threading.Lock()


def write_model(root: str | os.PathLike[str], name: str) -> None:
    """Install the named profile in a simulated host (``none`` removes the model)."""
    if name not in PROFILES:
        raise SimError(f"--latency {name!r}: expected one of {', '.join(PROFILES)}")
    path = Path(root) / LATENCY_FILE
    if not PROFILES[name]:
        path.unlink(missing_ok=True)
        return
    tmp = path.with_name(f".{LATENCY_FILE}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(PROFILES[name], indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def model(root: str | os.PathLike[str]) -> dict[str, float]:
    """The host's latency model (empty: none), re-read only when the file changes."""
    path = os.path.join(os.fspath(root), LATENCY_FILE)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return {}
    stamp = (st.st_mtime_ns, st.st_size)
    with _cache_lock:
        hit = _cache.get(path)
        if hit is not None and hit[0] == stamp:
            return hit[1]
    try:
        raw = json.loads(Path(path).read_text())
        table = {str(k): float(v) for k, v in raw.items()}
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise SimError(f"{path}: not a latency model (operation -> seconds): {exc}") from None
    with _cache_lock:
        _cache[path] = (stamp, table)
    return table


@contextlib.contextmanager
def lasting(root: str | os.PathLike[str], op: str, since: float | None = None
            ) -> Iterator[None]:
    """Make the body, the simulator's work for ``op``, last as long as the model says
    ``op`` takes (nothing without a model): the rest of that time is slept after the body,
    so outside any lock the body took, and a body slower than the model adds nothing.
    A failing body takes its time too, as a failing operation does. ``since``: when the
    operation began, if before the body (``time.monotonic()``; a tool's own start)."""
    seconds = model(root).get(op, 0.0)
    start = time.monotonic() if since is None else since
    try:
        yield
    finally:
        left = seconds - (time.monotonic() - start)
        if left > 0:
            time.sleep(left)
