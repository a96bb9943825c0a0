"""PCIePassthroughValidator on fake host trees: a healthy host passes, and each broken
condition in turn makes exactly the right row fail with a hint."""

from __future__ import annotations

from pathlib import Path

from planner.host.state import HostState
from planner.host.validation import (
    CheckRow,
    HostRequirements,
    ManagedGpu,
    MigRequest,
    PassthroughDevice,
    PCIePassthroughValidator,
)
from planner.lang import parse_selector

from .conftest import (
    PASS_AUDIO,
    PASS_GPU,
    PF,
    FakeTree,
    a100,
    host_state,
    mdev_parent,
)

SEL = parse_selector(PF)


def req(*, layout: tuple[tuple[str, int | None], ...] = (),
        mig: tuple[MigRequest, ...] | None = None,
        passthrough: tuple[PassthroughDevice, ...] | None = None,
        backend: str = "mdev") -> HostRequirements:
    if mig is None:
        mig = (MigRequest("hpc-compute-01", "3g.20gb", None, SEL, None),
               MigRequest("hpc-compute-02", "2g.10gb", None, SEL, None))
    if passthrough is None:
        passthrough = (PassthroughDevice("hpc-compute-03", PASS_GPU, None, "gpu"),
                       PassthroughDevice("hpc-compute-03", PASS_AUDIO, None, "audio"))
    return HostRequirements(
        gpus=(ManagedGpu(SEL, True, layout, "global.gpus[0]"),),
        mig=mig, passthrough=passthrough, vgpu_backend=backend,  # type: ignore[arg-type]
        vm_names=("hpc-compute-01", "hpc-compute-02", "hpc-compute-03"),
    )


def run(tree: FakeTree, host: HostState | None = None,
        requirements: HostRequirements | None = None) -> list[CheckRow]:
    v = PCIePassthroughValidator(host if host is not None else host_state(), tree.root,
                                 proc_root=tree.root / "proc")
    return v.validate(requirements or req())


def failures(rows: list[CheckRow]) -> list[CheckRow]:
    return [r for r in rows if r.status == "fail"]


def only_failure(rows: list[CheckRow], check: str) -> CheckRow:
    bad = failures(rows)
    assert [r.check for r in bad] == [check], bad
    assert bad[0].hint
    return bad[0]


def test_healthy_host_passes_every_check(tree: FakeTree) -> None:
    rows = run(tree)
    assert failures(rows) == []
    checks = {r.check for r in rows}
    assert {"iommu", "vfio", "gpu-present", "mig-capable", "gpu-driver", "sriov-vfs",
            "vgpu-types", "passthrough-present", "passthrough-driver",
            "iommu-group"} <= checks
    # fit and MIG UUIDs are the planner's (tests/validation/test_fit_is_the_planners.py)
    assert "profile-fit" not in checks


def test_iommu_off(tree: FakeTree) -> None:
    for group in (tree.sys / "kernel/iommu_groups").iterdir():
        for link in (group / "devices").iterdir():
            link.unlink()
        (group / "devices").rmdir()
        group.rmdir()
    tree.proc("cmdline", "BOOT_IMAGE=/vmlinuz root=/dev/sda1\n")
    rows = run(tree, requirements=req(passthrough=()))
    row = only_failure(rows, "iommu")
    assert "intel_iommu=on" in row.hint


def test_iommu_cmdline_is_not_proof(tree: FakeTree) -> None:
    """intel_iommu=on on the command line with no groups is still a failure."""
    for group in (tree.sys / "kernel/iommu_groups").iterdir():
        for link in (group / "devices").iterdir():
            link.unlink()
        (group / "devices").rmdir()
        group.rmdir()
    rows = run(tree, requirements=req(passthrough=()))
    assert "firmware" in only_failure(rows, "iommu").hint


def test_vfio_missing(tree: FakeTree) -> None:
    (tree.sys / "module/vfio_pci").rmdir()
    (tree.sys / "bus/pci/drivers/vfio-pci").rename(tree.sys / "bus/pci/drivers/gone")
    tree.proc("modules", "vfio_iommu_type1 45056 0 - Live 0x0\n")
    rows = run(tree, requirements=req(passthrough=()))
    row = only_failure(rows, "vfio")
    assert row.subject == "vfio_pci" and "modprobe vfio_pci" in row.hint


def test_vfio_built_in_counts_as_present(tree: FakeTree) -> None:
    """Built-in VFIO has no /proc/modules line (ai-how's false negative)."""
    tree.proc("modules", "")
    assert failures(run(tree)) == []


def test_gpu_missing(tree: FakeTree) -> None:
    other = parse_selector("0000:18:00.0")
    r = HostRequirements(gpus=(ManagedGpu(other, True, (), "global.gpus[0]"),),
                         mig=(MigRequest("vm", "1g.5gb", None, other, None),))
    row = [x for x in failures(run(tree, requirements=r)) if x.check == "gpu-present"]
    assert len(row) >= 1 and PF in row[0].hint and "0000:18:00.0" in row[0].hint


def test_gpu_not_mig_capable(tree: FakeTree) -> None:
    rtx = a100(name="NVIDIA GeForce RTX 4060", model=None, pci_device_id="2882",
               mig_capable=False, mig_current=False, mig_pending=False)
    rows = run(tree, host_state(rtx))
    row = only_failure(rows, "mig-capable")
    assert "RTX 4060" in row.hint and "passthrough" in row.hint


def test_mig_gpu_bound_to_vfio(tree: FakeTree) -> None:
    tree.bind(PF, "vfio-pci")
    row = only_failure(run(tree), "gpu-driver")
    assert row.subject == PF and "vfio-pci" in row.hint and "nvidia" in row.hint


def test_driver_names_are_exact_not_substrings(tree: FakeTree) -> None:
    """'nvidia-vfio-variant' is not 'nvidia', and 'vfio-pci-x' is not 'vfio-pci'."""
    tree.bind(PF, "nvidia-vfio-variant")
    tree.bind(PASS_GPU, "vfio-pci-x")
    bad = failures(run(tree))
    assert {(r.check, r.subject) for r in bad} == {
        ("gpu-driver", PF), ("passthrough-driver", f"hpc-compute-03:{PASS_GPU}")}


def test_passthrough_gpu_on_nvidia(tree: FakeTree) -> None:
    tree.bind(PASS_GPU, "nvidia")
    row = only_failure(run(tree), "passthrough-driver")
    assert row.subject == f"hpc-compute-03:{PASS_GPU}" and "vfio-pci" in row.hint


def test_passthrough_device_absent(tree: FakeTree) -> None:
    r = req(passthrough=(PassthroughDevice("vm9", "0000:b3:00.0", None, "gpu"),))
    row = only_failure(run(tree, requirements=r), "passthrough-present")
    assert "0000:b3:00.0" in row.hint


def test_iommu_group_shared_with_a_host_driver(tree: FakeTree) -> None:
    tree.device("0000:65:00.2", driver="snd_hda_intel", klass="0x040300", group=40)
    bad = failures(run(tree))
    assert {r.check for r in bad} == {"iommu-group"}
    assert all("0000:65:00.2 (snd_hda_intel)" in r.hint for r in bad)


def test_partitioned_gpu_cannot_also_be_passed_through_whole(tree: FakeTree) -> None:
    r = req(passthrough=(PassthroughDevice("vm9", PF, None, "gpu"),))
    row = only_failure(run(tree, requirements=r), "passthrough-driver")
    assert "partitioned with MIG" in row.hint


def test_sriov_vfs_off_is_a_warning_apply_fixes(tree: FakeTree) -> None:
    """aihow apply enables the VFs itself, so VFs being off is a warning with the hint;
    the vGPU types they would list cannot be judged yet."""
    tree.sriov(PF, 16, 0)
    rows = run(tree, host_state(parents=()))
    assert failures(rows) == []
    warned = {r.check: r for r in rows if r.status == "warn"}
    assert set(warned) == {"sriov-vfs", "vgpu-types"}
    assert f"sriov-manage -e {PF}" in warned["sriov-vfs"].hint


def test_no_vgpu_manager(tree: FakeTree) -> None:
    row = only_failure(run(tree, host_state(parents=())), "vgpu-types")
    assert "vGPU manager" in row.hint


def test_vgpu_backend_mismatch(tree: FakeTree) -> None:
    parents = (mdev_parent("NVIDIA A100-3-20C", "NVIDIA A100-2-10C", backend="vfio-vf"),)
    row = only_failure(run(tree, host_state(parents=parents)), "vgpu-types")
    assert "vgpu_backend: vfio-vf" in row.hint


def test_vgpu_type_for_profile_missing(tree: FakeTree) -> None:
    parents = (mdev_parent("NVIDIA A100-1-5C"),)
    row = only_failure(run(tree, host_state(parents=parents)), "vgpu-types")
    assert "2g.10gb" in row.hint and "3g.20gb" in row.hint


def test_no_nvml_is_a_failed_row_not_a_crash(tree: FakeTree) -> None:
    v = PCIePassthroughValidator(None, tree.root, proc_root=tree.root / "proc",
                                 nvml_error="NVML Shared Library Not Found")
    rows = v.validate(req(passthrough=()))
    row = next(r for r in failures(rows) if r.check == "gpu-present")
    assert "NVML Shared Library Not Found" in row.hint


def test_validator_only_reads(tree: FakeTree) -> None:
    def snapshot(root: Path) -> dict[str, str]:
        return {str(p): (p.read_text() if p.is_file() and not p.is_symlink() else "")
                for p in sorted(root.rglob("*"))}

    before = snapshot(tree.root)
    run(tree)
    assert snapshot(tree.root) == before


def test_render_table_has_one_row_per_check(tree: FakeTree) -> None:
    from planner.host.validation import render_table

    tree.bind(PF, "vfio-pci")
    rows = run(tree)
    text = render_table(rows).splitlines()
    assert text[0].split() == ["CHECK", "SUBJECT", "STATUS", "HINT"]
    assert len(text) == len(rows) + 1
    bad = next(line for line in text if line.startswith("gpu-driver"))
    assert " FAIL " in bad and "must stay on nvidia" in bad


def test_slices_with_no_mig_gpu_to_go_to(tree: FakeTree) -> None:
    rtx = a100(name="NVIDIA GeForce RTX 4060", model=None, pci_device_id="2882",
               mig_capable=False, mig_current=False, mig_pending=False)
    r = HostRequirements(mig=(MigRequest("vm1", "1g.5gb", None, None, None),))
    row = next(x for x in failures(run(tree, host_state(rtx), r)) if x.check == "gpu-present")
    assert row.subject == "host" and "no MIG-capable GPU" in row.hint
