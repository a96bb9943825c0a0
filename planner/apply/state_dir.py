"""Where aihow keeps its lock, journal and generations for a host.

``local`` uses ``/var/lib/aihow``; ``sim:DIR`` uses ``DIR/state`` so a simulated host
carries its own history; ``--state-dir`` overrides both.
"""

from __future__ import annotations

from pathlib import Path

from planner.errors import AihowError

LOCAL_STATE_DIR = Path("/var/lib/aihow")

LEDGER_NAME = "allocations.json"  # the GPUResourceAllocator ledger in the state directory


def default_state_dir(host_uri: str) -> Path:
    """The state directory aihow uses for ``host_uri`` when none is given."""
    from planner.host.uri import parse_host_uri

    uri = parse_host_uri(host_uri)
    if uri.kind == "sim":
        return Path(str(uri.sim_dir)) / "state"
    return LOCAL_STATE_DIR


def resolve_state_dir(host_uri: str, override: str | Path | None = None) -> Path:
    """The state directory to use, created if missing (mode 0700: it records host changes)."""
    path = Path(override) if override is not None else default_state_dir(host_uri)
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise AihowError(f"{path}: cannot create the state directory: {exc.strerror}") from exc
    if not path.is_dir():
        raise AihowError(f"{path}: the state directory is not a directory")
    return path
