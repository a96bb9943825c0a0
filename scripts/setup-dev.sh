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

missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  sudo_cmd=()
  if [[ $(id -u) -ne 0 ]]; then sudo_cmd=(sudo); fi
  echo "installing system packages: ${missing[*]}"
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq \
    "${missing[@]}" >/dev/null
fi

python="${PYTHON:-python3}"
if [[ ! -x "$venv/bin/python" ]]; then
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q -e '.[dev]'
