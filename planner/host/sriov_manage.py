"""NVIDIA's ``sriov-manage``: the only supported way to turn a GPU's SR-IOV VFs on or off.

The vGPU user guide says to use only this script (shipped with the vGPU manager at
``/usr/lib/nvidia/sriov-manage``) and no other means: ``-e`` enables the VFs of one GPU
(``domain:bus:slot.function``) or ``ALL``, ``-d`` disables them
(docs/reference/vgpu-on-mig.md section 4). Three behaviours shape the caller:

* it exits 0 without doing anything on a GPU without SR-IOV, so success is judged by the
  VFs being there afterwards, not by the exit status alone;
* it unbinds the PF from ``nvidia`` and fails ("Cannot obtain unbindLock") while an NVML
  client holds the GPU, so the caller closes its own NVML session around it and retries a
  little while for others;
* it wipes every GPU instance of the GPU (it unbinds and rebinds the PF; third-party
  observation, consistent with the script), which is why plans enable VFs before they
  create GPU instances.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable

from planner.host.errors import HostError
from planner.vocab import Address

DOCUMENTED_PATH = "/usr/lib/nvidia/sriov-manage"  # the vGPU guide's location
NAME = "sriov-manage"
# ASSUMED: unbinding, rebinding and binding every VF takes seconds; five minutes is stuck.
TIMEOUT_S = 300
UNBIND_LOCK = "unbindLock"  # in the script's message when another client holds the GPU
RETRIES = 3  # ASSUMED: another client (DCGM, a monitoring agent) lets go within seconds
RETRY_DELAY_S = 2.0


def locate(configured: str | None) -> str:
    """The sriov-manage to run: ``configured`` if it names a path, else the one on PATH,
    else the documented location; a clear error when there is none."""
    if configured and os.sep in configured:
        if os.access(configured, os.X_OK):
            return configured
        raise HostError(f"{configured}: no such executable (sriov-manage ships with NVIDIA's "
                        "vGPU manager, the host driver that offers vGPU types)")
    found = shutil.which(configured or NAME)
    if found:
        return found
    if os.access(DOCUMENTED_PATH, os.X_OK):
        return DOCUMENTED_PATH
    raise HostError(f"sriov-manage not found (looked on PATH and at {DOCUMENTED_PATH}): it "
                    "ships with NVIDIA's vGPU manager and is the only supported way to "
                    "enable SR-IOV VFs; install the vGPU host driver")


def run(tool: str, enable: bool, pf: str, *, timeout: float = TIMEOUT_S,
        sleep: Callable[[float], None] = time.sleep) -> None:
    """``sriov-manage -e|-d PF``; raises HostError (one line, naming the GPU) on failure.
    A refused unbind lock is retried ``RETRIES`` times."""
    flag = "-e" if enable else "-d"
    where = Address.gpu(pf).vfs()
    for attempt in range(RETRIES + 1):
        try:
            proc = subprocess.run([tool, flag, pf], capture_output=True, text=True,
                                  check=False, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise HostError(f"{where}: {tool} {flag} {pf} did not finish within "
                            f"{timeout:g} s") from None
        except OSError as err:
            raise HostError(f"{where}: cannot run {tool}: {err.strerror}") from err
        if proc.returncode == 0:
            return
        lines = [x.strip() for x in (proc.stdout + proc.stderr).splitlines() if x.strip()]
        detail = lines[-1] if lines else f"exit status {proc.returncode}"
        if any(UNBIND_LOCK in x for x in lines) and attempt < RETRIES:
            sleep(RETRY_DELAY_S)
            continue
        if any(UNBIND_LOCK in x for x in lines):
            detail += (" (another NVML client, such as DCGM or a monitoring agent, holds the "
                       "GPU; stop it and retry)")
        raise HostError(f"{where}: {tool} {flag} {pf} failed: {detail}")
