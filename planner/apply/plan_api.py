"""The few things apply needs from the plan layer, in one place (contract 5)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from planner.apply.drift import diff_values
from planner.config import load_config_text
from planner.errors import AihowError
from planner.host.state import HostState
from planner.plan.fingerprint import fingerprint as plan_fp
from planner.plan.fingerprint import fingerprint_data
from planner.plan.gpu_select import model_of
from planner.plan.request import requests_from_config
from planner.plan.resources import actual_resources
from planner.vocab import Address, AddressError, Kind, Slot
from planner.vocab.plan import FORMAT_VERSION, Plan

if TYPE_CHECKING:
    from planner.config.models import ClusterConfig


def fingerprint(host: HostState, config: ClusterConfig) -> str:
    return plan_fp(host, config)


def plan_fingerprint(plan: Plan) -> str:
    return plan.host.fingerprint


def plan_host_uri(plan: Plan) -> str:
    return plan.host.uri


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    data: dict[str, Any] = plan.model_dump(mode="json")
    return data


def plan_from_dict(data: dict[str, Any], where: str = "journal") -> Plan:
    """The plan a journal or generation keeps; one line naming ``where`` when it is of
    another format (an apply interrupted under an older aihow) or damaged."""
    version = str(data.get("format_version", "?"))
    if version.split(".")[0] != FORMAT_VERSION.split(".")[0]:
        raise AihowError(f"{where}: holds a plan of format {version}; this aihow reads "
                         f"{FORMAT_VERSION} (finish it with the aihow that made it)")
    try:
        return Plan.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise AihowError(f"{where}: the plan it holds is damaged: {loc}: {err['msg']}") from None


def plan_summary(plan: Plan) -> dict[str, int]:
    """Counted from the changes, never read from the plan's own summary."""
    from planner.vocab.plan import summarize

    return summarize(plan.actions)


def drift(plan: Plan, host: HostState, config: ClusterConfig) -> list[str]:
    """What changed on the host since the plan was made, one line per change.

    First the resources the plan acts on, at their plan addresses: each action's
    ``before`` (no-op entries included) is what the resource was at plan time; it is
    compared with the resource now, and resources that appeared since on a GPU the plan
    covers are listed too. When the plan keeps the canonical fingerprint input
    (``host.snapshot``), it is diffed field by field with the host's now, and every
    change those lines do not already cover follows (GPUs the plan does not touch,
    domains, processes, MIG UUIDs the config names), so the list is complete.
    """
    lines = _action_drift(plan, host)
    snapshot = getattr(plan.host, "snapshot", None)
    if snapshot is None:
        return lines
    shown = [_line_address(line) for line in lines]
    for line in diff_values(snapshot, fingerprint_data(host, requests_from_config(config)),
                            item_path=snapshot_item_path):
        address = _line_address(line)
        if any(address.startswith(s) or s.startswith(address) for s in shown if s):
            continue
        lines.append(line)
    return lines


def snapshot_item_path(list_path: str, key: str) -> str:
    """The path of a keyed item of the fingerprint input, as the resource's address
    where it is one: ``gpus`` items are ``gpu[PCI]``, their ``instances`` GPU instances,
    those's ``compute_instances`` compute instances, ``domains`` items domains."""
    parent, _, name = list_path.rpartition(".")
    try:
        if name == "gpus" and not parent:
            return str(Address.gpu(key))
        if name == "domains" and not parent:
            return str(Address.domain(key))
        if name == "instances":
            slot = Slot.parse(key)
            return str(Address.parse(parent).gi(slot.profile, slot.start))
        if name == "compute_instances":
            slot, gi = Slot.parse(key), Address.parse(parent)
            if gi.kind is Kind.GPU_INSTANCE:
                return str(gi.ci(slot.profile, slot.start))
    except AddressError:
        pass
    return f"{list_path}[{key}]"


def _line_address(line: str) -> str:
    return line[2:].partition(": ")[0] if line[:2] in ("+ ", "- ", "~ ") else ""


def _action_drift(plan: Plan, host: HostState) -> list[str]:
    now = current_resources(host)
    lines: list[str] = []
    seen: set[str] = set()
    for action in plan.actions:
        if action.address in seen:
            continue
        seen.add(action.address)
        then = action.before.to_json() if action.before is not None else None
        current = now.get(action.address)
        if action.kind is Kind.DOMAIN:  # definitions are compared by presence only
            if (then is None) != (current is None):
                lines.append(f"+ {action.address}: defined" if then is None
                             else f"- {action.address}: gone")
            continue
        if then == current:
            continue
        if then is None:
            lines.append(f"+ {action.address}: appeared {_attrs(current)}")
        elif current is None:
            lines.append(f"- {action.address}: gone (was {_attrs(then)})")
        else:
            lines.extend(f"~ {line[2:]}" if line.startswith("~ ") else line
                         for line in diff_values(then, current, action.address))
    branches = {a.branch for a in plan.actions}
    gpus = {g.pci for g in host.gpus}
    for address, attrs in sorted(now.items()):
        if address in seen or address.pci not in branches or address.pci not in gpus:
            continue
        lines.append(f"+ {address}: appeared {_attrs(attrs)}")
    return lines


def _attrs(attrs: dict[str, Any] | None) -> str:
    if attrs is None:
        return "none"
    return "{" + ", ".join(f"{k}: {attrs[k]}" for k in sorted(attrs)) + "}"


def current_resources(host: HostState) -> dict[Address, dict[str, Any]]:
    """Every resource on the host at its plan address, with the plan's attributes."""
    models = {g.pci: model_of(g) for g in host.gpus}
    return {addr: r.attrs.to_json() for addr, r in actual_resources(host, models).items()}


def config_from_text(text: str, original_path: str) -> ClusterConfig | None:
    """Load a config kept as text (a journal's) through the normal loader, named by the
    file it was read from; None when there is none."""
    if not text:
        return None
    return load_config_text(text, original_path or "config")
