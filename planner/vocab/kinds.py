"""What a plan talks about: the kinds of resource, the actions on them, and the one order
in which kinds must exist (a GPU's MIG mode before its instances, ..., a domain before
its hostdevs, a domain's
network, pool and volume before it, and its running state after everything)."""

from __future__ import annotations

from enum import StrEnum


class Kind(StrEnum):
    """A kind of resource. Declared in dependency order: each kind may depend on the
    kinds above it, never on those below (``rank``)."""

    MIG_MODE = "mig_mode"
    GPU_INSTANCE = "gpu_instance"
    COMPUTE_INSTANCE = "compute_instance"
    SRIOV = "sriov"
    VGPU = "vgpu"
    NETWORK = "network"  # a cluster's libvirt network, before the domains on it
    POOL = "pool"  # a cluster's storage pool
    VOLUME = "volume"  # a VM's disk: a copy-on-write overlay of a base image
    DOMAIN = "domain"
    HOSTDEV = "hostdev"
    RUNNING = "running"  # a domain is running (and starts with the host): last of all

    @property
    def rank(self) -> int:
        """Position in dependency order: create in rising rank, delete in falling rank."""
        return _RANK[self]


_RANK = {k: i for i, k in enumerate(Kind)}

# Kinds whose resources the driver forgets at a power loss and that a plan may keep
# (no-op): recovery re-makes them.
MIG_KINDS = (Kind.MIG_MODE, Kind.GPU_INSTANCE, Kind.COMPUTE_INSTANCE)


class Action(StrEnum):
    """What a plan does to one resource. ``replace`` is one change with a before and an
    after that cannot be reached in place; apply runs it as a delete, then a create."""

    CREATE = "create"
    DELETE = "delete"
    UPDATE = "update"
    REPLACE = "replace"
    NO_OP = "no-op"
