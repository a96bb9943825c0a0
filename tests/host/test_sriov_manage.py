"""SR-IOV VFs through NVIDIA's sriov-manage (issue 11 item 5): the real code path finds the
script, runs it with a timeout, retries a refused unbind lock and reports failures in one
line; the simulated host's DIR/bin/sriov-manage behaves as the script is documented to."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from planner.host import sriov_manage
from planner.host.errors import HostError
from planner.sim.host import GpuSpec
from planner.sim.state import SimStore

PF = "0000:17:00.0"


def script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return str(path)


def test_locate_prefers_path_then_the_documented_place(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    tool = script(tmp_path, "sriov-manage", "exit 0")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert sriov_manage.locate("sriov-manage") == tool
    assert sriov_manage.locate(tool) == tool
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    monkeypatch.setattr(sriov_manage, "DOCUMENTED_PATH", tool)
    assert sriov_manage.locate("sriov-manage") == tool
    monkeypatch.setattr(sriov_manage, "DOCUMENTED_PATH", str(tmp_path / "absent"))
    with pytest.raises(HostError, match="sriov-manage not found .*vGPU manager"):
        sriov_manage.locate("sriov-manage")
    with pytest.raises(HostError, match="no such executable"):
        sriov_manage.locate(str(tmp_path / "absent"))


def test_run_reports_failure_timeout_and_retries_the_unbind_lock(tmp_path: Path) -> None:
    ok = script(tmp_path, "ok", 'echo "$@" >> "$(dirname "$0")/calls"')
    sriov_manage.run(ok, True, PF)
    sriov_manage.run(ok, False, PF)
    assert (tmp_path / "calls").read_text().split("\n")[:2] == [f"-e {PF}", f"-d {PF}"]
    bad = script(tmp_path, "bad", 'echo "Failed to bind 0000:17:00.4" >&2; exit 1')
    with pytest.raises(HostError, match=r"gpu\[0000:17:00.0\]\.vfs: .* -e 0000:17:00.0 "
                                        r"failed: Failed to bind 0000:17:00.4"):
        sriov_manage.run(bad, True, PF)
    slow = script(tmp_path, "slow", "sleep 5")
    with pytest.raises(HostError, match="did not finish within 0.2 s"):
        sriov_manage.run(slow, True, PF, timeout=0.2)
    # refused twice, then it works: retried without a real wait
    flaky = script(tmp_path, "flaky", 'n=$(cat "$0.n" 2>/dev/null || echo 0); '
                   'echo $((n+1)) > "$0.n"; [ "$n" -ge 2 ] && exit 0; '
                   'echo "Cannot obtain unbindLock for 0000:17:00.0"; exit 1')
    naps: list[float] = []
    sriov_manage.run(flaky, True, PF, sleep=naps.append)
    assert naps == [sriov_manage.RETRY_DELAY_S] * 2
    held = script(tmp_path, "held", 'echo "Cannot obtain unbindLock for 0000:17:00.0"; exit 1')
    with pytest.raises(HostError, match="another NVML client"):
        sriov_manage.run(held, True, PF, sleep=naps.append)


def run_sim(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(root / "bin" / "sriov-manage"), *args], capture_output=True,
                          text=True, timeout=60, check=False)


def test_simulated_sriov_manage_behaves_as_documented(make_host: Callable[..., Path]) -> None:
    from planner.host.nvml import NvmlHost
    from planner.sim.fake_nvml import FakeNvml

    root = make_host(GpuSpec("a100-40gb", PF, mig=True), vgpu="mdev")
    assert run_sim(root, "-h").returncode == 0
    assert run_sim(root, "-x", PF).returncode == 1  # usage
    assert run_sim(root, "-e", "0000:99:00.0").returncode == 1  # no NVIDIA GPU there
    with NvmlHost(FakeNvml(root)) as nvml:
        nvml.create_gpu_instance(PF, 9, 4)
        # an open NVML session (ours) holds the GPU: the PF cannot be unbound
        held = run_sim(root, "-e", PF)
        assert held.returncode == 1 and f"Cannot obtain unbindLock for {PF}" in held.stderr
    out = run_sim(root, "-e", PF)
    assert out.returncode == 0, out.stderr
    gpu = SimStore(root).read().gpu(PF)
    assert gpu is not None and gpu.num_vfs == 16 and gpu.mig_current
    assert gpu.gpu_instances == []  # unbinding the PF wiped its GPU instances
    again = run_sim(root, "-e", "ALL")
    assert again.returncode == 0 and "already" in again.stdout  # idempotent
    assert run_sim(root, "-d", PF).returncode == 0
    assert SimStore(root).read().gpus[0].num_vfs == 0


def test_simulated_sriov_manage_without_sriov_does_nothing(make_host: Callable[..., Path]
                                                         ) -> None:
    root = make_host(GpuSpec("a100-40gb", PF, mig=True))  # no vGPU manager: no SR-IOV
    out = run_sim(root, "-e", PF)
    assert out.returncode == 0 and "nothing to do" in out.stdout
    assert SimStore(root).read().gpus[0].num_vfs == 0
    assert os.access(root / "bin" / "sriov-manage", os.X_OK)


def test_apply_refuses_when_sriov_manage_enabled_nothing(tmp_path: Path) -> None:
    """The script exits 0 on a GPU it cannot drive: apply judges by the VFs themselves."""
    from planner.apply.vgpu_handlers import SriovHandler
    from planner.sim.host import HostSpec, init_host
    from tests.apply.test_domain_and_vgpu_handlers import sim_ctx, step

    root = tmp_path / "host"
    init_host(root, HostSpec(gpus=(GpuSpec("a100-40gb", PF, mig=True),), vgpu="mdev"))
    (root / "bin" / "sriov-manage").write_text("#!/bin/sh\nexit 0\n")
    ctx = sim_ctx(root)
    try:
        with pytest.raises(Exception, match="succeeded but enabled no VFs"):
            SriovHandler().ensure(ctx, step(f"gpu[{PF}].vfs", "sriov", "create", None,
                                            {"enabled": True}), "after")
    finally:
        ctx.close()
