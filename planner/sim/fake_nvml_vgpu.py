"""The vGPU C symbols of the simulated ``libnvidia-ml`` (mixed into ``FakeNvmlLib``).

What they answer, with the sources in docs/reference/vgpu-on-mig.md:

* type queries (section 1): ``nvmlDeviceGetSupportedVgpus`` lists every MIG-backed type of
  the board, MIG on or off; ``nvmlDeviceGetCreatableVgpus`` those a free VF could take now;
  ``nvmlVgpuTypeGetName`` / ``GetClass`` / ``GetGpuInstanceProfileId`` take a bare type id
  (global to the driver). A host without vGPU support answers NOT_SUPPORTED, as a
  bare-metal driver does.
* instance queries (section 2.4): ``nvmlDeviceGetActiveVgpus`` lists the vGPUs whose VM
  runs (a running domain of the simulated libvirt with the mdev or VF as a hostdev; ASSUMED
  from strong indications, see the doc), and each instance tells its type, UUID, mdev UUID
  (mdev backend only, NOT_SUPPORTED otherwise), VM UUID and backing GI id.
"""

from __future__ import annotations

import functools
import uuid as uuidlib
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from planner.host.libvirt_domains import hostdevs_in_xml
from planner.sim import vgpu
from planner.sim.codes import DriverError, Nvml
from planner.sim.ctypes_io import _array, _deref, _int, _write_string
from planner.sim.libvirt_store import STATE_RUNNING, StoreSnapshot, store_snapshot
from planner.sim.state import SimGpu, SimState

_STATE_PAUSED = 3
_VM_ID_UUID = 1  # NVML_VGPU_VM_ID_UUID: how KVM names the VM of a vGPU
_NO_ID = 0xFFFFFFFF  # INVALID_GPU_INSTANCE_(PROFILE_)ID

# C symbol -> the pynvml function name faults are armed with.
VGPU_SYMBOLS = {
    "nvmlDeviceGetSupportedVgpus": "nvmlDeviceGetSupportedVgpus",
    "nvmlDeviceGetCreatableVgpus": "nvmlDeviceGetCreatableVgpus",
    "nvmlVgpuTypeGetName": "nvmlVgpuTypeGetName",
    "nvmlVgpuTypeGetClass": "nvmlVgpuTypeGetClass",
    "nvmlVgpuTypeGetGpuInstanceProfileId": "nvmlVgpuTypeGetGpuInstanceProfileId",
    "nvmlDeviceGetActiveVgpus": "nvmlDeviceGetActiveVgpus",
    "nvmlVgpuInstanceGetType": "nvmlVgpuInstanceGetType",
    "nvmlVgpuInstanceGetUUID": "nvmlVgpuInstanceGetUUID",
    "nvmlVgpuInstanceGetMdevUUID": "nvmlVgpuInstanceGetMdevUUID",
    "nvmlVgpuInstanceGetVmID": "nvmlVgpuInstanceGetVmID",
    "nvmlVgpuInstanceGetGpuInstanceId": "nvmlVgpuInstanceGetGpuInstanceId",
}


def running_devices(root: str) -> Mapping[str, str]:
    """Device key (mdev UUID, VF address) -> UUID of the running domain that uses it.
    Worked out once per state of the libvirt store (shared: never change it)."""
    return store_snapshot(Path(root)).derived("running_devices", _running_devices)


def _running_devices(snap: StoreSnapshot) -> Mapping[str, str]:
    out: dict[str, str] = {}
    for rec in snap.records:
        xml = rec.live_xml or rec.persistent_xml
        if rec.state not in (STATE_RUNNING, _STATE_PAUSED) or not xml:
            continue
        found, keys = _devices_of(rec.name, xml)
        out.update(dict.fromkeys(keys, found))
    return out


@functools.lru_cache(maxsize=8192)
def _devices_of(name: str, xml: str) -> tuple[str, tuple[str, ...]]:
    """(the domain's UUID, the keys of its host devices). Cached by the XML: a change of
    the store changes one or two domains, and the others need no parsing again."""
    found = ET.fromstring(xml).findtext("uuid") or str(
        uuidlib.uuid5(uuidlib.NAMESPACE_URL, name))
    return found, tuple(hd.key.lower() for hd in hostdevs_in_xml(xml))


class VgpuSymbols:
    """Mixed into ``FakeNvmlLib``; uses its ``_gpu``, ``_deref`` helpers via the module's."""

    root: str
    # (state, running devices, active vGPUs): the last answer of ``_active``
    _active_memo: tuple[SimState, Mapping[str, str], dict[int, vgpu.ActiveVgpu]] | None = None

    def _gpu(self, state: SimState, handle: Any) -> SimGpu:  # provided by FakeNvmlLib
        raise NotImplementedError

    def _vgpu_host(self, state: SimState) -> None:
        if state.vgpu_backend is None:
            raise DriverError(Nvml.NOT_SUPPORTED, "the driver is not a vGPU host driver")

    def _type(self, state: SimState, type_id: Any) -> vgpu.VgpuTypeDef:
        self._vgpu_host(state)
        t = vgpu.type_by_number(state, _int(type_id))
        if t is None:
            raise DriverError(Nvml.INVALID_ARGUMENT, f"no vGPU type {_int(type_id)}")
        return t

    def _put_ids(self, count: Any, ref: Any, ids: list[int]) -> int:
        n = _deref(count)
        if ref is None or n.value < len(ids):
            n.value = len(ids)
            return Nvml.INSUFFICIENT_SIZE if ids else Nvml.SUCCESS
        arr, _ = _array(ref)
        for i, v in enumerate(ids):
            arr[i] = v
        n.value = len(ids)
        return Nvml.SUCCESS

    def _c_nvmlDeviceGetSupportedVgpus(self, state: SimState, handle: Any, count: Any,
                                       ref: Any) -> int:
        gpu = self._gpu(state, handle)
        self._vgpu_host(state)
        return self._put_ids(count, ref, [t.number for t in vgpu.supported_types(gpu)])

    def _c_nvmlDeviceGetCreatableVgpus(self, state: SimState, handle: Any, count: Any,
                                       ref: Any) -> int:
        gpu = self._gpu(state, handle)
        self._vgpu_host(state)
        free_vf = next((vf for vf in vgpu.vfs(gpu) if not vgpu.vf_busy(state, gpu, vf)), None)
        ids = [t.number for t in vgpu.vgpu_types(state, gpu)
               if free_vf is not None and vgpu.available(state, gpu, free_vf, t)]
        return self._put_ids(count, ref, ids)

    def _c_nvmlVgpuTypeGetName(self, state: SimState, type_id: Any, buf: Any,
                               size: Any) -> None:
        _write_string(buf, _deref(size).value, self._type(state, type_id).name)

    def _c_nvmlVgpuTypeGetClass(self, state: SimState, type_id: Any, buf: Any,
                                size: Any) -> None:
        self._type(state, type_id)
        _write_string(buf, _deref(size).value, "Compute")  # C-series (vgpu-on-mig.md 1.4)

    def _c_nvmlVgpuTypeGetGpuInstanceProfileId(self, state: SimState, type_id: Any,
                                               out: Any) -> None:
        _deref(out).value = self._type(state, type_id).profile.id

    def _active(self, state: SimState) -> dict[int, vgpu.ActiveVgpu]:
        """Every active vGPU of the host by instance id, worked out once per state and
        store (each vGPU instance query asks, several per instance)."""
        running = running_devices(self.root)
        last = self._active_memo
        if last is not None and last[0] is state and last[1] is running:
            return last[2]
        found = {a.instance: a for g in state.gpus
                 for a in vgpu.active_vgpus(state, g, running)}
        self._active_memo = (state, running, found)
        return found

    def _instance(self, state: SimState, instance: Any) -> vgpu.ActiveVgpu:
        self._vgpu_host(state)
        found = self._active(state).get(_int(instance))
        if found is None:
            raise DriverError(Nvml.NOT_FOUND, "not an active vGPU instance")
        return found

    def _c_nvmlDeviceGetActiveVgpus(self, state: SimState, handle: Any, count: Any,
                                    ref: Any) -> int:
        gpu = self._gpu(state, handle)
        self._vgpu_host(state)
        active = vgpu.active_vgpus(state, gpu, running_devices(self.root))
        return self._put_ids(count, ref, [a.instance for a in active])

    def _c_nvmlVgpuInstanceGetType(self, state: SimState, instance: Any, out: Any) -> None:
        _deref(out).value = self._instance(state, instance).type_number

    def _c_nvmlVgpuInstanceGetUUID(self, state: SimState, instance: Any, buf: Any,
                                   size: Any) -> None:
        a = self._instance(state, instance)
        _write_string(_deref(buf), _int(size), str(uuidlib.uuid5(uuidlib.NAMESPACE_OID, a.key)))

    def _c_nvmlVgpuInstanceGetMdevUUID(self, state: SimState, instance: Any, buf: Any,
                                       size: Any) -> None:
        a = self._instance(state, instance)
        if a.mdev_uuid is None:
            raise DriverError(Nvml.NOT_SUPPORTED, "no mdev behind a vendor-VFIO vGPU")
        _write_string(_deref(buf), _int(size), a.mdev_uuid)

    def _c_nvmlVgpuInstanceGetVmID(self, state: SimState, instance: Any, buf: Any, size: Any,
                                   id_type: Any) -> None:
        a = self._instance(state, instance)
        _write_string(_deref(buf), _int(size), a.vm_uuid)
        _deref(id_type).value = _VM_ID_UUID

    def _c_nvmlVgpuInstanceGetGpuInstanceId(self, state: SimState, instance: Any,
                                            out: Any) -> None:
        a = self._instance(state, instance)
        _deref(out).value = a.gi.gi_id if a.gi is not None else _NO_ID
