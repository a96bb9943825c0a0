"""Injected faults: make the Nth call of a named operation fail with a realistic error.

``aihow sim fail DIR --op NAME --at N [--error CODE]`` arms a fault; the Nth call of NAME
counted from then (in any process, the count lives in state.json) fails once. Names:

* NVML: the pynvml function name (``nvmlDeviceCreateGpuInstanceWithPlacement``, ...), see
  ``NVML_OPS``. The error is an NVML return code name (``INSUFFICIENT_RESOURCES``, ``IN_USE``,
  ``GPU_IS_LOST``, ...) and surfaces as pynvml's own ``NVMLError`` subclass. nvidia-smi goes
  through the same fake NVML, so its commands fail the same way.
* nvidia-smi's own reset: ``nvidia-smi.gpu-reset`` (NVML code name).
* Kernel (sysfs) writes: ``sysfs.mdev_create``, ``sysfs.mdev_remove``,
  ``sysfs.current_vgpu_type``. The error is an errno name (``EBUSY``, ``ENOSPC``, ``EIO``...)
  and surfaces as ``OSError`` with that errno, as a failed write(2) would.
* NVIDIA's ``sriov-manage`` (``DIR/bin/sriov-manage``): an errno name; the script prints
  it and exits 1.
* libvirt: ``virDomainDefineXML``, ``virDomainCreate``, ``virDomainShutdown``,
  ``virDomainDestroy``, ``virDomainUndefine``, ``virDomainAttachDeviceFlags``,
  ``virDomainDetachDeviceFlags``, ``virNodeDeviceCreateXML``, ``virNodeDeviceDestroy``. The
  simulator does not run libvirt itself; the libvirt adapter of a ``sim:DIR`` host calls
  ``check(DIR, name)`` before each of these and raises the returned error. The error is a
  libvirt error code name (``VIR_ERR_OPERATION_FAILED``, ...).
"""

from __future__ import annotations

import errno
import os

from planner.sim.codes import Nvml
from planner.sim.state import Fault, SimError, SimState, SimStore

NVML_OPS: tuple[str, ...] = (
    "nvmlInit",
    "nvmlShutdown",
    "nvmlSystemGetDriverVersion",
    "nvmlDeviceGetCount",
    "nvmlDeviceGetHandleByIndex",
    "nvmlDeviceGetHandleByPciBusId",
    "nvmlDeviceGetHandleByUUID",
    "nvmlDeviceGetName",
    "nvmlDeviceGetUUID",
    "nvmlDeviceGetPciInfo",
    "nvmlDeviceGetMigMode",
    "nvmlDeviceSetMigMode",
    "nvmlDeviceGetGpuInstanceProfileInfo",
    "nvmlDeviceGetGpuInstanceProfileInfoById",
    "nvmlDeviceGetGpuInstanceRemainingCapacity",
    "nvmlDeviceGetGpuInstancePossiblePlacements",
    "nvmlDeviceCreateGpuInstance",
    "nvmlDeviceCreateGpuInstanceWithPlacement",
    "nvmlGpuInstanceDestroy",
    "nvmlDeviceGetGpuInstances",
    "nvmlDeviceGetGpuInstanceById",
    "nvmlGpuInstanceGetInfo",
    "nvmlGpuInstanceGetComputeInstanceProfileInfo",
    "nvmlGpuInstanceGetComputeInstanceRemainingCapacity",
    "nvmlGpuInstanceGetComputeInstancePossiblePlacements",
    "nvmlGpuInstanceCreateComputeInstance",
    "nvmlGpuInstanceCreateComputeInstanceWithPlacement",
    "nvmlComputeInstanceDestroy",
    "nvmlGpuInstanceGetComputeInstances",
    "nvmlGpuInstanceGetComputeInstanceById",
    "nvmlComputeInstanceGetInfo",
    "nvmlDeviceIsMigDeviceHandle",
    "nvmlDeviceGetGpuInstanceId",
    "nvmlDeviceGetComputeInstanceId",
    "nvmlDeviceGetMaxMigDeviceCount",
    "nvmlDeviceGetMigDeviceHandleByIndex",
    "nvmlDeviceGetDeviceHandleFromMigDeviceHandle",
    "nvmlDeviceGetComputeRunningProcesses",
    "nvmlDeviceGetNvLinkState",
    "nvmlDeviceGetNvLinkRemoteDeviceType",
    "nvmlDeviceGetSupportedVgpus",
    "nvmlDeviceGetCreatableVgpus",
    "nvmlVgpuTypeGetName",
    "nvmlVgpuTypeGetClass",
    "nvmlVgpuTypeGetGpuInstanceProfileId",
    "nvmlDeviceGetActiveVgpus",
    "nvmlVgpuInstanceGetType",
    "nvmlVgpuInstanceGetUUID",
    "nvmlVgpuInstanceGetMdevUUID",
    "nvmlVgpuInstanceGetVmID",
    "nvmlVgpuInstanceGetGpuInstanceId",
)
SMI_OPS: tuple[str, ...] = ("nvidia-smi.gpu-reset",)
SYSFS_OPS: tuple[str, ...] = (
    "sysfs.mdev_create",
    "sysfs.mdev_remove",
    "sysfs.current_vgpu_type",
)
TOOL_OPS: tuple[str, ...] = ("sriov-manage",)
LIBVIRT_OPS: tuple[str, ...] = (
    "virDomainDefineXML",
    "virDomainCreate",
    "virDomainShutdown",
    "virDomainDestroy",
    "virDomainUndefine",
    "virDomainAttachDeviceFlags",
    "virDomainDetachDeviceFlags",
    "virNodeDeviceCreateXML",
    "virNodeDeviceDestroy",
    "virNetworkDefineXML",
    "virStoragePoolDefineXML",
    "virStorageVolCreateXML",
    "virNetworkUpdate",
)
ALL_OPS: tuple[str, ...] = NVML_OPS + SMI_OPS + SYSFS_OPS + TOOL_OPS + LIBVIRT_OPS

LIBVIRT_ERRORS = (
    "VIR_ERR_OPERATION_FAILED",
    "VIR_ERR_INTERNAL_ERROR",
    "VIR_ERR_OPERATION_INVALID",
    "VIR_ERR_NO_DOMAIN",
    "VIR_ERR_OPERATION_TIMEOUT",
)


def default_error(op: str) -> str:
    if op in NVML_OPS or op in SMI_OPS:
        if op == "nvmlInit":
            return "DRIVER_NOT_LOADED"
        if "Create" in op:
            return "INSUFFICIENT_RESOURCES"
        if "Destroy" in op or op == "nvidia-smi.gpu-reset":
            return "IN_USE"
        return "UNKNOWN"
    if op in SYSFS_OPS or op in TOOL_OPS:
        return "ENOSPC" if op == "sysfs.mdev_create" else "EBUSY"
    return "VIR_ERR_OPERATION_FAILED"


def _check_error(op: str, error: str) -> str:
    name = error.strip().upper()
    if op in NVML_OPS or op in SMI_OPS:
        name = name.removeprefix("NVML_ERROR_")
        if name.isdigit() and int(name) in Nvml._value2member_map_:
            return Nvml(int(name)).name
        if name in Nvml.__members__ and name != "SUCCESS":
            return name
        known = ", ".join(n for n in Nvml.__members__ if n != "SUCCESS")
    elif op in SYSFS_OPS or op in TOOL_OPS:
        if isinstance(getattr(errno, name, None), int) and name.startswith("E"):
            return name
        known = "an errno name such as EBUSY, EINVAL, ENOSPC, EIO"
    else:
        if name in LIBVIRT_ERRORS:
            return name
        known = ", ".join(LIBVIRT_ERRORS)
    raise SimError(f"--error {error!r} does not fit operation {op} (expected {known})")


def arm(state: SimState, op: str, at: int, error: str | None = None) -> Fault:
    if op not in ALL_OPS:
        raise SimError(f"unknown operation {op!r} (see 'aihow sim fail DIR --list')")
    if at < 1:
        raise SimError(f"--at must be 1 or more, not {at}")
    fault = Fault(op=op, at=at, error=_check_error(op, error or default_error(op)))
    state.faults.append(fault)
    return fault


def clear(state: SimState, op: str | None = None) -> int:
    before = len(state.faults)
    state.faults = [f for f in state.faults if op is not None and f.op != op]
    return before - len(state.faults)


def armed(state: SimState, op: str) -> bool:
    """Whether a call of ``op`` has to be counted (a fault on it has not fired yet)."""
    return any(f.op == op and not f.fired for f in state.faults)


def trip(state: SimState, op: str) -> Fault | None:
    """Count one call of ``op``; return the fault that fires on it, if any."""
    fired = None
    for f in state.faults:
        if f.op == op and not f.fired:
            f.calls += 1
            if f.calls == f.at and fired is None:
                f.fired = True
                fired = f
    return fired


def nvml_code(fault: Fault) -> int:
    return int(Nvml[fault.error])


def os_error(fault: Fault, path: str) -> OSError:
    code = getattr(errno, fault.error)
    return OSError(code, os.strerror(code), path)


def check(sim_dir: str | os.PathLike[str], op: str) -> str | None:
    """For adapters outside the simulator (libvirt): count a call of ``op`` on the simulated
    host in ``sim_dir``; return the error name to raise when an armed fault fires."""
    if op not in ALL_OPS:
        raise SimError(f"unknown operation {op!r}")
    store = SimStore(sim_dir)
    if not armed(store.snapshot(), op):
        return None
    with store.transaction() as state:
        fault = trip(state, op)
    return fault.error if fault else None
