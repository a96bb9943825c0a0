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
  iptables dnsmasq-base           # libvirtd's NAT networks with DHCP (aihow's planned networks)
  mdevctl shellcheck bats graphviz
)
# The guest of the boot test (tests/integration/test_guest_boot.py): a busybox initramfs
# packed with cpio, its disk a qemu-img overlay, its NIC on a bridge made with ip; its
# kernel is below. Installed without recommends.
boot_packages=(busybox-static cpio qemu-utils iproute2)

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

# The boot test's kernel: a kernel in /boot with its modules, else Debian's cloud kernel
# package (about 27 MB) downloaded to .cache/guest-kernel, never installed: installing a
# kernel would change what this machine boots. The test unpacks it with dpkg-deb.
have_boot_kernel() {
  local k
  for k in /boot/vmlinuz-*; do
    [[ -f "/lib/modules/${k#/boot/vmlinuz-}/modules.builtin" ]] && return 0
  done
  return 1
}
guest_kernels=.cache/guest-kernel
if ! have_boot_kernel && ! compgen -G "$guest_kernels/linux-image-*.deb" >/dev/null; then
  kernel_pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null \
    | awk '/Depends: linux-image-/ {print $2; exit}')
  if [[ -n "$kernel_pkg" ]]; then
    echo "downloading $kernel_pkg for the boot test (not installing it)"
    mkdir -p "$guest_kernels"
    (cd "$guest_kernels" && apt-get download -qq "$kernel_pkg" 2>/dev/null) \
      || echo "warning: could not download $kernel_pkg; the boot test will say so"
  else
    echo "warning: no linux-image-cloud-amd64 in the package lists; the boot test will say so"
  fi
fi

python="${PYTHON:-python3}"
if [[ ! -x "$venv/bin/python" ]]; then
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q -e '.[dev]'
