"""Apply handlers for ``hostdev`` and ``domain`` actions.

``hostdev``: a vGPU device in a domain's persistent config.

``domain[NAME].hostdev[KEY]`` (KEY an mdev UUID or a VF's PCI address) is attached with
``planner.host.libvirt_domains.attach_hostdev`` and detached with ``detach_hostdev``:
config only, so a running domain keeps running and sees the change at its next boot.
Both directions are idempotent (the executor's recover re-runs them), judged against
the domain's *persistent* definition.

``domain``: ``domain[NAME]`` for a VM the config declares that libvirt does not have.
The create action carries the VM's attributes (``planner.vm.vm_factory.domain_attrs``);
the handler renders the domain XML from them, without the vGPU (its own ``hostdev``
action attaches that afterwards) and marked ``<aihow:defined-by>aihow</aihow:defined-by>``.
An existing domain is never redefined. A delete is planned only for a domain aihow
defined whose VM the config dropped; it carries the definition in ``before`` (so its undo
defines it again) and is refused for a running domain (aihow never stops one unasked).

Importing this module registers these handlers and, through ``vgpu_handlers``, the
``sriov`` and ``vgpu`` ones; ``planner.apply.handlers.HANDLER_MODULES`` must list it.
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
    side_for_presence,
    side_present,
    side_value,
)
from planner.errors import AihowError
from planner.host import libvirt_domains as ld
from planner.host.records import defined_by_aihow
from planner.host.state import HostState
from planner.vm.vm_factory import (
    HostDevice,
    MdevDevice,
    PciDevice,
    render_defined_domain_xml,
    render_hostdev_xml,
    spec_from_attrs,
)

KIND_HOSTDEV = "hostdev"
KIND_DOMAIN = "domain"



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
        want = side_present(action, side)
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
        return side_for_presence(action, present)

    def inverse(self, action: ActionLike) -> str:
        domain, kind, key = _target(action)
        verb = "attach" if side_present(action, "before") else "detach"
        return f"{verb} {kind} {key} {'to' if verb == 'attach' else 'from'} {domain}"

    def preflight(self, host: HostState, action: ActionLike, ctx: ApplyContext) -> list[str]:
        """A device another domain already holds cannot be attached (libvirt's test
        driver would even let two running domains share an mdev)."""
        if not side_present(action, "after"):
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


def _domain_name(action: ActionLike) -> str:
    name = parse_address(action.address).value("domain")
    if not name:
        raise ActionFailed(f"{action.address}: the address names no domain")
    return name


def domain_xml_for(action: ActionLike, value: Any) -> str:
    """The XML to define for one side of a domain action: the side's own ``xml`` (a
    delete's ``before`` keeps the definition it removes), else rendered from the VM's
    attributes, marked as defined by aihow."""
    if not isinstance(value, dict):
        raise ActionFailed(f"{action.address}: the plan carries no domain definition")
    if value.get("xml"):
        return str(value["xml"])
    try:
        return render_defined_domain_xml(spec_from_attrs(value))
    except AihowError as exc:
        raise ActionFailed(f"{action.address}: {exc}") from None


class DomainHandler:
    def ensure(self, ctx: ApplyContext, action: ActionLike, side: Side) -> dict[str, Any]:
        name = _domain_name(action)
        value = side_value(action, side)
        want = value is not None  # a wanted domain without XML is a plan error, not absent
        session = ctx.adapter("libvirt")
        try:
            exists = ld.domain_exists(session.conn, name)
            if want == exists:
                return {"already": True}
            if want:
                ld.define(session.conn, domain_xml_for(action, value))
            else:
                if defined_by_aihow(ld.persistent_xml(session.conn, name)) is None:
                    raise ActionFailed(f"{action.address}: domain {name} was not defined by "
                                       "aihow; aihow never deletes it")
                ld.undefine(session.conn, name)  # refuses a running domain
            session.commit()
        except ActionFailed:
            raise
        except AihowError as exc:
            raise ActionFailed(f"{action.address}: {exc}") from None
        return {"defined" if want else "undefined": name}

    def observe(self, host: HostState, action: ActionLike) -> Side | None:
        name = _domain_name(action)
        present = any(d.name == name for d in host.domains)
        if (side_value(action, "after") is not None) == present:
            return "after"
        if (side_value(action, "before") is not None) == present:
            return "before"
        return None

    def inverse(self, action: ActionLike) -> str:
        verb = "define" if side_value(action, "before") is not None else "undefine"
        return f"{verb} domain {_domain_name(action)}"

    def preflight(self, host: HostState, action: ActionLike, ctx: ApplyContext) -> list[str]:
        """A delete is allowed only for a stopped domain that aihow itself defined (the
        plan's ``before`` keeps its definition, marked ``<aihow:defined-by>``)."""
        if action.action != "delete":
            return []
        name = _domain_name(action)
        before = action.before if isinstance(action.before, dict) else {}
        if defined_by_aihow(str(before.get("xml") or "")) is None:
            return [f"{action.address}: domain {name} was not defined by aihow; aihow never "
                    "deletes it"]
        dom = next((d for d in host.domains if d.name == name), None)
        if dom is not None and dom.running:
            return [f"{action.address}: domain {name} is {dom.state}; stop it first (aihow "
                    "never stops a domain unasked)"]
        return []


register(KIND_HOSTDEV, HostdevHandler())
register(KIND_DOMAIN, DomainHandler())

# One module for apply to load: the SR-IOV and vGPU handlers register on import too.
from planner.vm import vgpu_handlers  # noqa: E402, F401
