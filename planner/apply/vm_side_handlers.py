"""Apply handlers for what a VM needs around its domain: ``network``, ``pool``,
``volume`` and ``running``.

Each brings its resource to a step's side and is idempotent (recover re-runs it):

- ``network[NAME]``: absent -> defined (NAT, the config's bridge and subnet, the static
  leases), autostarted and started; on an update, the leases the side lacks are added
  and those only the other side holds removed. The "before" of a create (its undo)
  removes the network; a plan never deletes one otherwise.
- ``pool[NAME]``: a directory pool, built, autostarted and started; an update starts it.
- ``pool[P].volume[V]``: a qcow2 overlay over the base image (found through the
  Environment, so ``sim:DIR`` looks under DIR); the undo of a create deletes the overlay,
  which holds nothing yet.
- ``domain[NAME].running``: present = running with the planned autostart; absent = shut
  down (ACPI, destroy after the timeout). A start that fails because the vGPU needs VFIO
  says so.
"""

from __future__ import annotations

from typing import Any

from planner.apply.handlers import ActionFailed, ApplyContext, Side, Step, step_state
from planner.errors import AihowError
from planner.host import libvirt_domains as ld
from planner.host import libvirt_objects as lo
from planner.host.state import HostState
from planner.vocab import (
    Action,
    Address,
    Attrs,
    NetworkAttrs,
    PoolAttrs,
    RunningAttrs,
    VolumeAttrs,
)
from planner.vocab.plan import Change


def _session(ctx: ApplyContext) -> Any:
    return ctx.adapter("libvirt")


def _other(step: Step, side: Side) -> Attrs | None:
    return step.state("before" if side == "after" else "after")


class NetworkHandler:
    def ensure(self, ctx: ApplyContext, step: Step, side: Side) -> dict[str, Any]:
        want = step_state(step, side, NetworkAttrs)
        other = _other(step, side)
        session = _session(ctx)
        conn = session.conn
        name = step.address.key or ""
        try:
            net = lo.find_network(conn, name)
            if want is None:
                if net is None:
                    return {"already": True}
                lo.remove_network(conn, name)
                session.commit()
                return {"removed": name}
            if net is None:
                lo.define_network(conn, lo.network_xml(want.name, want.bridge, want.subnet,
                                                       want.hosts), name)
                session.commit()
                return {"defined": name}
            have = {(h.mac, h.name, h.ip) for h in lo.read_network(net).hosts}
            added = [h for h in want.hosts if h not in have]
            extra = set(other.hosts) if isinstance(other, NetworkAttrs) else set()
            removed = sorted(have & (extra - set(want.hosts)))
            for h in removed:
                lo.remove_dhcp_host(conn, name, h)
            for h in added:
                lo.add_dhcp_host(conn, name, h)
            if want.active:
                lo.start_network(conn, name)
            session.commit()
        except AihowError as exc:
            raise ActionFailed(f"{step.address}: {exc}") from None
        return {"leases_added": len(added), "leases_removed": len(removed)}

    def matches(self, host: HostState, address: Address, state: Attrs | None) -> bool:
        net = next((n for n in host.networks if n.name == address.key), None)
        if not isinstance(state, NetworkAttrs):
            return net is None if state is None else False
        if net is None or net.active != state.active:
            return False
        return set(state.hosts) <= {(h.mac, h.name, h.ip) for h in net.hosts}

    def inverse(self, step: Step) -> str:
        if step.before is None:
            return f"remove network {step.address.key}"
        return f"restore the leases of network {step.address.key}"

    def preflight(self, host: HostState, change: Change, ctx: ApplyContext) -> list[str]:
        return []


class PoolHandler:
    def ensure(self, ctx: ApplyContext, step: Step, side: Side) -> dict[str, Any]:
        want = step_state(step, side, PoolAttrs)
        session = _session(ctx)
        conn = session.conn
        name = step.address.key or ""
        try:
            pool = lo.find_pool(conn, name)
            if want is None:
                if pool is None:
                    return {"already": True}
                lo.remove_pool(conn, name)
                session.commit()
                return {"removed": name}
            if pool is None:
                path = want.path  # libvirt's own directory, on the host libvirt runs on
                lo.define_pool(conn, lo.pool_xml(name, path), name)
                session.commit()
                return {"defined": name, "path": path}
            if want.active:
                lo.start_pool(conn, name)
            else:
                lo.stop_pool(conn, name)
            session.commit()
        except AihowError as exc:
            raise ActionFailed(f"{step.address}: {exc}") from None
        return {"active": want.active}

    def matches(self, host: HostState, address: Address, state: Attrs | None) -> bool:
        pool = next((p for p in host.pools if p.name == address.key), None)
        if state is None:
            return pool is None
        return pool is not None and isinstance(state, PoolAttrs) and pool.active == state.active

    def inverse(self, step: Step) -> str:
        if step.before is None:
            return f"remove pool {step.address.key} (its directory stays)"
        return f"stop pool {step.address.key}"

    def preflight(self, host: HostState, change: Change, ctx: ApplyContext) -> list[str]:
        return []


class VolumeHandler:
    def ensure(self, ctx: ApplyContext, step: Step, side: Side) -> dict[str, Any]:
        want = step_state(step, side, VolumeAttrs)
        session = _session(ctx)
        conn = session.conn
        pool, name = step.address.pool_name or "", step.address.key or ""
        try:
            exists = lo.volume_exists(conn, pool, name)
            if (want is not None) == exists:
                return {"already": True}
            if want is None:
                lo.delete_volume(conn, pool, name)
                session.commit()
                return {"deleted": f"{pool}/{name}"}
            if want.backing is None:
                raise ActionFailed(f"{step.address}: the plan names no base image")
            base = ctx.env.host_path(want.backing)
            if not base.is_file():
                raise ActionFailed(f"{step.address}: base image {want.backing} does not exist "
                                   f"on the host (looked at {base})")
            lo.create_volume(conn, pool, lo.volume_xml(name, want.capacity_gb, str(base)),
                             name)
            session.commit()
        except ActionFailed:
            raise
        except AihowError as exc:
            raise ActionFailed(f"{step.address}: {exc}") from None
        return {"created": f"{pool}/{name}", "backing": str(base)}

    def matches(self, host: HostState, address: Address, state: Attrs | None) -> bool:
        pool = next((p for p in host.pools if p.name == address.pool_name), None)
        present = pool is not None and any(v.name == address.key for v in pool.volumes)
        return present == (state is not None)

    def inverse(self, step: Step) -> str:
        what = f"{step.address.pool_name}/{step.address.key}"
        return f"delete volume {what}" if step.before is None else f"create volume {what}"

    def preflight(self, host: HostState, change: Change, ctx: ApplyContext) -> list[str]:
        return []


class RunningHandler:
    def ensure(self, ctx: ApplyContext, step: Step, side: Side) -> dict[str, Any]:
        want = step_state(step, side, RunningAttrs)
        name = step.address.domain_name or ""
        session = _session(ctx)
        conn = session.conn
        try:
            if want is None:
                how = lo.shut_down_domain(conn, name, timeout=ctx.shutdown_timeout)
                # Undoing a start: put back the autostart the start found (a VM shut off
                # with autostart on, as after a boot that could not start it, keeps it).
                found = ctx.done.get(step.id, {}).get("autostart_before") \
                    if step.phase is Action.CREATE else None
                restored = found is not None and ld.domain_exists(conn, name)
                if restored:
                    lo.set_autostart(conn, name, bool(found))
                if how == "already" and not restored:
                    return {"already": True}
                session.commit()
                return {"stopped": name, "how": how,
                        **({"autostart": bool(found)} if restored else {})}
            before = lo.autostart_of(conn, name) if ld.domain_exists(conn, name) else None
            lo.start_domain(conn, name, autostart=want.autostart)
            session.commit()
        except AihowError as exc:
            raise ActionFailed(f"{step.address}: {exc}") from None
        return {"running": name, "autostart": want.autostart, "autostart_before": before}

    def matches(self, host: HostState, address: Address, state: Attrs | None) -> bool:
        dom = next((d for d in host.domains if d.name == address.domain_name), None)
        running = dom is not None and dom.running
        if not isinstance(state, RunningAttrs):
            return not running
        return running and dom is not None and dom.autostart == state.autostart

    def inverse(self, step: Step) -> str:
        name = step.address.domain_name
        return f"shut down {name}" if step.before is None else f"start {name}"

    def preflight(self, host: HostState, change: Change, ctx: ApplyContext) -> list[str]:
        return []
