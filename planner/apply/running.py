"""Running VMs whose slice a plan takes away, and stopping and starting them around apply.

A delete or replace of a slice (GPU or compute instance, vGPU device, hostdev, MIG mode)
that a running domain uses would pull the device from under its guest. Apply refuses such
a plan unless the operator passed ``--restart-running-vms``; then each affected domain is
asked to shut down (ACPI, bounded by a timeout) before the first step, and every one that
still exists is started again afterwards, whether the apply succeeded or rolled back.
Which domains use which resource is read from the probed host the same way plan-making
reads it (``planner.plan.resources``), so plan and apply agree.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from planner.errors import AihowError
from planner.host.state import HostState
from planner.vocab import Action, Kind
from planner.vocab.plan import Change, Plan

RESTART_FLAG = "--restart-running-vms"
DEFAULT_SHUTDOWN_TIMEOUT = 120.0


def affected_domains(plan: Plan, host: HostState) -> dict[str, list[str]]:
    """Running domain -> the addresses of the plan's deletes and replaces (and updates
    of a GPU's MIG mode) that take something it uses."""
    from planner.plan.gpu_select import model_of
    from planner.plan.resources import actual_resources

    models = {g.pci: model_of(g) for g in host.gpus}
    actual = actual_resources(host, models)
    running = {d.name for d in host.domains if d.running}
    out: dict[str, list[str]] = {}
    for change in plan.changes:
        if not _takes(change):
            continue
        res = actual.get(change.address)
        users = set(res.users) if res is not None else set()
        if change.kind is Kind.HOSTDEV and change.address.domain_name in running:
            users.add(str(change.address.domain_name))
        for name in sorted(users & running):
            out.setdefault(name, []).append(str(change.address))
    return dict(sorted(out.items()))


def _takes(change: Change) -> bool:
    if change.action in (Action.DELETE, Action.REPLACE):
        return True
    return change.action is Action.UPDATE and change.kind is Kind.MIG_MODE


def refusal(affected: dict[str, list[str]]) -> str:
    lines = [f"{len(affected)} running VM(s) use slices this plan deletes or replaces:"]
    for name, addresses in affected.items():
        lines.append(f"  {name}: {', '.join(addresses)}")
    lines.append(f"rerun with {RESTART_FLAG} to shut them down (gracefully, within "
                 "--shutdown-timeout seconds), change the slices and start them again; "
                 "nothing was changed")
    return "\n".join(lines)


def shut_down(session: Any, names: Iterable[str], timeout: float) -> list[str]:
    """Shut each domain down; the names stopped, in order. On a failure the ones already
    stopped are started again and AihowError says which one would not stop."""
    from planner.host import libvirt_domains as ld

    stopped: list[str] = []
    try:
        for name in names:
            ld.shutdown(session.conn, name, timeout=timeout)
            session.commit()
            stopped.append(name)
    except AihowError:
        start_again(session, stopped)
        raise
    return stopped


def start_again(session: Any, names: Iterable[str]) -> list[str]:
    """Start each domain that still exists and is off; one warning per domain that could
    not be started (the apply itself is done by then)."""
    from planner.host import libvirt_domains as ld

    warnings: list[str] = []
    for name in names:
        try:
            if not ld.domain_exists(session.conn, name):
                continue  # the plan undefined it
            if session.conn.lookupByName(name).isActive():
                continue
            ld.start(session.conn, name)
            session.commit()
        except AihowError as exc:
            warnings.append(f"domain {name} was running before the apply and was not "
                            f"started again: {exc}; start it with `virsh start {name}`")
    return warnings
