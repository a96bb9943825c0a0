"""A real libvirtd for integration tests (``qemu:///system``).

Why a reaper: the qemu driver probes QEMU's capabilities by starting QEMU daemonized,
so the probe process is re-parented to the nearest child subreaper, or to PID 1. Where
PID 1 is not a classic init (containers, these CI machines), nobody reaps the exited
probe, libvirtd sees a zombie that never goes away and the first ``virDomainDefineXML``
never returns. So the daemon is started as ``tini -s -- libvirtd`` (foreground): tini
is its subreaper and reaps every orphan, and the define answers in seconds. (The other
half of that hang: see ``_ensure_account``.)

If a libvirtd already answers, it is used and left running, but only after a trivial
domain defines and undefines within ``HEALTH_TIMEOUT_S`` (a daemon started without a
reaper fails that check with a message saying so, instead of hanging the suite).
Otherwise, as root, this starts one and stops exactly that one when the session ends.
Without libvirtd the tests are skipped with the reason, unless
``AIHOW_REQUIRE_LIBVIRTD=1`` (as ``.ci/run`` sets), which turns the skip into a failure.
Every step has a time bound; none can hang the run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

URI = "qemu:///system"
START_TIMEOUT_S = 60.0
HEALTH_TIMEOUT_S = 90.0  # the first define waits for QEMU capability probing
STOP_TIMEOUT_S = 30.0
PROBE_DOMAIN = """<domain type='qemu'><name>aihow-libvirtd-health-check</name>
<memory unit='MiB'>32</memory><os><type arch='x86_64'>hvm</type></os></domain>"""


def _unavailable(reason: str) -> None:
    if os.environ.get("AIHOW_REQUIRE_LIBVIRTD") == "1":
        pytest.fail(f"AIHOW_REQUIRE_LIBVIRTD=1 but {reason}", pytrace=False)
    pytest.skip(f"{reason} (set AIHOW_REQUIRE_LIBVIRTD=1 to make this a failure)")


def _answers() -> bool:
    """Whether a daemon answers on URI; through virsh so a stuck daemon cannot hang us."""
    try:
        res = subprocess.run(["virsh", "-c", URI, "version"], capture_output=True,
                             timeout=15, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return res.returncode == 0


def _health_problem() -> str | None:
    """None when a trivial domain defines and undefines in time, else what went wrong."""
    with tempfile.NamedTemporaryFile("w", suffix=".xml") as xml:
        xml.write(PROBE_DOMAIN)
        xml.flush()
        for args in (["define", xml.name], ["undefine", "aihow-libvirtd-health-check"]):
            try:
                res = subprocess.run(["virsh", "-c", URI, *args], capture_output=True,
                                     text=True, timeout=HEALTH_TIMEOUT_S, check=False)
            except subprocess.TimeoutExpired:
                return (f"`virsh {args[0]}` on {URI} did not return in {HEALTH_TIMEOUT_S:.0f} s "
                        "(a libvirtd started without a zombie reaper hangs so: stop it and let "
                        "the tests start one under tini)")
            if res.returncode != 0:
                return f"`virsh {args[0]}` on {URI} failed: {(res.stderr or res.stdout).strip()}"
    return None


def _ensure_account() -> None:
    """The qemu driver runs guests as libvirt-qemu (Debian's qemu.conf default), a member
    of ``kvm`` as Debian's libvirt-daemon-system makes it. Without that membership
    libvirt finds /dev/kvm unusable for the guest user while its cached QEMU capabilities
    say KVM, so it throws the cache away and re-probes QEMU on every define (seconds each,
    one at a time)."""
    for cmd, probe in (
        (["groupadd", "--system", "libvirt-qemu"], ["getent", "group", "libvirt-qemu"]),
        (
            ["useradd", "--system", "--gid", "libvirt-qemu", "--home-dir", "/var/lib/libvirt",
             "--no-create-home", "--shell", "/usr/sbin/nologin", "libvirt-qemu"],
            ["getent", "passwd", "libvirt-qemu"],
        ),
    ):
        if subprocess.run(probe, capture_output=True, check=False, timeout=30).returncode != 0:
            subprocess.run(cmd, capture_output=True, check=True, timeout=30)
    kvm = subprocess.run(["getent", "group", "kvm"], capture_output=True, text=True,
                         check=False, timeout=30)
    if kvm.returncode == 0 and "libvirt-qemu" not in kvm.stdout.strip().split(":")[-1].split(","):
        subprocess.run(["usermod", "--append", "--groups", "kvm", "libvirt-qemu"],
                       capture_output=True, check=True, timeout=30)


def _start_libvirtd(libvirtd: str, tini: str, log: Path) -> subprocess.Popen[bytes]:
    for d in ("/var/log/libvirt", "/var/run/libvirt", "/var/lib/libvirt"):
        Path(d).mkdir(parents=True, exist_ok=True)
    _ensure_account()
    with log.open("wb") as out:
        # A new session: Ctrl-C on pytest reaches the fixture's teardown, not the daemon.
        proc = subprocess.Popen([tini, "-s", "--", libvirtd], stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            _unavailable(f"libvirtd exited with status {proc.returncode}: "
                         f"{log.read_text(errors='replace').strip()[-400:]}")
        if _answers():
            return proc
        time.sleep(0.3)
    _stop(proc)
    _unavailable(f"libvirtd (pid {proc.pid}) started but {URI} did not answer in "
                 f"{START_TIMEOUT_S:.0f} s")
    raise AssertionError("unreachable")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to tini, which passes it on to libvirtd; SIGKILL the group if that stalls."""
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=STOP_TIMEOUT_S)


def _find(name: str, env: str) -> str | None:
    """``$env`` if set (a path; lets a test ask for a missing binary), else PATH or sbin."""
    wanted = os.environ.get(env)
    if wanted is not None:
        return wanted if os.access(wanted, os.X_OK) else None
    found = shutil.which(name)
    for sbin in ("/usr/sbin", "/sbin"):
        if found is None and os.access(f"{sbin}/{name}", os.X_OK):
            found = f"{sbin}/{name}"
    return found


@pytest.fixture(scope="session")
def libvirtd_conn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """An open ``qemu:///system`` connection to a real, working libvirtd."""
    import libvirt

    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    started: subprocess.Popen[bytes] | None = None
    if not _answers():
        libvirtd, tini = _find("libvirtd", "AIHOW_LIBVIRTD"), _find("tini", "AIHOW_TINI")
        if libvirtd is None:
            _unavailable(
                "libvirtd is not installed (Debian: libvirt-daemon libvirt-daemon-driver-qemu)")
        elif tini is None:
            _unavailable("tini is not installed (Debian: tini); libvirtd needs it as reaper")
        elif os.geteuid() != 0:
            _unavailable("libvirtd is not running and starting it needs root")
        else:
            log = tmp_path_factory.mktemp("libvirtd") / "libvirtd.log"
            started = _start_libvirtd(libvirtd, tini, log)
    problem = _health_problem()
    if problem is not None:
        if started is not None:
            _stop(started)
        _unavailable(problem)
    conn = libvirt.open(URI)
    try:
        yield conn
    finally:
        with contextlib.suppress(Exception):
            conn.close()
        if started is not None:
            _stop(started)


VIRTLOGD_SOCK = Path("/run/libvirt/virtlogd-sock")


def _virtlogd_answers() -> bool:
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(str(VIRTLOGD_SOCK))
        return True
    return False


@pytest.fixture(scope="session")
def virtlogd(libvirtd_conn: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """virtlogd, which the qemu driver needs to start a domain (it writes the domain's
    log and its console ``<log>`` files). systemd starts it on demand from its socket;
    without systemd nobody does, so, as for libvirtd: used if it answers, else started
    here (as root) and stopped when the session ends."""
    started: subprocess.Popen[bytes] | None = None
    if not _virtlogd_answers():
        binary = _find("virtlogd", "AIHOW_VIRTLOGD")
        if binary is None:
            _unavailable("virtlogd is not installed (Debian: libvirt-daemon)")
        elif os.geteuid() != 0:
            _unavailable("virtlogd is not running and starting it needs root")
        else:
            log = tmp_path_factory.mktemp("virtlogd") / "virtlogd.log"
            with log.open("wb") as out:
                started = subprocess.Popen([binary], stdout=out, stderr=subprocess.STDOUT,
                                           start_new_session=True)
            deadline = time.monotonic() + START_TIMEOUT_S
            while not _virtlogd_answers():
                if started.poll() is not None or time.monotonic() > deadline:
                    _stop(started)
                    _unavailable(f"virtlogd did not answer on {VIRTLOGD_SOCK}: "
                                 f"{log.read_text(errors='replace').strip()[-400:]}")
                time.sleep(0.2)
    try:
        yield
    finally:
        if started is not None:
            _stop(started)


@pytest.fixture
def virt_type(libvirtd_conn: Any) -> str:
    """'kvm' where the host offers it, else 'qemu' (so definitions validate anywhere)."""
    caps = libvirtd_conn.getCapabilities()
    return "kvm" if "<domain type='kvm'" in caps else "qemu"
