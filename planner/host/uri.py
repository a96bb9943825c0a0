"""Host URIs: ``local`` (this machine), ``sim:DIR`` (a simulated host kept in DIR) or
``snapshot:FILE`` (a saved probe, a read-only host).

Parsed once per command, where the command builds its Environment
(``planner.cli.host_opts.open_environment``); nothing else looks at the text's kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from planner.host.errors import HostError


@dataclass(frozen=True)
class HostUri:
    text: str  # as given (stripped); this is what plans and HostState record
    kind: Literal["local", "sim", "snapshot"]
    path: Path | None = None  # absolute: the simulated host's DIR, or the snapshot FILE


def parse_host_uri(text: str) -> HostUri:
    """``local``, ``sim:DIR`` or ``snapshot:FILE`` (relative paths are taken from the
    working directory)."""
    value = text.strip()
    if value == "local":
        return HostUri(text=value, kind="local")
    if value.startswith("sim:"):
        return HostUri(text=value, kind="sim",
                       path=_path(text, value, "sim", "a directory, e.g. sim:/tmp/host"))
    if value.startswith("snapshot:"):
        return HostUri(text=value, kind="snapshot",
                       path=_path(text, value, "snapshot", "a file, e.g. snapshot:host.json"))
    raise HostError(f"unknown host URI {text!r} (expected 'local', 'sim:DIR' or "
                    "'snapshot:FILE')")


def _path(text: str, value: str, kind: str, example: str) -> Path:
    rest = value[len(kind) + 1:]
    if not rest:
        raise HostError(f"host URI {text!r}: {kind}: needs {example}")
    return Path(rest).expanduser().absolute()
