"""Open NVML sessions on a simulated host, marked by flocks on its directory: what the
simulated tools that need every NVML client closed (a GPU reset, sriov-manage) look at.
Its own module so that the simulated sriov-manage, started once per call, does not load
the fake NVML library to ask."""

from __future__ import annotations

import fcntl
import os

__all__ = ["nvml_session", "other_sessions_open"]


def nvml_session(root: str) -> int:
    """Mark an open NVML session: a shared flock on DIR, held until nvmlShutdown brings the
    count to zero (or the process ends). A GPU reset fails while any other session is open
    (nvidia-smi(1) counts monitoring clients; mig-parted closes NVML first; whether an idle
    session alone blocks is ASSUMED: vgpu-on-mig.md section 6). Opening a directory
    creates nothing, so reading a host still leaves it byte-identical."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_SH)
    return fd


def other_sessions_open(root: str) -> bool:
    """Whether an NVML session other than the caller's (closed first) is open."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
