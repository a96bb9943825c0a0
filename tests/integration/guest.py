"""A tiny guest for the boot test, built at test time from Debian packages.

The kernel is the installed Debian kernel (``linux-image-cloud-amd64`` or
``linux-image-amd64``: ``/boot/vmlinuz-VERSION`` with its modules under
``/lib/modules/VERSION``); the initramfs is ``busybox-static`` plus the kernel's own
virtio and ACPI-button modules, packed with ``cpio``. Its ``/init``:

1. loads the modules (in the order ``modprobe --show-depends`` gives),
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


def _run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(cmd, capture_output=True, check=True,  # type: ignore[call-overload,no-any-return]
                          timeout=SUBPROCESS_TIMEOUT_S, **kw)


def find_kernel() -> tuple[Path, str]:
    """The newest Debian kernel in /boot that has its modules installed."""
    found = []
    for vmlinuz in Path("/boot").glob("vmlinuz-*"):
        version = vmlinuz.name.removeprefix("vmlinuz-")
        if (Path("/lib/modules") / version / "modules.dep").is_file():
            found.append((tuple(int(n) for n in re.findall(r"\d+", version)), version, vmlinuz))
    if not found:
        raise GuestUnavailable("no Debian kernel with modules in /boot "
                               "(Debian: linux-image-cloud-amd64)")
    _, version, vmlinuz = max(found)
    return vmlinuz, version


def _static_busybox() -> Path:
    path = Path("/bin/busybox")
    if not path.is_file():
        raise GuestUnavailable("busybox is not installed (Debian: busybox-static)")
    if b"ld-linux" in path.read_bytes()[:65536]:  # a dynamic busybox needs libc in the guest
        raise GuestUnavailable("/bin/busybox is dynamically linked (Debian: busybox-static)")
    return path


def _module_files(version: str) -> list[Path]:
    """The .ko files MODULES need, dependencies first; built-in ones need none."""
    out = _run(["modprobe", "--set-version", version, "--show-depends", "--all", *MODULES],
               text=True).stdout
    files: list[Path] = []
    for line in out.splitlines():
        parts = line.split()
        if parts[:1] == ["insmod"] and Path(parts[1]) not in files:
            files.append(Path(parts[1]))
    return files


def build(workdir: Path) -> Guest:
    """Build the initramfs in ``workdir``; GuestUnavailable says what the host lacks."""
    for tool in ("cpio", "modprobe"):
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            raise GuestUnavailable(f"{tool} is not installed (Debian: {tool}, kmod)")
    vmlinuz, version = find_kernel()
    root = workdir / "root"
    for d in ("bin", "dev", "proc", "sys", "lib/modules"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(_static_busybox(), root / "bin" / "busybox")
    order = []
    for ko in _module_files(version):
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
    return Guest(kernel=vmlinuz, initramfs=initramfs, kernel_version=version)
