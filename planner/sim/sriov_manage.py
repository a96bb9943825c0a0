"""The simulated host's ``DIR/bin/sriov-manage``: NVIDIA's script that turns a GPU's SR-IOV
VFs on (``-e``) or off (``-d``), for one GPU (``domain:bus:slot.function``) or ``ALL``.

What it does here, with where each behaviour comes from (docs/reference/vgpu-on-mig.md
section 4; [SRIOV-SCRIPT] is a stored, older copy of NVIDIA's script, [CUBE-SRC] a third
party's observations on real hosts):

* ``-h`` prints the usage; bad arguments print it and exit 1 ([SRIOV-SCRIPT]).
* an address that is no NVIDIA GPU: exit 1 ([SRIOV-SCRIPT]); a GPU without SR-IOV (a
  simulated host without a vGPU backend): exit 0, nothing done ([SRIOV-SCRIPT]);
* VFs already on with ``-e`` (or off with ``-d``): says so, exit 0 ([SRIOV-SCRIPT],
  [CUBE-SRC]);
* another NVML client open on the host: "Cannot obtain unbindLock for BDF", exit 1
  ([SRIOV-SCRIPT] message; [CUBE-SRC] saw it while DCGM held the GPU);
* ``-d`` while a VF holds a vGPU: refused, exit 1 (ASSUMED: the script unbinds VFs that a
  VM uses);
* enabling or disabling VFs wipes every GPU and compute instance of the GPU (the script
  unbinds and rebinds the PF; [CUBE-SRC] and Harvester observed it; not documented by
  NVIDIA), MIG mode stays;
* ``ALL``: every GPU in turn, stopping at the first failure ([SRIOV-SCRIPT]).

The message texts are ASSUMED (close to the script's). Not modelled: persistence mode,
which the script turns on. The kernel refuses a direct ``sriov_numvfs`` write
(``planner.sim.kernel``), so nothing else can turn VFs on.
"""

from __future__ import annotations

import time

# When the tool started, before its imports: the modelled time of ``sriov-manage`` is the
# whole command's, the simulator's start-up included (``latency.lasting``).
STARTED = time.monotonic()

import errno  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402

from planner.lang.pci import normalize_pci  # noqa: E402
from planner.sim import driver, faults, latency, vgpu  # noqa: E402
from planner.sim.nvml_sessions import other_sessions_open  # noqa: E402
from planner.sim.state import SimGpu, SimStore  # noqa: E402

USAGE = """Usage: sriov-manage <-e|-d> <ssss:bb:dd.f|ALL>
  -e  enable the SR-IOV virtual functions of the GPU (or of ALL NVIDIA GPUs)
  -d  disable them
  -h  print this help"""
OP = "sriov-manage"  # its fault and latency name


class Failed(Exception):
    """The script stops: message to print, exit status 1."""


def _one(root: str, gpu_pci: str, enable: bool, out: list[str],
         since: float | None = None) -> None:
    store = SimStore(root)
    with latency.lasting(store.root, OP, since):
        _change(store, gpu_pci, enable, out)


def _change(store: SimStore, gpu_pci: str, enable: bool, out: list[str]) -> None:
    busy = other_sessions_open(str(store.root))
    with store.transaction(commit_on=(Failed,)) as state:
        fault = faults.trip(state, OP)
        gpu = state.gpu(gpu_pci)
        if gpu is None:
            raise Failed(f"{gpu_pci} is not an NVIDIA GPU")
        if fault is not None:
            code = getattr(errno, fault.error)
            raise Failed(f"Failed to {'enable' if enable else 'disable'} VFs on {gpu_pci}: "
                         f"{os.strerror(code)}")
        if state.vgpu_backend is None:
            out.append(f"GPU at {gpu_pci} does not support vGPU SR-IOV; nothing to do")
            return
        if bool(gpu.num_vfs) == enable:
            out.append(f"GPU at {gpu_pci} already has VFs {'enabled' if enable else 'disabled'}")
            return
        if not enable:  # the VFs are unbound first, then the PF
            used = [vf for vf in vgpu.vfs(gpu) if vgpu.vf_busy(state, gpu, vf)]
            if used:
                raise Failed(f"Cannot disable VFs on {gpu_pci}: {used[0]} holds a vGPU")
        if busy:
            raise Failed(f"Cannot obtain unbindLock for {gpu_pci}")
        _wipe_instances(gpu)
        gpu.num_vfs = vgpu.total_vfs(driver.model_of(gpu)) if enable else 0
        gpu.vf_vgpus.clear()
        out.append(f"{'Enabling' if enable else 'Disabling'} VFs on {gpu_pci}")


def _wipe_instances(gpu: SimGpu) -> None:
    """The PF is unbound from nvidia and bound again: its GPU instances are gone."""
    gpu.gpu_instances.clear()


def run(root: str, args: Sequence[str], since: float | None = None) -> tuple[int, list[str]]:
    """(exit status, lines printed) for ``sriov-manage ARGS`` on the host in ``root``;
    ``since``: when the command started (its first GPU's modelled time counts from it)."""
    out: list[str] = []
    if list(args) == ["-h"]:
        return 0, USAGE.splitlines()
    if len(args) != 2 or args[0] not in ("-e", "-d"):
        return 1, USAGE.splitlines()
    enable = args[0] == "-e"
    if args[1] == "ALL":
        targets = [g.pci for g in SimStore(root).read().gpus]
    else:
        try:
            targets = [normalize_pci(args[1])]
        except ValueError:
            return 1, [f"{args[1]} is not a PCI address", *USAGE.splitlines()]
    for k, pci in enumerate(targets):
        try:
            _one(root, pci, enable, out, since if k == 0 else None)
        except Failed as exc:
            out.append(str(exc))
            return 1, out
    return 0, out


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2 or args[0] != "--root":
        print("usage: python -m planner.sim.sriov_manage --root DIR [sriov-manage arguments]",
              file=sys.stderr)
        return 2
    code, lines = run(str(Path(args[1])), args[2:], STARTED)
    if lines:
        print("\n".join(lines), file=sys.stderr if code else sys.stdout)
    return code


if __name__ == "__main__":
    sys.exit(main())
