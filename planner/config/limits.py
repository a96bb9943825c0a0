"""Bounds on input, so that no file or number makes aihow run for long or fill memory.

Each bound is documented (docs/config-reference.md "Limits", docs/plan-format.md); going
over one is a one-line error naming the file, never a traceback.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from planner.lang.parse import MAX_LAYOUT_REPEAT  # the N of ``N*PROFILE`` in a layout

__all__ = ["MAX_CONFIG_BYTES", "MAX_HOOKS_PER_PHASE", "MAX_HOOK_TIMEOUT", "MAX_LAYOUT_REPEAT",
           "MAX_PLAN_BYTES", "MAX_TEMPLATE_COUNT",
           "MAX_VM_CPU_CORES", "MAX_VM_DISK_GB", "MAX_VM_MEMORY_GB", "InputTooLarge",
           "read_limited", "read_text_limited"]

MiB = 1024 * 1024
MAX_CONFIG_BYTES = 8 * MiB  # a config written out VM by VM: about 50,000 VMs
MAX_PLAN_BYTES = 128 * MiB  # a plan of about 8,000 fully used GPUs
MAX_TEMPLATE_COUNT = 10_000  # VMs one node template may make (``count``)
# A VM's size, so a typo or an exponent (``memory_gb: 1e17``) stops at validate, not at
# libvirt's define: KVM's vCPU limit on x86 (KVM_MAX_VCPUS, 4096 since Linux 5.15); the
# memory and disk bounds are ASSUMED sanity limits (64 TiB of RAM, 1 PiB of disk), far
# above any host aihow manages.
MAX_VM_CPU_CORES = 4096
MAX_VM_MEMORY_GB = 65_536
MAX_VM_DISK_GB = 1_048_576
# Hooks (``global.hooks``): an apply waits for each, so each has a bound; an hour covers a
# drained kubelet, and 16 commands per phase is far above what stopping a GPU's users takes.
MAX_HOOK_TIMEOUT = 3600.0
MAX_HOOKS_PER_PHASE = 16


class InputTooLarge(ValueError):
    """A file over its size limit."""


def _size(limit: int) -> str:
    return f"{limit // MiB} MiB" if limit % MiB == 0 else f"{limit} bytes"


def read_limited(path: str | os.PathLike[str], limit: int, what: str) -> bytes:
    """The bytes of ``path``, reading at most ``limit`` + 1 of them (``/dev/zero`` and
    pipes included). Raises InputTooLarge past the limit, OSError as ``open`` does."""
    with open(Path(path), "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise InputTooLarge(f"{path}: {what} larger than {_size(limit)} (aihow's limit)")
    return data


def read_text_limited(path: str | os.PathLike[str], limit: int, what: str,
                      encoding: str = "utf-8") -> str:
    """``read_limited`` decoded as ``Path.read_text`` decodes (universal newlines)."""
    text = read_limited(path, limit, what).decode(encoding)
    if "\r" not in text:  # nothing for universal newlines to translate (a plan: 17 MB)
        return text
    return io.StringIO(text, newline=None).read()
