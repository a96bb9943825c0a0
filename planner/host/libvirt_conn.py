"""libvirt connections: ``LibvirtSession`` and opening one at a libvirt URI.

Which URI (``qemu:///system``, an override, or the simulator's test driver) is the
Environment's choice; a simulated host's session also knows how to make its domains
durable (``commit``), which a real libvirtd does by itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from planner.host.errors import HostError

LOCAL_LIBVIRT_URI = "qemu:///system"


@dataclass
class LibvirtSession:
    """An open libvirt connection. ``commit()`` makes the domains' current state
    durable: a no-op on a real libvirtd, which keeps its own state; ``persist`` (given by
    an environment whose libvirt keeps state in memory only) does it otherwise."""

    conn: Any  # libvirt.virConnect
    uri: str
    read_only: bool = False
    persist: Callable[[Any], None] | None = None
    # Autostart by domain name where the connection cannot say (libvirt's test driver
    # opened read-only from a node file, which has no way to carry it); None: ask libvirt.
    autostart: dict[str, bool] | None = None
    # The connection is shared with other sessions (a simulated host keeps one read-only
    # connection while its store is unchanged): close() leaves it open.
    shared: bool = False
    _closed: bool = field(default=False, repr=False)

    def commit(self) -> None:
        if self.persist is None:
            return
        if self.read_only:
            raise HostError(f"{self.uri}: a read-only libvirt session cannot commit")
        self.persist(self.conn)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self.shared:
                return
            with contextlib.suppress(Exception):
                self.conn.close()

    def __enter__(self) -> LibvirtSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_libvirt(target: str, *, read_only: bool = False) -> LibvirtSession:
    """A session on the libvirt URI ``target``. ``read_only`` uses
    ``virConnectOpenReadOnly``, so the connection itself refuses every change (the probe
    path)."""
    return LibvirtSession(conn=connect(target, read_only=read_only), uri=target,
                          read_only=read_only)


def connect(target: str, *, read_only: bool = False) -> Any:
    """A ``virConnect`` to ``target``; a failure is one HostError line."""
    import libvirt  # a heavy C binding: loaded at first use, not at start-up

    libvirt.registerErrorHandler(lambda *_: None, None)  # errors arrive as exceptions
    try:
        return libvirt.openReadOnly(target) if read_only else libvirt.open(target)
    except libvirt.libvirtError as err:
        raise HostError(f"cannot connect to libvirt at {target}: {err.get_error_message()}") \
            from err
