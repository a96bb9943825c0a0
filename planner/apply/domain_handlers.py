"""Apply handlers for ``hostdev`` and ``domain`` actions.

``hostdev``: a vGPU device in a domain's persistent config.

``domain[NAME].hostdev[KEY]`` (KEY an mdev UUID or a VF's PCI address) is attached with
``planner.host.libvirt_domains.attach_hostdev`` and detached with ``detach_hostdev``:
config only, so a running domain keeps running and sees the change at its next boot.
Both directions are idempotent (the executor's recover re-runs them), judged against
the domain's *persistent* definition.

``domain``: ``domain[NAME]`` for a VM the config declares that libvirt does not have.
The create change carries the VM's attributes (``VmAttrs``, from
``planner.vm.vm_factory.domain_attrs``);
the handler renders the domain XML from them, without the vGPU (its own ``hostdev``
action attaches that afterwards) and marked ``<aihow:defined-by>aihow</aihow:defined-by>``.
An existing domain is never redefined. A delete is planned only for a domain aihow
defined whose VM the config dropped; it carries the definition in ``before`` (so its undo
defines it again) and is refused for a running domain (aihow never stops one unasked).

``planner.apply.handler_table`` maps the two kinds to these handlers.
"""

from __future__ import annotations

from typing import Any

from planner.apply.handlers import (
    ActionFailed,
    ApplyContext,
    Side,
    Step,
    step_state,
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
from planner.vocab import Address, Attrs, DomainAttrs, HostdevAttrs, VmAttrs
from planner.vocab.plan import Change


def _target(address: Address, attrs: HostdevAttrs | None) -> tuple[str, HostDevice]:
    """(domain, device) of a hostdev: the domain and key from the address, the device's
    type from the change's attributes."""
    domain, key = address.domain_name, address.key
    if not domain or not key or attrs is None:
        raise ActionFailed(f"{address}: the plan names no domain hostdev here")
    # A PCI hostdev planned by aihow is a vGPU VF (whole-GPU passthrough is not planned).
    device: HostDevice = MdevDevice(key) if attrs.type == "mdev" else PciDevice(key, "vf")
    return domain, device


def _attachment_metadata(state: Attrs | None, device: HostDevice) -> dict[str, str | None]:
    """The ``<aihow:vm>`` fields that say which slice the domain holds: the side's
    attachment when it holds one, else none (the device was detached)."""
    attrs = state if isinstance(state, HostdevAttrs) and state.mig_profile else None
    return {
        "mig-profile": attrs.mig_profile if attrs else None,
        "mig-uuid": attrs.mig_uuid if attrs else None,
        "gpu-instance": attrs.gpu_instance if attrs else None,
        "vgpu": device.key if attrs else None,
    }


def _hostdev_attrs(step: Step) -> HostdevAttrs | None:
    return step_state(step, "after", HostdevAttrs) or step_state(step, "before", HostdevAttrs)


class HostdevHandler:
    def ensure(self, ctx: ApplyContext, step: Step, side: Side) -> dict[str, Any]:
        domain, device = _target(step.address, _hostdev_attrs(step))
        session = ctx.adapter("libvirt")
        conn = session.conn
        want = step.state(side) is not None
        try:
            if not ld.domain_exists(conn, domain):
                if not want:
                    return {"already": True, "domain_absent": True}
                raise ActionFailed(
                    f"{step.address}: domain {domain} is not defined; define it (ai-how) "
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
            ld.set_vm_metadata(conn, domain, _attachment_metadata(step.state(side), device))
            session.commit()
        except ActionFailed:
            raise
        except AihowError as exc:
            raise ActionFailed(f"{step.address}: {exc}") from None
        running = bool(conn.lookupByName(domain).isActive())
        return {
            "attached" if want else "detached": device.key,
            "domain": domain,
            # On a running domain the change waits for its next boot.
            "pending_restart": running,
        }

    def matches(self, host: HostState, address: Address, state: Attrs | None) -> bool:
        key = (address.key or "").lower()  # canonical for an mdev UUID and a PCI address
        if isinstance(state, HostdevAttrs):
            key = _target(address, state)[1].key
        dom = next((d for d in host.domains if d.name == address.domain_name), None)
        present = dom is not None and any(h.key == key for h in dom.hostdevs)
        return present == (state is not None)

    def inverse(self, step: Step) -> str:
        attrs = _hostdev_attrs(step)
        domain, device = _target(step.address, attrs)
        kind = attrs.type if attrs is not None else "?"
        if step.before is not None:
            return f"attach {kind} {device.key} to {domain}"
        return f"detach {kind} {device.key} from {domain}"

    def preflight(self, host: HostState, change: Change, ctx: ApplyContext) -> list[str]:
        """A device another domain already holds cannot be attached (libvirt's test
        driver would even let two running domains share an mdev)."""
        if not isinstance(change.after, HostdevAttrs):
            return []
        domain, device = _target(change.address, change.after)
        holders = sorted(
            d.name
            for d in host.domains
            if d.name != domain and any(h.key == device.key for h in d.hostdevs)
        )
        if holders:
            return [f"{change.address}: {change.after.type} {device.key} is already attached "
                    f"to domain {holders[0]}"]
        return []


def _domain_name(address: Address) -> str:
    if not address.domain_name:
        raise ActionFailed(f"{address}: the address names no domain")
    return address.domain_name


def domain_xml_for(address: Address, value: Attrs | None) -> str:
    """The XML to define for one side of a domain change: the side's own ``xml`` (a
    delete's ``before`` keeps the definition it removes), else rendered from the VM's
    attributes, marked as defined by aihow."""
    if isinstance(value, DomainAttrs) and value.xml:
        # Only the definition aihow itself made (a planned delete keeps it to undo with;
        # apply's vetting checked it is the host's own), never XML from elsewhere.
        if defined_by_aihow(value.xml) is None:
            raise ActionFailed(f"{address}: the plan's domain XML was not defined by aihow; "
                               "aihow defines only domains it rendered")
        return value.xml
    if not isinstance(value, VmAttrs):
        raise ActionFailed(f"{address}: the plan carries no domain definition")
    try:
        return render_defined_domain_xml(spec_from_attrs(value))
    except AihowError as exc:
        raise ActionFailed(f"{address}: {exc}") from None


class DomainHandler:
    def ensure(self, ctx: ApplyContext, step: Step, side: Side) -> dict[str, Any]:
        name = _domain_name(step.address)
        value = step.state(side)
        want = value is not None  # a wanted domain without XML is a plan error, not absent
        session = ctx.adapter("libvirt")
        try:
            exists = ld.domain_exists(session.conn, name)
            if want == exists:
                return {"already": True}
            if want and side == "after" and not isinstance(value, VmAttrs):
                raise ActionFailed(f"{step.address}: a domain is created only from the VM's "
                                   "attributes (aihow renders its XML), not from XML in "
                                   "the plan")
            if want:
                ld.define(session.conn, domain_xml_for(step.address, value))
            else:
                if defined_by_aihow(ld.persistent_xml(session.conn, name)) is None:
                    raise ActionFailed(f"{step.address}: domain {name} was not defined by "
                                       "aihow; aihow never deletes it")
                ld.undefine(session.conn, name)  # refuses a running domain
            session.commit()
        except ActionFailed:
            raise
        except AihowError as exc:
            raise ActionFailed(f"{step.address}: {exc}") from None
        return {"defined" if want else "undefined": name}

    def matches(self, host: HostState, address: Address, state: Attrs | None) -> bool:
        name = _domain_name(address)
        present = any(d.name == name for d in host.domains)
        return present == (state is not None)

    def inverse(self, step: Step) -> str:
        verb = "define" if step.before is not None else "undefine"
        return f"{verb} domain {_domain_name(step.address)}"

    def preflight(self, host: HostState, change: Change, ctx: ApplyContext) -> list[str]:
        """A delete is allowed only for a domain that aihow itself defined (the
        plan's ``before`` keeps its definition, marked ``<aihow:defined-by>``)."""
        if change.action != "delete":
            return []
        name = _domain_name(change.address)
        before = change.before
        xml = before.xml if isinstance(before, DomainAttrs) else None
        if defined_by_aihow(xml or "") is None:
            return [f"{change.address}: domain {name} was not defined by aihow; aihow never "
                    "deletes it"]
        # A running domain is shut down by the plan's own domain[NAME].running delete
        # step before this one; undefine refuses a domain that still runs.
        return []

