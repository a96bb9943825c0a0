"""The typed IR of a cluster config: frozen pydantic models of the ai-how "1.0" format
plus aihow's MIG extension (``global.host``, ``global.gpus[]``, ``global.hooks``,
``gpu_config``).

Openness follows ai-how's JSON schema: the root and ``clusters`` are closed; clusters,
nodes and their parts accept extra keys (kept in ``model_extra``); aihow's own blocks
(``global.host``, ``global.gpus[]``, ``global.hooks``, ``gpu_config``) are closed so
typos are caught.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from planner.config.limits import (
    MAX_HOOK_TIMEOUT,
    MAX_HOOKS_PER_PHASE,
    MAX_TEMPLATE_COUNT,
    MAX_VM_CPU_CORES,
    MAX_VM_DISK_GB,
    MAX_VM_MEMORY_GB,
)
from planner.config.types import (
    HexId,
    ImagePath,
    IPv4,
    IPv4OrDhcp,
    LayoutField,
    MigUuid,
    PciAddress,
    PositiveInt,
    ProfileField,
    SelectorField,
    StrictInt,
    Subnet,
)


class _Open(BaseModel):
    """An ai-how object: extra keys are accepted, as ai-how's schema accepts them."""

    model_config = ConfigDict(frozen=True, extra="allow", populate_by_name=True)


class _Closed(BaseModel):
    """An object whose keys are all known: an unknown key is an error."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


# --- aihow's MIG extension -------------------------------------------------------------


class HostConfig(_Closed):
    """``global.host``: how vGPU devices are made on this host."""

    vgpu_backend: Literal["mdev", "vfio-vf"] = "mdev"
    libvirt_uri: str | None = None


class GpuEntry(_Closed):
    """One ``global.gpus[]`` entry.

    With ``select`` it is a management entry: aihow manages that GPU (MIG mode and the
    optional host-kept ``layout``). Without ``select`` it is an inventory record as
    ai-how's ``gpu_inventory.sh`` writes it; planning ignores those.
    """

    select: SelectorField | None = None
    mig: Literal["enabled", "disabled"] = "enabled"
    layout: LayoutField | None = None
    # Whether plan-making may move the slices of VMs that are shut off, to make room
    # for a slice that otherwise finds no free placement (never running ones).
    repack: Literal["never", "shut-off"] = "never"
    # Who makes the compute instances inside a GPU instance that backs a vGPU: "host"
    # (aihow creates the GI's default CI before the vGPU, NVIDIA's optional host step) or
    # "guest" (none on the host; the guest driver makes its own). Either way a CI inside a
    # GI a vGPU holds is the guest's and never planned (docs/reference/vgpu-on-mig.md s. 3).
    vgpu_compute_instances: Literal["host", "guest"] = "host"
    # ai-how inventory fields (gpu_inventory.sh); informational.
    index: StrictInt | None = None
    uuid: str | None = None
    name: str | None = None
    bus_address: str | None = None
    memory_mib: StrictInt | None = None
    vendor_id: HexId | None = None
    device_id: HexId | None = None
    iommu_group: StrictInt | str | None = None
    mig_capable: bool | None = None
    mig_mode: str | None = None
    status: str | None = None
    driver: str | None = None

    @property
    def managed(self) -> bool:
        return self.select is not None


class GpuConfig(_Closed):
    """A node's ``gpu_config``: what GPU share the VM gets."""

    mode: Literal["mig", "passthrough", "none"]
    mig_profile: ProfileField | None = None
    mig_uuid: MigUuid | None = None
    gpu: SelectorField | None = None
    placement: Annotated[int, Field(ge=0, le=7, strict=True)] | None = None


DEFAULT_HOOK_TIMEOUT = 60.0  # seconds


class HookSpec(_Closed):
    """One command a hook phase runs: an argv list (no shell: the plan shows exactly what
    runs, and no quoting rule stands between review and execution; a shell line is
    spelled out as ``[sh, -c, "..."]``) and how long it may take."""

    command: Annotated[tuple[str, ...], Field(min_length=1)]
    timeout: Annotated[float, Field(gt=0, le=MAX_HOOK_TIMEOUT, strict=True)] = \
        DEFAULT_HOOK_TIMEOUT

    @field_validator("command", mode="before")
    @classmethod
    def _argv(cls, value: Any) -> Any:
        if isinstance(value, str):
            raise ValueError("give the command as a list of arguments, e.g. [systemctl, "
                             "stop, nvidia-persistenced] (a shell line: [sh, -c, \"...\"])")
        return value

    @field_validator("command")
    @classmethod
    def _program(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value[0].strip():
            raise ValueError("the program (the first argument) is empty")
        if any("\0" in arg for arg in value):
            raise ValueError("an argument holds a NUL character")
        return value


HookList = Annotated[tuple[HookSpec, ...], Field(max_length=MAX_HOOKS_PER_PHASE)]


class HooksConfig(_Closed):
    """``global.hooks``: commands apply runs around its changes (docs/config-reference.md
    "global.hooks"), in order within each phase."""

    pre_apply: HookList = ()
    pre_reset: HookList = ()
    post_reset: HookList = ()
    post_apply: HookList = ()
    on_failure: HookList = ()


class GlobalConfig(_Open):
    """``global``: free-form in ai-how; aihow reads ``host``, ``gpus`` and ``hooks``."""

    host: HostConfig = HostConfig()
    gpus: tuple[GpuEntry, ...] = ()
    hooks: HooksConfig = HooksConfig()

    @property
    def managed_gpus(self) -> tuple[GpuEntry, ...]:
        return tuple(g for g in self.gpus if g.managed)


# --- ai-how "1.0" ----------------------------------------------------------------------


class Metadata(_Open):
    name: str
    description: str


class Network(_Open):
    subnet: Subnet
    bridge: str


class PciDevice(_Open):
    pci_address: PciAddress
    device_type: Literal["gpu", "audio", "network", "storage", "other"]
    vendor_id: HexId | None = None
    device_id: HexId | None = None
    iommu_group: Annotated[int, Field(ge=0, strict=True)] | None = None


class PciePassthrough(_Open):
    enabled: bool = False
    devices: tuple[PciDevice, ...] = ()

    @property
    def has_gpu(self) -> bool:
        """ai-how's ``has_gpu_passthrough``: enabled and at least one device of type gpu."""
        return self.enabled and any(d.device_type == "gpu" for d in self.devices)


# Checked after ${VAR} expansion; the editor schema also lets an unexpanded ${VAR} through.
AbsPath = Annotated[
    str,
    Field(pattern=r"^/.*$"),
    WithJsonSchema({"type": "string", "pattern": r"^(/|\$)"}),
]


class VirtioFsMount(_Open):
    tag: Annotated[str, Field(pattern=r"^[a-zA-Z0-9_-]+$")]
    host_path: AbsPath
    mount_point: AbsPath
    owner: str | None = None
    group: str | None = None
    mode: Annotated[str, Field(pattern=r"^0[0-7]{3}$")] | None = None
    options: Any = None


class NumaTopology(_Open):
    nodes: Annotated[int, Field(ge=1, le=8, strict=True)] | None = None
    memory_per_node: Annotated[int, Field(ge=1024, strict=True)] | None = None


class CpuTopology(_Open):
    sockets: Annotated[int, Field(ge=1, le=4, strict=True)]
    cores: Annotated[int, Field(ge=1, le=64, strict=True)]
    threads: Annotated[int, Field(ge=1, le=2, strict=True)]


class Performance(_Open):
    enable_hugepages: bool = False
    hugepage_size: Literal["2M", "1G"] = "2M"
    cpu_pinning: bool = False
    memory_backing: Literal["default", "hugepages", "memfd"] = "default"


class Acceleration(_Open):
    enable_kvm: bool = True
    enable_nested: bool = False
    cpu_model: Literal["host", "host-passthrough", "host-model", "qemu64"] = "host-model"
    cpu_features: tuple[Annotated[str, Field(pattern=r"^[+-]?[a-zA-Z0-9_.]+$")], ...] = ()
    numa_topology: NumaTopology | None = None
    cpu_topology: CpuTopology | None = None
    performance: Performance | None = None


class Hardware(_Open):
    acceleration: Acceleration | None = None


class BeegfsClientConfig(_Open):
    mount_options: Any = None
    auto_mount: bool | None = None


class Beegfs(_Open):
    enabled: bool
    mount_point: str
    management_node: Any = None
    metadata_nodes: tuple[Any, ...] = ()
    storage_nodes: tuple[Any, ...] = ()
    client_config: BeegfsClientConfig | None = None


class VirtioFsStorage(_Open):
    enabled: bool


class Storage(_Open):
    beegfs: Beegfs | None = None
    virtio_fs: VirtioFsStorage | None = None


class SlurmConfig(_Open):
    partitions: tuple[str, ...]
    default_partition: str
    max_job_time: str | None = None


class KubernetesConfig(_Open):
    cni: str
    ingress: str
    storage_class: str


class ControllerNode(_Open):
    """``controller`` / ``control_plane``. ai-how has no ``pcie_passthrough`` here."""

    cpu_cores: Annotated[PositiveInt, Field(le=MAX_VM_CPU_CORES)]
    memory_gb: Annotated[PositiveInt, Field(le=MAX_VM_MEMORY_GB)]
    disk_gb: Annotated[int, Field(ge=10, le=MAX_VM_DISK_GB, strict=True)]
    ip_address: IPv4
    base_image_path: ImagePath | None = None
    virtio_fs_mounts: tuple[VirtioFsMount, ...] = ()
    gpu_config: GpuConfig | None = None


class VmSpec(_Open):
    cpu_cores: Annotated[PositiveInt, Field(le=MAX_VM_CPU_CORES)]
    memory_gb: Annotated[PositiveInt, Field(le=MAX_VM_MEMORY_GB)]
    disk_gb: Annotated[int, Field(ge=10, le=MAX_VM_DISK_GB, strict=True)]
    pcie_passthrough: PciePassthrough | None = None
    virtio_fs_mounts: tuple[VirtioFsMount, ...] = ()
    base_image_path: ImagePath | None = None
    gpu_config: GpuConfig | None = None


class ListNode(VmSpec):
    """One entry of a node list. ``ip: DHCP`` is accepted (ai-how's schema wrongly rejects it)."""

    ip: IPv4OrDhcp
    auto_start: bool = True


class NodeTemplate(VmSpec):
    """The template form: ``count`` VMs alike, addresses from DHCP."""

    count: Annotated[PositiveInt, Field(le=MAX_TEMPLATE_COUNT)]
    ip: Literal["DHCP"]


def _node_group_kind(value: Any) -> str:
    return "list" if isinstance(value, list | tuple) else "template"


NodeGroup = Annotated[
    Annotated[tuple[ListNode, ...], Field(min_length=1), Tag("list")]
    | Annotated[NodeTemplate, Tag("template")],
    Discriminator(_node_group_kind),
]


class HpcCluster(_Open):
    name: str
    base_image_path: ImagePath | None = None
    network: Network
    hardware: Hardware | None = None
    storage: Storage | None = None
    controller: ControllerNode
    compute_nodes: NodeGroup
    slurm_config: SlurmConfig


class CloudCluster(_Open):
    name: str
    base_image_path: ImagePath | None = None
    network: Network
    hardware: Hardware | None = None
    control_plane: ControllerNode
    worker_nodes: NodeGroup
    kubernetes_config: KubernetesConfig


class Clusters(_Closed):
    model_config = ConfigDict(json_schema_extra={"minProperties": 1})

    hpc: HpcCluster | None = None
    cloud: CloudCluster | None = None

    @model_validator(mode="after")
    def _at_least_one(self) -> Clusters:
        if self.hpc is None and self.cloud is None:
            raise ValueError("needs at least one of 'hpc' or 'cloud'")
        return self


class ClusterConfig(_Closed):
    """A whole config file. ``source_path`` is where it was read from (not a YAML key)."""

    model_config = ConfigDict(title="aihow cluster configuration (ai-how 1.0 + MIG)")

    version: Literal["1.0"]
    metadata: Metadata
    global_: GlobalConfig = Field(default=GlobalConfig(), alias="global")
    clusters: Clusters
    source_path: SkipJsonSchema[str] = Field(default="", exclude=True)
