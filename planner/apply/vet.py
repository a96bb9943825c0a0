"""Vet a plan before apply acts on it: every change must be one the config justifies.

A plan file is a reviewed artefact, but its ``plan_sha256`` is a checksum anyone can
recompute, so an edited and re-digested plan loads cleanly. Apply therefore does not
trust the plan's changes: it makes the plan again from the config the plan names (whose
digest the caller checked) and the host as probed now (whose fingerprint the caller
checked against the plan's), with the same host records, and refuses unless the plan's
changes are exactly those. Planning is pure, so an honest plan always passes; a change
that is not in the re-made plan is named, with the ownership rule it breaks where one
does (a GPU the config does not select, a domain aihow did not define).

What vetting guarantees is what review saw: the plan's summary is recounted from its
changes (``show`` does the same), every attribute apply reads (domain XML included)
is the one the re-made plan has, and the hooks apply runs (``global.hooks``) are the
config's, argv and timeout alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from planner import __version__
from planner.errors import AihowError
from planner.host.records import HostRecords
from planner.host.state import HostState
from planner.vocab import Address, Kind, Reason
from planner.vocab.plan import HOOK_PHASES, Change, Hooks, Plan, canonical_json, summarize

if TYPE_CHECKING:
    from planner.config.models import ClusterConfig

MAX_LINES = 10  # unjustified changes named in the message; the rest are counted


class PlanNotJustified(AihowError):
    """The plan holds changes its config and the host do not justify; nothing changed."""


def vet_plan(plan: Plan, host: HostState, config: ClusterConfig, records: HostRecords) -> None:
    """Raise PlanNotJustified unless ``plan`` is the plan ``config`` makes on ``host``."""
    from planner.plan.make import plan_requests, resources_for
    from planner.plan.request import requests_from_config

    requests = requests_from_config(config)
    try:
        again = plan_requests(requests, host, config_path=str(plan.config.path),
                              config_sha256=str(plan.config.sha256),
                              host_uri=str(plan.host.uri), records=records)
    except AihowError as exc:
        raise PlanNotJustified(f"{plan.config.path}: the config no longer plans on this "
                               f"host ({exc}); nothing was changed") from None
    problems = summary_problems(plan) + hook_problems(plan, requests.hooks)
    wanted = {_key(c): c for c in again.actions}
    have = {_key(c): c for c in plan.actions}
    why = _Explainer(requests.vms, records, resources_for(requests, host, records))
    for key, change in have.items():
        if key not in wanted:
            problems.append(f"{change.address}: {change.action} {why(change)}")
    for key, change in wanted.items():
        if key not in have:
            problems.append(f"{change.address}: the config asks for {change.action}, "
                            "which the plan leaves out")
    if not problems and [_key(c) for c in plan.actions] != [_key(c) for c in again.actions]:
        problems.append("the plan's changes are in another order than the config's plan")
    if not problems:
        return
    shown = problems[:MAX_LINES]
    if len(problems) > MAX_LINES:
        shown.append(f"... and {len(problems) - MAX_LINES} more")
    version = ("" if plan.aihow_version == __version__ else
               f" (the plan was made by aihow {plan.aihow_version}, this is {__version__})")
    raise PlanNotJustified(
        f"{plan.host.uri}: the plan does not match what its config "
        f"{plan.config.path} plans on this host{version}; it was edited or made "
        "otherwise; nothing was changed\n"
        + "\n".join(f"  {line}" for line in shown)
        + "\nMake a new plan with `aihow plan` and review it.")


def summary_problems(plan: Plan) -> list[str]:
    """A summary that is not the count of the plan's changes (it could hide deletes)."""
    counted = summarize(plan.actions)
    if dict(plan.summary) == counted:
        return []
    return [f"summary: {canonical_json(dict(plan.summary))} does not count the plan's "
            f"changes ({canonical_json(counted)})"]


def hook_problems(plan: Plan, hooks: Hooks) -> list[str]:
    """Hooks that are not the config's: apply runs commands as root, so only the ones
    review saw, which are the config's, may run."""
    problems = []
    for phase in HOOK_PHASES:
        have = [h.model_dump(mode="json") for h in plan.hooks.phase(phase)]
        want = [h.model_dump(mode="json") for h in hooks.phase(phase)]
        if have != want:
            problems.append(f"hooks.{phase}: the plan runs {canonical_json(have)}, the "
                            f"config {canonical_json(want)}")
    return problems


def _key(change: Change) -> str:
    return canonical_json(change.model_dump(mode="json"))


class _Explainer:
    """Why a change the re-made plan lacks is not justified, in the ownership rules'
    words where one applies."""

    def __init__(self, vms: object, records: HostRecords, resources: object) -> None:
        self.declared = {vm.name for vm in vms}  # type: ignore[attr-defined]
        self.defined = set(records.defined)
        self.resolution = resources.resolution  # type: ignore[attr-defined]

    def __call__(self, change: Change) -> str:
        address: Address = change.address
        if change.reason_code == Reason.REPACK:
            return ("is a repack move, which the config allows only on a GPU whose "
                    "global.gpus entry says repack: shut-off and only while the VM is shut "
                    "off")
        if address.kind in (Kind.DOMAIN, Kind.HOSTDEV):
            name = address.domain_name or ""
            if name not in self.declared and name not in self.defined:
                return (f"touches domain {name}, which the config does not declare and "
                        "aihow did not define")
        elif address.pci:
            decision = self.resolution.gpu(address.pci)
            if decision is None or not decision.touched:
                return f"touches GPU {address.pci}, which the config does not select"
        return "is not what the config plans on this host (its attributes or action differ)"
