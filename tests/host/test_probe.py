"""The probe on a simulated host: what it reads, that it changes nothing, and the CLI."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from planner.cli.host_opts import open_environment
from planner.host.nvml import MUTATING_FUNCTIONS, QUERY_FUNCTIONS, NvmlHost
from planner.host.render import host_state_json
from planner.host.state import HostState
from planner.host.sysfs import Sysfs
from planner.sim import fake_nvml
from planner.sim.environment import SimEnvironment
from planner.sim.fake_nvml import FakeNvml
from planner.sim.host import GpuSpec
from planner.sim.kernel import sysfs_write
from planner.sim.sriov_manage import run as sriov_manage


@dataclass(frozen=True)
class RecordedSim(SimEnvironment):
    """The simulated host with a recording NVML handed to the probe."""

    recorder: Any = None

    def nvml_module(self) -> Any:
        return self.recorder


A100 = "0000:17:00.0"
H100 = "0000:31:00.0"
MDEV = "2f0c6a3e-1111-4222-8333-444455556666"
AIHOW = str(Path(sys.executable).with_name("aihow"))


MDEV_VF = "0000:17:00.4"
# a domain holding the mdev MDEV as its hostdev
VM1_WITH_MDEV = ("<domain type='kvm'><name>vm1</name><memory>524288</memory>"
                 "<os><type>hvm</type></os><devices>"
                 "<hostdev mode='subsystem' type='mdev' model='vfio-pci'>"
                 f"<source><address uuid='{MDEV}'/></source></hostdev></devices></domain>")


def _create_one_g_mdev(root: Path) -> str:
    """An A100-1-5C vGPU (uuid MDEV) on MDEV_VF, made through sysfs; its type id."""
    types = Sysfs(root).list(f"sys/bus/pci/devices/{MDEV_VF}/mdev_supported_types")
    one_g = next(t for t in types
                 if Sysfs(root).read(f"sys/bus/pci/devices/{MDEV_VF}/mdev_supported_types/{t}"
                                     "/name") == "NVIDIA A100-1-5C")
    sysfs_write(root, f"sys/bus/pci/devices/{MDEV_VF}/mdev_supported_types/{one_g}/create",
                MDEV)
    return one_g


def busy_host(make_host: Callable[..., Path], vgpu: str | None = "mdev") -> Path:
    """An A100 with 3g@4 (+CI), 2g@0 (+CI), 1g@2; an H100 without MIG; 4 VFs and an mdev."""
    root = make_host(GpuSpec("a100-40gb", A100, mig=True), GpuSpec("h100-80gb", H100), vgpu=vgpu)
    if vgpu is not None:  # VFs first: sriov-manage wipes the GPU's instances
        assert sriov_manage(str(root), ["-e", A100])[0] == 0
    with NvmlHost(FakeNvml(root)) as host:
        host.create_gpu_instance(A100, 9, 4)
        host.create_compute_instance(A100, 4, 2, None)
        host.create_gpu_instance(A100, 14, 0)
        host.create_compute_instance(A100, 0, 1, None)
        host.create_gpu_instance(A100, 19, 2)
    return root


def tree_digest(root: Path) -> dict[str, str]:
    """Every file and link under DIR (state.json, sys/, libvirt/...) with its content."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "-> " + os.readlink(p)
            elif p.is_file():
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def test_probe_reads_gpus_instances_vgpus_and_domains(make_host: Callable[..., Path]) -> None:
    root = busy_host(make_host)
    vf, one_g = MDEV_VF, _create_one_g_mdev(root)
    with open_environment(f"sim:{root}").libvirt() as session:
        session.conn.defineXML(VM1_WITH_MDEV).create()
        session.commit()

    state = open_environment(f"sim:{root}").probe()

    assert state.uri == f"sim:{root}"
    assert state.driver_version == "580.82.07"
    assert state.vgpu_backend == "mdev"
    a100, h100 = state.gpus
    assert (a100.pci, a100.model, a100.driver, a100.mig_current) == (A100, "a100-40gb",
                                                                      "nvidia", True)
    assert [(g.profile_name, g.placement_start, len(g.compute_instances))
            for g in a100.gpu_instances] == [("2g.10gb", 0, 1), ("1g.5gb", 2, 0),
                                              ("3g.20gb", 4, 1)]
    assert (h100.mig_capable, h100.mig_current, h100.gpu_instances) == (True, False, ())
    # sriov-manage enables every VF (sriov_totalvfs: 16 on A100)
    assert [p.pci for p in state.vgpu_parents][:5] == [
        "0000:17:00.4", "0000:17:00.5", "0000:17:00.6", "0000:17:00.7", "0000:17:01.0"]
    assert len(state.vgpu_parents) == 16
    assert all(p.physfn == A100 for p in state.vgpu_parents)
    by_name = {t.name: t for t in state.vgpu_parents[0].types}
    assert by_name["NVIDIA A100-1-5C"].gi_profile_id == 19
    assert by_name["NVIDIA A100-3-20C"].gi_profile_id == 9
    (mdev,) = state.mdevs
    one_g_gi = next(g for g in a100.gpu_instances if g.profile_id == 19)
    assert (mdev.uuid, mdev.parent, mdev.type_id, mdev.gi_id) == (MDEV, vf, one_g, one_g_gi.gi_id)
    assert mdev.gi_from == "nvml"  # its VM runs: NVML's vGPU instance tells the GI
    (dom,) = state.domains
    assert (dom.name, dom.state, [h.key for h in dom.hostdevs]) == ("vm1", "running", [MDEV])


def test_vfio_vf_backend_is_read(make_host: Callable[..., Path]) -> None:
    root = busy_host(make_host, vgpu="vfio-vf")
    vf = "0000:17:00.5"
    creatable = Sysfs(root).read(f"sys/bus/pci/devices/{vf}/nvidia/creatable_vgpu_types")
    type_id = next(line.split(":")[0].strip() for line in creatable.splitlines()
                   if line.endswith("A100-3-20C"))
    sysfs_write(root, f"sys/bus/pci/devices/{vf}/nvidia/current_vgpu_type", type_id)
    state = open_environment(f"sim:{root}").probe()
    assert state.vgpu_backend == "vfio-vf"
    held = next(p for p in state.vgpu_parents if p.pci == vf)
    # No VM runs it and aihow did not create it: nothing tells its GPU instance.
    assert (held.backend, held.current_type, held.gi_id, held.gi_from) == (
        "vfio-vf", type_id, None, None)
    assert held.types == ()  # a VF holding a vGPU offers nothing more
    with open_environment(f"sim:{root}").libvirt() as session:
        session.conn.defineXML(
            "<domain type='kvm'><name>vm1</name><memory>524288</memory>"
            "<os><type>hvm</type></os><devices>"
            "<hostdev mode='subsystem' type='pci' managed='no'><source>"
            "<address domain='0x0000' bus='0x17' slot='0x00' function='0x5'/></source>"
            "</hostdev></devices></domain>"
        ).create()
        session.commit()
    state = open_environment(f"sim:{root}").probe()
    held = next(p for p in state.vgpu_parents if p.pci == vf)
    three_g = next(g for g in state.gpus[0].gpu_instances if g.profile_id == 9)
    # Its VM runs: NVML names the VM (by UUID) and the GI; the probe joins them by the VF.
    assert (held.gi_id, held.gi_from) == (three_g.gi_id, "nvml")
    one = open_environment(f"sim:{root}").probe(state.gpus[0].pci)
    assert [d.name for d in one.domains] == ["vm1"]  # found by the UUID NVML gives
    assert next(p for p in one.vgpu_parents if p.pci == vf) == held


class Recording:
    """Wraps an nvml object and records the name of every nvml* function called."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        if not (name.startswith("nvml") and callable(value)):
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return value(*args, **kwargs)

        return call


def test_probe_calls_only_query_functions_and_changes_nothing(
    make_host: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = busy_host(make_host)
    with open_environment(f"sim:{root}").libvirt() as session:
        session.conn.defineXML("<domain type='kvm'><name>vm1</name><memory>524288</memory>"
                               "<os><type>hvm</type></os></domain>")
        session.commit()
    # Below pynvml too: every C symbol the simulated library is asked for.
    symbols: list[str] = []
    real_call = fake_nvml.FakeNvmlLib._call

    def spy(self: Any, symbol: str, op: str, impl: Any, args: Any) -> int:
        symbols.append(op)
        return real_call(self, symbol, op, impl, args)

    monkeypatch.setattr(fake_nvml.FakeNvmlLib, "_call", spy)
    before = tree_digest(root)
    recorder = Recording(FakeNvml(root))

    state = RecordedSim(f"sim:{root}", root, recorder=recorder).probe()

    assert state.gpus[0].gpu_instances  # it did read the instances
    assert {"nvmlGpuInstanceGetInfo", "nvmlComputeInstanceGetInfo"} <= set(recorder.calls)
    assert set(recorder.calls) <= QUERY_FUNCTIONS
    assert symbols and not set(symbols) & MUTATING_FUNCTIONS
    assert tree_digest(root) == before  # state.json, sys/ and libvirt/ byte-identical


def test_cli_prints_the_probe_as_text_and_json(make_host: Callable[..., Path]) -> None:
    root = busy_host(make_host)
    text = subprocess.run([AIHOW, "probe", "--host", f"sim:{root}", "--verbose"],
                          capture_output=True, text=True, check=True).stdout
    assert f"GPU 0  {A100}  NVIDIA A100-SXM4-40GB  [a100-40gb]" in text
    assert "[2g.10gb       ][1g.5gb]   .    [3g.20gb" in text
    assert "MIG      disabled" in text  # the H100
    out = subprocess.run([AIHOW, "probe", "--host", f"sim:{root}", "--format", "json"],
                         capture_output=True, text=True, check=True).stdout
    parsed = HostState.model_validate(json.loads(out))
    assert out == host_state_json(open_environment(f"sim:{root}").probe())
    assert parsed.gpus[0].gpu_instances[2].placement_start == 4


def test_cli_check_catalog_on_the_simulator(make_host: Callable[..., Path]) -> None:
    root = busy_host(make_host)
    before = tree_digest(root)
    proc = subprocess.run([AIHOW, "probe", "--host", f"sim:{root}", "--check-catalog"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"GPU 0  {A100}  NVIDIA A100-SXM4-40GB  [a100-40gb]: matches the catalog" in proc.stdout
    assert "placements {0,4}:4" in proc.stdout
    assert "[h100-80gb]: not checked" in proc.stdout
    assert tree_digest(root) == before


def test_catalog_differences_are_printed(make_host: Callable[..., Path],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from planner.host import catalog_check
    from planner.sim import driver

    root = make_host(GpuSpec("a100-40gb", A100, mig=True))
    real = driver.gi_profile_by_enum

    def shrunk(state: Any, gpu: Any, enum: int) -> Any:
        import dataclasses

        p = real(state, gpu, enum)
        return dataclasses.replace(p, sm_count=13) if p.id == 19 else p

    monkeypatch.setattr(driver, "gi_profile_by_enum", shrunk)
    report, count = catalog_check.check_catalog(open_environment(f"sim:{root}"))
    assert count == 1
    assert "difference: a100-40gb 1g.5gb (enum 0): sm_count is 14 in the catalog, 13 on the GPU" \
        in report


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--host", "qemu:///system"], "error: unknown host URI 'qemu:///system'"),
        (["--host", "sim:/nonexistent/x"], "no simulated host in /nonexistent/x"),
        (["--host", "local"], "NVML library not found"),
    ],
)
def test_cli_errors_are_one_line(args: list[str], message: str) -> None:
    proc = subprocess.run([AIHOW, "probe", *args], capture_output=True, text=True, check=False)
    if "NVML library" in message and "NVML library" not in proc.stderr:
        pytest.skip("this machine has an NVIDIA driver")
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_an_nvml_failure_while_probing_is_one_clear_line(make_host: Callable[..., Path]) -> None:
    root = busy_host(make_host, vgpu=None)
    subprocess.run([AIHOW, "sim", "fail", str(root), "--op", "nvmlGpuInstanceGetInfo",
                    "--at", "2", "--error", "GPU_IS_LOST"], check=True, capture_output=True)
    proc = subprocess.run([AIHOW, "probe", "--host", f"sim:{root}"], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"error: sim:{root}: reading the GPUs through NVML failed: GPU is lost"]


def test_probing_a_fresh_host_creates_no_files(make_host: Callable[..., Path]) -> None:
    root = make_host(GpuSpec("a100-40gb", A100, mig=True))
    before = tree_digest(root)
    assert open_environment(f"sim:{root}").probe().domains == ()
    assert tree_digest(root) == before


def test_services_and_compute_processes_holding_a_gpu(make_host: Callable[..., Path]) -> None:
    from planner.sim import driver
    from planner.sim.host import HolderSpec, HostSpec, init_host
    from planner.sim.state import SimStore

    root = make_host(GpuSpec("a100-40gb", A100, mig=True), GpuSpec("h100-80gb", H100))
    init_host(root, HostSpec(
        gpus=(GpuSpec("a100-40gb", A100, mig=True), GpuSpec("h100-80gb", H100)),
        holders=(HolderSpec(H100, "nvidia-persistenced", 812),)), force=True)
    with SimStore(root).transaction() as state:
        driver.hold(state.gpu(A100), "/usr/bin/python3", 4242)

    a100, h100 = open_environment(f"sim:{root}").probe().gpus

    assert [(p.pid, p.name) for p in a100.processes] == [(4242, "/usr/bin/python3")]
    # NVML does not list a service; its open /dev/nvidia1 does.
    assert [(p.pid, p.name) for p in h100.processes] == [(812, "nvidia-persistenced")]


def test_probe_of_one_gpu_reads_only_the_running_domains(make_host: Callable[..., Path]) -> None:
    """Apply reads a GPU back twice per vGPU it creates: the domains that are only defined,
    and the running ones that hold none of its vGPUs (NVML names the VMs that do), tell
    nothing about which GI backs a vGPU, so that read skips them (its cost must not grow
    with the number of VMs)."""
    root = busy_host(make_host)
    _create_one_g_mdev(root)
    with open_environment(f"sim:{root}").libvirt() as session:
        for name, run, vgpu in (("vm1", True, True), ("vm2", False, False),
                                ("vm3", True, False)):
            dom = session.conn.defineXML(
                f"<domain type='kvm'><name>{name}</name><memory>524288</memory>"
                "<os><type>hvm</type></os><devices>"
                + ("<hostdev mode='subsystem' type='mdev' model='vfio-pci'>"
                   f"<source><address uuid='{MDEV}'/></source></hostdev>" if vgpu else "")
                + "</devices></domain>")
            if run:
                dom.create()
        session.commit()
    env = open_environment(f"sim:{root}")

    assert [d.name for d in env.probe().domains] == ["vm1", "vm2", "vm3"]
    one = env.probe(A100)
    assert [d.name for d in one.domains] == ["vm1"]
    (mdev,) = one.mdevs
    assert mdev.gi_from == "nvml"  # the running VM still tells NVML's answer apart


def test_probe_of_one_gpu_reads_that_gpu_and_the_running_domains_only(
        make_host: Callable[..., Path]) -> None:
    """What apply reads back after each vGPU it creates: the GPU as the whole probe sees
    it, its vGPUs, the running domains (which say whose NVML vGPU instance is whose) and
    nothing else: no other GPU, no shut-off domain, no network or pool."""
    root = busy_host(make_host)
    _create_one_g_mdev(root)
    with open_environment(f"sim:{root}").libvirt() as session:
        session.conn.defineXML(VM1_WITH_MDEV).create()
        session.conn.defineXML("<domain type='kvm'><name>vm2</name><memory>524288</memory>"
                               "<os><type>hvm</type></os></domain>")
        session.conn.networkDefineXML("<network><name>lab</name><bridge name='virbr9'/>"
                                      "</network>")
        session.commit()
    env = open_environment(f"sim:{root}")
    whole = env.probe()
    one = env.probe(A100)
    assert [d.name for d in whole.domains] == ["vm1", "vm2"]
    assert "lab" in [n.name for n in whole.networks]
    assert one.gpus == tuple(g for g in whole.gpus if g.pci == A100)
    assert one.vgpu_parents == tuple(p for p in whole.vgpu_parents if p.physfn == A100)
    assert one.mdevs == whole.mdevs  # the only vGPU is on the A100
    assert [d.name for d in one.domains] == ["vm1"]
    assert (one.networks, one.pools) == ((), ())
