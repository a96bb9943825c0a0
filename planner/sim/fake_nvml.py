"""A fake NVML for a simulated host, driven through pynvml's own code.

``FakeNvml(DIR)`` is an object with pynvml's function names, constants, struct types and
exception classes. Its functions are pynvml's own wrapper functions, re-bound to a private
namespace whose ``nvmlLib`` is ``FakeNvmlLib`` instead of ``libnvidia-ml.so.1``. So every call
runs the real pynvml code path (argument marshalling with ctypes, ``byref`` outputs,
``_nvmlCheckReturn`` raising ``pynvml.NVMLError`` subclasses, the two-call protocol of
``nvmlDeviceGetComputeRunningProcesses``...) and only the C library underneath is simulated.
Code written against ``pynvml`` therefore runs unchanged against ``FakeNvml``.

``FakeNvmlLib`` implements the C symbols: each takes ctypes arguments as the C function
would (handles, ``byref`` out-parameters, caller-allocated arrays), performs one transaction
on the simulated host (``planner.sim.state``) and returns an NVML return code. Handles are
addresses of small buffers owned by the library, stable for the life of the process, and a
handle of a destroyed GPU or compute instance is refused with INVALID_ARGUMENT.

Only the functions listed in ``planner.sim.faults.NVML_OPS`` exist; any other pynvml function
raises ``NVMLError_FunctionNotFound``, exactly as with an old driver.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
import types
from collections.abc import Callable
from typing import Any

import pynvml

from planner.host.nvml import MUTATING_FUNCTIONS
from planner.lang.pci import normalize_pci
from planner.sim import driver, faults, latency
from planner.sim.codes import ERROR_STRINGS, DriverError, Nvml
from planner.sim.ctypes_io import _array, _bytes, _deref, _in_struct, _int, _write_string
from planner.sim.fake_nvml_vgpu import VGPU_SYMBOLS, VgpuSymbols
from planner.sim.models import pci_device_id, product_name
from planner.sim.nvml_sessions import nvml_session
from planner.sim.state import SimError, SimGi, SimGpu, SimState, SimStore

_Key = tuple[Any, ...]
_NO_ID = 0xFFFFFFFF
NVLINK_DEVICE_TYPE_SWITCH = 0x02  # NVML_NVLINK_DEVICE_TYPE_SWITCH
_PROCESS_MEMORY = 512 * 1024 * 1024  # bytes a simulated compute process uses

# C symbol -> the pynvml function name faults are armed with.
_OP_OF_SYMBOL = {
    "nvmlInitWithFlags": "nvmlInit",
    "nvmlShutdown": "nvmlShutdown",
    "nvmlSystemGetDriverVersion": "nvmlSystemGetDriverVersion",
    "nvmlDeviceGetCount_v2": "nvmlDeviceGetCount",
    "nvmlDeviceGetHandleByIndex_v2": "nvmlDeviceGetHandleByIndex",
    "nvmlDeviceGetHandleByPciBusId_v2": "nvmlDeviceGetHandleByPciBusId",
    "nvmlDeviceGetHandleByUUID": "nvmlDeviceGetHandleByUUID",
    "nvmlDeviceGetName": "nvmlDeviceGetName",
    "nvmlDeviceGetUUID": "nvmlDeviceGetUUID",
    "nvmlDeviceGetPciInfo_v3": "nvmlDeviceGetPciInfo",
    "nvmlDeviceGetMigMode": "nvmlDeviceGetMigMode",
    "nvmlDeviceSetMigMode": "nvmlDeviceSetMigMode",
    "nvmlDeviceGetGpuInstanceProfileInfo": "nvmlDeviceGetGpuInstanceProfileInfo",
    "nvmlDeviceGetGpuInstanceProfileInfoV": "nvmlDeviceGetGpuInstanceProfileInfo",
    "nvmlDeviceGetGpuInstanceProfileInfoByIdV": "nvmlDeviceGetGpuInstanceProfileInfoById",
    "nvmlDeviceGetGpuInstanceRemainingCapacity": "nvmlDeviceGetGpuInstanceRemainingCapacity",
    "nvmlDeviceGetGpuInstancePossiblePlacements_v2": "nvmlDeviceGetGpuInstancePossiblePlacements",
    "nvmlDeviceCreateGpuInstance": "nvmlDeviceCreateGpuInstance",
    "nvmlDeviceCreateGpuInstanceWithPlacement": "nvmlDeviceCreateGpuInstanceWithPlacement",
    "nvmlGpuInstanceDestroy": "nvmlGpuInstanceDestroy",
    "nvmlDeviceGetGpuInstances": "nvmlDeviceGetGpuInstances",
    "nvmlDeviceGetGpuInstanceById": "nvmlDeviceGetGpuInstanceById",
    "nvmlGpuInstanceGetInfo": "nvmlGpuInstanceGetInfo",
    "nvmlGpuInstanceGetComputeInstanceProfileInfo": "nvmlGpuInstanceGetComputeInstanceProfileInfo",
    "nvmlGpuInstanceGetComputeInstanceProfileInfoV": "nvmlGpuInstanceGetComputeInstanceProfileInfo",
    "nvmlGpuInstanceGetComputeInstanceRemainingCapacity": (
        "nvmlGpuInstanceGetComputeInstanceRemainingCapacity"
    ),
    "nvmlGpuInstanceGetComputeInstancePossiblePlacements": (
        "nvmlGpuInstanceGetComputeInstancePossiblePlacements"
    ),
    "nvmlGpuInstanceCreateComputeInstance": "nvmlGpuInstanceCreateComputeInstance",
    "nvmlGpuInstanceCreateComputeInstanceWithPlacement": (
        "nvmlGpuInstanceCreateComputeInstanceWithPlacement"
    ),
    "nvmlComputeInstanceDestroy": "nvmlComputeInstanceDestroy",
    "nvmlGpuInstanceGetComputeInstances": "nvmlGpuInstanceGetComputeInstances",
    "nvmlGpuInstanceGetComputeInstanceById": "nvmlGpuInstanceGetComputeInstanceById",
    "nvmlComputeInstanceGetInfo_v2": "nvmlComputeInstanceGetInfo",
    "nvmlDeviceIsMigDeviceHandle": "nvmlDeviceIsMigDeviceHandle",
    "nvmlDeviceGetGpuInstanceId": "nvmlDeviceGetGpuInstanceId",
    "nvmlDeviceGetComputeInstanceId": "nvmlDeviceGetComputeInstanceId",
    "nvmlDeviceGetMaxMigDeviceCount": "nvmlDeviceGetMaxMigDeviceCount",
    "nvmlDeviceGetMigDeviceHandleByIndex": "nvmlDeviceGetMigDeviceHandleByIndex",
    "nvmlDeviceGetDeviceHandleFromMigDeviceHandle": "nvmlDeviceGetDeviceHandleFromMigDeviceHandle",
    "nvmlDeviceGetComputeRunningProcesses_v3": "nvmlDeviceGetComputeRunningProcesses",
    "nvmlDeviceGetNvLinkState": "nvmlDeviceGetNvLinkState",
    "nvmlDeviceGetNvLinkRemoteDeviceType": "nvmlDeviceGetNvLinkRemoteDeviceType",
    "nvmlDeviceGetComputeRunningProcesses_v2": "nvmlDeviceGetComputeRunningProcesses",
}



# ---------------------------------------------------------------- ctypes helpers


class _CFunc:
    """One C symbol. pynvml sets ``restype`` on some, as on a ctypes function pointer."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self._fn = fn
        self.restype: Any = None
        self.argtypes: Any = None

    def __call__(self, *args: Any) -> Any:
        return self._fn(*args)


# ---------------------------------------------------------------- the library





class FakeNvmlLib(VgpuSymbols):
    """Stands in for ``libnvidia-ml.so.1``: C symbols as Python callables."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.store = SimStore(root)
        self._initialized = 0
        self._session: int | None = None
        self._buffers: dict[_Key, ctypes.Array[ctypes.c_char]] = {}
        self._keys: dict[int, _Key] = {}
        self._handles_lock = threading.Lock()

    # -- symbol lookup (pynvml does getattr(nvmlLib, name) and caches it)
    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name == "nvmlErrorString":
            return _CFunc(lambda code: ERROR_STRINGS.get(_int(code), "Unknown Error").encode())
        op = _OP_OF_SYMBOL.get(name) or VGPU_SYMBOLS.get(name)
        impl = getattr(type(self), "_c_" + name, None)
        if op is None or impl is None:
            raise AttributeError(name)
        return _CFunc(lambda *args: self._call(name, op, impl, args))

    def _call(self, symbol: str, op: str, impl: Callable[..., Any], args: tuple[Any, ...]) -> int:
        if symbol not in ("nvmlInitWithFlags",) and not self._initialized:
            return Nvml.UNINITIALIZED
        if symbol not in MUTATING_FUNCTIONS:  # every other symbol only reads the host
            # A query reads the shared snapshot, without the lock, unless a fault armed on
            # it has to count this call (which changes the state).
            state = self.store.snapshot()
            if not faults.armed(state, op):
                try:
                    ret = impl(self, state, *args)
                except DriverError as exc:
                    return exc.code
                return Nvml.SUCCESS if ret is None else int(ret)
        # (the modelled time is slept after the lock is released: GPUs overlap)
        with latency.lasting(self.store.root, op) if symbol in MUTATING_FUNCTIONS \
                else contextlib.nullcontext(), self.store.transaction() as state:
            fault = faults.trip(state, op)
            if fault is not None:
                return faults.nvml_code(fault)
            try:
                ret = impl(self, state, *args)
            except DriverError as exc:
                return exc.code
        return Nvml.SUCCESS if ret is None else int(ret)

    # -- handles
    def _address(self, key: _Key) -> int:
        buf = self._buffers.get(key)
        if buf is None:
            with self._handles_lock:  # queries run in parallel threads: one buffer per key
                buf = self._buffers.get(key)
                if buf is None:
                    buf = ctypes.create_string_buffer(1)
                    self._keys[ctypes.addressof(buf)] = key
                    self._buffers[key] = buf
        return ctypes.addressof(buf)

    def _put(self, ref: Any, key: _Key) -> None:
        target = _deref(ref)
        ctypes.c_void_p.from_address(ctypes.addressof(target)).value = self._address(key)

    def _handle_value(self, ptr_type: Any, key: _Key) -> Any:
        return ctypes.cast(ctypes.c_void_p(self._address(key)), ptr_type)

    def _key(self, handle: Any) -> _Key:
        try:
            address = ctypes.cast(handle, ctypes.c_void_p).value
        except (TypeError, ctypes.ArgumentError):
            address = None
        key = self._keys.get(address or 0)
        if key is None:
            raise DriverError(Nvml.INVALID_ARGUMENT, "not a handle from this NVML")
        return key

    def _device(self, state: SimState, handle: Any) -> tuple[SimGpu, tuple[SimGi, Any] | None]:
        """The physical GPU behind a device handle, and the (GI, CI) for a MIG handle."""
        key = self._key(handle)
        if key[0] not in ("gpu", "mig"):
            raise DriverError(Nvml.INVALID_ARGUMENT, "not a device handle")
        gpu = state.gpu(key[1])
        if gpu is None:
            raise DriverError(Nvml.GPU_IS_LOST, key[1])
        if key[0] == "gpu":
            return gpu, None
        gi = driver.find_gi_serial(gpu, key[2])
        ci = next((c for c in gi.cis if c.serial == key[3]), None) if gi else None
        if gi is None or ci is None:
            raise DriverError(Nvml.INVALID_ARGUMENT, "MIG device no longer exists")
        return gpu, (gi, ci)

    def _gpu(self, state: SimState, handle: Any) -> SimGpu:
        gpu, mig = self._device(state, handle)
        if mig is not None:
            raise DriverError(Nvml.INVALID_ARGUMENT, "a MIG device handle where a GPU is needed")
        return gpu

    def _gi(self, state: SimState, handle: Any) -> tuple[SimGpu, SimGi]:
        key = self._key(handle)
        if key[0] != "gi":
            raise DriverError(Nvml.INVALID_ARGUMENT, "not a GPU instance handle")
        gpu = state.gpu(key[1])
        gi = driver.find_gi_serial(gpu, key[2]) if gpu else None
        if gpu is None or gi is None:
            raise DriverError(Nvml.INVALID_ARGUMENT, "GPU instance no longer exists")
        return gpu, gi

    def _ci(self, state: SimState, handle: Any) -> tuple[SimGpu, SimGi, Any]:
        key = self._key(handle)
        if key[0] != "ci":
            raise DriverError(Nvml.INVALID_ARGUMENT, "not a compute instance handle")
        gpu = state.gpu(key[1])
        gi = driver.find_gi_serial(gpu, key[2]) if gpu else None
        ci = next((c for c in gi.cis if c.serial == key[3]), None) if gi else None
        if gpu is None or gi is None or ci is None:
            raise DriverError(Nvml.INVALID_ARGUMENT, "compute instance no longer exists")
        return gpu, gi, ci

    # -- init, system
    def _c_nvmlInitWithFlags(self, state: SimState, flags: Any) -> None:
        if not self._initialized:
            self._session = nvml_session(self.root)
        self._initialized += 1

    def _c_nvmlShutdown(self, state: SimState) -> None:
        self._initialized -= 1
        if not self._initialized and self._session is not None:
            os.close(self._session)  # the library lets go of the GPUs
            self._session = None

    def _c_nvmlSystemGetDriverVersion(self, state: SimState, buf: Any, length: Any) -> None:
        _write_string(buf, length, state.driver_version)

    # -- devices
    def _c_nvmlDeviceGetCount_v2(self, state: SimState, count: Any) -> None:
        _deref(count).value = len(state.gpus)

    def _c_nvmlDeviceGetHandleByIndex_v2(self, state: SimState, index: Any, out: Any) -> None:
        i = _int(index)
        gpu = state.gpu_at(i)
        if gpu is None:
            raise DriverError(Nvml.INVALID_ARGUMENT, f"GPU index {i}")
        self._put(out, ("gpu", gpu.pci))

    def _c_nvmlDeviceGetHandleByPciBusId_v2(self, state: SimState, bus_id: Any, out: Any) -> None:
        text = _bytes(bus_id)
        try:
            pci = normalize_pci(text)
        except ValueError:
            raise DriverError(Nvml.INVALID_ARGUMENT, text) from None
        if state.gpu(pci) is None:
            raise DriverError(Nvml.NOT_FOUND, text)
        self._put(out, ("gpu", pci))

    def _c_nvmlDeviceGetHandleByUUID(self, state: SimState, uuid: Any, out: Any) -> None:
        text = _bytes(uuid)
        for gpu in state.gpus:
            if gpu.uuid == text:
                self._put(out, ("gpu", gpu.pci))
                return
            for gi, ci in driver.mig_devices(gpu):
                legacy = f"MIG-{gpu.uuid}/{gi.gi_id}/{ci.ci_id}"
                if text in (ci.mig_uuid, legacy):
                    self._put(out, ("mig", gpu.pci, gi.serial, ci.serial))
                    return
        raise DriverError(Nvml.NOT_FOUND, text)

    def _c_nvmlDeviceGetName(self, state: SimState, handle: Any, buf: Any, length: Any) -> None:
        gpu, mig = self._device(state, handle)
        name = product_name(driver.model_of(gpu))
        if mig is not None:
            name += " " + driver.profile_of(state, gpu, mig[0]).nvml_name
        _write_string(buf, length, name)

    def _c_nvmlDeviceGetUUID(self, state: SimState, handle: Any, buf: Any, length: Any) -> None:
        gpu, mig = self._device(state, handle)
        _write_string(buf, length, mig[1].mig_uuid if mig else gpu.uuid)

    def _c_nvmlDeviceGetPciInfo_v3(self, state: SimState, handle: Any, out: Any) -> None:
        gpu, _ = self._device(state, handle)
        info = _deref(out)
        domain, bus, devfn = gpu.pci.split(":")
        dev = devfn.split(".")[0]
        info.busIdLegacy = f"{int(domain, 16):04X}:{bus.upper()}:{dev.upper()}.{devfn[-1]}".encode()
        info.busId = f"{int(domain, 16):08X}:{bus.upper()}:{dev.upper()}.{devfn[-1]}".encode()
        info.domain = int(domain, 16)
        info.bus = int(bus, 16)
        info.device = int(dev, 16)
        info.pciDeviceId = (pci_device_id(driver.model_of(gpu)) << 16) | 0x10DE
        info.pciSubSystemId = 0  # not in the catalog; real boards report a board-specific id

    # -- MIG mode
    def _c_nvmlDeviceGetMigMode(self, state: SimState, handle: Any, cur: Any, pend: Any) -> None:
        gpu = self._gpu(state, handle)
        driver.require_mig_capable(gpu)
        _deref(cur).value = int(gpu.mig_current)
        _deref(pend).value = int(gpu.mig_pending)

    def _c_nvmlDeviceSetMigMode(self, state: SimState, handle: Any, mode: Any, status: Any) -> None:
        gpu = self._gpu(state, handle)
        _deref(status).value = driver.set_mig_mode(state, gpu, _int(mode))

    # -- GI profiles
    def _fill_gi_profile(self, info: Any, profile: Any) -> None:
        info.id = profile.id
        info.isP2pSupported = int(profile.p2p)
        info.sliceCount = profile.compute_slices
        info.instanceCount = profile.instance_count
        info.multiprocessorCount = profile.sm_count
        info.copyEngineCount = profile.copy_engines
        info.decoderCount = profile.decoders
        info.encoderCount = profile.encoders
        info.jpegCount = profile.jpegs
        info.ofaCount = profile.ofas
        info.memorySizeMB = profile.memory_mib
        if hasattr(info, "name"):
            info.name = profile.nvml_name.encode()

    def _gi_profile_info(self, state: SimState, handle: Any, enum: Any, out: Any, v2: bool) -> None:
        gpu = self._gpu(state, handle)
        info = _deref(out)
        if v2 and getattr(info, "version", None) != pynvml.nvmlGpuInstanceProfileInfo_v2:
            raise DriverError(Nvml.ARGUMENT_VERSION_MISMATCH, "GPU instance profile info")
        driver.require_mig_enabled(gpu)  # nvml.h: NOT_SUPPORTED without MIG mode
        self._fill_gi_profile(info, driver.gi_profile_by_enum(state, gpu, _int(enum)))

    def _c_nvmlDeviceGetGpuInstanceProfileInfo(
        self, state: SimState, h: Any, e: Any, o: Any
    ) -> None:
        self._gi_profile_info(state, h, e, o, v2=False)

    def _c_nvmlDeviceGetGpuInstanceProfileInfoV(
        self, state: SimState, h: Any, e: Any, o: Any
    ) -> None:
        self._gi_profile_info(state, h, e, o, v2=True)

    def _c_nvmlDeviceGetGpuInstanceProfileInfoByIdV(
        self, state: SimState, handle: Any, profile_id: Any, out: Any
    ) -> None:
        gpu = self._gpu(state, handle)
        info = _deref(out)
        if getattr(info, "version", None) != pynvml.nvmlGpuInstanceProfileInfo_v2:
            raise DriverError(Nvml.ARGUMENT_VERSION_MISMATCH, "GPU instance profile info")
        driver.require_mig_enabled(gpu)
        self._fill_gi_profile(info, driver.gi_profile_by_id(state, gpu, _int(profile_id)))

    def _c_nvmlDeviceGetGpuInstanceRemainingCapacity(
        self, state: SimState, handle: Any, profile_id: Any, count: Any
    ) -> None:
        gpu = self._gpu(state, handle)
        driver.require_mig_enabled(gpu)
        profile = driver.gi_profile_by_id(state, gpu, _int(profile_id))
        _deref(count).value = driver.gi_remaining_capacity(state, gpu, profile)

    def _c_nvmlDeviceGetGpuInstancePossiblePlacements_v2(
        self, state: SimState, handle: Any, profile_id: Any, placements: Any, count: Any
    ) -> None:
        # nvml.h: all possible placements of the profile, whether MIG is enabled or not.
        gpu = self._gpu(state, handle)
        profile = driver.gi_profile_by_id(state, gpu, _int(profile_id))
        self._put_placements(placements, count, profile.placements, profile.placement_size)

    def _put_placements(self, ref: Any, count: Any, starts: tuple[int, ...], size: int) -> None:
        arr, capacity = _array(ref)
        if arr is not None:
            if capacity is not None and capacity < len(starts):
                raise DriverError(Nvml.INSUFFICIENT_SIZE, "placements array")
            for i, s in enumerate(starts):
                arr[i].start = s
                arr[i].size = size
        _deref(count).value = len(starts)

    # -- GI lifecycle
    def _c_nvmlDeviceCreateGpuInstance(
        self, state: SimState, handle: Any, profile_id: Any, out: Any
    ) -> None:
        gpu = self._gpu(state, handle)
        gi = driver.create_gi(state, gpu, _int(profile_id))
        self._put(out, ("gi", gpu.pci, gi.serial))

    def _c_nvmlDeviceCreateGpuInstanceWithPlacement(
        self, state: SimState, handle: Any, profile_id: Any, placement: Any, out: Any
    ) -> None:
        gpu = self._gpu(state, handle)
        p = _in_struct(placement)
        gi = driver.create_gi(state, gpu, _int(profile_id), (int(p.start), int(p.size)))
        self._put(out, ("gi", gpu.pci, gi.serial))

    def _c_nvmlGpuInstanceDestroy(self, state: SimState, gi_handle: Any) -> None:
        gpu, gi = self._gi(state, gi_handle)
        driver.destroy_gi(state, gpu, gi)

    def _c_nvmlDeviceGetGpuInstances(
        self, state: SimState, handle: Any, profile_id: Any, ref: Any, count: Any
    ) -> None:
        gpu = self._gpu(state, handle)
        driver.require_mig_enabled(gpu)
        profile = driver.gi_profile_by_id(state, gpu, _int(profile_id))
        gis = sorted(
            (gi for gi in gpu.gpu_instances if gi.profile_id == profile.id), key=lambda g: g.gi_id
        )
        arr, capacity = _array(ref)
        if arr is None or (capacity is not None and capacity < len(gis)):
            raise DriverError(Nvml.INSUFFICIENT_SIZE, "GPU instance array")
        for i, gi in enumerate(gis):
            arr[i] = self._handle_value(pynvml.c_nvmlGpuInstance_t, ("gi", gpu.pci, gi.serial))
        _deref(count).value = len(gis)

    def _c_nvmlDeviceGetGpuInstanceById(
        self, state: SimState, handle: Any, gi_id: Any, out: Any
    ) -> None:
        gpu = self._gpu(state, handle)
        driver.require_mig_enabled(gpu)
        gi = driver.find_gi(gpu, _int(gi_id))
        self._put(out, ("gi", gpu.pci, gi.serial))

    def _c_nvmlGpuInstanceGetInfo(self, state: SimState, gi_handle: Any, out: Any) -> None:
        gpu, gi = self._gi(state, gi_handle)
        info = _deref(out)
        info.device = self._handle_value(pynvml.c_nvmlDevice_t, ("gpu", gpu.pci))
        info.id = gi.gi_id
        info.profileId = gi.profile_id
        info.placement.start = gi.start
        info.placement.size = gi.size

    # -- CI profiles and lifecycle
    def _ci_profile_info(
        self, state: SimState, gi_handle: Any, enum: Any, eng: Any, out: Any, v2: bool
    ) -> None:
        gpu, gi = self._gi(state, gi_handle)
        info = _deref(out)
        if v2 and getattr(info, "version", None) != pynvml.nvmlComputeInstanceProfileInfo_v2:
            raise DriverError(Nvml.ARGUMENT_VERSION_MISMATCH, "compute instance profile info")
        if _int(eng) != pynvml.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED:
            raise DriverError(Nvml.NOT_SUPPORTED, f"engine profile {_int(eng)}")
        cp = driver.ci_profile_by_enum(state, gpu, gi, _int(enum))
        gp = driver.profile_of(state, gpu, gi)
        info.id = cp.id
        info.sliceCount = cp.slice_count
        info.instanceCount = cp.instance_count
        info.multiprocessorCount = gp.sm_count * cp.slice_count // gp.compute_slices
        info.sharedCopyEngineCount = gp.copy_engines
        info.sharedDecoderCount = gp.decoders
        info.sharedEncoderCount = gp.encoders
        info.sharedJpegCount = gp.jpegs
        info.sharedOfaCount = gp.ofas
        if hasattr(info, "name"):
            info.name = f"MIG {cp.name(gp)}".encode()

    def _c_nvmlGpuInstanceGetComputeInstanceProfileInfo(
        self, state: SimState, gi: Any, enum: Any, eng: Any, out: Any
    ) -> None:
        self._ci_profile_info(state, gi, enum, eng, out, v2=False)

    def _c_nvmlGpuInstanceGetComputeInstanceProfileInfoV(
        self, state: SimState, gi: Any, enum: Any, eng: Any, out: Any
    ) -> None:
        self._ci_profile_info(state, gi, enum, eng, out, v2=True)

    def _c_nvmlGpuInstanceGetComputeInstanceRemainingCapacity(
        self, state: SimState, gi_handle: Any, profile_id: Any, count: Any
    ) -> None:
        gpu, gi = self._gi(state, gi_handle)
        cp = driver.ci_profile_by_id(state, gpu, gi, _int(profile_id))
        _deref(count).value = driver.ci_remaining_capacity(state, gpu, gi, cp)

    def _c_nvmlGpuInstanceGetComputeInstancePossiblePlacements(
        self, state: SimState, gi_handle: Any, profile_id: Any, placements: Any, count: Any
    ) -> None:
        gpu, gi = self._gi(state, gi_handle)
        cp = driver.ci_profile_by_id(state, gpu, gi, _int(profile_id))
        self._put_placements(placements, count, cp.placements, cp.slice_count)

    def _c_nvmlGpuInstanceCreateComputeInstance(
        self, state: SimState, gi_handle: Any, profile_id: Any, out: Any
    ) -> None:
        gpu, gi = self._gi(state, gi_handle)
        ci = driver.create_ci(state, gpu, gi, _int(profile_id), None)
        self._put(out, ("ci", gpu.pci, gi.serial, ci.serial))

    def _c_nvmlGpuInstanceCreateComputeInstanceWithPlacement(
        self, state: SimState, gi_handle: Any, profile_id: Any, placement: Any, out: Any
    ) -> None:
        gpu, gi = self._gi(state, gi_handle)
        p = _in_struct(placement)
        ci = driver.create_ci(state, gpu, gi, _int(profile_id), (int(p.start), int(p.size)))
        self._put(out, ("ci", gpu.pci, gi.serial, ci.serial))

    def _c_nvmlComputeInstanceDestroy(self, state: SimState, ci_handle: Any) -> None:
        gpu, gi, ci = self._ci(state, ci_handle)
        driver.destroy_ci(state, gpu, gi, ci)

    def _c_nvmlGpuInstanceGetComputeInstances(
        self, state: SimState, gi_handle: Any, profile_id: Any, ref: Any, count: Any
    ) -> None:
        gpu, gi = self._gi(state, gi_handle)
        cp = driver.ci_profile_by_id(state, gpu, gi, _int(profile_id))
        cis = sorted((c for c in gi.cis if c.profile_id == cp.id), key=lambda c: c.ci_id)
        arr, capacity = _array(ref)
        if arr is None or (capacity is not None and capacity < len(cis)):
            raise DriverError(Nvml.INSUFFICIENT_SIZE, "compute instance array")
        for i, ci in enumerate(cis):
            arr[i] = self._handle_value(
                pynvml.c_nvmlComputeInstance_t, ("ci", gpu.pci, gi.serial, ci.serial)
            )
        _deref(count).value = len(cis)

    def _c_nvmlGpuInstanceGetComputeInstanceById(
        self, state: SimState, gi_handle: Any, ci_id: Any, out: Any
    ) -> None:
        gpu, gi = self._gi(state, gi_handle)
        ci = driver.find_ci(gi, _int(ci_id))
        self._put(out, ("ci", gpu.pci, gi.serial, ci.serial))

    def _c_nvmlComputeInstanceGetInfo_v2(self, state: SimState, ci_handle: Any, out: Any) -> None:
        gpu, gi, ci = self._ci(state, ci_handle)
        info = _deref(out)
        info.device = self._handle_value(pynvml.c_nvmlDevice_t, ("gpu", gpu.pci))
        info.gpuInstance = self._handle_value(
            pynvml.c_nvmlGpuInstance_t, ("gi", gpu.pci, gi.serial)
        )
        info.id = ci.ci_id
        info.profileId = ci.profile_id
        info.placement.start = ci.start
        info.placement.size = ci.size

    # -- MIG device handles
    def _c_nvmlDeviceIsMigDeviceHandle(self, state: SimState, handle: Any, out: Any) -> None:
        _, mig = self._device(state, handle)
        _deref(out).value = int(mig is not None)

    def _c_nvmlDeviceGetGpuInstanceId(self, state: SimState, handle: Any, out: Any) -> None:
        _, mig = self._device(state, handle)
        if mig is None:
            raise DriverError(Nvml.NOT_SUPPORTED, "not a MIG device handle")
        _deref(out).value = mig[0].gi_id

    def _c_nvmlDeviceGetComputeInstanceId(self, state: SimState, handle: Any, out: Any) -> None:
        _, mig = self._device(state, handle)
        if mig is None:
            raise DriverError(Nvml.NOT_SUPPORTED, "not a MIG device handle")
        _deref(out).value = mig[1].ci_id

    def _c_nvmlDeviceGetMaxMigDeviceCount(self, state: SimState, handle: Any, out: Any) -> None:
        gpu = self._gpu(state, handle)
        _deref(out).value = driver.max_mig_devices(gpu)

    def _c_nvmlDeviceGetMigDeviceHandleByIndex(
        self, state: SimState, handle: Any, index: Any, out: Any
    ) -> None:
        gpu = self._gpu(state, handle)
        devices = driver.mig_devices(gpu) if gpu.mig_current else []
        i = _int(index)
        if not 0 <= i < len(devices):
            raise DriverError(Nvml.NOT_FOUND, f"MIG device index {i}")
        gi, ci = devices[i]
        self._put(out, ("mig", gpu.pci, gi.serial, ci.serial))

    def _c_nvmlDeviceGetDeviceHandleFromMigDeviceHandle(
        self, state: SimState, handle: Any, out: Any
    ) -> None:
        gpu, mig = self._device(state, handle)
        if mig is None:
            raise DriverError(Nvml.INVALID_ARGUMENT, "not a MIG device handle")
        self._put(out, ("gpu", gpu.pci))

    # -- processes
    def _running(self, state: SimState, handle: Any, count: Any, ref: Any) -> int:
        gpu, mig = self._device(state, handle)
        by_uuid = {ci.mig_uuid: (gi, ci) for gi, ci in driver.mig_devices(gpu)}
        procs = [
            h
            for h in gpu.holders
            if h.kind == "compute" and (mig is None or h.mig_uuid == mig[1].mig_uuid)
        ]
        n = _deref(count)
        if ref is None or n.value < len(procs):
            n.value = len(procs)
            return Nvml.INSUFFICIENT_SIZE if procs else Nvml.SUCCESS
        arr, _ = _array(ref)
        for i, h in enumerate(procs):
            place = by_uuid.get(h.mig_uuid or "")
            arr[i].pid = h.pid
            arr[i].usedGpuMemory = _PROCESS_MEMORY
            arr[i].gpuInstanceId = place[0].gi_id if place else _NO_ID
            arr[i].computeInstanceId = place[1].ci_id if place else _NO_ID
        n.value = len(procs)
        return Nvml.SUCCESS

    # -- NVLink: on an NVSwitch board every link of every GPU goes to an NVSwitch (HGX);
    # elsewhere the GPU has none (NOT_SUPPORTED, as on a PCIe board without a bridge).
    def _link(self, state: SimState, handle: Any, link: Any) -> SimGpu:
        gpu = self._gpu(state, handle)
        n = driver.nvlink_count(state, gpu)
        if n == 0:
            raise DriverError(Nvml.NOT_SUPPORTED, f"NVLink on {gpu.pci}")
        if not 0 <= _int(link) < n:
            raise DriverError(Nvml.INVALID_ARGUMENT, f"NVLink {_int(link)} on {gpu.pci}")
        return gpu

    def _c_nvmlDeviceGetNvLinkState(self, state: SimState, handle: Any, link: Any,
                                    active: Any) -> None:
        self._link(state, handle, link)
        _deref(active).value = 1

    def _c_nvmlDeviceGetNvLinkRemoteDeviceType(self, state: SimState, handle: Any, link: Any,
                                               kind: Any) -> None:
        self._link(state, handle, link)
        _deref(kind).value = NVLINK_DEVICE_TYPE_SWITCH

    def _c_nvmlDeviceGetComputeRunningProcesses_v3(
        self, state: SimState, handle: Any, count: Any, ref: Any
    ) -> int:
        return self._running(state, handle, count, ref)

    def _c_nvmlDeviceGetComputeRunningProcesses_v2(
        self, state: SimState, handle: Any, count: Any, ref: Any
    ) -> int:
        return self._running(state, handle, count, ref)


# ---------------------------------------------------------------- pynvml re-bound


def _rebind(fn: types.FunctionType, namespace: dict[str, Any]) -> types.FunctionType:
    """A copy of a pynvml function whose globals are ``namespace`` (closures re-bound too,
    so decorated functions such as nvmlDeviceGetName call the re-bound inner function)."""
    closure = None
    if fn.__closure__:
        cells = []
        for cell in fn.__closure__:
            content = cell.cell_contents
            if isinstance(content, types.FunctionType) and content.__module__ == pynvml.__name__:
                cell = types.CellType(_rebind(content, namespace))
            cells.append(cell)
        closure = tuple(cells)
    new = types.FunctionType(fn.__code__, namespace, fn.__name__, fn.__defaults__, closure)
    new.__kwdefaults__ = fn.__kwdefaults__
    new.__doc__ = fn.__doc__
    new.__qualname__ = fn.__qualname__
    return new


class FakeNvml:
    """pynvml's surface over a simulated host: ``FakeNvml(DIR).nvmlInit()`` and so on.

    Attribute access falls through to pynvml, so constants (``NVML_DEVICE_MIG_ENABLE``),
    struct types (``c_nvmlGpuInstancePlacement_t``) and exceptions (``NVMLError``,
    ``NVMLError_InUse``) are pynvml's own objects.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        store = SimStore(root)
        if not store.exists():
            raise SimError(f"{store.root}: not a simulated host (no state.json)")
        # Opening NVML comes first on every path that reads a simulated host (probe, apply,
        # nvidia-smi): the snapshot repairs the kernel views a killed commit left behind.
        store.snapshot()
        self.root = str(store.root)
        self.lib = FakeNvmlLib(self.root)
        namespace: dict[str, Any] = dict(vars(pynvml))
        namespace["nvmlLib"] = self.lib
        namespace["_nvmlGetFunctionPointer_cache"] = {}
        namespace["_nvmlLib_refcount"] = 0
        for name, obj in vars(pynvml).items():
            if isinstance(obj, types.FunctionType) and obj.__module__ == pynvml.__name__:
                namespace[name] = _rebind(obj, namespace)
        self._ns = namespace
        # What nvmlErrorString would have cached had the real library been loaded: the
        # driver's own strings for codes pynvml has no text for ("In use by another client").
        for code, text in ERROR_STRINGS.items():
            pynvml.NVMLError._errcode_to_string.setdefault(code, text)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_ns"][name]
        except KeyError:
            raise AttributeError(name) from None

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self._ns))
