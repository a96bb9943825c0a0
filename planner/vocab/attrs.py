"""The attributes of each kind of resource: what a plan's ``before`` and ``after`` hold.

One frozen model per kind, written by plan-making (``planner.plan.resources``) and read
by the apply handlers, so both sides agree on names and types. ``to_json`` gives the
plan file's values (unchanged since format 1.0); ``attrs_from_json`` reads them back,
checked. ``COMPARED`` names the attributes whose difference is a change (the others
are shown, never compared). None of them holds an id the driver assigns anew at each
creation (GI/CI ids, MIG UUIDs), so a host rebuilt to the same layout compares equal.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import ConfigDict, TypeAdapter, ValidationError

from planner.vocab.kinds import Kind

Mode = Literal["enabled", "disabled"]
_FORBID = ConfigDict(extra="forbid")


class AttrsError(ValueError):
    """Attributes that do not fit their kind's model."""


@dataclass(frozen=True, slots=True)
class _Attrs:
    COMPARED: ClassVar[tuple[str, ...]] = ()
    OPTIONAL: ClassVar[tuple[str, ...]] = ()  # left out of the JSON when None

    def compared(self) -> tuple[Any, ...]:
        return tuple(getattr(self, k) for k in self.COMPARED)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in _names(type(self)):
            value = getattr(self, name)
            if value is None and name in self.OPTIONAL:
                continue
            out[name] = _json(value) if isinstance(value, tuple) else value
        return out


_NAMES: dict[type, tuple[str, ...]] = {}


def _names(model: type[_Attrs]) -> tuple[str, ...]:
    """The model's field names, looked up once (plan-making writes thousands)."""
    names = _NAMES.get(model)
    if names is None:
        names = _NAMES[model] = tuple(f.name for f in fields(model))
    return names


def _json(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_json(v) for v in value]
    return value


@dataclass(frozen=True, slots=True)
class MigModeAttrs(_Attrs):
    """``gpu[PCI].mig``: the current mode and the one pending a reset."""

    COMPARED = ("mode", "pending")
    mode: Mode
    pending: Mode

    @classmethod
    def of(cls, current: bool, pending: bool) -> MigModeAttrs:
        return cls("enabled" if current else "disabled", "enabled" if pending else "disabled")

    @property
    def on(self) -> bool:
        return self.mode == "enabled"

    @property
    def pending_on(self) -> bool:
        return self.pending == "enabled"


@dataclass(frozen=True, slots=True)
class GpuInstanceAttrs(_Attrs):
    """``gpu[PCI].gi[P@S]``: profile name, start and size in memory slices."""

    COMPARED = ("profile", "start", "size")
    profile: str
    start: int
    size: int


@dataclass(frozen=True, slots=True)
class ComputeInstanceAttrs(_Attrs):
    """``...gi[P@S].ci[P@S]``: profile name, start and size in compute slices."""

    COMPARED = ("profile", "start", "size")
    profile: str
    start: int
    size: int


@dataclass(frozen=True, slots=True)
class SriovAttrs(_Attrs):
    """``gpu[PCI].vfs``: whether the GPU's SR-IOV virtual functions are enabled."""

    COMPARED = ("enabled",)
    enabled: bool


@dataclass(frozen=True, slots=True)
class VgpuAttrs(_Attrs):
    """``vgpu[KEY]``: an mdev (KEY its UUID) or a VF with a vGPU type (KEY the VF).
    ``type_id`` is None while the VFs that will offer the type do not exist yet.
    ``gi`` is the GPU instance that backs it, ``PROFILE@START`` (None: not known); a vGPU
    on another instance than the plan's is a change. ``type_name`` is for display only:
    the type is identified by its id, or by ``gi``'s profile before the VFs exist."""

    COMPARED = ("backend", "parent", "gi")
    OPTIONAL = ("gi",)
    backend: Literal["mdev", "vfio-vf"]
    gpu: str
    parent: str
    type_id: str | None
    type_name: str
    gi: str | None = None


@dataclass(frozen=True, slots=True)
class HostdevAttrs(_Attrs):
    """``domain[NAME].hostdev[KEY]``: a device in the domain's persistent definition."""

    COMPARED = ("domain", "type", "device")
    OPTIONAL = ("mig_profile", "mig_uuid", "gpu_instance")
    domain: str
    type: Literal["mdev", "pci"]
    device: str
    # The MIG slice behind the device, as the plan binds it (shown, never compared): the
    # hostdev step records it in the domain's <aihow:vm> metadata.
    mig_profile: str | None = None
    mig_uuid: str | None = None  # the MIG UUID the config pins, if it pins one
    gpu_instance: str | None = None  # the backing GPU instance's address


@dataclass(frozen=True, slots=True)
class DomainAttrs(_Attrs):
    """``domain[NAME]`` as libvirt has it: its name and state; on a planned delete also
    its cluster and whole persistent XML (so the undo defines it again exactly)."""

    OPTIONAL = ("cluster", "xml")
    name: str
    state: str
    cluster: str | None = None
    xml: str | None = None


@dataclass(frozen=True, slots=True)
class VmAttrs(_Attrs):
    """``domain[NAME]`` as the config declares it: what its XML is rendered from (the
    ``after`` of a domain; ``planner.vm.vm_factory.spec_attrs``)."""

    name: str
    cluster: str
    role: str
    cpu_cores: int
    memory_gb: int
    disk_gb: int
    bridge: str
    base_image_path: str | None
    passthrough: tuple[tuple[str, str], ...]  # (PCI address, role)
    virtio_fs: tuple[tuple[str, str, bool], ...]  # (tag, host path, read-only)
    key_path: str
    # The config's identity of the node (recorded in the domain's metadata, so a later
    # plan can tell when a positional name now means another node) and whether a vGPU
    # slice is attached (a GPU VM has no emulated display).
    OPTIONAL = ("config", "ip", "mig_profile", "mig_uuid", "gpu_instance", "vgpu",
                "vgpu_type", "virt_type")
    config: str | None = None  # the config's metadata.name
    ip: str | None = None
    mig_profile: str | None = None  # the MIG slice the plan binds the node to ...
    mig_uuid: str | None = None  # ... the MIG UUID the config pins, if any ...
    gpu_instance: str | None = None  # ... the backing GPU instance's address ...
    vgpu: str | None = None  # ... and the vGPU device: an mdev UUID or a VF address
    vgpu_type: Literal["mdev", "pci"] | None = None
    virt_type: Literal["qemu"] | None = None  # None: KVM; "qemu": enable_kvm is false


@dataclass(frozen=True, slots=True)
class NetworkAttrs(_Attrs):
    """``network[NAME]``: a cluster's libvirt network (NAT, bridge and subnet from the
    config) and the static DHCP leases it hands out, (MAC, VM name, IP) each. Only the
    leases and whether it runs are compared: a bridge or subnet that differs is a
    plan-time error, never a change (the network may not be aihow's)."""

    COMPARED = ("active", "hosts")
    name: str
    bridge: str
    subnet: str
    active: bool
    hosts: tuple[tuple[str, str, str], ...]


@dataclass(frozen=True, slots=True)
class PoolAttrs(_Attrs):
    """``pool[NAME]``: a directory storage pool at ``path``."""

    COMPARED = ("active",)
    name: str
    path: str
    active: bool


@dataclass(frozen=True, slots=True)
class VolumeAttrs(_Attrs):
    """``pool[POOL].volume[NAME]``: a VM's qcow2 disk over ``backing`` (the base image
    as the config writes it; None for a volume found on the host). Existence is all
    that is compared: a volume that exists is the guest's disk and is adopted as it is."""

    pool: str
    name: str
    capacity_gb: int
    backing: str | None = None
    OPTIONAL = ("backing",)


@dataclass(frozen=True, slots=True)
class RunningAttrs(_Attrs):
    """``domain[NAME].running``: the domain runs, and ``autostart`` says whether libvirt
    starts it with the host. Present only while it runs: creating it starts the domain,
    deleting it shuts the domain down (ACPI, then destroy after a timeout)."""

    COMPARED = ("autostart",)
    domain: str
    autostart: bool


Attrs = (MigModeAttrs | GpuInstanceAttrs | ComputeInstanceAttrs | SriovAttrs | VgpuAttrs
         | HostdevAttrs | DomainAttrs | VmAttrs | NetworkAttrs | PoolAttrs | VolumeAttrs
         | RunningAttrs)

MODELS: dict[Kind, tuple[type[_Attrs], ...]] = {
    Kind.MIG_MODE: (MigModeAttrs,),
    Kind.GPU_INSTANCE: (GpuInstanceAttrs,),
    Kind.COMPUTE_INSTANCE: (ComputeInstanceAttrs,),
    Kind.SRIOV: (SriovAttrs,),
    Kind.VGPU: (VgpuAttrs,),
    Kind.HOSTDEV: (HostdevAttrs,),
    Kind.DOMAIN: (VmAttrs, DomainAttrs),  # declared (after) or found (before)
    Kind.NETWORK: (NetworkAttrs,),
    Kind.POOL: (PoolAttrs,),
    Kind.VOLUME: (VolumeAttrs,),
    Kind.RUNNING: (RunningAttrs,),
}

for _model in (MigModeAttrs, GpuInstanceAttrs, ComputeInstanceAttrs, SriovAttrs, VgpuAttrs,
               HostdevAttrs, DomainAttrs, VmAttrs, NetworkAttrs, PoolAttrs, VolumeAttrs,
               RunningAttrs):
    setattr(_model, "__pydantic_config__", _FORBID)  # noqa: B010 - pydantic reads it

A = TypeVar("A", bound=_Attrs)


_ADAPTERS: dict[type[_Attrs], Callable[[Any], Any]] = {}


def _adapter(model: type[_Attrs]) -> Callable[[Any], Any]:
    if model not in _ADAPTERS:  # built on first use: plan-making never needs them
        # the core validator itself: TypeAdapter.validate_python adds a Python call each
        _ADAPTERS[model] = TypeAdapter(model).validator.validate_python
    return _ADAPTERS[model]


def attrs_from_json(kind: Kind, value: dict[str, Any]) -> Attrs:
    """The model of ``kind`` read from a plan's JSON values; AttrsError when they fit none.
    (JSON arrays become the models' tuples in the validator itself: a plan holds tens of
    thousands of these, so no Python pass over the values comes first.)"""
    errors: list[str] = []
    models = MODELS[kind]
    if len(models) > 1:  # a model that has every field the value names goes first
        models = tuple(sorted(models, key=lambda m: not value.keys() <= _name_set(m)))
    for model in models:
        try:
            got: Attrs = _adapter(model)(value)
            return got
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"])
            errors.append(f"{loc}: {err['msg']}" if loc else err["msg"])
    raise AttrsError(f"{kind} attributes: {'; or '.join(errors)}")


_NAME_SETS: dict[type, frozenset[str]] = {}


def _name_set(model: type[_Attrs]) -> frozenset[str]:
    names = _NAME_SETS.get(model)
    if names is None:
        names = _NAME_SETS[model] = frozenset(_names(model))
    return names


def attrs_as(value: Attrs | None, model: type[A], where: str) -> A | None:
    """``value`` as ``model`` (None stays None); AttrsError naming ``where`` otherwise."""
    if value is None or isinstance(value, model):
        return value
    raise AttrsError(f"{where}: expected {model.__name__}, the plan holds "
                     f"{type(value).__name__}")
