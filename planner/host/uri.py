"""Host URIs: ``local`` (this machine) or ``sim:DIR`` (a simulated host kept in DIR)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from planner.host.errors import HostError


@dataclass(frozen=True)
class HostUri:
    text: str  # as given (stripped); this is what plans and HostState record
    kind: Literal["local", "sim"]
    sim_dir: Path | None = None  # absolute, for kind "sim"


def parse_host_uri(text: str) -> HostUri:
    """``local`` or ``sim:DIR`` (DIR relative to the working directory if not absolute)."""
    value = text.strip()
    if value == "local":
        return HostUri(text=value, kind="local")
    if value.startswith("sim:"):
        directory = value[len("sim:") :]
        if not directory:
            raise HostError(f"host URI {text!r}: sim: needs a directory, e.g. sim:/tmp/host")
        return HostUri(text=value, kind="sim", sim_dir=Path(directory).expanduser().absolute())
    raise HostError(f"unknown host URI {text!r} (expected 'local' or 'sim:DIR')")


def require_sim_dir(uri: HostUri) -> Path:
    """The simulated host's directory, checked to hold a simulator state."""
    assert uri.sim_dir is not None
    if not (uri.sim_dir / "state.json").is_file():
        raise HostError(
            f"{uri.text}: no simulated host in {uri.sim_dir} (create one with 'aihow sim init')"
        )
    return uri.sim_dir
