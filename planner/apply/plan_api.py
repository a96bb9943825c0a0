"""The few things apply needs from the plan layer, in one place (contract 5)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from planner.host.state import HostState


def fingerprint(host: HostState, config: Any) -> str:
    from planner.plan.fingerprint import fingerprint as fp

    return fp(host, config)


def plan_fingerprint(plan: Any) -> str:
    return str(plan.host.fingerprint)


def plan_host_uri(plan: Any) -> str:
    return str(plan.host.uri)


def plan_to_dict(plan: Any) -> dict[str, Any]:
    data: dict[str, Any] = plan.model_dump(mode="json")
    return data


def plan_from_dict(data: dict[str, Any]) -> Any:
    from planner.plan.model import Plan

    return Plan.model_validate(data)


def plan_summary(plan: Any) -> dict[str, Any]:
    return dict(getattr(plan, "summary", None) or {})


def drift(plan: Any, host: HostState, config: Any) -> list[str]:
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
    from planner.apply.drift import diff_values
    from planner.plan.fingerprint import fingerprint_data
    from planner.plan.request import requests_from_config

    shown = [_line_address(line) for line in lines]
    for line in diff_values(snapshot, fingerprint_data(host, requests_from_config(config))):
        line = _plan_style(line)
        address = _line_address(line)
        if any(address.startswith(s) or s.startswith(address) for s in shown if s):
            continue
        lines.append(line)
    return lines


# fingerprint-input paths -> plan addresses (gpus[PCI].instances[P@S] -> gpu[PCI].gi[P@S])
_PLAN_STYLE = ((re.compile(r"^([-+~] )gpus\["), r"\1gpu["),
               (re.compile(r"\.instances\["), ".gi["),
               (re.compile(r"\.compute_instances\["), ".ci["),
               (re.compile(r"^([-+~] )domains\["), r"\1domain["))


def _plan_style(line: str) -> str:
    head, sep, rest = line.partition(": ")
    for pattern, repl in _PLAN_STYLE:
        head = pattern.sub(repl, head)
    return head + sep + rest


def _line_address(line: str) -> str:
    return line[2:].partition(": ")[0] if line[:2] in ("+ ", "- ", "~ ") else ""


def _action_drift(plan: Any, host: HostState) -> list[str]:
    from planner.apply.drift import diff_values

    now = current_resources(host)
    lines: list[str] = []
    seen: set[str] = set()
    for action in plan.actions:
        if action.address in seen:
            continue
        seen.add(action.address)
        then = action.before
        current = now.get(action.address)
        if action.kind == "domain":  # definitions are compared by presence only
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
        if address in seen or not any(address.startswith(f"gpu[{b}]") for b in branches
                                      if b in gpus):
            continue
        lines.append(f"+ {address}: appeared {_attrs(attrs)}")
    return lines


def _attrs(attrs: Any) -> str:
    if not isinstance(attrs, dict):
        return str(attrs)
    return "{" + ", ".join(f"{k}: {attrs[k]}" for k in sorted(attrs)) + "}"


def current_resources(host: HostState) -> dict[str, dict[str, Any]]:
    """Every resource on the host at its plan address, with the plan's attributes."""
    from planner.plan.resolve import model_of
    from planner.plan.resources import actual_resources

    models = {g.pci: model_of(g) for g in host.gpus}
    return {addr: dict(r.attrs) for addr, r in actual_resources(host, models).items()}


def config_from_text(text: str, original_path: str, state_dir: Path) -> Any:
    """Load a config kept as text (journal, generation) through the normal loader."""
    if not text:
        return None
    from planner.config import load_config

    tmp = Path(state_dir) / f".config-{hashlib.sha256(text.encode()).hexdigest()[:16]}.yaml"
    tmp.write_text(text)
    try:
        return load_config(tmp)
    finally:
        tmp.unlink(missing_ok=True)
