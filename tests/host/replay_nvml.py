"""A replay NVML: answers recorded from real GPUs (``tests/host/replay/*.json``, each
citing where its facts come from) served at the pynvml function level, so ``NvmlHost``
runs its real code path on data the simulator did not make.

Functions, signatures, structs, constants and error classes are pynvml's own (anything
not replayed here is looked up on the pynvml module); GPU and compute instances are
handed out as pynvml's handle pointer types. A query the recording has no answer for
raises pynvml's NOT_SUPPORTED and is remembered in ``unanswered``; every call is listed
in ``calls``. Nothing here changes anything: there is no mutating function to replay.
"""

from __future__ import annotations

import ctypes
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pynvml

HERE = Path(__file__).parent / "replay"


@dataclass
class _Gpu:
    data: dict[str, Any]
    gis: list[tuple[Any, dict[str, Any]]] = field(default_factory=list)  # (handle, record)


class ReplayNvml:
    def __init__(self, recording: dict[str, Any]) -> None:
        self.recording = recording
        self.calls: list[str] = []
        self.unanswered: list[str] = []
        self._gpus = [_Gpu(g) for g in recording["gpus"]]
        self._keep: list[Any] = []  # the structs behind handed-out pointers
        self._gi_of: dict[int, tuple[_Gpu, dict[str, Any]]] = {}
        for gpu in self._gpus:
            for rec in gpu.data.get("gpu_instances", ()):
                handle = self._pointer(pynvml.c_nvmlGpuInstance_t)
                gpu.gis.append((handle, rec))
                self._gi_of[self._addr(handle)] = (gpu, rec)
        self._missing = getattr(pynvml, "NVML_ERROR_" + recording["missing_profile_error"])

    @classmethod
    def load(cls, name: str) -> ReplayNvml:
        return cls(json.loads((HERE / f"{name}.json").read_text()))

    # --- plumbing ---

    def __getattr__(self, name: str) -> Any:
        value = getattr(pynvml, name)
        if name.startswith("nvml") and callable(value):
            def unanswered(*args: Any, **kwargs: Any) -> Any:
                self.calls.append(name)
                self.unanswered.append(name)
                raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
            return unanswered
        return value  # constants, structs, error classes

    def _log(self, name: str) -> None:
        self.calls.append(name)

    def _pointer(self, ptr_type: Any) -> Any:
        target = ptr_type._type_()
        self._keep.append(target)
        return ptr_type(target)

    @staticmethod
    def _addr(handle: Any) -> int:
        return ctypes.addressof(handle.contents)

    def _gpu(self, handle: Any) -> _Gpu:
        return self._gpus[int(handle)]

    def _gi(self, gi: Any) -> tuple[_Gpu, dict[str, Any]]:
        return self._gi_of[self._addr(gi)]

    # --- system and devices ---

    def nvmlInit(self) -> None:
        self._log("nvmlInit")

    def nvmlShutdown(self) -> None:
        self._log("nvmlShutdown")

    def nvmlSystemGetDriverVersion(self) -> str:
        self._log("nvmlSystemGetDriverVersion")
        return str(self.recording["driver"])

    def nvmlDeviceGetCount(self) -> int:
        self._log("nvmlDeviceGetCount")
        return len(self._gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        self._log("nvmlDeviceGetHandleByIndex")
        return index  # an opaque handle to NvmlHost

    def nvmlDeviceGetName(self, handle: Any) -> str:
        self._log("nvmlDeviceGetName")
        return str(self._gpu(handle).data["name"])

    def nvmlDeviceGetUUID(self, handle: Any) -> str:
        self._log("nvmlDeviceGetUUID")
        return str(self._gpu(handle).data["uuid"])

    def nvmlDeviceGetPciInfo(self, handle: Any) -> Any:
        self._log("nvmlDeviceGetPciInfo")
        data = self._gpu(handle).data
        info = pynvml.nvmlPciInfo_t()
        info.busId = data["pci"].encode()
        info.pciDeviceId = (int(data["device_id"], 16) << 16) | 0x10DE
        return info

    def nvmlDeviceGetMigMode(self, handle: Any) -> list[int]:
        self._log("nvmlDeviceGetMigMode")
        return list(self._gpu(handle).data["mig"])

    def nvmlDeviceGetComputeRunningProcesses(self, handle: Any) -> list[Any]:
        self._log("nvmlDeviceGetComputeRunningProcesses")
        return []

    # --- GPU instances ---

    def nvmlDeviceGetGpuInstanceProfileInfo(self, handle: Any, profile: int,
                                            version: int = 2) -> Any:
        self._log("nvmlDeviceGetGpuInstanceProfileInfo")
        rec = next((p for p in self._gpu(handle).data["gi_profiles"] if p["enum"] == profile),
                   None)
        if rec is None:
            raise pynvml.NVMLError(self._missing)
        info = pynvml.c_nvmlGpuInstanceProfileInfo_v2_t()
        info.id, info.isP2pSupported, info.sliceCount = rec["id"], 0, rec["slices"]
        info.instanceCount, info.multiprocessorCount = rec["count"], rec["sm"]
        info.copyEngineCount, info.decoderCount, info.encoderCount = rec["ce"], rec["dec"], \
            rec["enc"]
        info.jpegCount, info.ofaCount, info.memorySizeMB = rec["jpg"], rec["ofa"], \
            rec["mem_mib"]
        info.name = rec["name"].encode()
        return info

    def nvmlDeviceGetGpuInstancePossiblePlacements(self, handle: Any, profile_id: int,
                                                   placements: Any, count: Any) -> None:
        self._log("nvmlDeviceGetGpuInstancePossiblePlacements")
        rec = next(p for p in self._gpu(handle).data["gi_profiles"] if p["id"] == profile_id)
        for i, start in enumerate(rec["placements"]):
            placements[i].start, placements[i].size = start, rec["size"]
        count._obj.value = len(rec["placements"])

    def nvmlDeviceGetGpuInstances(self, handle: Any, profile_id: int, array: Any,
                                  count: Any) -> None:
        self._log("nvmlDeviceGetGpuInstances")
        found = [h for h, rec in self._gpu(handle).gis if rec["profile_id"] == profile_id]
        for i, h in enumerate(found):
            array[i] = h
        count._obj.value = len(found)

    def nvmlGpuInstanceGetInfo(self, gi: Any) -> Any:
        self._log("nvmlGpuInstanceGetInfo")
        _, rec = self._gi(gi)
        info = pynvml.c_nvmlGpuInstanceInfo_t()
        info.id, info.profileId = rec["id"], rec["profile_id"]
        info.placement.start, info.placement.size = rec["start"], rec["size"]
        return info

    # --- compute instances (profiles only: the recordings hold no CI of their own) ---

    def nvmlGpuInstanceGetComputeInstanceProfileInfo(self, gi: Any, profile: int,
                                                     eng_profile: int, version: int = 2
                                                     ) -> Any:
        self._log("nvmlGpuInstanceGetComputeInstanceProfileInfo")
        _, rec = self._gi(gi)
        ci = next((c for c in rec["ci_profiles"] if c["enum"] == profile), None)
        if ci is None:
            raise pynvml.NVMLError(self._missing)
        info = pynvml.c_nvmlComputeInstanceProfileInfo_v2_t()
        info.id, info.sliceCount, info.instanceCount = ci["id"], ci["slices"], ci["count"]
        info.name = ci["name"].encode()
        return info

    def nvmlGpuInstanceGetComputeInstancePossiblePlacements(self, gi: Any, profile_id: int,
                                                            placements: Any, count: Any
                                                            ) -> None:
        self._log("nvmlGpuInstanceGetComputeInstancePossiblePlacements")
        _, rec = self._gi(gi)
        ci = next(c for c in rec["ci_profiles"] if c["id"] == profile_id)
        if "placements" not in ci:  # no real -lcipp output was ever published
            self.unanswered.append("nvmlGpuInstanceGetComputeInstancePossiblePlacements")
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        for i, start in enumerate(ci["placements"]):
            placements[i].start, placements[i].size = start, ci["slices"]
        count._obj.value = len(ci["placements"])

    def nvmlGpuInstanceGetComputeInstances(self, gi: Any, profile_id: int, array: Any,
                                           count: Any) -> None:
        self._log("nvmlGpuInstanceGetComputeInstances")
        count._obj.value = 0

    # --- vGPU types ---

    def nvmlDeviceGetSupportedVgpus(self, handle: Any) -> list[int]:
        self._log("nvmlDeviceGetSupportedVgpus")
        types = self._gpu(handle).data.get("vgpu_types")
        if types is None:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return [t["id"] for t in types]

    def _type(self, type_id: int) -> dict[str, Any]:
        for gpu in self._gpus:
            for t in gpu.data.get("vgpu_types") or ():
                if t["id"] == int(type_id):
                    return dict(t)
        raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)

    def nvmlVgpuTypeGetName(self, type_id: int) -> str:
        self._log("nvmlVgpuTypeGetName")
        return str(self._type(type_id)["name"])

    def nvmlVgpuTypeGetGpuInstanceProfileId(self, type_id: int) -> int:
        self._log("nvmlVgpuTypeGetGpuInstanceProfileId")
        got = self._type(type_id)["gi_profile_id"]
        return 0xFFFFFFFF if got is None else int(got)  # INVALID_GPU_INSTANCE_PROFILE_ID
