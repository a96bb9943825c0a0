"""mdev definitions on a simulated host: the simulated host's ``mdev_store`` port."""

from __future__ import annotations

import json
import uuid as uuidlib
from pathlib import Path
from typing import Any

from planner.host.mdev_persist import MdevDefinition, MdevPersistError
from planner.sim.state import atomic_write


class SimMdevDefinitions:
    """Persistence on a simulated host: definitions kept under ``DIR/etc/mdevctl.d`` in
    mdevctl's own layout and file format (``PARENT/UUID`` holding ``{"mdev_type": ...,
    "start": "manual", "attrs": []}``), so the real mdevctl and the real ``/etc`` are never
    touched for a host that is not there. ``aihow sim reboot`` leaves them, as a reboot
    leaves mdevctl's files."""

    label = "simulated (DIR/etc/mdevctl.d)"

    def __init__(self, sim_dir: Path) -> None:
        self.root = Path(sim_dir) / "etc" / "mdevctl.d"

    def define(self, d: MdevDefinition) -> None:
        for old in self.root.glob(f"*/{d.uuid}"):
            old.unlink()  # one definition per UUID, as mdevctl keeps it
        path = self.root / d.parent / d.uuid
        path.parent.mkdir(parents=True, exist_ok=True)
        doc: dict[str, Any] = {"mdev_type": d.type_id, "start": "auto" if d.auto else "manual",
                               "attrs": []}
        atomic_write(path, json.dumps(doc, indent=2) + "\n")  # no guessable temporary name

    def undefine(self, mdev_uuid: str) -> None:
        wanted = str(uuidlib.UUID(mdev_uuid))
        found = list(self.root.glob(f"*/{wanted}"))
        if not found:
            raise MdevPersistError(f"mdev {wanted} is not defined")
        for path in found:
            path.unlink()

    def list_defined(self) -> tuple[MdevDefinition, ...]:
        out = []
        for path in sorted(self.root.glob("*/*")):
            if path.name.startswith("."):
                continue
            try:
                doc = json.loads(path.read_text())
                out.append(MdevDefinition(path.name, path.parent.name, doc["mdev_type"],
                                          doc.get("start") == "auto"))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise MdevPersistError(f"{path}: unreadable mdev definition: {exc}") from None
        return tuple(sorted(out))
