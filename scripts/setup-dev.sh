#!/usr/bin/env bash
# Prepare a fresh Debian/Ubuntu machine for aihow: the system packages the build and the
# tests need (installed only when missing), a virtual environment, and the project in it.
set -euo pipefail

venv="${VENV:-.venv}"
packages=(
  libvirt-dev pkg-config          # build libvirt-python
  libvirt-clients                 # virt-xml-validate, virsh
  libvirt-daemon libvirt-daemon-driver-qemu qemu-system-x86  # real libvirtd for integration tests
  tini                            # reaps the QEMU probes libvirtd daemonizes (tests/integration)
  mdevctl shellcheck bats graphviz
)
# The guest of the boot test (tests/integration/test_guest_boot.py): a Debian kernel and
# a busybox initramfs packed with cpio, its disk a qemu-img overlay, its NIC on a bridge
# made with ip. Without recommends: about 28 MB to download, the kernel nearly all of it.
boot_packages=(
  linux-image-cloud-amd64 busybox-static cpio qemu-utils iproute2
)

missing_of() {  # the packages among "$@" that are not installed
  local pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
      || echo "$pkg"
  done
}
mapfile -t missing < <(missing_of "${packages[@]}")
mapfile -t missing_boot < <(missing_of "${boot_packages[@]}")
if ((${#missing[@]} + ${#missing_boot[@]})); then
  sudo_cmd=()
  if [[ $(id -u) -ne 0 ]]; then sudo_cmd=(sudo); fi
  echo "installing system packages: ${missing[*]} ${missing_boot[*]}"
  "${sudo_cmd[@]}" apt-get update -qq
  if ((${#missing[@]})); then
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq \
      "${missing[@]}" >/dev/null
  fi
  if ((${#missing_boot[@]})); then
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq \
      --no-install-recommends "${missing_boot[@]}" >/dev/null
  fi
fi

python="${PYTHON:-python3}"
if [[ ! -x "$venv/bin/python" ]]; then
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q -e '.[dev]'
