"""Whether the config's slices fit the host, and its VMs' base images are there,
decided by the planner itself.

``aihow validate --host`` shows fit and MIG UUID availability as rows of its host table;
they come from here, from the same resolve (and ledger and ownership checks) that ``aihow
plan`` runs, so validate and plan can never disagree about what fits. Pure given its
inputs; rows are ``(check, subject, status, hint)``.
"""

from __future__ import annotations

from collections.abc import Mapping

from planner.host.records import NO_RECORDS, HostRecords
from planner.host.state import HostState
from planner.plan.request import Requests
from planner.plan.resources import Resource
from planner.vocab import Address

Row = tuple[str, str, str, str]


def fit_rows(requests: Requests, host: HostState, records: HostRecords = NO_RECORDS,
             images: Mapping[str, bool] | None = None) -> list[Row]:
    """One ``profile-fit`` row per GPU that gets instances and one ``mig-uuid`` row per
    pinned MIG UUID when the plan can be made; else one failed row with the planner's
    own error (its subject the request or entry the error names), or a ``base-image``
    row per config key whose base image the VMs' new disks need and the host lacks.
    ``images``: as ``make_plan`` takes it (None: not checked)."""
    from planner.plan.diff import diff
    from planner.plan.make import resources_for
    from planner.plan.resolution import ResolveError

    if not requests.slices and not requests.policies and not images:
        return []
    try:
        r = resources_for(requests, host, records)
        diff(r.resolution, r.desired, r.actual, records, r.slices_only)
    except ResolveError as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        where, sep, rest = message.partition(": ")
        pinned = {s.describe(): f"{s.node}:{s.mig_uuid}" for s in requests.slices
                  if s.mig_uuid}
        if sep and where in pinned:
            return [("mig-uuid", pinned[where], "fail", rest)]
        return [("profile-fit", where if sep else "config", "fail", rest if sep else message)]
    rows: list[Row] = []
    for d in r.resolution.gpus:
        if not d.instances:
            continue
        layout = " + ".join(f"{gi.profile.name}@{gi.start}"
                            for gi in sorted(d.instances, key=lambda g: g.start))
        rows.append(("profile-fit", d.gpu.pci, "ok", f"fits: {layout}"))
        for gi in d.instances:
            if gi.owner.mig_uuid:
                rows.append(("mig-uuid", f"{gi.owner.node}:{gi.owner.mig_uuid}", "ok",
                             f"{gi.profile.name}@{gi.start} on {d.gpu.pci}, free"))
    if images is not None:
        rows += _image_rows(r.desired, r.actual, images)
    return rows


def _image_rows(desired: dict[Address, Resource], actual: dict[Address, Resource],
                images: Mapping[str, bool]) -> list[Row]:
    from planner.plan.resolution import ResolveError
    from planner.plan.vm_resources import check_base_images

    try:
        check_base_images(desired, actual, images)
    except ResolveError as exc:
        return [("base-image", where, "fail", rest)
                for where, _, rest in (ln.partition(": ") for ln in str(exc).splitlines())]
    return [("base-image", path, "ok", "on the host") for path, found in images.items()
            if found]
