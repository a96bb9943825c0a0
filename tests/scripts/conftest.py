"""Run scripts/gpu/*.sh against a simulated host: its DIR/bin/nvidia-smi comes first in
PATH, so the scripts talk to the simulator exactly as they would to a real driver."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts" / "gpu"
AIHOW = Path(sys.executable).parent / "aihow"
A100 = "0000:17:00.0"
L40S = "0000:65:00.0"


def aihow(*args: str | Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(AIHOW), *map(str, args)], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, f"aihow {' '.join(map(str, args))}: {proc.stderr}"
    return proc


class SimHost:
    def __init__(self, root: Path, *gpus: str) -> None:
        self.dir = root / "host"
        self.proc = root / "proc"  # the process table the scripts look at (PROC_ROOT)
        self.proc.mkdir()
        args: list[str] = []
        for gpu in gpus:
            args += ["--gpu", gpu]
        aihow("sim", "init", self.dir, *args)

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
        aihow("sim", "hold", self.dir, "--gpu", pci, "--name", name, *extra)

    def release(self, name: str = "python3", pci: str = A100) -> None:
        aihow("sim", "hold", self.dir, "--gpu", pci, "--name", name, "--release")

    def process(self, pid: int, argv0: str, *devices: str) -> None:
        """A process in the fake process table (PROC_ROOT), with these files open."""
        d = self.proc / str(pid)
        (d / "fd").mkdir(parents=True)
        (d / "cmdline").write_bytes(argv0.encode() + b"\0--verbose\0")
        (d / "comm").write_text(Path(argv0).name[:15] + "\n")
        for n, dev in enumerate(("/dev/null", *devices)):
            os.symlink(dev, d / "fd" / str(n))


@pytest.fixture
def make_host(tmp_path: Path) -> Callable[..., SimHost]:
    def make(*gpus: str) -> SimHost:
        return SimHost(tmp_path, *(gpus or (f"a100-40gb@{A100}", f"l40s@{L40S}")))

    return make


@pytest.fixture
def host(make_host: Callable[..., SimHost]) -> SimHost:
    return make_host()
