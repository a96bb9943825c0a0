"""mdev persistence: the real mdevctl, and libvirt's node-device API where it refuses."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from planner.host.mdev_persist import (
    LibvirtNodedev,
    Mdevctl,
    MdevDefinition,
    MdevPersistError,
    nodedev_xml,
)

# A parent that exists on no real host (bus 0xfe, device 0x1f, function 7): defining on it
# never touches a real device, and mdevctl accepts parents that are absent.
PARENT = "0000:fe:1f.7"
MDEVCTL_DIR = Path("/etc/mdevctl.d")


@pytest.fixture
def mdevctl() -> Iterator[Mdevctl]:
    if shutil.which("mdevctl") is None:
        pytest.skip("mdevctl is not installed (Debian package mdevctl)")
    if os.geteuid() != 0:
        pytest.skip("mdevctl define writes /etc/mdevctl.d and needs root")
    parent_dir = MDEVCTL_DIR / PARENT
    existed = parent_dir.exists()
    tool = Mdevctl()
    made: list[str] = []
    tool.made = made  # type: ignore[attr-defined]
    yield tool
    for u in made:
        subprocess.run(["mdevctl", "undefine", "-u", u], capture_output=True, check=False)
    if not existed and parent_dir.is_dir() and not any(parent_dir.iterdir()):
        parent_dir.rmdir()


def test_mdevctl_define_list_undefine_for_real(mdevctl: Mdevctl) -> None:
    u = str(uuid.uuid4())
    mdevctl.made.append(u)  # type: ignore[attr-defined]
    d = MdevDefinition(u.upper(), "fe:1f.7", "nvidia-474")
    mdevctl.define(d)
    assert (MDEVCTL_DIR / PARENT / u).is_file()
    assert d in mdevctl.list_defined()
    with pytest.raises(MdevPersistError, match="already defined"):
        mdevctl.define(d)
    mdevctl.undefine(u)
    assert d not in mdevctl.list_defined()
    with pytest.raises(MdevPersistError, match=f"mdevctl undefine -u {u}: .*No devices"):
        mdevctl.undefine(u)


def test_mdevctl_auto_flag_round_trips(mdevctl: Mdevctl) -> None:
    u = str(uuid.uuid4())
    mdevctl.made.append(u)  # type: ignore[attr-defined]
    mdevctl.define(MdevDefinition(u, PARENT, "nvidia-475", auto=True))
    (got,) = [d for d in mdevctl.list_defined() if d.uuid == u]
    assert got == MdevDefinition(u, PARENT, "nvidia-475", auto=True)


def test_missing_mdevctl_is_a_clear_error() -> None:
    with pytest.raises(MdevPersistError, match="not installed"):
        Mdevctl(binary="/nonexistent/mdevctl").list_defined()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("nope", PARENT, "nvidia-474"), "invalid mdev definition"),
        ((str(uuid.uuid4()), "zz", "nvidia-474"), "invalid mdev definition"),
        ((str(uuid.uuid4()), PARENT, "a b"), "invalid mdev type"),
    ],
)
def test_bad_definitions_are_refused(args: tuple[str, str, str], message: str) -> None:
    with pytest.raises(MdevPersistError, match=message):
        MdevDefinition(*args)


def test_nodedev_xml_passes_libvirts_schema(tmp_path: Path) -> None:
    tool = shutil.which("virt-xml-validate")
    if tool is None:
        pytest.skip("virt-xml-validate is not installed")
    d = MdevDefinition("3b2f6a1c-1111-4c2e-9d3a-0000000000ab", "0000:17:00.4", "nvidia-474")
    path = tmp_path / "nodedev.xml"
    path.write_text(nodedev_xml(d))
    res = subprocess.run([tool, str(path)], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "<parent>pci_0000_17_00_4</parent>" in path.read_text()


def test_libvirt_test_driver_cannot_define_node_devices(test_conn: Any) -> None:
    d = MdevDefinition(str(uuid.uuid4()), "0000:17:00.4", "nvidia-474")
    with pytest.raises(MdevPersistError, match="cannot define node devices"):
        LibvirtNodedev(test_conn).define(d)
