"""VMSpec and the factory that renders its libvirt domain XML.

A ``VMSpec`` is one VM of a cluster (a ``VmDecl`` from the config) plus the GPU
attachment plan-making resolved for it: the MIG slice (profile or MIG UUID) and the
device that carries it into the guest (an mdev UUID, a VF's PCI address, or whole
GPUs passed through). The factory renders it with Jinja2 templates in
``planner/vm/templates``: autoescaped for XML, ``StrictUndefined`` so a missing value is
an error and never an empty attribute, and deterministic (the same spec always gives
the same bytes, so plans that embed the XML are reproducible).

Names, MAC and UUID follow ai-how: the disk is ``{vm}.qcow2`` in pool ``{cluster}-pool``
backed by ``{cluster}-base.qcow2``, the NIC is on network ``{cluster}-network`` (whose
bridge is the cluster's ``network.bridge``) with the MAC ai-how derives from the VM name
(MD5, locally administered, unicast), so ai-how's static DHCP leases keep matching.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import threading
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal, Protocol

from planner.errors import AihowError
from planner.lang import LangError, MigProfile, parse_profile
from planner.lang.names import NAME, NAME_RULE
from planner.lang.pci import normalize_pci
from planner.vocab import VmAttrs

if TYPE_CHECKING:
    import jinja2

# uuid5 namespace for domain UUIDs: the same VM name always gets the same UUID.
DOMAIN_UUID_NAMESPACE = uuid.UUID("6f1d3c52-7a0b-5e1f-9c4d-2b8a6e0f4a17")

# A name aihow accepts for a VM or a cluster. libvirt itself only forbids '/' and
# newlines, but the name also becomes a volume file name, a network/pool name prefix and
# the guest's hostname, so aihow accepts what is valid for all of them: a DNS label.
_NAME = NAME  # planner.lang.names: the one rule validate checks too
_TAG = re.compile(r"^[A-Za-z0-9_-]{1,36}$")  # ai-how's virtioFsMount tag (virtiofs limit 36)
_MIG_UUID = re.compile(
    r"^MIG-(?:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    r"|GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/\d+/\d+)$"
)


class VmSpecError(AihowError):
    """A VM that cannot be rendered as a libvirt domain (bad name, bad device, ...)."""


def check_name(name: str, what: str = "VM name") -> str:
    """Return ``name`` if it can be a libvirt domain name here, else raise VmSpecError."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise VmSpecError(
            f"invalid {what} {name!r}: {NAME_RULE} (it names the libvirt domain, "
            "its disk volume and the guest's hostname)"
        )
    return name


def mac_for(vm_name: str) -> str:
    """ai-how's MAC for a VM: the first 6 bytes of MD5(name), locally administered unicast."""
    digest = hashlib.md5(vm_name.encode(), usedforsecurity=False).digest()
    first = (digest[0] & 0xFE) | 0x02
    return ":".join(f"{b:02x}" for b in (first, *digest[1:6]))


def domain_uuid_for(vm_name: str) -> str:
    return str(uuid.uuid5(DOMAIN_UUID_NAMESPACE, vm_name))


def _canonical_uuid(text: str, what: str) -> str:
    try:
        return str(uuid.UUID(text.strip()))
    except (ValueError, AttributeError):
        raise VmSpecError(f"invalid {what} {text!r}: expected a UUID") from None


def _pci(text: str, what: str) -> str:
    try:
        return normalize_pci(text)
    except (ValueError, AttributeError):
        raise VmSpecError(f"invalid {what} {text!r}: expected a PCI address dddd:bb:dd.f") from None


# --- devices -------------------------------------------------------------------------


@dataclass(frozen=True)
class MdevDevice:
    """A mediated device (mdev-backend vGPU) given to the guest by UUID."""

    uuid: str
    kind: Literal["mdev"] = field(default="mdev", init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "uuid", _canonical_uuid(self.uuid, "mdev UUID"))

    @property
    def key(self) -> str:
        return self.uuid


PciRole = Literal["vf", "gpu", "other"]


@dataclass(frozen=True)
class PciDevice:
    """A PCI function given to the guest: a vGPU VF (vfio-vf backend), a whole GPU, or
    another function listed under ai-how's ``pcie_passthrough`` (the GPU's audio, ...).

    ``managed``: for a whole GPU or another function libvirt detaches it from its host
    driver and binds vfio-pci (as ai-how does). A vGPU VF stays on NVIDIA's vendor VFIO
    driver, which holds the assigned vGPU type; rebinding it to vfio-pci would lose the
    type, so it is ``managed='no'``.
    """

    address: str
    role: PciRole = "other"
    kind: Literal["pci"] = field(default="pci", init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "address", _pci(self.address, "PCI address"))
        if self.role not in ("vf", "gpu", "other"):
            raise VmSpecError(f"invalid PCI device role {self.role!r}")

    @property
    def key(self) -> str:
        return self.address

    @property
    def managed(self) -> bool:
        return self.role != "vf"

    @property
    def rom_bar(self) -> bool:
        return self.role == "gpu"

    def parts(self) -> dict[str, str]:
        """The libvirt ``<address>`` attributes: domain, bus, slot, function in hex."""
        dom, bus, rest = self.address.split(":")
        slot, fn = rest.split(".")
        return {"domain": f"0x{dom}", "bus": f"0x{bus}", "slot": f"0x{slot}", "function": f"0x{fn}"}


HostDevice = MdevDevice | PciDevice


@dataclass(frozen=True)
class GpuAttachment:
    """What plan-making resolved for a VM's ``gpu_config``.

    ``mig_profile``/``mig_uuid`` describe the slice (either may be known; a MIG UUID is
    read back from the host after the GI exists); ``device`` is what the domain gets: an
    mdev or a VF (role ``vf``) for a vGPU, or a whole GPU (role ``gpu``, no MIG fields).
    """

    device: HostDevice
    mig_profile: str | None = None  # canonical profile name, e.g. "1g.5gb"
    mig_uuid: str | None = None
    gpu_instance: str | None = None  # the backing GPU instance's plan address

    def __post_init__(self) -> None:
        if isinstance(self.mig_profile, MigProfile):
            object.__setattr__(self, "mig_profile", str(self.mig_profile))
        elif self.mig_profile is not None:
            try:
                object.__setattr__(self, "mig_profile", str(parse_profile(self.mig_profile)))
            except LangError as exc:
                raise VmSpecError(f"invalid MIG profile {self.mig_profile!r}: {exc}") from None
        if self.mig_uuid is not None:
            mig = self.mig_uuid.strip()
            mig = "MIG-" + mig[4:].lower() if mig[:4].upper() == "MIG-" else mig
            if not _MIG_UUID.match(mig):
                raise VmSpecError(f"invalid MIG UUID {self.mig_uuid!r} (expected MIG-<uuid>)")
            object.__setattr__(self, "mig_uuid", mig)
        is_mig = self.mig_profile is not None or self.mig_uuid is not None
        if isinstance(self.device, PciDevice) and self.device.role == "other":
            raise VmSpecError(
                f"PCI device {self.device.address} is neither a vGPU VF nor a whole GPU"
            )
        if is_mig and isinstance(self.device, PciDevice) and self.device.role == "gpu":
            raise VmSpecError(
                f"a MIG slice reaches a guest through an mdev or a vGPU VF, not through "
                f"the whole GPU {self.device.address}"
            )

    @classmethod
    def mdev(
        cls,
        mdev_uuid: str,
        *,
        mig_profile: str | MigProfile | None = None,
        mig_uuid: str | None = None,
    ) -> GpuAttachment:
        return cls(MdevDevice(mdev_uuid), _profile_text(mig_profile), mig_uuid)

    @classmethod
    def vf(
        cls,
        vf_pci: str,
        *,
        mig_profile: str | MigProfile | None = None,
        mig_uuid: str | None = None,
    ) -> GpuAttachment:
        return cls(PciDevice(vf_pci, "vf"), _profile_text(mig_profile), mig_uuid)

    @classmethod
    def whole_gpu(cls, gpu_pci: str) -> GpuAttachment:
        return cls(PciDevice(gpu_pci, "gpu"))


def _profile_text(profile: str | MigProfile | None) -> str | None:
    return str(profile) if isinstance(profile, MigProfile) else profile


@dataclass(frozen=True)
class VirtioFsMount:
    tag: str
    host_path: str
    readonly: bool = False

    def __post_init__(self) -> None:
        if not _TAG.match(self.tag):
            raise VmSpecError(f"invalid virtio-fs tag {self.tag!r}: 1-36 of [A-Za-z0-9_-]")
        if not self.host_path.startswith("/"):
            raise VmSpecError(f"virtio-fs host_path {self.host_path!r} must be absolute")


def _abs_path(path: str, what: str) -> str:
    if not isinstance(path, str) or not path.startswith("/") or any(c in path for c in "\0\n"):
        raise VmSpecError(f"{what} {path!r} must be an absolute path on the host")
    return path


@dataclass(frozen=True)
class DirectBoot:
    """Direct kernel boot: libvirt hands QEMU a kernel (and an initrd and command line)
    from the host instead of booting the disk. VMSpec-only, not a config key: a cluster's
    nodes boot their disk images as ai-how's do; aihow's own integration test uses it to
    boot a tiny guest on a real libvirtd (tests/integration/test_guest_boot.py)."""

    kernel: str
    initrd: str | None = None
    cmdline: str = ""

    def __post_init__(self) -> None:
        _abs_path(self.kernel, "kernel")
        if self.initrd is not None:
            _abs_path(self.initrd, "initrd")
        if any(c in self.cmdline for c in "\0\n"):
            raise VmSpecError("the kernel command line must be one line")


# --- the spec ------------------------------------------------------------------------


class VmDeclLike(Protocol):
    """The fields of ``planner.config.vms.VmDecl`` (contract 1) that a VMSpec reads."""

    @property
    def name(self) -> str: ...
    @property
    def cluster_name(self) -> str: ...
    @property
    def role(self) -> str: ...
    @property
    def cpu_cores(self) -> int: ...
    @property
    def memory_gb(self) -> int: ...
    @property
    def disk_gb(self) -> int: ...
    @property
    def base_image_path(self) -> str | None: ...
    @property
    def bridge(self) -> str: ...
    @property
    def pcie_devices(self) -> Any: ...
    @property
    def virtio_fs_mounts(self) -> Any: ...
    @property
    def key_path(self) -> str: ...


def _field(item: Any, name: str, default: Any = None) -> Any:
    """Read ``name`` from a pydantic model, dataclass or mapping alike."""
    if isinstance(item, Mapping):
        return item.get(name, default)
    return getattr(item, name, default)


@dataclass(frozen=True)
class VMSpec:
    name: str
    cluster_name: str
    role: str
    cpu_cores: int
    memory_gb: int
    disk_gb: int
    bridge: str
    base_image_path: str | None = None
    gpu: GpuAttachment | None = None
    passthrough: tuple[PciDevice, ...] = ()  # ai-how's pcie_passthrough devices
    virtio_fs: tuple[VirtioFsMount, ...] = ()
    key_path: str = ""
    virt_type: Literal["kvm", "qemu"] = "kvm"
    config_name: str | None = None  # the config's metadata.name (domain metadata)
    ip: str | None = None  # the node's address in the config (domain metadata)
    boot: DirectBoot | None = None  # None: boot the disk
    console_log: str | None = None  # a host file the serial console is copied to
    # Derived, never passed: computed from the fields above.
    mac: str = field(init=False)
    uuid: str = field(init=False)

    def __post_init__(self) -> None:
        where = f"{self.key_path}: " if self.key_path else ""
        try:
            check_name(self.name)
            check_name(self.cluster_name, "cluster name")
            for what in ("cpu_cores", "memory_gb", "disk_gb"):
                value = getattr(self, what)
                if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                    raise VmSpecError(f"{what} must be a positive integer, got {value!r}")
            if not self.bridge or not _NAME.match(self.bridge):
                raise VmSpecError(f"invalid bridge name {self.bridge!r}: {NAME_RULE}")
            keys = [d.key for d in self.hostdevs]
            dup = sorted({k for k in keys if keys.count(k) > 1})
            if dup:
                raise VmSpecError(f"host device {dup[0]} is given to the VM twice")
            if self.console_log is not None:
                _abs_path(self.console_log, "console log")
            tags = [m.tag for m in self.virtio_fs]
            if len(set(tags)) != len(tags):
                raise VmSpecError("virtio-fs tags must be unique within a VM")
        except VmSpecError as exc:
            raise VmSpecError(f"{where}{exc}") from None
        object.__setattr__(self, "mac", mac_for(self.name))
        object.__setattr__(self, "uuid", domain_uuid_for(self.name))

    @classmethod
    def from_decl(cls, decl: VmDeclLike, gpu: GpuAttachment | None = None) -> VMSpec:
        """Build the spec of one ``VmDecl`` with the attachment plan-making chose for it."""
        where = getattr(decl, "key_path", "") or ""
        try:
            passthrough = tuple(
                PciDevice(
                    _field(d, "pci_address"),
                    "gpu" if _field(d, "device_type") == "gpu" else "other",
                )
                for d in _pcie_devices(_field(decl, "pcie_devices", ()))
            )
            mounts = tuple(
                VirtioFsMount(
                    _field(m, "tag"), _field(m, "host_path"), bool(_field(m, "readonly", False))
                )
                for m in (_field(decl, "virtio_fs_mounts", ()) or ())
            )
        except VmSpecError as exc:
            raise VmSpecError(f"{where}: {exc}" if where else str(exc)) from None
        if gpu is not None:
            # The GPU may also be listed under ai-how's pcie_passthrough: give it once.
            passthrough = tuple(d for d in passthrough if d.key != gpu.device.key)
        return cls(
            name=decl.name,
            cluster_name=decl.cluster_name,
            role=decl.role,
            cpu_cores=decl.cpu_cores,
            memory_gb=decl.memory_gb,
            disk_gb=decl.disk_gb,
            bridge=decl.bridge,
            base_image_path=decl.base_image_path,
            gpu=gpu,
            passthrough=passthrough,
            virtio_fs=mounts,
            key_path=where,
            ip=getattr(decl, "ip", None),
            # ai-how's enable_kvm: false runs the guest under QEMU's emulation (TCG)
            virt_type="kvm" if getattr(decl, "enable_kvm", True) else "qemu",
        )

    # Names ai-how gives the cluster's libvirt objects.
    @property
    def network(self) -> str:
        return f"{self.cluster_name}-network"

    @property
    def pool(self) -> str:
        return f"{self.cluster_name}-pool"

    @property
    def volume(self) -> str:
        return f"{self.name}.qcow2"

    @property
    def base_volume(self) -> str:
        return f"{self.cluster_name}-base.qcow2"

    @property
    def hostdevs(self) -> tuple[HostDevice, ...]:
        """Every host device in the order rendered: the GPU attachment first (ai-how:
        "the GPU function MUST be listed first for ROM BAR"), then pcie_passthrough."""
        first: tuple[HostDevice, ...] = (self.gpu.device,) if self.gpu else ()
        return first + self.passthrough

    @property
    def has_whole_gpu(self) -> bool:
        """A whole GPU is passed through (not a vGPU): the guest sees a physical GPU."""
        return any(isinstance(d, PciDevice) and d.role == "gpu" for d in self.hostdevs)

    @property
    def has_gpu(self) -> bool:
        return self.gpu is not None or any(d.role == "gpu" for d in self.passthrough)


def _pcie_devices(value: Any) -> Iterable[Any]:
    """ai-how's ``pcie_passthrough`` as the config gives it: a tuple of devices, or the
    whole ``{enabled, devices}`` block (devices only count when enabled)."""
    if value is None:
        return ()
    if isinstance(value, Mapping) or hasattr(value, "devices"):
        if not _field(value, "enabled", False):
            return ()
        return _field(value, "devices", ()) or ()
    return value


# --- rendering -----------------------------------------------------------------------


class VMFactory:
    """Renders VMSpecs to libvirt XML. One Jinja2 environment, templates loaded once."""

    def __init__(self) -> None:
        import jinja2  # heavy: loaded when the first XML is rendered

        self._env: jinja2.Environment = jinja2.Environment(
            loader=jinja2.PackageLoader("planner.vm", "templates"),
            autoescape=True,  # every template here is XML
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )

    @cached_property
    def _domain(self) -> jinja2.Template:
        return self._env.get_template("domain.xml.j2")

    @cached_property
    def _hostdev(self) -> jinja2.Template:
        return self._env.get_template("hostdev.xml.j2")

    @cached_property
    def _volume(self) -> jinja2.Template:
        return self._env.get_template("volume.xml.j2")

    def domain_xml(self, spec: VMSpec, *, defined_by_aihow: bool = False,
                   gpu_device: bool = True) -> str:
        """The complete persistent domain definition; ``defined_by_aihow`` adds the metadata
        mark that lets a later plan delete the domain once the config drops the VM.
        ``gpu_device`` False leaves the vGPU's ``<hostdev>`` out (apply attaches it in its
        own step) while the metadata and the display still follow ``spec.gpu``."""
        devices = spec.hostdevs if gpu_device or spec.gpu is None else spec.passthrough
        return self._domain.render(spec=spec, defined_by_aihow=defined_by_aihow,
                                   devices=devices)

    def hostdev_xml(self, device: HostDevice) -> str:
        """One ``<hostdev>`` element, for attaching to or detaching from an existing domain.
        The same template renders the hostdevs inside ``domain_xml``."""
        return self._hostdev.render(device=device)

    def volume_xml(self, spec: VMSpec, base_volume_path: str) -> str:
        """The storage volume ``{vm}.qcow2`` (copy-on-write over the cluster's base image
        at ``base_volume_path``, which lives in the pool's directory)."""
        if not base_volume_path.startswith("/"):
            raise VmSpecError(f"base volume path {base_volume_path!r} must be absolute")
        return self._volume.render(spec=spec, base_volume_path=base_volume_path)


_FACTORY: VMFactory | None = None
_FACTORY_LOCK = threading.Lock()  # apply renders from several threads at once


def default_factory() -> VMFactory:
    global _FACTORY
    with _FACTORY_LOCK:
        if _FACTORY is None:
            _FACTORY = VMFactory()
        return _FACTORY


def render_domain_xml(spec: VMSpec) -> str:
    return default_factory().domain_xml(spec)


def render_hostdev_xml(device: HostDevice) -> str:
    return default_factory().hostdev_xml(device)


def spec_attrs(spec: VMSpec) -> VmAttrs:
    """What a plan's ``domain[NAME]`` change carries: everything the domain XML is
    rendered from, and nothing else (so the plan shows the VM, not a wall of XML)."""
    gpu = spec.gpu  # a vGPU (mdev or VF); a whole GPU is not a slice
    if gpu is not None and isinstance(gpu.device, PciDevice) and gpu.device.role == "gpu":
        gpu = None
    return VmAttrs(
        name=spec.name,
        cluster=spec.cluster_name,
        role=spec.role,
        cpu_cores=spec.cpu_cores,
        memory_gb=spec.memory_gb,
        disk_gb=spec.disk_gb,
        bridge=spec.bridge,
        base_image_path=spec.base_image_path,
        passthrough=tuple((d.address, d.role) for d in spec.passthrough),
        virtio_fs=tuple((m.tag, m.host_path, m.readonly) for m in spec.virtio_fs),
        key_path=spec.key_path,
        config=spec.config_name,
        ip=spec.ip,
        mig_profile=gpu.mig_profile if gpu else None,
        mig_uuid=gpu.mig_uuid if gpu else None,
        gpu_instance=gpu.gpu_instance if gpu else None,
        vgpu=gpu.device.key if gpu else None,
        vgpu_type=gpu.device.kind if gpu else None,
        virt_type=None if spec.virt_type == "kvm" else spec.virt_type,
    )


def domain_attrs(decl: VmDeclLike, config_name: str | None = None) -> VmAttrs:
    """What a plan's ``domain[NAME]`` create action carries for a VM libvirt lacks: the
    values its domain XML is rendered from. Plan-making adds the vGPU attachment it
    resolved (``with_vgpu``); the domain is defined without the vGPU's ``<hostdev>`` (the
    ``hostdev`` action attaches that once the device exists)."""
    spec = VMSpec.from_decl(decl)
    if config_name is not None:
        spec = dataclasses.replace(spec, config_name=config_name)
    return spec_attrs(spec)


def spec_from_attrs(attrs: VmAttrs) -> VMSpec:
    """The VMSpec back from ``spec_attrs`` (a plan's values; VmSpecError when malformed)."""
    try:
        return VMSpec(
            name=attrs.name,
            cluster_name=attrs.cluster,
            role=attrs.role,
            cpu_cores=attrs.cpu_cores,
            memory_gb=attrs.memory_gb,
            disk_gb=attrs.disk_gb,
            bridge=attrs.bridge,
            base_image_path=attrs.base_image_path,
            passthrough=tuple(PciDevice(a, r) for a, r in attrs.passthrough),  # type: ignore[arg-type]
            virtio_fs=tuple(VirtioFsMount(t, h, bool(ro)) for t, h, ro in attrs.virtio_fs),
            key_path=attrs.key_path,
            config_name=attrs.config,
            ip=attrs.ip,
            gpu=_attachment(attrs),
            virt_type=attrs.virt_type or "kvm",
        )
    except (TypeError, ValueError) as exc:
        raise VmSpecError(f"domain attributes are incomplete or malformed: {exc}") from None


def _attachment(attrs: VmAttrs) -> GpuAttachment | None:
    if attrs.vgpu is None:
        return None
    device: HostDevice = MdevDevice(attrs.vgpu) if attrs.vgpu_type == "mdev" \
        else PciDevice(attrs.vgpu, "vf")
    return GpuAttachment(device, attrs.mig_profile, attrs.mig_uuid, attrs.gpu_instance)


def render_defined_domain_xml(spec: VMSpec) -> str:
    """The domain XML aihow defines: the spec's XML marked as defined by aihow, with its
    vGPU attachment in the metadata (and hence no emulated display) but without the
    vGPU's ``<hostdev>``, which the plan's hostdev step attaches."""
    return default_factory().domain_xml(spec, defined_by_aihow=True, gpu_device=False)
