"""What the commands share about reaching a host: the ``--libvirt-uri`` option, the
libvirt URI it resolves to, and ``open_environment``, the one place a host URI is parsed
and the host's Environment chosen. Light: heavy imports stay inside the functions."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from planner.host import uri as uris

if TYPE_CHECKING:
    from planner.host.environment import Environment

LibvirtOpt = Annotated[
    str | None,
    typer.Option("--libvirt-uri",
                 help="libvirt URI to use instead of the host's (default: "
                      "global.host.libvirt_uri, else qemu:///system or the simulator's)."),
]


def libvirt_uri_for(cfg: Any, override: str | None = None) -> str | None:
    """``--libvirt-uri`` if given, else the config's ``global.host.libvirt_uri`` (None: the
    host URI's own libvirt)."""
    if override:
        return override
    if cfg is None:
        return None
    return getattr(getattr(cfg.global_, "host", None), "libvirt_uri", None)


def open_environment(host: str | None, libvirt_uri: str | None = None) -> Environment:
    """The Environment of the host URI ``host`` (default ``local``): built once per
    command and handed to everything that reaches the host. The simulator and the
    snapshot reader are imported only when named (start-up time)."""
    uri = uris.parse_host_uri(host or "local")
    if uri.kind == "sim":
        assert uri.path is not None
        # only the CLI imports the simulator, and only for a sim: host
        from planner.sim.environment import SimEnvironment

        return SimEnvironment(uri.text, uri.path, libvirt_uri)
    if uri.kind == "snapshot":
        assert uri.path is not None
        # only for a snapshot: host (start-up time)
        from planner.host.snapshot import snapshot_environment

        return snapshot_environment(uri.text, uri.path)
    # the adapters load only once a command reaches a host (start-up time)
    from planner.host.environment import LocalEnvironment

    return LocalEnvironment(libvirt_uri=libvirt_uri)


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str | float) -> float:
    """Seconds in a duration such as ``90``, ``30s``, ``500ms``, ``5m``, ``1h``, ``1m30s``
    (a bare number is seconds), as Terraform's ``-lock-timeout`` takes them."""
    import re

    if isinstance(text, int | float):  # the default, already a number
        return float(text)
    spec = text.strip()
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)?", spec)
    if not spec or "".join(n + u for n, u in parts) != spec or (
            len(parts) > 1 and not all(u for _, u in parts)):
        raise typer.BadParameter(f"{text!r} is not a duration (e.g. 30s, 5m, 1h, 1m30s)")
    return sum(float(n) * _UNITS[u or "s"] for n, u in parts)


LockTimeoutOpt = Annotated[
    float,
    typer.Option("--lock-timeout", metavar="DURATION", parser=parse_duration,
                 help="Wait up to DURATION (30s, 5m, 1h) for another apply to release the "
                      "host lock instead of failing at once."),
]
def base_images(env: Environment, cfg: Any) -> dict[str, bool] | None:
    """Whether each base image ``cfg``'s VMs name exists on ``env``'s host; None where
    the host has no filesystem to look at (a snapshot), so plan-making skips the check."""
    from planner.config.vms import expand_vms
    from planner.errors import AihowError

    paths = [vm.base_image_path for vm in expand_vms(cfg) if vm.base_image_path]
    try:
        return env.base_images(paths)
    except AihowError:
        return None
