"""A real boot: a domain rendered by aihow runs a guest on the real libvirtd.

The domain is aihow's own rendering (``VMFactory.domain_xml`` of a ``VMSpec``, no hostdev:
this machine has no VFIO) with a direct kernel boot of the Debian kernel and a busybox
initramfs built at test time (``tests/integration/guest.py``). Its disk is a qcow2
overlay made with ``qemu-img`` over a small base image, volume ``{vm}.qcow2`` of pool
``{cluster}-pool``; its NIC is on network ``{cluster}-network`` (a bridge the test makes),
as ai-how names them. aihow's ``libvirt_domains`` defines and starts it over a
``LibvirtSession``. The guest prints ``AIHOW-GUEST-UP token=T disk=D mac=M`` on its
serial console, which the console's ``<log>`` copies to a file; the test checks the token
(this boot), the disk line (the overlay reaches its base) and the MAC (aihow's
derivation), then aihow shuts the guest down over ACPI
(``libvirt_objects.shut_down_domain``, what a plan's stop step runs; the guest powers off
on the power button) and apply's domain handler deletes it, as it carries out a plan's
delete of a dropped VM.

KVM is used when it works: where libvirt offers it, the guest must come up under KVM
within ``KVM_BOOT_S``; else (a nested /dev/kvm that hangs, as on this project's CI
machines) the test boots it again under TCG (domain type ``qemu``). The test output
says which ran. ``AIHOW_BOOT_VIRT_TYPE=qemu`` (or ``kvm``) forces one.

The network, the pool and the images are the test's own scaffolding, transient, and
removed in a ``finally`` with the domain, whatever happened. Every libvirt call and
subprocess is bounded in time.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from planner.apply.domain_handlers import DomainHandler
from planner.apply.handlers import ApplyContext
from planner.apply.steps import expand
from planner.host import libvirt_domains as ld
from planner.host import libvirt_objects as lo
from planner.host.environment import LocalEnvironment
from planner.host.libvirt_conn import LibvirtSession, open_libvirt
from planner.vm.vm_factory import DirectBoot, VMFactory, VMSpec
from planner.vocab.plan import Change
from tests.integration import guest as guest_mod
from tests.integration.conftest import URI, _unavailable

pytestmark = pytest.mark.libvirtd

KVM_BOOT_S = 20.0  # a working KVM reaches /init in 1-2 s; a hung one prints nothing
TCG_BOOT_S = 240.0  # emulated: about 10 s alone, far longer on a busy 2-core machine
SHUTDOWN_S = 60.0
CALL_S = 60.0  # any single libvirt call
SUBPROCESS_S = 60
T = TypeVar("T")


def bounded(what: str, fn: Callable[..., T], *args: Any, seconds: float = CALL_S,
            **kw: Any) -> T:
    """``fn(*args)`` in a worker thread; TimeoutError when it has not returned in time
    (libvirt's calls have no timeout of their own)."""
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["value"] = fn(*args, **kw)
        except BaseException as exc:  # handed to the caller
            box["error"] = exc

    worker = threading.Thread(target=work, name=f"bounded {what}", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise TimeoutError(f"{what} did not return within {seconds:g} s")
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


def run(*cmd: str) -> None:
    subprocess.run(cmd, capture_output=True, check=True, timeout=SUBPROCESS_S)


@pytest.fixture(scope="session")
def tiny_guest(tmp_path_factory: pytest.TempPathFactory) -> guest_mod.Guest:
    """The kernel and initramfs, built once per session under pytest's tmp dir."""
    try:
        return guest_mod.build(tmp_path_factory.mktemp("guest"))
    except guest_mod.GuestUnavailable as exc:
        _unavailable(f"cannot build the boot test's guest: {exc}")
        raise AssertionError("unreachable") from exc


@pytest.fixture
def say(capsys: pytest.CaptureFixture[str]) -> Callable[[str], None]:
    """Print past pytest's capture, so every run shows which accelerator booted."""

    def write(line: str) -> None:
        with capsys.disabled():
            print(f"\n[guest boot] {line}", flush=True)

    return write


@pytest.fixture
def workdir() -> Iterator[Path]:
    """Where the guest's files live. Not under pytest's tmp dir: QEMU runs as
    libvirt-qemu, which cannot enter pytest's 0700 directories."""
    path = Path(tempfile.mkdtemp(prefix="aihow-boot-", dir="/var/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def virt_types(conn: Any) -> list[str]:
    forced = os.environ.get("AIHOW_BOOT_VIRT_TYPE")
    if forced:
        assert forced in ("kvm", "qemu"), f"AIHOW_BOOT_VIRT_TYPE={forced!r}: kvm or qemu"
        return [forced]
    caps = bounded("getCapabilities", conn.getCapabilities)
    return ["kvm", "qemu"] if "<domain type='kvm'" in caps else ["qemu"]


def wait_for(log: Path, marker: str, seconds: float, alive: Callable[[], bool]) -> str | None:
    """The console line that starts with ``marker``, or None once ``seconds`` passed or
    the domain stopped."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        for line in text.splitlines():
            if line.startswith(marker):
                return line.strip()
        if not alive():
            return None
        time.sleep(0.5)
    return None


def tail(log: Path, n: int = 15) -> str:
    text = log.read_text(errors="replace").strip() if log.exists() else ""
    return "\n".join(text.splitlines()[-n:]) or "(nothing)"


def domain_is_active(conn: Any, name: str) -> bool:
    return bool(conn.lookupByName(name).isActive())


def boot(conn: Any, spec: VMSpec, seconds: float) -> tuple[str | None, str]:
    """Define and start ``spec`` through aihow and wait for the guest's marker: (the
    marker line, "") when it came, else (None, why), the domain then undefined again."""
    log = Path(spec.console_log or "")
    bounded("define", ld.define, conn, VMFactory().domain_xml(spec, defined_by_aihow=True))
    try:
        bounded("start", ld.start, conn, spec.name)
    except ld.DomainError as exc:
        bounded("undefine", ld.undefine, conn, spec.name)
        return None, str(exc)
    started = time.monotonic()
    up = wait_for(log, "AIHOW-GUEST-UP", seconds,
                  lambda: bounded("domain_is_active", domain_is_active, conn, spec.name))
    if up is not None:
        return up, ""
    why = (f"no AIHOW-GUEST-UP on the console within {time.monotonic() - started:.0f} s "
           f"(its last line: {tail(log, 1)})")
    bounded("undefine", ld.undefine, conn, spec.name, allow_stop=True)
    return None, why


def delete_as_apply_does(spec: VMSpec, xml: str) -> dict[str, Any]:
    """The step of a plan's ``domain[NAME]`` delete (reason vm-dropped, its ``before``
    the definition as a plan holds it), run by apply's domain handler on this host."""
    change = Change.model_validate({
        "id": 1, "address": f"domain[{spec.name}]", "kind": "domain", "action": "delete",
        "before": {"name": spec.name, "state": "shut off", "cluster": spec.cluster_name,
                   "xml": xml},
        "after": None, "reason": "the boot test is over", "reason_code": "vm-dropped",
        "branch": "host"})
    (step,) = expand(change)
    ctx = ApplyContext(LocalEnvironment(libvirt_uri=URI))
    try:
        return DomainHandler().ensure(ctx, step, "after")
    finally:
        ctx.close()


def remove_domain(conn: Any, name: str) -> None:
    """Cleanup, whatever state the domain is in; every call bounded."""
    with contextlib.suppress(Exception):
        dom = bounded("lookupByName", conn.lookupByName, name)
        if bounded("isActive", dom.isActive):
            bounded("destroy", dom.destroy)
        bounded("undefine", dom.undefine)
    # libvirt keeps a domain's QEMU log after undefining it; these names are the test's.
    Path("/var/log/libvirt/qemu", f"{name}.log").unlink(missing_ok=True)


@pytest.mark.usefixtures("virtlogd")
@pytest.mark.timeout(KVM_BOOT_S + TCG_BOOT_S + SHUTDOWN_S + 6 * CALL_S)
def test_an_aihow_rendered_domain_boots_a_guest_and_aihow_stops_and_deletes_it(
    libvirtd_conn: Any, tiny_guest: guest_mod.Guest, workdir: Path,
    say: Callable[[str], None],
) -> None:
    token = secrets.token_hex(4)
    cluster = f"aihowboot{token}"
    disk_line = f"AIHOW-DISK-{secrets.token_hex(6)}"
    boot_dir, pool_dir = workdir / "boot", workdir / "pool"
    boot_dir.mkdir()
    pool_dir.mkdir()
    # Copies: libvirt relabels (chowns) a guest's kernel and initrd while it runs.
    kernel = Path(shutil.copy2(tiny_guest.kernel, boot_dir / "vmlinuz"))
    initrd = Path(shutil.copy2(tiny_guest.initramfs, boot_dir / "initramfs.cpio"))
    # The cluster's base image holds one line the guest reads back through the overlay.
    raw = workdir / "base.raw"
    with raw.open("wb") as f:
        f.write(disk_line.encode() + b"\n")
        f.truncate(16 << 20)
    base = pool_dir / f"{cluster}-base.qcow2"
    run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(base))
    raw.unlink()

    bridge = f"aihowbr{token}"  # 15 characters, the kernel's limit
    session: LibvirtSession = bounded("open", open_libvirt, URI)
    conn = session.conn
    net = pool = None
    names: list[str] = []
    try:
        # The network is a host bridge the test makes, handed to libvirt as a bridged
        # network: libvirt's own bridges need a firewall (iptables) and dnsmasq, which
        # the guest does not need to prove its NIC is there.
        run("ip", "link", "add", "name", bridge, "type", "bridge")
        net = bounded("networkCreateXML", conn.networkCreateXML,
                      f"<network><name>{cluster}-network</name><forward mode='bridge'/>"
                      f"<bridge name='{bridge}'/></network>")
        tried: list[str] = []
        console: dict[str, str] = {}  # virt type: the end of its console
        for virt_type in virt_types(conn):
            spec = VMSpec(
                name=f"{cluster}-{virt_type}-01", cluster_name=cluster, role="compute",
                cpu_cores=1, memory_gb=1, disk_gb=1, bridge=bridge,
                virt_type=virt_type,  # type: ignore[arg-type]
                boot=DirectBoot(str(kernel), str(initrd),
                                f"console=ttyS0 panic=-1 aihow.token={token}"),
                console_log=str(workdir / f"console-{virt_type}.log"),
            )
            run("qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base),
                str(pool_dir / spec.volume))
            if pool is None:  # a dir pool lists its files when it starts
                pool = bounded("storagePoolCreateXML", conn.storagePoolCreateXML,
                               f"<pool type='dir'><name>{spec.pool}</name><target><path>"
                               f"{pool_dir}</path></target></pool>", 0)
            else:
                bounded("pool refresh", pool.refresh, 0)
            names.append(spec.name)
            started = time.monotonic()
            up, why_not = boot(conn, spec, KVM_BOOT_S if virt_type == "kvm" else TCG_BOOT_S)
            if up is not None:
                break
            tried.append(f"{virt_type}: {why_not}")
            console[virt_type] = tail(Path(spec.console_log or ""))
        else:
            pytest.fail("the guest did not boot:\n" + "\n".join(
                f"{attempt}\nconsole:\n{console.get(attempt.split(':')[0], '')}"
                for attempt in tried), pytrace=False)
        for attempt in tried:
            say(f"not booted: {attempt}; falling back")
        accel = "KVM" if virt_type == "kvm" else "TCG (domain type qemu)"
        say(f"{spec.name} booted under {accel} in {time.monotonic() - started:.1f} s: {up}")
        log = Path(spec.console_log or "")

        # The line proves this boot (token), the overlay over the base (disk line) and
        # the NIC aihow rendered (its MAC).
        assert up == f"AIHOW-GUEST-UP token={token} disk={disk_line} mac={spec.mac}"

        # The guest waits for the power button: still running, not yet down.
        time.sleep(1)
        assert bounded("domain_is_active", domain_is_active, conn, spec.name)
        assert "AIHOW-GUEST-DOWN" not in log.read_text(errors="replace")
        # aihow stops it gracefully (ACPI; the guest powers off on the button), as a
        # plan's stop step does (RunningHandler) ...
        how = bounded("shutdown", lo.shut_down_domain, conn, spec.name, timeout=SHUTDOWN_S,
                      seconds=SHUTDOWN_S + CALL_S)
        assert how == "shutdown", f"the guest did not stop on ACPI alone ({how})"
        assert not bounded("domain_is_active", domain_is_active, conn, spec.name)
        assert f"AIHOW-GUEST-DOWN token={token}" in log.read_text(errors="replace")
        # ... and deletes it as apply does: the domain handler carries out a plan's delete
        # of a VM the config dropped (it deletes only a domain aihow's mark is on).
        xml = bounded("persistent_xml", ld.persistent_xml, conn, spec.name)
        facts = bounded("delete", delete_as_apply_does, spec, xml)
        assert facts == {"undefined": spec.name}
        assert not bounded("domain_exists", ld.domain_exists, conn, spec.name)
    finally:
        for name in names:
            remove_domain(conn, name)
        for obj in (pool, net):
            if obj is not None:
                with contextlib.suppress(Exception):
                    bounded("destroy", obj.destroy)
        subprocess.run(["ip", "link", "del", bridge], capture_output=True, check=False,
                       timeout=SUBPROCESS_S)
        with contextlib.suppress(Exception):
            bounded("close", session.close)
