"""Which GPU instance backs each vGPU aihow created: the record apply keeps.

NVML tells a vGPU's GPU instance only while its VM runs (docs/reference/vgpu-on-mig.md
section 2.4), and no documented sysfs file tells it at all, yet the driver binds the GI
when the vGPU is created and keeps it until the vGPU is removed (section 2.3). So apply
makes the binding known by construction (it creates each vGPU when the driver has one
choice, see ``planner.apply.vgpu_placement``) and writes it down here; the probe believes
NVML first and this record second, and only while the GI it names still exists.

``STATE/vgpu-bindings.json`` of the host's own state directory (bindings are facts about
the host, not about one aihow state): ``{"KEY": {"gpu": PCI, "gi_id": N,
"profile_id": P, "start": S}}``, KEY the mdev UUID or the VF's address. Written atomically.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

FILE = "vgpu-bindings.json"
_LOCK = threading.Lock()  # branch threads of one apply record concurrently


@dataclass(frozen=True)
class Binding:
    gpu: str
    gi_id: int
    profile_id: int
    start: int


def read_bindings(state_dir: Path) -> dict[str, Binding]:
    """The recorded bindings; an absent or unreadable file records nothing (the probe then
    knows only what NVML says)."""
    try:
        raw = json.loads((state_dir / FILE).read_text())
        return {str(k).lower(): Binding(str(v["gpu"]), int(v["gi_id"]), int(v["profile_id"]),
                                        int(v["start"]))
                for k, v in raw.items()}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}


def record_binding(state_dir: Path, key: str, binding: Binding | None) -> None:
    """Record (or, with None, forget) the binding of the vGPU ``key``."""
    with _LOCK:
        found = read_bindings(state_dir)
        if binding is None:
            if found.pop(key.lower(), None) is None:
                return
        else:
            found[key.lower()] = binding
        state_dir.mkdir(parents=True, exist_ok=True)
        path = state_dir / FILE
        tmp = path.with_name(f".{FILE}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({k: asdict(v) for k, v in sorted(found.items())},
                                  indent=1, sort_keys=True) + "\n")
        os.replace(tmp, path)
