"""Build HostState values directly for plan tests (no adapter involved)."""

from __future__ import annotations

from collections.abc import Iterable

from planner.hardware.catalog import get_model
from planner.hardware.model import GpuModel
from planner.host.state import (
    ComputeInstance,
    Domain,
    Gpu,
    GpuInstance,
    GpuProcess,
    Hostdev,
    HostState,
    Mdev,
    VgpuParent,
    VgpuType,
)
from planner.lang import parse_layout, parse_profile, parse_selector
from planner.plan.make import plan_requests
from planner.plan.model import Plan
from planner.plan.request import GpuPolicy, Requests, SliceRequest

A100 = get_model("a100-40gb")
H100 = get_model("h100-80gb")


def gi(profile: str, start: int, *, gi_id: int | None = None, ci: bool = True,
       mig_uuid: str | None = None, model: GpuModel = A100) -> GpuInstance:
    p = model.profile(profile)
    assert p is not None, profile
    if gi_id is None:  # the usual swizzId: base of the size class + start / size
        gi_id = {8: 0, 4: 1, 2: 3, 1: 7}.get(p.placement_size, 7) + start // p.placement_size
    cis: tuple[ComputeInstance, ...] = ()
    if ci:
        cip = next(c for c in model.ci_profiles_for(p) if c.is_default)
        cis = (ComputeInstance(ci_id=0, profile_id=cip.id, placement_start=0,
                               placement_size=cip.slice_count, mig_uuid=mig_uuid),)
    return GpuInstance(gi_id=gi_id, profile_id=p.id, profile_name=p.name,
                       placement_start=start, placement_size=p.placement_size,
                       compute_instances=cis)


def pci(bus: int) -> str:
    return f"0000:{bus:02x}:00.0"


def gpu(bus: int, *, index: int = 0, mig: bool = True, instances: Iterable[GpuInstance] = (),
        model: GpuModel = A100, pending: bool | None = None, capable: bool = True,
        processes: Iterable[str] = ()) -> Gpu:
    return Gpu(index=index, pci=pci(bus), uuid=f"GPU-{bus:08x}-0000-0000-0000-000000000000",
               name=model.product_names[0], model=model.id, mig_capable=capable,
               mig_current=mig, mig_pending=mig if pending is None else pending, driver="nvidia",
               gpu_instances=tuple(instances),
               processes=tuple(GpuProcess(pid=100 + i, name=n) for i, n in enumerate(processes)))


def vf(bus: int, k: int) -> str:
    n = 4 + k  # VFs follow the PF at function 4 onwards (00.4 .. 00.7, 01.0 ..)
    return f"0000:{bus:02x}:{n // 8:02x}.{n % 8}"


def type_id(model: GpuModel, profile: str, backend: str = "mdev") -> str:
    n = [p.name for p in model.gi_profiles].index(profile)
    return f"nvidia-{470 + n}" if backend == "mdev" else str(1400 + n)


def vfs(bus: int, count: int = 7, model: GpuModel = A100,
        backend: str = "mdev") -> tuple[VgpuParent, ...]:
    types = tuple(
        VgpuType(type_id=type_id(model, p.name, backend), name=f"NVIDIA {p.vgpu_type}",
                 available_instances=1, gi_profile_id=p.id)
        for p in model.gi_profiles if p.vgpu_type
    )
    return tuple(VgpuParent(pci=vf(bus, k), physfn=pci(bus), backend=backend,  # type: ignore[arg-type]
                            types=types) for k in range(count))


def host(*gpus: Gpu, parents: Iterable[VgpuParent] | None = None, mdevs: Iterable[Mdev] = (),
         domains: Iterable[Domain] = (), backend: str = "mdev") -> HostState:
    if parents is None:
        parents = [p for g in gpus
                   for p in vfs(int(g.pci.split(":")[1], 16),
                                model=get_model(g.model or "a100-40gb"), backend=backend)]
    return HostState(uri="sim:/test", driver_version="550.54",
                     vgpu_backend=backend,  # type: ignore[arg-type]
                     gpus=tuple(gpus), vgpu_parents=tuple(parents), mdevs=tuple(mdevs),
                     domains=tuple(domains))


def mdev(uuid: str, parent: str, type_id: str, gi_id: int) -> Mdev:
    return Mdev(uuid=uuid, parent=parent, type_id=type_id, gi_id=gi_id)


def domain(name: str, *devices: str, running: bool = True) -> Domain:
    """A domain with mdev hostdevs (UUIDs) or PCI hostdevs (addresses with ':')."""
    hostdevs = tuple(Hostdev(type="pci", pci=d) if ":" in d else Hostdev(type="mdev", uuid=d)
                     for d in devices)
    return Domain(name=name, uuid=f"00000000-0000-0000-0000-{len(name):012d}",
                  state="running" if running else "shut off", hostdevs=hostdevs)


# -- requests and plans ---------------------------------------------------------------

def node(name: str, profile: str | None = None, *, gpu: str | None = None,
         placement: int | None = None, mig_uuid: str | None = None,
         cluster: str = "hpc", key: str | None = None) -> SliceRequest:
    return SliceRequest(key=key or f"clusters.{cluster}.nodes[{name}]", node=name,
                        profile=parse_profile(profile) if profile else None, mig_uuid=mig_uuid,
                        gpu=parse_selector(gpu) if gpu else None, placement=placement,
                        vgpu_name=f"{cluster}/{name}/gpu0")


def manage(select: str, layout: str | None = None, *, mig: str = "enabled",
           i: int = 0) -> GpuPolicy:
    return GpuPolicy(key=f"global.gpus[{i}]", select=parse_selector(select),
                     mig=mig,  # type: ignore[arg-type]
                     layout=parse_layout(layout) if layout else None)


def make(state: HostState, *slices: SliceRequest, policies: Iterable[GpuPolicy] = (),
         backend: str = "mdev") -> Plan:
    req = Requests(policies=tuple(policies), slices=tuple(slices),
                   vgpu_backend=backend)  # type: ignore[arg-type]
    return plan_requests(req, state, config_path="config.yaml", config_sha256="0" * 64,
                         host_uri=state.uri)


def acts(plan: Plan, *kinds: str) -> dict[str, str]:
    """address -> action, for the changing steps (of the given kinds)."""
    return {a.address: a.action for a in plan.actions
            if a.action != "no-op" and (not kinds or a.kind in kinds)}


def kept(plan: Plan, kind: str = "gpu_instance") -> set[str]:
    return {a.address for a in plan.actions if a.action == "no-op" and a.kind == kind}
