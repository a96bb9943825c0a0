"""Run scripts/gpu/*.sh against a simulated host: its DIR/bin/nvidia-smi comes first in
PATH, so the scripts talk to the simulator exactly as they would to a real driver."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from planner.sim.host import parse_gpu_arg
from tests.clirun import aihow

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts" / "gpu"
A100 = "0000:17:00.0"
L40S = "0000:65:00.0"


class SimHost:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.proc = directory.with_name(directory.name + "-proc")  # PROC_ROOT of the scripts
        self.proc.mkdir()

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env["PATH"] = f"{self.dir / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
        env["PROC_ROOT"] = str(self.proc)
        env.update(extra)
        return env

    def script(self, name: str, *args: str, detailed: bool = True,
               **env: str) -> subprocess.CompletedProcess[str]:
        """Run a script; ``detailed`` (the tests' default) adds --detailed-exitcode, so
        the exit status tells changed (2) and pending (3) from nothing to do (0)."""
        flags = ["--detailed-exitcode"] if detailed and "--help" not in args else []
        return subprocess.run([str(SCRIPTS / name), *args, *flags], capture_output=True,
                              text=True, env=self.env(**env), check=False, cwd=REPO)

    def smi(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["nvidia-smi", *args], capture_output=True, text=True,
                              env=self.env(), check=False)

    def mig_mode(self, pci: str = A100) -> tuple[str, str]:
        """(current, pending) MIG mode as 'nvidia-smi -q' reports it."""
        out = self.smi("-q", "-i", pci).stdout
        m = re.search(r"MIG Mode\s*\n\s+Current\s*:\s*(\S+)\s*\n\s+Pending\s*:\s*(\S+)", out)
        assert m, out
        return m[1], m[2]

    def hold(self, name: str, pci: str = A100, *extra: str) -> None:
        aihow("sim", "hold", self.dir, "--gpu", pci, "--name", name, *extra, ok=True)

    def release(self, name: str = "python3", pci: str = A100) -> None:
        aihow("sim", "hold", self.dir, "--gpu", pci, "--name", name, "--release", ok=True)

    def process(self, pid: int, argv0: str, *devices: str) -> None:
        """A process in the fake process table (PROC_ROOT), with these files open."""
        d = self.proc / str(pid)
        (d / "fd").mkdir(parents=True)
        (d / "cmdline").write_bytes(argv0.encode() + b"\0--verbose\0")
        (d / "comm").write_text(Path(argv0).name[:15] + "\n")
        for n, dev in enumerate(("/dev/null", *devices)):
            os.symlink(dev, d / "fd" / str(n))


@pytest.fixture
def script_host(make_host: Callable[..., Path]) -> Callable[..., SimHost]:
    """script_host("MODEL@PCI", ...) (default: an A100 and an L40S) -> a SimHost."""
    def make(*gpus: str) -> SimHost:
        specs = (parse_gpu_arg(g) for g in gpus or (f"a100-40gb@{A100}", f"l40s@{L40S}"))
        return SimHost(make_host(*specs))

    return make


@pytest.fixture
def host(script_host: Callable[..., SimHost]) -> SimHost:
    return script_host()
