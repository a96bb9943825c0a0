"""CLI commands: ``aihow sim ...``, the simulated MIG host (see planner/sim)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from planner.errors import AihowError

sim_app = typer.Typer(
    help="A simulated GPU host (NVML, nvidia-smi, sysfs) for trying aihow without hardware.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.add_typer(sim_app, name="sim")


@sim_app.command("init")
def init_cmd(
    directory: Annotated[Path, typer.Argument(help="Directory to hold the simulated host.")],
    gpu: Annotated[
        list[str] | None,
        typer.Option("--gpu", help="MODEL[@PCI], repeatable (see 'aihow sim models')."),
    ] = None,
    spec: Annotated[
        Path | None,
        typer.Option("--spec", help="Host spec file (TOML), e.g. config/sim-a100.toml."),
    ] = None,
    vgpu: Annotated[
        str | None, typer.Option("--vgpu", help="vGPU backend: mdev | vfio-vf.")
    ] = None,
    driver: Annotated[
        str | None, typer.Option("--driver", help="Driver version the host reports.")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing simulated host.")
    ] = False,
    no_vfio: Annotated[
        bool, typer.Option("--no-vfio", help="A host whose vfio_pci and vfio_iommu_type1 "
                           "modules are not loaded yet (the default host has them).")
    ] = False,
    image: Annotated[
        list[str] | None,
        typer.Option("--image", metavar="PATH", help="A file the host holds (a VM base "
                     "image; made empty under DIRECTORY), repeatable."),
    ] = None,
    latency: Annotated[
        str, typer.Option("--latency", help="How long changing operations take: none "
                          "(instant) | realistic (seconds for a MIG mode change or a "
                          "reset; the figures are in DIR/latency.json).")
    ] = "none",
) -> None:
    """Create a simulated host in DIRECTORY."""
    # here, not at the top: --help loads every command module (start-up time)
    from planner.sim.host import HostSpec, init_host, load_spec, parse_gpu_arg
    from planner.sim.latency import PROFILES, write_model
    from planner.sim.state import SimError

    if latency not in PROFILES:
        raise SimError(f"--latency {latency!r}: expected one of {', '.join(PROFILES)}")

    gpu = gpu or []
    if spec is not None and gpu:
        raise SimError("give either --spec or --gpu, not both")
    if spec is not None:
        host = load_spec(spec)
    elif gpu:
        host = HostSpec(gpus=tuple(parse_gpu_arg(g) for g in gpu))
    else:
        raise SimError("no GPUs: give --gpu MODEL[@PCI] (repeatable) or --spec FILE")
    if vgpu is not None:
        host = replace(host, vgpu=vgpu)
    if driver is not None:
        host = replace(host, driver=driver)
    if no_vfio:
        host = replace(host, vfio=False)
    if image:
        host = replace(host, images=(*host.images, *image))
    state = init_host(directory, host, force=force)
    write_model(directory, latency)
    for g in state.gpus:
        typer.echo(f"GPU {g.index}: {g.model} at {g.pci} ({g.uuid})")
    backend = state.vgpu_backend or "none"
    typer.echo(f"driver {state.driver_version}, vGPU backend {backend}, latency {latency}")
    typer.echo(f"nvidia-smi: {Path(directory).absolute() / 'bin' / 'nvidia-smi'}")
    typer.echo(f"host URI:   sim:{Path(directory).absolute()}")


@sim_app.command("models")
def models_cmd() -> None:
    """List the GPU models a simulated host can have."""
    # here, not at the top: --help loads every command module (start-up time)
    from planner.sim.models import mig_capable, product_name, sim_models

    typer.echo(f"{'MODEL':<14} {'ARCH':<10} {'MIG':<4} {'MODE AFTER REBOOT':<18} NAME")
    for m in sim_models():
        keeps = "kept" if m.mig_mode_persists_reboot else "lost"
        mig = "yes" if mig_capable(m) else "no"
        keeps = keeps if mig == "yes" else "-"
        typer.echo(f"{m.id:<14} {m.architecture:<10} {mig:<4} {keeps:<18} {product_name(m)}")


def _gi_name(state: object, gpu: object, gi: object) -> str:
    # here, not at the top: --help loads every command module (start-up time)
    from planner.sim import driver

    return driver.profile_of(state, gpu, gi).name  # type: ignore[arg-type]


@sim_app.command("show")
def show_cmd(
    directory: Annotated[Path, typer.Argument(help="A simulated host directory.")],
    format: str = typer.Option("text", "--format", help="text | json"),
) -> None:
    """Show the simulated host's state."""
    # here, not at the top: --help loads every command module (start-up time)
    from planner.sim.state import SimError, SimStore

    state = SimStore(directory).read()
    if format == "json":
        typer.echo(json.dumps(state.model_dump(mode="json"), indent=2, sort_keys=True))
        return
    if format != "text":
        raise SimError(f"--format must be text or json, not {format!r}")
    backend = state.vgpu_backend or "none"
    typer.echo(f"driver {state.driver_version}, vGPU backend {backend}, boot {state.boot}")
    for g in state.gpus:
        cur, pend = ("on" if m else "off" for m in (g.mig_current, g.mig_pending))
        mode = f"MIG current={cur} pending={pend}"
        typer.echo(f"GPU {g.index} {g.pci} {g.model} {g.uuid} {mode} gi-ids={g.gi_id_map}")
        for gi in sorted(g.gpu_instances, key=lambda x: x.start):
            name = _gi_name(state, g, gi)
            where = f"at {gi.start}:{gi.size}"
            typer.echo(f"  GI {gi.gi_id:>2} {name:<12} profile {gi.profile_id:>2} {where}")
            for ci in gi.cis:
                where = f"at {ci.start}:{ci.size}"
                typer.echo(f"    CI {ci.ci_id} profile {ci.profile_id} {where} {ci.mig_uuid}")
        for h in g.holders:
            on = f" on {h.mig_uuid}" if h.mig_uuid else ""
            typer.echo(f"  held by {h.name} (pid {h.pid}, {h.kind}){on}")
        if g.num_vfs:
            typer.echo(f"  SR-IOV VFs enabled: {g.num_vfs}")
        for vf, v in sorted(g.vf_vgpus.items()):
            typer.echo(f"  VF {vf}: vGPU type {v.type_id}")
    for m in state.mdevs:
        typer.echo(f"mdev {m.uuid} on {m.parent} type {m.type_id}")
    for f in state.faults:
        status = "fired" if f.fired else f"{f.calls}/{f.at} calls"
        typer.echo(f"fault {f.op} at call {f.at}: {f.error} ({status})")


@sim_app.command("reboot")
def reboot_cmd(
    directory: Annotated[Path, typer.Argument(help="A simulated host directory.")],
) -> None:
    """Reboot the simulated host: instances, VFs and vGPUs vanish, pending MIG mode applies."""
    # here, not at the top: --help loads every command module (start-up time)
    from planner.sim import driver
    from planner.sim.libvirt_store import reboot_domains
    from planner.sim.state import SimStore

    with SimStore(directory).transaction() as state:
        driver.reboot(state)
    started = reboot_domains(Path(directory))  # libvirt's autostart, once devices are back
    typer.echo(f"rebooted (boot {state.boot}); libvirt autostarted "
               f"{', '.join(started) if started else 'no domain'}")


@sim_app.command("hold")
def hold_cmd(
    directory: Annotated[Path, typer.Argument(help="A simulated host directory.")],
    gpu: str = typer.Option(..., "--gpu", help="PCI address of the GPU."),
    name: Annotated[
        str | None,
        typer.Option("--name", help="Process name, e.g. nvidia-persistenced, dcgm, python."),
    ] = None,
    pid: int | None = typer.Option(
        None, "--pid", help="Process id (default: derived from the name)."
    ),
    mig: Annotated[
        str | None, typer.Option("--mig", help="MIG device UUID the compute process runs on.")
    ] = None,
    release: bool = typer.Option(False, "--release", help="Release matching holders instead."),
) -> None:
    """Make a process hold a GPU open (blocks reset and, on Ampere, MIG mode changes)."""
    # here, not at the top: --help loads every command module (start-up time)
    from planner.lang.pci import normalize_pci
    from planner.sim import driver
    from planner.sim.codes import DriverError
    from planner.sim.state import SimError, SimStore

    try:
        pci = normalize_pci(gpu)
    except ValueError as exc:
        raise SimError(f"--gpu: {exc}") from None
    with SimStore(directory).transaction() as state:
        g = state.gpu(pci)
        if g is None:
            raise SimError(f"--gpu: no GPU at {pci} in {directory}")
        if release:
            n = driver.release(g, name, pid)
            message = f"released {n} holder(s) of {pci}"
        else:
            if not name:
                raise SimError("--name is required (or --release)")
            try:
                h = driver.hold(g, name, pid, mig)
            except DriverError as exc:
                raise SimError(f"--gpu {pci}: {exc.detail}") from None
            message = f"{h.name} (pid {h.pid}, {h.kind}) holds {pci}"
    typer.echo(message)


@sim_app.command("guest-ci")
def guest_ci_cmd(
    directory: Annotated[Path, typer.Argument(help="A simulated host directory.")],
    domain: Annotated[str, typer.Argument(help="A running domain that holds a MIG-backed vGPU.")],
    create: Annotated[
        bool, typer.Option("--create", help="Create a compute instance (nvidia-smi mig -cci "
                           "in the guest).")
    ] = False,
    profile: Annotated[
        int | None, typer.Option("--profile", help="CI profile id for --create (default: "
                                 "the GPU instance's default profile).")
    ] = None,
    delete: Annotated[
        int | None, typer.Option("--delete", help="Destroy the compute instance with this "
                                 "id (nvidia-smi mig -dci -ci ID in the guest).")
    ] = None,
) -> None:
    """Create or destroy a compute instance from inside a guest, on the GPU instance that
    backs its vGPU (the guest owns those; see docs/reference/vgpu-on-mig.md section 3)."""
    # here, not at the top: --help loads every command module (start-up time)
    from planner.sim import guest
    from planner.sim.codes import DriverError
    from planner.sim.state import SimError, SimStore

    if create == (delete is not None):
        raise SimError("give exactly one of --create or --delete ID")
    with SimStore(directory).transaction() as state:
        gpu, gi = guest.guest_gi(state, directory, domain)
        try:
            if create:
                ci = guest.create_ci(state, gpu, gi, profile)
                name = driver_ci_name(state, gpu, gi, ci.profile_id)
                message = (f"Successfully created compute instance ID {ci.ci_id} on GPU 0 GPU "
                           f"instance ID {guest.GUEST_GI_ID} using profile MIG {name} "
                           f"(ID {ci.profile_id})")
            else:
                assert delete is not None
                guest.destroy_ci(state, gpu, gi, delete)
                message = (f"Successfully destroyed compute instance ID {delete} from GPU 0 "
                           f"GPU instance ID {guest.GUEST_GI_ID}")
        except DriverError as exc:
            raise SimError(f"guest of {domain} (GPU instance {gi.gi_id} on {gpu.pci}): "
                           f"{exc}") from None
    typer.echo(message)


def driver_ci_name(state: object, gpu: object, gi: object, profile_id: int) -> str:
    # here, not at the top: --help loads every command module (start-up time)
    from planner.sim import driver

    cp = driver.ci_profile_by_id(state, gpu, gi, profile_id)  # type: ignore[arg-type]
    return cp.name(driver.profile_of(state, gpu, gi))  # type: ignore[arg-type]


@sim_app.command("fail")
def fail_cmd(
    directory: Annotated[Path, typer.Argument(help="A simulated host directory.")],
    op: str | None = typer.Option(None, "--op", help="Operation name (see --list)."),
    at: Annotated[
        int | None, typer.Option("--at", help="Fail the Nth call from now (1 = the next).")
    ] = None,
    error: str | None = typer.Option(
        None, "--error", help="Error: NVML code name, errno name or libvirt code."
    ),
    clear: Annotated[
        bool, typer.Option("--clear", help="Remove armed faults (all, or those of --op).")
    ] = False,
    list_: bool = typer.Option(False, "--list", help="List armed faults and the operation names."),
) -> None:
    """Inject a fault: the Nth call of an operation fails with a realistic error."""
    # here, not at the top: --help loads every command module (start-up time)
    from planner.sim import faults
    from planner.sim.state import SimError, SimStore

    store = SimStore(directory)
    if list_:
        state = store.read()
        typer.echo("armed faults:" if state.faults else "armed faults: none")
        for f in state.faults:
            status = "fired" if f.fired else f"{f.calls} of {f.at} calls so far"
            typer.echo(f"  {f.op} at call {f.at}: {f.error} ({status})")
        for title, ops in (
            ("NVML (pynvml function names)", faults.NVML_OPS),
            ("nvidia-smi", faults.SMI_OPS),
            ("kernel (sysfs writes)", faults.SYSFS_OPS),
            ("tools (DIR/bin)", faults.TOOL_OPS),
            ("libvirt (checked by the libvirt adapter)", faults.LIBVIRT_OPS),
        ):
            typer.echo(f"{title}:")
            for name in ops:
                typer.echo(f"  {name} (default error {faults.default_error(name)})")
        return
    if clear:
        with store.transaction() as state:
            n = faults.clear(state, op)
        typer.echo(f"cleared {n} fault(s)")
        return
    if op is None or at is None:
        raise SimError("give --op NAME --at N, or --clear, or --list")
    with store.transaction() as state:
        fault = faults.arm(state, op, at, error)
    typer.echo(f"armed: call {fault.at} of {fault.op} from now fails with {fault.error}")


_ = AihowError  # the cli's main() prints AihowError (SimError) as one line
