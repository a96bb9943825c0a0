"""GPUResourceAllocator: real files, real locks, real processes."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
from pathlib import Path
from typing import Any

import pytest

from planner.apply.allocator import (
    LEDGER_NAME,
    AllocationConflict,
    AllocationError,
    GPUResourceAllocator,
    Ledger,
    LedgerCorrupt,
    StaleGeneration,
    normalize_key,
)
from planner.errors import AihowError
from planner.host.state import Domain, Hostdev

MDEV = "2f0c6a3e-5b1d-4c3e-9a7f-0123456789ab"


@pytest.fixture
def alloc(tmp_path: Path) -> GPUResourceAllocator:
    return GPUResourceAllocator(tmp_path / "state" / LEDGER_NAME)


def test_empty_ledger_reads_as_generation_zero(alloc: GPUResourceAllocator) -> None:
    led = alloc.read()
    assert (led.generation, dict(led.claims)) == (0, {})
    assert not alloc.path.exists()


def test_claim_writes_a_versioned_file_and_bumps_generation(alloc: GPUResourceAllocator) -> None:
    led = alloc.claim(
        "hpc/hpc-compute-01",
        [("gi_placement", "0000:17:00.0/4"), ("vgpu", MDEV)],
        generation=0,
    )
    assert led.generation == 1
    doc = json.loads(alloc.path.read_text())
    assert doc["schema_version"] == 1 and doc["generation"] == 1
    assert doc["claims"] == [
        {"kind": "gi_placement", "key": "0000:17:00.0/4", "owner": "hpc/hpc-compute-01"},
        {"kind": "vgpu", "key": MDEV, "owner": "hpc/hpc-compute-01"},
    ]
    assert alloc.read() == led
    assert oct(alloc.path.stat().st_mode & 0o777) == "0o600"


@pytest.mark.parametrize(
    ("kind", "raw", "norm"),
    [
        ("pci", "3B:00.0", "0000:3b:00.0"),
        ("pci", "00000000:3B:00.0", "0000:3b:00.0"),
        ("gi_placement", "17:00.0/04", "0000:17:00.0/4"),
        (
            "mig_uuid",
            "MIG-4B4D1E3F-0A1B-4C2D-8E3F-112233445566",
            "MIG-4b4d1e3f-0a1b-4c2d-8e3f-112233445566",
        ),
        ("vgpu", MDEV.upper(), MDEV),
        ("vgpu", "0000:17:00.4", "0000:17:00.4"),
    ],
)
def test_keys_are_normalised(kind: str, raw: str, norm: str) -> None:
    assert normalize_key(kind, raw) == norm


def test_differently_written_addresses_are_the_same_gpu(alloc: GPUResourceAllocator) -> None:
    alloc.claim("hpc/hpc-compute-01", [("pci", "0000:3b:00.0")], generation=0)
    with pytest.raises(AllocationConflict) as info:
        alloc.claim("cloud/cloud-gpu-worker-01", [("pci", "00000000:3B:00.0")], generation=1)
    msg = str(info.value)
    assert "pci[0000:3b:00.0]" in msg
    assert "hpc/hpc-compute-01" in msg and "cloud/cloud-gpu-worker-01" in msg


@pytest.mark.parametrize(
    ("kind", "key", "message"),
    [
        ("pci", "zz:00.0", "invalid pci key"),
        ("gi_placement", "0000:17:00.0", "expected PCI/START"),
        ("mig_uuid", "GPU-123", "expected MIG-<uuid>"),
        ("vgpu", "nope", "invalid vgpu key"),
        ("disk", "x", "unknown claim kind"),
    ],
)
def test_bad_keys_are_refused(
    alloc: GPUResourceAllocator, kind: str, key: str, message: str
) -> None:
    with pytest.raises(AllocationError, match=message):
        alloc.claim("hpc/n1", [(kind, key)], generation=0)
    assert not alloc.path.exists()


def test_bad_owner_is_refused(alloc: GPUResourceAllocator) -> None:
    with pytest.raises(AllocationError, match="expected 'cluster/node'"):
        alloc.claim("hpc-compute-01", [("pci", "17:00.0")], generation=0)


def test_claims_are_all_or_nothing(alloc: GPUResourceAllocator) -> None:
    alloc.claim("hpc/hpc-compute-01", [("gi_placement", "17:00.0/0")], generation=0)
    with pytest.raises(AllocationConflict):
        alloc.claim(
            "cloud/cloud-cpu-worker-01",
            [("gi_placement", "17:00.0/1"), ("gi_placement", "17:00.0/0")],
            generation=1,
        )
    led = alloc.read()
    assert led.generation == 1
    assert led.owner_of("gi_placement", "0000:17:00.0/1") is None


def test_reclaim_by_the_same_owner_is_a_no_op(alloc: GPUResourceAllocator) -> None:
    alloc.claim("hpc/n1", [("pci", "17:00.0")], generation=0)
    led = alloc.claim("hpc/n1", [("pci", "0000:17:00.0")], generation=1)
    assert [c.owner for c in led.all_claims()] == ["hpc/n1"]


def test_stale_generation_is_refused_and_nothing_changes(alloc: GPUResourceAllocator) -> None:
    seen = alloc.read()
    alloc.claim("hpc/n1", [("gi_placement", "17:00.0/0")], generation=seen.generation)
    before = alloc.path.read_bytes()
    with pytest.raises(StaleGeneration) as info:
        alloc.claim("cloud/w1", [("gi_placement", "17:00.0/1")], generation=seen.generation)
    assert (info.value.expected, info.value.actual) == (0, 1)
    assert "re-read and retry" in str(info.value)
    assert alloc.path.read_bytes() == before
    with pytest.raises(StaleGeneration):
        alloc.release("hpc/n1", [("gi_placement", "17:00.0/0")], generation=0)


def test_release_checks_the_owner(alloc: GPUResourceAllocator) -> None:
    alloc.claim("hpc/hpc-compute-01", [("vgpu", MDEV)], generation=0)
    with pytest.raises(AllocationConflict) as info:
        alloc.release("cloud/cloud-cpu-worker-02", [("vgpu", MDEV)], generation=1)
    assert "held by hpc/hpc-compute-01" in str(info.value)
    assert "cloud/cloud-cpu-worker-02 cannot release it" in str(info.value)
    led = alloc.release("hpc/hpc-compute-01", [("vgpu", MDEV)], generation=1)
    assert led.all_claims() == []
    # Releasing something free is a no-op, not an error.
    assert alloc.release("hpc/hpc-compute-01", [("vgpu", MDEV)], generation=2).generation == 3


def test_release_owner_drops_only_that_owner(alloc: GPUResourceAllocator) -> None:
    alloc.claim("hpc/n1", [("pci", "17:00.0"), ("vgpu", MDEV)], generation=0)
    alloc.claim("hpc/n2", [("pci", "18:00.0")], generation=1)
    led = alloc.release_owner("hpc/n1", generation=2)
    assert [(c.key, c.owner) for c in led.all_claims()] == [("0000:18:00.0", "hpc/n2")]


def domains() -> list[Domain]:
    return [
        Domain(
            name="hpc-compute-01",
            uuid="d1",
            state="shut off",
            hostdevs=(Hostdev(type="mdev", uuid=MDEV.upper()),),
        ),
        Domain(
            name="legacy-gpu-vm",
            uuid="d2",
            state="running",
            hostdevs=(Hostdev(type="pci", pci="0000:41:00.0"),),
        ),
    ]


def test_a_device_a_domain_references_is_taken_even_if_the_ledger_lost_it(
    alloc: GPUResourceAllocator,
) -> None:
    with pytest.raises(AllocationConflict) as info:
        alloc.claim("cloud/cloud-gpu-worker-01", [("vgpu", MDEV)], generation=0, domains=domains())
    assert "libvirt domain hpc-compute-01" in str(info.value)
    assert "cloud/cloud-gpu-worker-01" in str(info.value)
    with pytest.raises(AllocationConflict, match="legacy-gpu-vm"):
        alloc.claim("hpc/hpc-compute-02", [("pci", "41:00.0")], generation=0, domains=domains())
    # The domain's own node may claim what its domain already references.
    led = alloc.claim("hpc/hpc-compute-01", [("vgpu", MDEV)], generation=0, domains=domains())
    assert led.owner_of("vgpu", MDEV) == "hpc/hpc-compute-01"


def test_reconcile_records_what_libvirt_holds(alloc: GPUResourceAllocator) -> None:
    alloc.claim("hpc/hpc-compute-01", [("vgpu", MDEV)], generation=0)
    led = alloc.reconcile(domains(), generation=1)
    assert led.owner_of("vgpu", MDEV) == "hpc/hpc-compute-01"  # kept, same node
    assert led.owner_of("pci", "0000:41:00.0") == "libvirt/legacy-gpu-vm"
    with pytest.raises(AllocationConflict, match="libvirt domain legacy-gpu-vm"):
        alloc.claim("cloud/w1", [("pci", "41:00.0")], generation=led.generation)


def test_corrupt_or_foreign_ledger_is_a_clear_error(alloc: GPUResourceAllocator) -> None:
    alloc.path.parent.mkdir(parents=True)
    for text, message in [
        (
            '{"schema": "aihow-gpu-allocations", "schema_version": 1, "generation": 1, "cl',
            "cannot read",
        ),
        ('{"shared_resources": {}}', "not an aihow allocation ledger"),
        (
            '{"schema": "aihow-gpu-allocations", "schema_version": 9, '
            '"generation": 1, "claims": []}',
            "schema_version 9",
        ),
    ]:
        alloc.path.write_text(text)
        with pytest.raises(LedgerCorrupt, match=message) as info:
            alloc.read()
        assert str(alloc.path) in str(info.value) and isinstance(info.value, AihowError)
        with pytest.raises(LedgerCorrupt):
            alloc.claim("hpc/n1", [("pci", "17:00.0")], generation=1)
        assert alloc.path.read_text() == text  # never silently reset


def test_ai_hows_global_state_is_left_alone(tmp_path: Path) -> None:
    ai_how = tmp_path / "global-state.json"
    original = b'{"shared_resources": {"gpu_allocations": {"0000:01:00.0": "vm"}}}'
    ai_how.write_bytes(original)
    alloc = GPUResourceAllocator.for_state_dir(tmp_path)
    alloc.claim("hpc/n1", [("pci", "01:00.0")], generation=0)
    alloc.release_owner("hpc/n1", generation=1)
    assert ai_how.read_bytes() == original
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "allocations.json",
        "allocations.json.lock",
        "global-state.json",
    ]


# --- across processes ---------------------------------------------------------------

CANDIDATES = [f"0000:17:00.0/{s}" for s in range(7)] + [f"0000:65:00.0/{s}" for s in range(5)]


def _worker(path: str, owner: str, want: int, barrier: Any, out: Any) -> None:
    alloc = GPUResourceAllocator(path)
    got: list[str] = []
    stale = 0
    first = True
    while len(got) < want:
        view = alloc.read()
        free = [c for c in CANDIDATES if view.owner_of("gi_placement", c) is None]
        choice = free[0]
        if first:
            # Every worker has read generation 0 before any writes: all but one must
            # meet a stale generation on this first write.
            barrier.wait()
            first = False
        try:
            alloc.claim(owner, [("gi_placement", choice)], generation=view.generation)
        except StaleGeneration:
            stale += 1
            continue
        got.append(choice)
    out.put((owner, got, stale))


def test_processes_allocating_at_once_never_get_the_same_slice(tmp_path: Path) -> None:
    ctx = mp.get_context("fork")
    path = str(tmp_path / LEDGER_NAME)
    workers = 4
    barrier = ctx.Barrier(workers)
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(path, f"c{i}/node-{i}", 3, barrier, out))
        for i in range(workers)
    ]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    slices = [s for _o, got, _s in results for s in got]
    assert len(slices) == workers * 3
    assert len(set(slices)) == len(slices), "a slice went to two owners"
    assert sum(stale for *_x, stale in results) >= workers - 1
    led = GPUResourceAllocator(path).read()
    assert led.generation == workers * 3
    for owner, got, _stale in results:
        assert sorted(c.key for c in led.held_by(owner)) == sorted(got)


def test_transact_retries_on_a_stale_generation(alloc: GPUResourceAllocator) -> None:
    calls: list[int] = []

    def decide(view: Ledger) -> str:
        calls.append(view.generation)
        if len(calls) == 1:  # someone else writes between our read and our write
            GPUResourceAllocator(alloc.path).claim("x/y", [("pci", "18:00.0")], generation=0)
        return "17:00.0"

    choice, led = alloc.transact(
        decide, lambda c, g: alloc.claim("a/b", [("pci", c)], generation=g)
    )
    assert choice == "17:00.0" and calls == [0, 1] and led.generation == 2


# --- crash safety -------------------------------------------------------------------


def _crash_during_write(path: str, where: str) -> None:
    def die(*_args: object, **_kw: object) -> None:
        os._exit(9)

    alloc = GPUResourceAllocator(path)
    if where == "rename":
        os.replace = die  # type: ignore[assignment]  # dies after the temp file is durable
    else:
        os.fsync = die  # type: ignore[assignment]  # dies with the temp file half-made
    alloc.claim("cloud/w1", [("pci", "65:00.0")], generation=1)


@pytest.mark.parametrize("where", ["rename", "fsync"])
def test_a_crash_mid_write_leaves_the_previous_ledger(tmp_path: Path, where: str) -> None:
    alloc = GPUResourceAllocator(tmp_path / LEDGER_NAME)
    alloc.claim("hpc/n1", [("pci", "17:00.0")], generation=0)
    before = alloc.path.read_bytes()
    proc = mp.get_context("fork").Process(target=_crash_during_write, args=(str(alloc.path), where))
    proc.start()
    proc.join(timeout=60)
    assert proc.exitcode == 9
    assert alloc.path.read_bytes() == before
    assert list(tmp_path.glob(".allocations.json.tmp-*")), "the crash left its temp file"
    led = alloc.read()
    assert led.generation == 1
    # The lock died with the process; the next writer proceeds and sweeps the debris.
    alloc.claim("cloud/w1", [("pci", "65:00.0")], generation=1)
    assert not list(tmp_path.glob(".allocations.json.tmp-*"))


def _applied_host() -> Any:
    """One A100 with two 1g.5gb instances, each under an mdev held by a domain."""
    from planner.host.state import (
        ComputeInstance,
        Gpu,
        GpuInstance,
        HostState,
        Mdev,
        VgpuParent,
    )

    gis = tuple(
        GpuInstance(gi_id=10 + s, profile_id=19, profile_name="1g.5gb", placement_start=s,
                    placement_size=1,
                    compute_instances=(ComputeInstance(ci_id=0, profile_id=0, placement_start=0,
                                                       placement_size=1,
                                                       mig_uuid=f"MIG-{s:08d}-aaaa-4bbb-8ccc-"
                                                                "dddddddddddd"),))
        for s in (0, 1))
    gpu = Gpu(index=0, pci="0000:17:00.0", uuid="GPU-x", name="NVIDIA A100-SXM4-40GB",
              mig_capable=True, mig_current=True, mig_pending=True, gpu_instances=gis)
    vfs = tuple(VgpuParent(pci=f"0000:17:00.{4 + k}", physfn="0000:17:00.0", backend="mdev")
                for k in (0, 1))
    u = ["2f0c6a3e-5b1d-4c3e-9a7f-00000000000" + str(k) for k in (0, 1)]
    mdevs = tuple(Mdev(uuid=u[k], parent=vfs[k].pci, type_id="nvidia-474", gi_id=10 + k)
                  for k in (0, 1))
    doms = tuple(Domain(name=f"hpc-compute-0{k + 1}", uuid=f"d{k}", state="shut off",
                        hostdevs=(Hostdev(type="mdev", uuid=u[k]),)) for k in (0, 1))
    return HostState(uri="sim:x", gpus=(gpu,), vgpu_parents=vfs, mdevs=mdevs, domains=doms), u


def test_holdings_are_read_back_from_the_host_and_recorded_per_node(
    alloc: GPUResourceAllocator,
) -> None:
    from planner.apply.allocator import holdings, record_holdings

    host, u = _applied_host()
    owners = {"hpc-compute-01": "hpc/hpc-compute-01", "hpc-compute-02": "hpc/hpc-compute-02"}
    held = holdings(host, owners)
    assert held["hpc/hpc-compute-02"] == [
        ("vgpu", u[1]), ("gi_placement", "0000:17:00.0/1"),
        ("mig_uuid", "MIG-00000001-aaaa-4bbb-8ccc-dddddddddddd")]
    led = record_holdings(alloc, ["hpc"], held)
    assert led.owner_of("gi_placement", "0000:17:00.0/0") == "hpc/hpc-compute-01"
    # the config is the truth for its clusters: a node's old claims go when it moves
    led = record_holdings(alloc, ["hpc"], {"hpc/hpc-compute-01": held["hpc/hpc-compute-01"]})
    assert led.held_by("hpc/hpc-compute-02") == []
    # another cluster's claim on the same slice is refused, naming both owners
    with pytest.raises(AllocationConflict, match=r"held by hpc/hpc-compute-01; it cannot "
                       r"also go to lab/lab-compute-01"):
        record_holdings(alloc, ["lab"], {"lab/lab-compute-01": [("gi_placement",
                                                                 "0000:17:00.0/0")]})
    assert alloc.read().owner_of("gi_placement", "0000:17:00.0/0") == "hpc/hpc-compute-01"
