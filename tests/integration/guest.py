"""A tiny guest for the boot test, built at test time from Debian packages.

The kernel is a Debian kernel: the newest in ``/boot`` that has its modules in
``/lib/modules``, else the ``linux-image-*`` package ``scripts/setup-dev.sh`` downloads
to ``.cache/guest-kernel/`` (not installed: installing a kernel would change what the
machine boots), unpacked with ``dpkg-deb`` under pytest's tmp dir. The initramfs is
``busybox-static`` plus that kernel's own virtio and ACPI-button modules (dependencies
read from each module's ``.modinfo``), packed with ``cpio``. Its ``/init``:

1. loads the modules, dependencies first,
2. prints one line to the serial console:
   ``AIHOW-GUEST-UP token=T disk=D mac=M``, where T comes from the kernel command line
   (``aihow.token=T``), D is the first line of the guest's disk ``/dev/vda`` and M the
   MAC of its first NIC, so the line proves the boot, the disk and the NIC of the
   rendered domain at once,
3. waits for the ACPI power button and powers off (``AIHOW-GUEST-DOWN token=T``), so a
   graceful shutdown through libvirt is seen to work.

The token is per test and lives on the command line, so one initramfs serves the whole
session (built once, under pytest's tmp dir).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

KERNEL_DEBS = Path(__file__).resolve().parents[2] / ".cache" / "guest-kernel"
MODULES = ("virtio_pci", "virtio_blk", "virtio_net", "button", "evdev")
SUBPROCESS_TIMEOUT_S = 60

INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
while read -r ko; do insmod "/lib/modules/$ko" || echo "aihow-guest: insmod $ko failed"; done \
  < /lib/modules/order
token=$(sed -n 's/.*aihow\.token=\([^ ]*\).*/\1/p' /proc/cmdline)
i=0
while [ ! -b /dev/vda ] || [ ! -e /sys/class/net/eth0/address ]; do
  i=$((i + 1)); [ "$i" -gt 100 ] && break; sleep 0.1
done
disk=$(head -n 1 /dev/vda 2>/dev/null | tr -cd 'A-Za-z0-9-')
mac=$(cat /sys/class/net/eth0/address 2>/dev/null)
button=
for e in /sys/class/input/event*; do
  [ "$(cat "$e/device/name" 2>/dev/null)" = "Power Button" ] && button=/dev/input/${e##*/}
done
echo "AIHOW-GUEST-UP token=$token disk=${disk:-none} mac=${mac:-none}" > /dev/ttyS0
if [ -n "$button" ]; then
  dd if="$button" of=/dev/null bs=24 count=1 2>/dev/null   # one input_event: the press
  echo "AIHOW-GUEST-DOWN token=$token" > /dev/ttyS0
  poweroff -f
fi
echo "aihow-guest: no ACPI power button; idling" > /dev/ttyS0
while :; do sleep 3600; done
"""


class GuestUnavailable(Exception):
    """What is missing on this host to build the guest (a package, usually)."""


@dataclass(frozen=True)
class Guest:
    kernel: Path
    initramfs: Path
    kernel_version: str


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", version))


def _installed_kernel() -> tuple[Path, Path] | None:
    """(vmlinuz, its modules directory) of the newest kernel in /boot with modules."""
    found = []
    for vmlinuz in Path("/boot").glob("vmlinuz-*"):
        version = vmlinuz.name.removeprefix("vmlinuz-")
        modules = Path("/lib/modules") / version
        if (modules / "modules.builtin").is_file():
            found.append((_version_key(version), vmlinuz, modules))
    if not found:
        return None
    _, vmlinuz, modules = max(found)
    return vmlinuz, modules


def _unpacked_kernel(workdir: Path) -> tuple[Path, Path]:
    """(vmlinuz, modules directory) from the downloaded kernel package."""
    debs = sorted(KERNEL_DEBS.glob("linux-image-*.deb"), key=lambda p: _version_key(p.name))
    if not debs:
        raise GuestUnavailable(
            "no Debian kernel: none in /boot with its modules, and no linux-image-*.deb in "
            f"{KERNEL_DEBS} (scripts/setup-dev.sh downloads it)")
    if shutil.which("dpkg-deb") is None:
        raise GuestUnavailable("dpkg-deb is not installed (Debian: dpkg)")
    root = workdir / "kernel"
    subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(root)], capture_output=True,
                   check=True, timeout=SUBPROCESS_TIMEOUT_S)
    kernels = sorted(root.glob("boot/vmlinuz-*"))
    if not kernels:
        raise GuestUnavailable(f"{debs[-1].name} holds no boot/vmlinuz-*")
    version = kernels[-1].name.removeprefix("vmlinuz-")
    modules = next((m for m in (root / "lib" / "modules" / version,
                                root / "usr" / "lib" / "modules" / version) if m.is_dir()),
                   None)
    if modules is None:
        raise GuestUnavailable(f"{debs[-1].name} holds no modules for {version}")
    return kernels[-1], modules


def find_kernel(workdir: Path) -> tuple[Path, Path]:
    return _installed_kernel() or _unpacked_kernel(workdir)


def _module_name(text: str) -> str:
    return text.replace("-", "_")


def _module_files(modules: Path) -> list[Path]:
    """The .ko files MODULES need, each after its dependencies (a module's ``depends=``
    in its ``.modinfo``); a module built into the kernel needs no file."""
    by_name = {_module_name(p.name.removesuffix(".ko")): p
               for p in (modules / "kernel").rglob("*.ko")}
    builtin = {_module_name(Path(line).name.removesuffix(".ko")) for line in
               (modules / "modules.builtin").read_text().split()}
    ordered: list[Path] = []

    def add(name: str, chain: tuple[str, ...]) -> None:
        ko = by_name.get(name)
        if ko is None:
            if name in builtin:
                return
            raise GuestUnavailable(f"kernel module {name} is neither in {modules} nor built in")
        if ko in ordered or name in chain:
            return
        info = re.search(rb"(?:^|\0)depends=([^\0]*)\0", ko.read_bytes())
        for dep in (info.group(1).decode().split(",") if info else []):
            if dep:
                add(_module_name(dep), (*chain, name))
        ordered.append(ko)

    for name in MODULES:
        add(name, ())
    return ordered


def _static_busybox() -> Path:
    path = Path("/bin/busybox")
    if not path.is_file():
        raise GuestUnavailable("busybox is not installed (Debian: busybox-static)")
    if b"ld-linux" in path.read_bytes()[:65536]:  # a dynamic busybox needs libc in the guest
        raise GuestUnavailable("/bin/busybox is dynamically linked (Debian: busybox-static)")
    return path


def build(workdir: Path) -> Guest:
    """Build the initramfs in ``workdir``; GuestUnavailable says what the host lacks."""
    if shutil.which("cpio") is None:
        raise GuestUnavailable("cpio is not installed (Debian: cpio)")
    vmlinuz, modules = find_kernel(workdir)
    root = workdir / "root"
    for d in ("bin", "dev", "proc", "sys", "lib/modules"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(_static_busybox(), root / "bin" / "busybox")
    order = []
    for ko in _module_files(modules):
        shutil.copy2(ko, root / "lib" / "modules" / ko.name)
        order.append(ko.name)
    (root / "lib" / "modules" / "order").write_text("".join(f"{n}\n" for n in order))
    init = root / "init"
    init.write_text(INIT)
    init.chmod(0o755)
    names = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    initramfs = workdir / "initramfs.cpio"
    with initramfs.open("wb") as out:
        subprocess.run(["cpio", "--create", "--format=newc", "--quiet"], cwd=root,
                       input="\n".join(names).encode() + b"\n", stdout=out, check=True,
                       timeout=SUBPROCESS_TIMEOUT_S)
    return Guest(kernel=vmlinuz, initramfs=initramfs, kernel_version=modules.name)
