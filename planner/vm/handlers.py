"""Apply handler for ``hostdev`` actions: a vGPU device in a domain's persistent config.

``domain[NAME].hostdev[KEY]`` (KEY an mdev UUID or a VF's PCI address) is attached with
``planner.host.libvirt_domains.attach_hostdev`` and detached with ``detach_hostdev``:
config only, so a running domain keeps running and sees the change at its next boot.
Both directions are idempotent (the executor's recover re-runs them), judged against
the domain's *persistent* definition. Importing this module registers the handler;
``planner.apply.handlers.HANDLER_MODULES`` lists it so apply loads it.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from planner.apply.address import parse_address
from planner.apply.handlers import (
    ActionFailed,
    ActionLike,
    ApplyContext,
    Side,
    register,
    side_value,
)
from planner.errors import AihowError
from planner.host import libvirt_domains as ld
from planner.host.state import HostState
from planner.vm.vm_factory import HostDevice, MdevDevice, PciDevice, render_hostdev_xml

KIND_HOSTDEV = "hostdev"


def _present(value: Any) -> bool:
    return value is not None and value != {}


def _target(action: ActionLike) -> tuple[str, Literal["mdev", "pci"], str]:
    """(domain, type, key) from the address, the type from the action's attributes or
    else from the key's form (a UUID is an mdev; a PCI address is a VF)."""
    addr = parse_address(action.address)
    domain, key = addr.value("domain"), addr.value("hostdev")
    if not domain or not key:
        raise ActionFailed(f"{action.address}: the address names no domain hostdev")
    kind: Literal["mdev", "pci"] | None = None
    for value in (action.after, action.before):
        if isinstance(value, dict) and value.get("type") in ("mdev", "pci"):
            kind = "mdev" if value["type"] == "mdev" else "pci"
            break
    if kind is None:
        try:
            uuid.UUID(key)
            kind = "mdev"
        except ValueError:
            kind = "pci"
    return domain, kind, key


def _device(kind: str, key: str) -> HostDevice:
    # A PCI hostdev planned by aihow is a vGPU VF (whole-GPU passthrough is not planned).
    return MdevDevice(key) if kind == "mdev" else PciDevice(key, "vf")


class HostdevHandler:
    def ensure(self, ctx: ApplyContext, action: ActionLike, side: Side) -> dict[str, Any]:
        domain, kind, key = _target(action)
        device = _device(kind, key)
        session = ctx.adapter("libvirt")
        conn = session.conn
        want = _present(side_value(action, side))
        try:
            if not ld.domain_exists(conn, domain):
                if not want:
                    return {"already": True, "domain_absent": True}
                raise ActionFailed(
                    f"{action.address}: domain {domain} is not defined; define it (ai-how) "
                    "before its vGPU is attached"
                )
            present = any(h.key == device.key for h in ld.persistent_hostdevs(conn, domain))
            if want == present:
                return {"already": True}
            xml = render_hostdev_xml(device)
            if want:
                ld.attach_hostdev(conn, domain, xml)
            else:
                ld.detach_hostdev(conn, domain, xml)
            session.commit()
        except ActionFailed:
            raise
        except AihowError as exc:
            raise ActionFailed(f"{action.address}: {exc}") from None
        running = bool(conn.lookupByName(domain).isActive())
        return {
            "attached" if want else "detached": device.key,
            "domain": domain,
            # On a running domain the change waits for its next boot.
            "pending_restart": running,
        }

    def observe(self, host: HostState, action: ActionLike) -> Side | None:
        domain, kind, key = _target(action)
        dom = next((d for d in host.domains if d.name == domain), None)
        wanted = _device(kind, key).key
        present = dom is not None and any(h.key == wanted for h in dom.hostdevs)
        if _present(side_value(action, "after")) == present:
            return "after"
        if _present(side_value(action, "before")) == present:
            return "before"
        return None

    def inverse(self, action: ActionLike) -> str:
        domain, kind, key = _target(action)
        verb = "attach" if _present(side_value(action, "before")) else "detach"
        return f"{verb} {kind} {key} {'to' if verb == 'attach' else 'from'} {domain}"

    def preflight(self, host: HostState, action: ActionLike, ctx: ApplyContext) -> list[str]:
        """A device another domain already holds cannot be attached (libvirt's test
        driver would even let two running domains share an mdev)."""
        if not _present(action.after):
            return []
        domain, kind, key = _target(action)
        wanted = _device(kind, key).key
        holders = sorted(
            d.name
            for d in host.domains
            if d.name != domain and any(h.key == wanted for h in d.hostdevs)
        )
        if holders:
            return [f"{action.address}: {kind} {wanted} is already attached to domain {holders[0]}"]
        return []


register(KIND_HOSTDEV, HostdevHandler())
