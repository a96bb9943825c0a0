"""make_plan: config IR (or requests) + HostState -> a sealed Plan. Pure given its inputs."""

from __future__ import annotations

import gc
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from planner import __version__
from planner.host.records import NO_RECORDS, HostRecords
from planner.host.state import HostState
from planner.plan.diff import diff, order_actions
from planner.plan.fingerprint import fingerprint_data
from planner.plan.gpu_select import model_of
from planner.plan.notes import plan_notes
from planner.plan.request import Requests, requests_from_config
from planner.plan.resolution import Resolution
from planner.plan.resolve import resolve
from planner.plan.resources import Resource, actual_resources, desired_resources
from planner.plan.vm_resources import check_base_images
from planner.vocab import Address
from planner.vocab.plan import Change, ConfigRef, HostRef, Note, Plan, digest, summarize


@dataclass(frozen=True)
class Resources:
    """Where every slice goes, and the resources wanted and found, by address."""

    resolution: Resolution
    desired: dict[Address, Resource]
    actual: dict[Address, Resource]
    slices_only: frozenset[Address]  # domains named by requests without their VMs


def dropped_clusters(requests: Requests, records: HostRecords) -> frozenset[str]:
    """Clusters that aihow defined domains for under this config's name and that the
    config no longer declares: what they hold is the config's to release."""
    if requests.config_name is None:
        return frozenset()
    return frozenset(rec.cluster for rec in records.defined.values()
                     if rec.config == requests.config_name
                     and rec.cluster not in requests.clusters)


def resources_for(requests: Requests, host: HostState, records: HostRecords = NO_RECORDS,
                  images: Mapping[str, bool] | None = None) -> Resources:
    """``images``: whether each base image the config names exists on the host (read at
    the edge, ``Environment.base_images``); None skips the check."""
    dropped = dropped_clusters(requests, records)
    claims = {k: o for k, o in records.claims.items() if o.split("/", 1)[0] not in dropped}
    res = resolve(requests, host, claims)
    models = {g.pci: model_of(g) for g in host.gpus}
    desired, slices_only = desired_resources(res)
    actual = actual_resources(host, models, records)
    if images is not None:
        check_base_images(desired, actual, images)
    return Resources(res, desired, actual, frozenset(slices_only))


def plan_requests(requests: Requests, host: HostState, *, config_path: str, config_sha256: str,
                  host_uri: str, version: str = __version__,
                  records: HostRecords = NO_RECORDS,
                  images: Mapping[str, bool] | None = None) -> Plan:
    # Plan-making allocates many small acyclic objects; the cyclic collector would walk
    # them over and over (a third of the time on a large host) and finds nothing.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        actions, notes = _actions(requests, host, records, images)  # freed here
        snapshot = fingerprint_data(host, requests)
        plan = Plan(
            aihow_version=version,
            host=HostRef(uri=host_uri, fingerprint=digest(snapshot), snapshot=snapshot),
            config=ConfigRef(path=config_path, sha256=config_sha256),
            actions=actions,
            summary=summarize(actions),
            notes=notes,
            hooks=requests.hooks,
        )
        return plan.sealed()
    finally:
        if was_enabled:
            gc.enable()


def _actions(requests: Requests, host: HostState, records: HostRecords,
             images: Mapping[str, bool] | None = None
             ) -> tuple[tuple[Change, ...], tuple[Note, ...]]:
    """The ordered changes and the plan's notes. The resources, the diff and the plan
    graph are garbage once this returns, before the plan is sealed: sealing must not hold
    them at its peak."""
    r = resources_for(requests, host, records, images)
    changes = diff(r.resolution, r.desired, r.actual, records, r.slices_only)
    notes = tuple(plan_notes(r.resolution, r.desired, r.actual, r.slices_only, records))
    del r  # the resolution and the resource maps: only the changes are needed now
    return tuple(order_actions(changes)), notes


def make_plan(cfg: Any, host: HostState, *, config_path: str, config_sha256: str,
              host_uri: str, records: HostRecords = NO_RECORDS,
              images: Mapping[str, bool] | None = None) -> Plan:
    """Contract 5: the plan that brings ``host`` to what ``cfg`` asks for. ``records``:
    what aihow recorded about the host (domains it defined, the allocation ledger), read
    by the caller; without them no domain is deleted and no claim is checked."""
    return plan_requests(requests_from_config(cfg), host, config_path=config_path,
                         config_sha256=config_sha256, host_uri=host_uri, records=records,
                         images=images)
