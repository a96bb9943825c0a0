"""Who holds a GPU open, read from ``proc/<pid>/fd`` under a root (``/`` or a simulated
host's DIR), as ``fuser /dev/nvidia*`` finds them.

NVML lists compute processes only; services such as nvidia-persistenced, DCGM or the
fabric manager hold ``/dev/nvidia<minor>`` open too, and they block a GPU reset and keep
an Ampere MIG-mode change pending. Processes whose fds cannot be read (not root) are
skipped: the probe reports what it can see.
"""

from __future__ import annotations

import os
from pathlib import Path


def process_name(root: Path, pid: int) -> str | None:
    """argv[0] as /proc/<pid>/cmdline has it (what nvidia-smi shows), else ``comm``."""
    base = root / "proc" / str(pid)
    try:
        argv0 = (base / "cmdline").read_bytes().split(b"\0", 1)[0].decode("utf-8", "replace")
        if argv0:
            return argv0
        return (base / "comm").read_text().strip() or None
    except OSError:
        return None


def device_holders(root: Path, minors: dict[int, str]) -> dict[str, set[int]]:
    """``pci -> pids`` with ``/dev/nvidia<minor>`` open, for the GPUs in ``minors``."""
    wanted = {f"/dev/nvidia{minor}": pci for minor, pci in minors.items()}
    found: dict[str, set[int]] = {pci: set() for pci in minors.values()}
    proc = root / "proc"
    try:
        entries = os.listdir(proc)
    except OSError:
        return found
    for entry in entries:
        if not entry.isdigit():
            continue
        fd_dir = proc / entry / "fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue  # gone, or not ours to read
        for fd in fds:
            try:
                target = os.readlink(fd_dir / fd)
            except OSError:
                continue
            pci = wanted.get(target)
            if pci is not None:
                found[pci].add(int(entry))
    return found
