"""A real libvirtd for integration tests (``qemu:///system``).

If a libvirtd already answers, it is used and left running. Otherwise, as root, this
starts one the way platform-notes.md describes (``libvirtd -d`` after creating its
runtime directories and the ``libvirt-qemu`` user and group that Debian's
libvirt-daemon-system would create) and stops exactly that daemon, by the pid it wrote,
when the session ends. Without libvirtd the tests are skipped with the reason, unless
``AIHOW_REQUIRE_LIBVIRTD=1`` (as ``.ci/run`` sets), which turns the skip into a failure.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

URI = "qemu:///system"
PIDFILE = Path("/var/run/libvirtd.pid")
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


def _unavailable(reason: str) -> None:
    if os.environ.get("AIHOW_REQUIRE_LIBVIRTD") == "1":
        pytest.fail(f"AIHOW_REQUIRE_LIBVIRTD=1 but {reason}", pytrace=False)
    pytest.skip(f"{reason} (set AIHOW_REQUIRE_LIBVIRTD=1 to make this a failure)")


def _try_open(libvirt: Any) -> Any | None:
    try:
        return libvirt.open(URI)
    except libvirt.libvirtError:
        return None


def _ensure_account() -> None:
    """The qemu driver runs guests as libvirt-qemu (Debian's qemu.conf default)."""
    for cmd, probe in (
        (["groupadd", "--system", "libvirt-qemu"], ["getent", "group", "libvirt-qemu"]),
        (
            [
                "useradd",
                "--system",
                "--gid",
                "libvirt-qemu",
                "--home-dir",
                "/var/lib/libvirt",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                "libvirt-qemu",
            ],
            ["getent", "passwd", "libvirt-qemu"],
        ),
    ):
        if subprocess.run(probe, capture_output=True, check=False).returncode != 0:
            subprocess.run(cmd, capture_output=True, check=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); it is gone for our purposes.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z"):
            return False
    return True


def _start_libvirtd(libvirtd: str) -> int:
    for d in ("/var/log/libvirt", "/var/run/libvirt", "/var/lib/libvirt"):
        Path(d).mkdir(parents=True, exist_ok=True)
    _ensure_account()
    res = subprocess.run([libvirtd, "-d"], capture_output=True, text=True, check=False, timeout=60)
    if res.returncode != 0:
        _unavailable(f"`libvirtd -d` failed: {(res.stderr or res.stdout).strip()}")
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            return int(PIDFILE.read_text().strip())
        time.sleep(0.2)
    _unavailable(f"libvirtd started but wrote no {PIDFILE}")
    raise AssertionError("unreachable")


def _stop(pid: int) -> None:
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline and _pid_alive(pid):
        time.sleep(0.2)
    if _pid_alive(pid):
        os.kill(pid, signal.SIGKILL)


def _find_libvirtd() -> str | None:
    """``$AIHOW_LIBVIRTD`` if set (a path; used to test the skip), else from PATH/sbin."""
    wanted = os.environ.get("AIHOW_LIBVIRTD")
    if wanted is not None:
        return wanted if os.access(wanted, os.X_OK) else None
    found = shutil.which("libvirtd")
    if found is None and os.access("/usr/sbin/libvirtd", os.X_OK):
        found = "/usr/sbin/libvirtd"
    return found


@pytest.fixture(scope="session")
def libvirtd_conn() -> Iterator[Any]:
    """An open ``qemu:///system`` connection to a real libvirtd."""
    import libvirt

    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    conn = _try_open(libvirt)
    started: int | None = None
    if conn is None:
        libvirtd = _find_libvirtd()
        if libvirtd is None:
            _unavailable(
                "libvirtd is not installed (Debian: libvirt-daemon libvirt-daemon-driver-qemu)"
            )
        elif os.geteuid() != 0:
            _unavailable("libvirtd is not running and starting it needs root")
        else:
            started = _start_libvirtd(libvirtd)
            deadline = time.monotonic() + START_TIMEOUT_S
            while conn is None and time.monotonic() < deadline:
                time.sleep(0.3)
                conn = _try_open(libvirt)
            if conn is None:
                _stop(started)
                _unavailable(f"libvirtd (pid {started}) started but {URI} does not answer")
    try:
        yield conn
    finally:
        with contextlib.suppress(Exception):
            conn.close()
        if started is not None:
            _stop(started)


@pytest.fixture
def virt_type(libvirtd_conn: Any) -> str:
    """'kvm' where the host offers it, else 'qemu' (so definitions validate anywhere)."""
    caps = libvirtd_conn.getCapabilities()
    return "kvm" if "<domain type='kvm'" in caps else "qemu"
