"""NVML adapter: reads GPUs, MIG modes, GPU/compute instances and MIG devices into
HostState parts, and offers the mutating calls apply needs.

``nvml`` is the real ``pynvml`` module or the simulator's ``FakeNvml``; only pynvml's
documented functions, constants and struct types are used, so the same code runs on
real hardware. Instances are addressed by placement, never by id: the driver assigns GI
and CI ids itself and they change when an instance is re-created.

For probing, wrap the module in ``ReadOnlyNvml``: it exposes only the query functions
listed in ``QUERY_FUNCTIONS``, so a reader cannot change the GPU even by mistake.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from planner.hardware.catalog import match_model
from planner.hardware.check import ObservedProfile
from planner.host.errors import HostError, NvmlOperationError
from planner.host.state import ComputeInstance, Gpu, GpuInstance, GpuProcess
from planner.lang.pci import normalize_pci
from planner.vocab import Address

# Every NVML function the readers may call. Nothing here changes the GPU.
QUERY_FUNCTIONS = frozenset(
    {
        "nvmlInit",
        "nvmlInitWithFlags",
        "nvmlShutdown",
        "nvmlErrorString",
        "nvmlSystemGetDriverVersion",
        "nvmlDeviceGetNvLinkState",
        "nvmlDeviceGetNvLinkRemoteDeviceType",
        "nvmlDeviceGetNvLinkRemotePciInfo",
        "nvmlSystemGetNVMLVersion",
        "nvmlSystemGetProcessName",
        "nvmlDeviceGetCount",
        "nvmlDeviceGetHandleByIndex",
        "nvmlDeviceGetHandleByPciBusId",
        "nvmlDeviceGetHandleByUUID",
        "nvmlDeviceGetIndex",
        "nvmlDeviceGetMinorNumber",
        "nvmlDeviceGetName",
        "nvmlDeviceGetUUID",
        "nvmlDeviceGetPciInfo",
        "nvmlDeviceGetPciInfo_v3",
        "nvmlDeviceGetMigMode",
        "nvmlDeviceGetGpuInstanceProfileInfo",
        "nvmlDeviceGetGpuInstanceProfileInfoV",
        "nvmlDeviceGetGpuInstanceProfileInfoById",
        "nvmlDeviceGetGpuInstanceProfileInfoByIdV",
        "nvmlDeviceGetGpuInstanceRemainingCapacity",
        "nvmlDeviceGetGpuInstancePossiblePlacements",
        "nvmlDeviceGetGpuInstances",
        "nvmlDeviceGetGpuInstanceById",
        "nvmlGpuInstanceGetInfo",
        "nvmlGpuInstanceGetComputeInstanceProfileInfo",
        "nvmlGpuInstanceGetComputeInstanceProfileInfoV",
        "nvmlGpuInstanceGetComputeInstanceRemainingCapacity",
        "nvmlGpuInstanceGetComputeInstancePossiblePlacements",
        "nvmlGpuInstanceGetComputeInstances",
        "nvmlGpuInstanceGetComputeInstanceById",
        "nvmlComputeInstanceGetInfo",
        "nvmlComputeInstanceGetInfo_v2",
        "nvmlDeviceIsMigDeviceHandle",
        "nvmlDeviceGetGpuInstanceId",
        "nvmlDeviceGetComputeInstanceId",
        "nvmlDeviceGetMaxMigDeviceCount",
        "nvmlDeviceGetMigDeviceHandleByIndex",
        "nvmlDeviceGetDeviceHandleFromMigDeviceHandle",
        "nvmlDeviceGetComputeRunningProcesses",
        "nvmlDeviceGetComputeRunningProcesses_v3",
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
    }
)

# The calls that change a GPU; only NvmlHost's mutators use them.
MUTATING_FUNCTIONS = frozenset(
    {
        "nvmlDeviceSetMigMode",
        "nvmlDeviceCreateGpuInstance",
        "nvmlDeviceCreateGpuInstanceWithPlacement",
        "nvmlGpuInstanceDestroy",
        "nvmlGpuInstanceCreateComputeInstance",
        "nvmlGpuInstanceCreateComputeInstanceWithPlacement",
        "nvmlComputeInstanceDestroy",
    }
)

# Profile enums are walked from 0 to the binding's count, skipping the ones a GPU answers
# NOT_SUPPORTED or INVALID_ARGUMENT (both happen below the count), as NVIDIA's go-nvlib and
# mig-parted do (docs/reference/vgpu-on-mig.md section 7). Fallbacks: nvml.h's counts.
_GI_PROFILE_COUNT = 0x12
_CI_PROFILE_COUNT = 0x9

# nvml.h: INVALID_GPU_INSTANCE_PROFILE_ID (a time-sliced vGPU type) and
# INVALID_GPU_INSTANCE_ID (a vGPU no GI backs); pynvml names neither.
NO_GI = 0xFFFFFFFF
ACTIVE_VGPU_TRIES = 5  # listings of the active vGPUs, while VMs keep starting


@dataclass(frozen=True)
class VgpuTypeInfo:
    """What the driver says of a vGPU type id (docs/reference/vgpu-on-mig.md section 1)."""

    type_id: int
    name: str  # for display only: "GRID A100-1-5C", "NVIDIA RTX Pro 6000 Blackwell DC-1-24Q"
    gi_profile_id: int | None  # the GI profile id a MIG-backed type needs; None: time-sliced


@dataclass(frozen=True)
class ActiveVgpu:
    """A vGPU whose VM runs, as NVML reports it (section 2.4): only these tell their GI."""

    type_id: int
    vm_uuid: str | None  # the VM's UUID on KVM (libvirt's domain UUID)
    mdev_uuid: str | None  # mdev backend only
    gi_id: int | None


# nvidia-smi's wording for the NVML codes a MIG operation returns.
_NVML_MESSAGES = {
    1: "Uninitialized",
    2: "Invalid Argument",
    3: "Not Supported",
    4: "Insufficient Permissions",
    6: "Not Found",
    7: "Insufficient Size",
    9: "Driver Not Loaded",
    12: "NVML Shared Library Not Found",
    13: "Function Not Found",
    15: "GPU is lost",
    16: "Reset Required",
    19: "In use by another client",
    20: "Insufficient Memory",
    23: "Insufficient Resources",
    25: "Argument Version Mismatch",
    29: "Invalid State",
    999: "Unknown Error",
}


def nvml_message(err: BaseException) -> str:
    code = getattr(err, "value", None)
    if isinstance(code, int) and code in _NVML_MESSAGES:
        return _NVML_MESSAGES[code]
    return str(err)


def nvml_code(err: BaseException) -> int | None:
    code = getattr(err, "value", None)
    return code if isinstance(code, int) else None


class ReadOnlyNvml:
    """A view of an nvml module that exposes constants, struct types, error classes and
    only the query functions in ``QUERY_FUNCTIONS``; any other ``nvml*`` name raises."""

    def __init__(self, nvml: Any) -> None:
        object.__setattr__(self, "_nvml", nvml)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("nvml") and name not in QUERY_FUNCTIONS:
            raise AttributeError(f"{name} is not available on a read-only NVML view")
        return getattr(self._nvml, name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a read-only NVML view cannot be changed")


@dataclass(frozen=True)
class CiProfileInfo:
    enum: int
    id: int
    name: str
    slice_count: int
    instance_count: int


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _strip_mig(name: str) -> str:
    return name[4:] if name.startswith("MIG ") else name


def _possible_placements(query: Callable[..., Any], owner: Any, profile_id: int,
                         struct: Any, size: int) -> tuple[tuple[int, int], ...]:
    """(start, size) of each placement a ``...PossiblePlacements`` call returns into a
    buffer of ``size`` structs."""
    placements = (struct * size)()
    count = ctypes.c_uint(size)
    query(owner, profile_id, placements, ctypes.byref(count))
    return tuple(
        (int(placements[i].start), int(placements[i].size)) for i in range(count.value)
    )


def _placement_at(struct: Any, legal: dict[int, int], start: int, subject: str) -> Any:
    """A placement struct at ``start``, sized as the driver says; ``subject`` starts the
    error when ``start`` is not one of the ``legal`` ones."""
    if start not in legal:
        starts = ", ".join(str(s) for s in sorted(legal)) or "none"
        raise HostError(f"{subject} cannot start at {start} (legal starts: {starts})")
    placement = struct()
    placement.start = start
    placement.size = legal[start]
    return placement


class _SessionGate:
    """Many threads use one NVML session (apply's steps on different GPUs); a tool that
    needs NVML closed (a GPU reset, sriov-manage) waits until no call is in flight and
    keeps new ones out meanwhile.

    - Tools come first: once one waits, no new call starts (a thread already inside a
      call may make nested ones: shared use is re-entrant per thread), so a steady stream
      of short calls on other GPUs cannot keep it waiting.
    - One window for the tools that wait at the same time: the session is closed when
      the first starts and opened again after the last, and the tools run one after
      another in between (never two at once: NVIDIA's tools count each other as NVML
      clients, and sriov-manage runs ``nvidia-smi -pm 1``; vgpu-on-mig.md section 4)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._users = 0
        self._tools_waiting = 0  # tools waiting for the window, or running in it
        self._tool_running = False
        self._closed = False  # the session is closed (a window is open)
        # Each thread's depth of shared use. A dict, not threading.local: a gate lives as
        # long as its NvmlHost (one per probe), and freeing a threading.local can deadlock
        # CPython 3.11 against threads starting or ending (python/cpython#100892).
        self._depth: dict[int, int] = {}

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        me = threading.get_ident()
        with self._cond:
            depth = self._depth.get(me, 0)
            if depth == 0:
                while self._closed or self._tools_waiting:
                    self._cond.wait()
                self._users += 1
            self._depth[me] = depth + 1
        try:
            yield
        finally:
            with self._cond:
                if depth == 0:
                    del self._depth[me]
                    self._users -= 1
                    self._cond.notify_all()
                else:
                    self._depth[me] = depth

    @contextlib.contextmanager
    def exclusive(self, close: Callable[[], None], reopen: Callable[[], None]
                  ) -> Iterator[None]:
        """Run the body in a window with the session closed: the first tool of a window
        calls ``close``, the last ``reopen`` (see the class). The callbacks come with each
        call so that the gate holds no reference back to its NvmlHost (no cycle)."""
        with self._cond:
            self._tools_waiting += 1
            while self._users or self._tool_running:
                self._cond.wait()
            self._tool_running = True
            opening = not self._closed
            self._closed = True
        try:
            if opening:
                close()
            yield
        finally:
            with self._cond:
                self._tools_waiting -= 1
                last = self._tools_waiting == 0
            try:
                if last:
                    reopen()
            finally:
                with self._cond:
                    if last:  # a tool that came during the reopen closes it again
                        self._closed = False
                    self._tool_running = False
                    self._cond.notify_all()


_F = TypeVar("_F", bound=Callable[..., Any])
T = TypeVar("T")


def _shared(method: _F) -> _F:
    """Run ``method`` as a user of the NVML session (see ``_SessionGate``)."""

    @functools.wraps(method)
    def run(self: NvmlHost, *args: Any, **kwargs: Any) -> Any:
        with self._gate.shared():
            return method(self, *args, **kwargs)

    return cast(_F, run)


class NvmlHost:
    """Reads and changes the GPUs that ``nvml`` sees. Use as a context manager (or call
    ``open``/``close``) so NVML is initialised and shut down around the work."""

    def __init__(self, nvml: Any, *, reset: Callable[[Sequence[str]], None] | None = None) -> None:
        self.nvml = nvml
        self._reset = reset
        self._opened = False
        self._reopen_after_tools = False
        self._gate = _SessionGate()

    # --- session -------------------------------------------------------------------

    def open(self) -> NvmlHost:
        n = self.nvml
        try:
            n.nvmlInit()
        except n.NVMLError as err:
            raise HostError(_init_failure(n, err)) from err
        self._opened = True
        return self

    def close(self) -> None:
        if self._opened:
            self._opened = False
            with contextlib.suppress(self.nvml.NVMLError):
                self.nvml.nvmlShutdown()

    def __enter__(self) -> NvmlHost:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- reading --------------------------------------------------------------------

    def driver_version(self) -> str | None:
        try:
            return _text(self.nvml.nvmlSystemGetDriverVersion())
        except self.nvml.NVMLError:
            return None

    def handles(self) -> Iterator[tuple[int, Any]]:
        n = self.nvml
        for index in range(n.nvmlDeviceGetCount()):
            yield index, n.nvmlDeviceGetHandleByIndex(index)

    def minor_number(self, handle: Any) -> int | None:
        """The N of /dev/nvidiaN, or None where the driver does not say."""
        try:
            return int(self.nvml.nvmlDeviceGetMinorNumber(handle))
        except self.nvml.NVMLError:
            return None

    @_shared
    def pci_of(self, handle: Any) -> str:
        info = self.nvml.nvmlDeviceGetPciInfo(handle)
        return normalize_pci(_text(info.busId))

    @_shared
    def handle(self, pci: str) -> Any:
        """The device handle of the GPU at ``pci`` (compared after normalisation, so any
        spelling NVML uses for the domain matches)."""
        want = normalize_pci(pci)
        for _, handle in self.handles():
            if self.pci_of(handle) == want:
                return handle
        raise HostError(f"{Address.gpu(want)}: no such GPU on this host")

    @_shared
    def find_gpu(self, pci: str) -> Gpu | None:
        """The GPU at ``pci`` read whole, or None where NVML has no such GPU."""
        want = normalize_pci(pci)
        for index, handle in self.handles():
            if self.pci_of(handle) == want:
                return self.read_gpu(index, handle)
        return None

    @_shared
    def read_gpus(self) -> tuple[Gpu, ...]:
        """Every GPU, sorted by PCI address, with its MIG state and instances."""
        gpus = [self.read_gpu(index, handle) for index, handle in self.handles()]
        return tuple(sorted(gpus, key=lambda g: g.pci))

    @_shared
    def read_gpu(self, index: int, handle: Any) -> Gpu:
        n = self.nvml
        pci_info = n.nvmlDeviceGetPciInfo(handle)
        pci = normalize_pci(_text(pci_info.busId))
        device_id = f"{(int(pci_info.pciDeviceId) >> 16) & 0xFFFF:04x}"
        name = _text(n.nvmlDeviceGetName(handle))
        model = match_model(name, device_id)
        capable, current, pending = self._mig_mode(handle)
        instances: tuple[GpuInstance, ...] = ()
        if current:
            instances = self.read_gpu_instances(handle)
        return Gpu(
            index=index,
            pci=pci,
            uuid=_text(n.nvmlDeviceGetUUID(handle)),
            name=name,
            model=model.id if model else None,
            pci_device_id=device_id,
            mig_capable=capable,
            mig_current=current,
            mig_pending=pending,
            gpu_instances=instances,
            processes=self.read_processes(handle),
        )

    def _mig_mode(self, handle: Any) -> tuple[bool, bool, bool]:
        n = self.nvml
        try:
            current, pending = n.nvmlDeviceGetMigMode(handle)
        except (n.NVMLError_NotSupported, n.NVMLError_InvalidArgument):
            return False, False, False
        return True, bool(current), bool(pending)

    def gi_profiles(self, handle: Any) -> tuple[ObservedProfile, ...]:
        """The GPU-instance profiles the driver offers: every enum below the binding's
        profile count is asked, and the ones this GPU does not have (NOT_SUPPORTED or
        INVALID_ARGUMENT, in any order) are skipped, so no gap hides a later profile."""
        n = self.nvml
        found: dict[int, ObservedProfile] = {}
        version = 2
        for enum in range(getattr(n, "NVML_GPU_INSTANCE_PROFILE_COUNT", _GI_PROFILE_COUNT)):
            try:
                try:
                    info = n.nvmlDeviceGetGpuInstanceProfileInfo(handle, enum, version)
                except n.NVMLError_FunctionNotFound:
                    if version == 1:
                        raise
                    version = 1  # a driver without the v2 struct: same numbers, no name
                    info = n.nvmlDeviceGetGpuInstanceProfileInfo(handle, enum, version)
            except (n.NVMLError_NotSupported, n.NVMLError_InvalidArgument):
                continue
            if info.id in found:
                continue
            name = (_strip_mig(_text(info.name)) if version == 2
                    else self._catalog_profile_name(handle, info))
            found[info.id] = ObservedProfile(
                enum=enum,
                id=int(info.id),
                name=name,
                slice_count=int(info.sliceCount),
                instance_count=int(info.instanceCount),
                memory_mib=int(info.memorySizeMB),
                sm_count=int(info.multiprocessorCount),
                copy_engines=int(info.copyEngineCount),
                decoders=int(info.decoderCount),
                encoders=int(info.encoderCount),
                jpegs=int(info.jpegCount),
                ofas=int(info.ofaCount),
                p2p=bool(info.isP2pSupported),
            )
        return tuple(found.values())

    def _catalog_profile_name(self, handle: Any, info: Any) -> str:
        """A v1 profile struct has no name: take the catalog's, else an approximation."""
        pci_info = self.nvml.nvmlDeviceGetPciInfo(handle)
        device_id = f"{(int(pci_info.pciDeviceId) >> 16) & 0xFFFF:04x}"
        model = match_model(_text(self.nvml.nvmlDeviceGetName(handle)), device_id)
        profile = model.profile_by_id(int(info.id)) if model else None
        if profile is not None:
            return profile.name
        return f"{info.sliceCount}g.{round(int(info.memorySizeMB) / 1024)}gb"

    def gi_placements(self, handle: Any, profile_id: int) -> tuple[tuple[int, int], ...]:
        """Every (start, size) the profile may occupy on this GPU, free or not."""
        n = self.nvml
        # 64: more than any GPU's placement grid
        return _possible_placements(n.nvmlDeviceGetGpuInstancePossiblePlacements, handle,
                                    profile_id, n.c_nvmlGpuInstancePlacement_t, 64)

    def _gi_handles(self, handle: Any, profile: ObservedProfile) -> list[Any]:
        n = self.nvml
        capacity = max(profile.instance_count, 1)
        array = (n.c_nvmlGpuInstance_t * capacity)()
        count = ctypes.c_uint(0)
        n.nvmlDeviceGetGpuInstances(handle, profile.id, array, ctypes.byref(count))
        return [array[i] for i in range(count.value)]

    def gi_handles(self, handle: Any) -> Iterator[tuple[ObservedProfile, Any, Any]]:
        """(profile, GI handle, nvmlGpuInstanceGetInfo) for every GI on the GPU."""
        return self._all_gi_handles(handle)

    def _all_gi_handles(self, handle: Any) -> Iterator[tuple[ObservedProfile, Any, Any]]:
        """(profile, GI handle, nvmlGpuInstanceGetInfo) for every GI on the GPU."""
        for profile in self.gi_profiles(handle):
            for gi in self._gi_handles(handle, profile):
                yield profile, gi, self.nvml.nvmlGpuInstanceGetInfo(gi)

    def read_gpu_instances(self, handle: Any) -> tuple[GpuInstance, ...]:
        uuids = self.mig_device_uuids(handle)
        instances = []
        for profile, gi, info in self._all_gi_handles(handle):
            gi_id = int(info.id)
            cis = tuple(
                ComputeInstance(
                    ci_id=ci_id,
                    profile_id=profile_id,
                    placement_start=start,
                    placement_size=size,
                    mig_uuid=uuids.get((gi_id, ci_id)),
                )
                for ci_id, profile_id, start, size in self._read_cis(gi)
            )
            instances.append(
                GpuInstance(
                    gi_id=gi_id,
                    profile_id=int(info.profileId),
                    profile_name=profile.name,
                    placement_start=int(info.placement.start),  # read back, never inferred
                    placement_size=int(info.placement.size),
                    compute_instances=tuple(sorted(cis, key=lambda c: c.placement_start)),
                )
            )
        return tuple(sorted(instances, key=lambda g: (g.placement_start, g.placement_size)))

    def ci_profiles(self, gi: Any) -> tuple[CiProfileInfo, ...]:
        n = self.nvml
        found: dict[int, CiProfileInfo] = {}
        shared = n.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED
        for enum in range(getattr(n, "NVML_COMPUTE_INSTANCE_PROFILE_COUNT", _CI_PROFILE_COUNT)):
            try:
                info = n.nvmlGpuInstanceGetComputeInstanceProfileInfo(gi, enum, shared)
            except (n.NVMLError_NotSupported, n.NVMLError_InvalidArgument):
                continue  # as for GI profiles: skip, never stop
            if info.id not in found:
                found[info.id] = CiProfileInfo(
                    enum=enum,
                    id=int(info.id),
                    name=_strip_mig(_text(info.name)),
                    slice_count=int(info.sliceCount),
                    instance_count=int(info.instanceCount),
                )
        return tuple(found.values())

    def _ci_handles(self, gi: Any) -> Iterator[tuple[Any, Any]]:
        """(CI handle, nvmlComputeInstanceGetInfo) for every CI in the GI."""
        n = self.nvml
        for profile in self.ci_profiles(gi):
            capacity = max(profile.instance_count, 1)
            array = (n.c_nvmlComputeInstance_t * capacity)()
            count = ctypes.c_uint(0)
            n.nvmlGpuInstanceGetComputeInstances(gi, profile.id, array, ctypes.byref(count))
            for i in range(count.value):
                yield array[i], n.nvmlComputeInstanceGetInfo(array[i])

    def _read_cis(self, gi: Any) -> list[tuple[int, int, int, int]]:
        return [
            (int(info.id), int(info.profileId), int(info.placement.start),
             int(info.placement.size))
            for _, info in self._ci_handles(gi)
        ]

    def mig_device_uuids(self, handle: Any) -> dict[tuple[int, int], str]:
        """``(gi_id, ci_id) -> "MIG-<uuid>"`` for every MIG device of the GPU."""
        n = self.nvml
        try:
            count = n.nvmlDeviceGetMaxMigDeviceCount(handle)
        except n.NVMLError_NotSupported:
            return {}
        uuids: dict[tuple[int, int], str] = {}
        for index in range(count):
            try:
                mig = n.nvmlDeviceGetMigDeviceHandleByIndex(handle, index)
            except n.NVMLError_NotFound:
                continue
            key = (n.nvmlDeviceGetGpuInstanceId(mig), n.nvmlDeviceGetComputeInstanceId(mig))
            uuids[key] = _text(n.nvmlDeviceGetUUID(mig))
        return uuids

    def read_processes(self, handle: Any) -> tuple[GpuProcess, ...]:
        n = self.nvml
        try:
            procs = n.nvmlDeviceGetComputeRunningProcesses(handle)
        except (n.NVMLError_NotSupported, n.NVMLError_NoPermission):
            return ()
        found = {}
        for proc in procs:
            pid = int(proc.pid)
            try:
                name = _text(n.nvmlSystemGetProcessName(pid))
            except n.NVMLError:
                name = ""
            found[pid] = GpuProcess(pid=pid, name=name)
        return tuple(found[pid] for pid in sorted(found))

    def _no_vgpu(self) -> tuple[type[BaseException], ...]:
        """The answers of a driver without vGPU host support (bare metal, old NVML)."""
        n = self.nvml
        return (n.NVMLError_NotSupported, n.NVMLError_FunctionNotFound)

    @_shared
    def vgpu_types(self, handle: Any) -> dict[int, VgpuTypeInfo]:
        """The vGPU types the GPU supports, by type id, with the GI profile each needs as
        the driver maps it (``nvmlVgpuTypeGetGpuInstanceProfileId``); empty where the
        driver is no vGPU host driver. Type ids are the ``N`` of mdev's ``nvidia-N`` and
        the ids of vendor VFIO's files (section 1.3), so sysfs is matched by id."""
        n = self.nvml
        try:
            ids = n.nvmlDeviceGetSupportedVgpus(handle)
        except self._no_vgpu():
            return {}
        out: dict[int, VgpuTypeInfo] = {}
        for raw in ids:
            tid = int(raw)
            profile = int(n.nvmlVgpuTypeGetGpuInstanceProfileId(tid))
            out[tid] = VgpuTypeInfo(tid, _text(n.nvmlVgpuTypeGetName(tid)).strip(),
                                    None if profile == NO_GI else profile)
        return out

    @_shared
    def active_vgpus(self, handle: Any) -> tuple[ActiveVgpu, ...]:
        """The vGPUs of the GPU whose VMs run, each with its backing GI id; empty where
        the driver has no vGPU support. A vGPU that stopped being active between the
        listing and the question (its VM stopped) is left out. The listing sizes its
        array, then fills it: a VM that starts in between (a parallel apply starts VMs)
        makes it too small, and it is asked again."""
        n = self.nvml
        for attempt in range(ACTIVE_VGPU_TRIES):
            try:
                instances = n.nvmlDeviceGetActiveVgpus(handle)
                break
            except self._no_vgpu():
                return ()
            except n.NVMLError_InsufficientSize:
                if attempt == ACTIVE_VGPU_TRIES - 1:
                    raise
        found = []
        for inst in instances:
            try:
                type_id = int(n.nvmlVgpuInstanceGetType(inst))
                gi = int(n.nvmlVgpuInstanceGetGpuInstanceId(inst))
                vm_id, _ = n.nvmlVgpuInstanceGetVmID(inst)
                try:
                    mdev: str | None = _text(n.nvmlVgpuInstanceGetMdevUUID(inst)).lower()
                except n.NVMLError_NotSupported:
                    mdev = None  # vendor VFIO: no mdev behind the vGPU
            except n.NVMLError_NotFound:
                continue
            found.append(ActiveVgpu(type_id, _text(vm_id).lower() or None, mdev or None,
                                    None if gi == NO_GI else gi))
        return tuple(found)

    # --- changing (apply only) ---------------------------------------------------------

    def _call(self, where: str, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except self.nvml.NVMLError as err:
            raise NvmlOperationError(
                f"{where}: {what} failed: {nvml_message(err)}", nvml_code(err)
            ) from err

    @_shared
    def set_mig_mode(self, pci: str, enabled: bool) -> int:
        """Ask for MIG mode on/off; returns NVML's activation status (0 done, 19 pending
        until the GPU is idle and reset, 16 reset required)."""
        n = self.nvml
        mode = n.NVML_DEVICE_MIG_ENABLE if enabled else n.NVML_DEVICE_MIG_DISABLE
        where = str(Address.gpu(normalize_pci(pci)).mig())
        return int(
            self._call(where, "nvmlDeviceSetMigMode", n.nvmlDeviceSetMigMode,
                       self.handle(pci), mode)
        )

    def _profile(self, handle: Any, profile_id: int, where: str) -> ObservedProfile:
        capable, current, _ = self._mig_mode(handle)
        if not current:
            state = "MIG mode is not enabled" if capable else "the GPU is not MIG-capable"
            raise HostError(f"{where}: {state}")
        for profile in self.gi_profiles(handle):
            if profile.id == profile_id:
                return profile
        raise HostError(f"{where}: the GPU has no GPU-instance profile with id {profile_id}")

    @_shared
    def create_gpu_instance(self, pci: str, profile_id: int, start: int, *,
                            where: str | None = None) -> GpuInstance:
        """Create a GI of ``profile_id`` at placement ``start`` (always an explicit
        placement: the driver's own choice depends on creation order). ``where``: the
        resource's address for messages (the plan's, which names the profile)."""
        n = self.nvml
        handle = self.handle(pci)
        where = where or _gi_where(pci, profile_id, start)
        profile = self._profile(handle, profile_id, where)
        legal = dict(
            self._call(where, "nvmlDeviceGetGpuInstancePossiblePlacements",
                       self.gi_placements, handle, profile_id)
        )
        placement = _placement_at(n.c_nvmlGpuInstancePlacement_t, legal, start,
                                  f"{where}: {profile.name}")
        gi = self._call(where, "nvmlDeviceCreateGpuInstanceWithPlacement",
                        n.nvmlDeviceCreateGpuInstanceWithPlacement,
                        handle, profile_id, ctypes.byref(placement))
        info = n.nvmlGpuInstanceGetInfo(gi)
        return GpuInstance(
            gi_id=int(info.id),
            profile_id=int(info.profileId),
            profile_name=profile.name,
            placement_start=int(info.placement.start),
            placement_size=int(info.placement.size),
        )

    def _find_gi(self, handle: Any, start: int, where: str,
                 profile_id: int | None = None) -> Any:
        for profile, gi, info in self._all_gi_handles(handle):
            if int(info.placement.start) == start and profile_id in (None, profile.id):
                return gi
        raise HostError(f"{where}: no GPU instance at placement {start}")

    @_shared
    def destroy_gpu_instance(self, pci: str, profile_id: int, start: int, *,
                             where: str | None = None) -> None:
        handle = self.handle(pci)
        where = where or _gi_where(pci, profile_id, start)
        gi = self._find_gi(handle, start, where, profile_id)
        self._call(where, "nvmlGpuInstanceDestroy", self.nvml.nvmlGpuInstanceDestroy, gi)

    @_shared
    def create_compute_instance(self, pci: str, gi_start: int, ci_profile_id: int,
                                ci_start: int | None = None, *,
                                where: str | None = None) -> ComputeInstance:
        """Create a CI in the GI at ``gi_start``; at ``ci_start`` when given, else where
        the driver puts it (a lone full-size CI has only one place)."""
        n = self.nvml
        handle = self.handle(pci)
        where = where or _ci_where(pci, gi_start, ci_start, ci_profile_id)
        gi = self._find_gi(handle, gi_start, where)
        if ci_start is None:
            ci = self._call(where, "nvmlGpuInstanceCreateComputeInstance",
                            n.nvmlGpuInstanceCreateComputeInstance, gi, ci_profile_id)
        else:
            legal = dict(self._call(where, "nvmlGpuInstanceGetComputeInstancePossiblePlacements",
                                    self.ci_placements, gi, ci_profile_id))
            placement = _placement_at(n.c_nvmlComputeInstancePlacement_t, legal, ci_start,
                                      f"{where}:")
            ci = self._call(where, "nvmlGpuInstanceCreateComputeInstanceWithPlacement",
                            n.nvmlGpuInstanceCreateComputeInstanceWithPlacement,
                            gi, ci_profile_id, ctypes.byref(placement))
        info = n.nvmlComputeInstanceGetInfo(ci)
        gi_id = int(n.nvmlGpuInstanceGetInfo(gi).id)
        ci_id = int(info.id)
        return ComputeInstance(
            ci_id=ci_id,
            profile_id=int(info.profileId),
            placement_start=int(info.placement.start),
            placement_size=int(info.placement.size),
            mig_uuid=self.mig_device_uuids(handle).get((gi_id, ci_id)),
        )

    def ci_placements(self, gi: Any, profile_id: int) -> tuple[tuple[int, int], ...]:
        n = self.nvml
        return _possible_placements(n.nvmlGpuInstanceGetComputeInstancePossiblePlacements, gi,
                                    profile_id, n.c_nvmlComputeInstancePlacement_t, 16)

    @_shared
    def destroy_compute_instance(self, pci: str, gi_start: int, ci_start: int, *,
                                 where: str | None = None) -> None:
        handle = self.handle(pci)
        where = where or _ci_where(pci, gi_start, ci_start)
        gi = self._find_gi(handle, gi_start, where)
        for ci, info in self._ci_handles(gi):
            if int(info.placement.start) == ci_start:
                self._call(where, "nvmlComputeInstanceDestroy",
                           self.nvml.nvmlComputeInstanceDestroy, ci)
                return
        raise HostError(f"{where}: no compute instance at placement {ci_start}")

    @_shared
    def nvlink_peers(self, pci: str) -> tuple[str, ...]:
        """The GPUs NVLink-connected to the GPU at ``pci``: the remote GPU of each direct
        link, and, when a link goes to an NVSwitch, every other GPU with a link to one (an
        HGX board's one fabric). Links are walked to ``NVML_NVLINK_MAX_LINKS``, skipping
        the ones a GPU lacks (NOT_SUPPORTED / INVALID_ARGUMENT); a GPU without NVLink
        has no peers."""
        want = normalize_pci(pci)
        gpus, on_switch = {}, set()
        for _, handle in self.handles():
            at = self.pci_of(handle)
            direct, switch = self._links(handle)
            gpus[at] = direct
            if switch:
                on_switch.add(at)
        peers = set(gpus.get(want, ()))
        if want in on_switch:
            peers |= on_switch
        peers.discard(want)
        return tuple(sorted(peers))

    def _links(self, handle: Any) -> tuple[set[str], bool]:
        n = self.nvml
        skip = {getattr(n, "NVML_ERROR_NOT_SUPPORTED", 3),
                getattr(n, "NVML_ERROR_INVALID_ARGUMENT", 2)}
        direct: set[str] = set()
        switch = False
        for link in range(getattr(n, "NVML_NVLINK_MAX_LINKS", 18)):
            try:
                if not n.nvmlDeviceGetNvLinkState(handle, link):
                    continue
                kind = n.nvmlDeviceGetNvLinkRemoteDeviceType(handle, link)
                if kind == getattr(n, "NVML_NVLINK_DEVICE_TYPE_SWITCH", 2):
                    switch = True
                elif kind == getattr(n, "NVML_NVLINK_DEVICE_TYPE_GPU", 0):
                    info = n.nvmlDeviceGetNvLinkRemotePciInfo(handle, link)
                    direct.add(normalize_pci(_text(info.busId)))
            except n.NVMLError as err:
                if nvml_code(err) in skip:
                    continue
                raise
        return direct, switch

    def _reset_would_change(self, pci: str) -> str | None:
        """Why resetting this GPU along with another would lose something (None: it is
        idle). A pending MIG mode is no reason: the reset makes effective what was asked
        for (as mig-parted resets every GPU at once)."""
        gpu = self.find_gpu(pci)
        if gpu is None:
            return "not found"
        if gpu.gpu_instances:
            return f"{len(gpu.gpu_instances)} GPU instance(s)"
        if gpu.processes:
            return "processes " + ", ".join(sorted({p.name for p in gpu.processes}))
        return None

    def reset_gpu(self, pci: str) -> None:
        """Reset the GPU (pynvml has no reset call; nvidia-smi does it). Our own NVML
        session is closed meanwhile and opened again after: an open session is a client
        that keeps the GPU from resetting (nvidia-smi(1); mig-parted shuts NVML down before
        its reset too: docs/reference/vgpu-on-mig.md section 6). Handles taken before are
        stale afterwards; every NvmlHost method looks its handles up again."""
        pci = normalize_pci(pci)
        self.handle(pci)  # fail early, with a clear message, on an unknown GPU
        reset = self._reset
        if reset is None:
            raise HostError(f"{Address.gpu(pci)}: no way to reset GPUs on this host")
        try:
            self.without_session(lambda: reset([pci]))
            return
        except HostError as alone:
            peers = self.nvlink_peers(pci)
            if not peers:
                raise
            failed = alone
        # nvidia-smi(1): where a GPU cannot be reset alone (an Ampere NVSwitch board whose
        # Fabric Manager is not running, or a pre-Ampere NVLink board), every NVLink peer
        # goes in the same command. Only idle peers are taken along: a reset wipes their
        # instances, which no plan asked for (an idle peer's VFs go too; the next apply
        # enables them again).
        busy = [(p, why) for p in peers if (why := self._reset_would_change(p))]
        if busy:
            raise HostError(
                f"{failed}; if it must be reset with its NVLink peers (HGX A100 without "
                "Fabric Manager running), aihow does that only while they are idle, and "
                + ", ".join(f"{Address.gpu(p)} has {why}" for p, why in busy)
                + ": start Fabric Manager (on HGX A100 a single-GPU reset needs it), or free "
                "those GPUs, and apply again") from None
        self.without_session(lambda: reset([pci, *peers]))

    def in_use(self) -> contextlib.AbstractContextManager[None]:
        """Hold off ``without_session`` meanwhile: for another NVML session of this process
        (a probe between steps), which would keep a GPU from being reset or unbound."""
        return self._gate.shared()

    def without_session(self, run: Callable[[], T]) -> T:
        """Run ``run`` (a tool such as nvidia-smi or sriov-manage) with this NVML session
        closed, once no call is in flight, and open it again after: an open session is a
        client that keeps a GPU from being reset or unbound (docs/reference/vgpu-on-mig.md
        sections 4 and 6). Tools of other threads that wait at the same time share the
        closed window, one after another (``_SessionGate``). Handles taken before are
        stale afterwards; every method looks its handles up again."""
        with self._gate.exclusive(self._close_for_tools, self._open_after_tools):
            return run()

    def _close_for_tools(self) -> None:
        self._reopen_after_tools = self._opened
        self.close()

    def _open_after_tools(self) -> None:
        if self._reopen_after_tools:
            self._reopen_after_tools = False
            self.open()


def _gi_where(pci: str, profile_id: int, start: int) -> str:
    """A GI named for messages when the caller gave no address: NVML knows the profile
    by id only, and the plan's ``gi[PROFILE@START]`` needs its name."""
    return f"{Address.gpu(normalize_pci(pci))} (GPU-instance profile id {profile_id} at {start})"


def _ci_where(pci: str, gi_start: int, ci_start: int | None,
              profile_id: int | None = None) -> str:
    what = f" of profile id {profile_id}" if profile_id is not None else ""
    at = f" at {ci_start}" if ci_start is not None else ""
    return (f"{Address.gpu(normalize_pci(pci))} (compute instance{what}{at} in the GPU "
            f"instance at {gi_start})")


# ASSUMED: a GPU reset finishes within seconds; two minutes means it is stuck.
RESET_TIMEOUT_S = 120


def nvidia_smi_reset(nvidia_smi: str, timeout: float = RESET_TIMEOUT_S
                     ) -> Callable[[Sequence[str]], None]:
    """A reset function that runs ``nvidia-smi --gpu-reset -i PCI[,PCI...]`` (one command
    for all the GPUs given, with a timeout)."""

    def reset(pcis: Sequence[str]) -> None:
        where = Address.gpu(pcis[0])
        try:
            proc = subprocess.run(
                [nvidia_smi, "--gpu-reset", "-i", ",".join(pcis)],
                capture_output=True, text=True, check=False, timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            raise HostError(f"{where}: GPU reset did not finish within "
                            f"{timeout:g} s ({nvidia_smi} --gpu-reset)") from None
        except OSError as err:
            raise HostError(f"{where}: cannot run {nvidia_smi}: {err.strerror}") from err
        if proc.returncode != 0:
            lines = [x.strip() for x in (proc.stdout + proc.stderr).strip().splitlines()]
            # The first line says that it failed, a GPU's own line says why (in use, or the
            # NVLink peers that must be reset with it on an HGX A100 without Fabric Manager).
            why = next((x for x in lines if x.startswith("GPU ") and ":" in x[4:]), None)
            detail = why or (lines[0] if lines else f"exit status {proc.returncode}")
            together = f" (with {', '.join(pcis[1:])})" if len(pcis) > 1 else ""
            raise HostError(f"{where}: GPU reset{together} failed: {detail}")

    return reset


def _init_failure(n: Any, err: BaseException) -> str:
    code = nvml_code(err)
    if code == getattr(n, "NVML_ERROR_LIBRARY_NOT_FOUND", 12):
        return ("NVML library not found (libnvidia-ml.so.1): no NVIDIA driver on this host; "
                "use --host sim:DIR to try aihow on a simulated host")
    if code == getattr(n, "NVML_ERROR_NO_PERMISSION", 4):
        return "NVML: no permission to read the GPUs (run as root)"
    if code == getattr(n, "NVML_ERROR_DRIVER_NOT_LOADED", 9):
        return "NVML: the NVIDIA kernel driver is not loaded"
    return f"NVML initialisation failed: {nvml_message(err)}"
