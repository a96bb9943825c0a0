"""Numbered generations: one per successful apply, as NixOS keeps system generations.

``STATE_DIR/generations/N/`` holds ``config.yaml`` (the config text the plan came from),
``plan.json`` (the plan applied, byte for byte), ``state.json`` (the host probed after
the apply) and ``meta.json``. A generation is built in a temporary directory and renamed
into place, so it either exists whole or not at all. Rollback re-plans from a
generation's config against the current host; it never restores bytes blindly.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from planner.apply.fsutil import (
    canonical_json,
    fsync_dir,
    real_dir,
    rename_durable,
    write_atomic,
)
from planner.errors import AihowError

GENERATIONS_DIR = "generations"


@dataclass(frozen=True)
class Generation:
    number: int
    path: Path
    created: float
    plan_sha256: str
    host_uri: str
    config_path: str
    fingerprint: str | None  # the host fingerprint after the apply
    command: str
    summary: dict[str, Any]

    @property
    def config_file(self) -> Path:
        return self.path / "config.yaml"

    @property
    def plan_file(self) -> Path:
        return self.path / "plan.json"

    @property
    def state_file(self) -> Path:
        return self.path / "state.json"

    def config_text(self) -> str:
        try:
            return self.config_file.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else str(exc)
            raise AihowError(f"{self.config_file}: generation {self.number}'s config cannot "
                             f"be read: {reason}") from None

    def created_text(self) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.created))


def _root(state_dir: Path) -> Path:
    return Path(state_dir) / GENERATIONS_DIR


def list_generations(state_dir: Path) -> list[Generation]:
    root = _root(state_dir)
    if not root.is_dir():
        return []
    gens = []
    for entry in root.iterdir():
        if entry.name.isdigit() and (entry / "meta.json").is_file():
            gens.append(_read(entry))
    return sorted(gens, key=lambda g: g.number)


def load_generation(state_dir: Path, number: int) -> Generation:
    path = _root(state_dir) / str(number)
    if not (path / "meta.json").is_file():
        known = ", ".join(str(g.number) for g in list_generations(state_dir)) or "none"
        raise AihowError(f"{_root(state_dir)}: no generation {number} (have: {known})")
    return _read(path)


def _read(path: Path) -> Generation:
    try:
        meta = json.loads((path / "meta.json").read_text())
        return Generation(
            number=int(meta["number"]),
            path=path,
            created=float(meta["created"]),
            plan_sha256=str(meta["plan_sha256"]),
            host_uri=str(meta["host_uri"]),
            config_path=str(meta["config_path"]),
            fingerprint=meta.get("fingerprint"),
            command=str(meta.get("command", "")),
            summary=dict(meta.get("summary") or {}),
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AihowError(f"{path / 'meta.json'}: unreadable generation record: {exc}") from exc


def record_generation(
    state_dir: Path,
    *,
    config_text: str,
    config_path: str,
    plan_text: str,
    plan_sha256: str,
    state_json: str,
    host_uri: str,
    fingerprint: str | None,
    command: str,
    summary: dict[str, Any],
) -> Generation:
    """Write the next generation atomically and return it. Callers hold the host lock."""
    root = real_dir(_root(state_dir), create=True)  # never a link out of the state dir
    # Numbered by the directories' names, not their records: an old generation whose
    # record is corrupt must not stop a finished apply from recording its own.
    number = 1 + max((int(e.name) for e in root.iterdir() if e.name.isdigit()), default=0)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{number}-", dir=root))
    meta = {
        "number": number,
        "created": time.time(),
        "plan_sha256": plan_sha256,
        "host_uri": host_uri,
        "config_path": config_path,
        "fingerprint": fingerprint,
        "command": command,
        "summary": summary,
    }
    for name, text in (("config.yaml", config_text), ("plan.json", plan_text),
                       ("state.json", state_json), ("meta.json", canonical_json(meta) + "\n")):
        write_atomic(tmp / name, text)
    fsync_dir(tmp)
    rename_durable(tmp, root / str(number))
    return _read(root / str(number))
