"""Why the plan does what it does, as a code a program can match on (the plan's
``reason_code``); the ``reason`` beside it says the same in words, with the particulars."""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    # create
    WANTED = "wanted"  # a GI/CI the config (a node or a layout) asks for
    VGPU_FOR_NODE = "vgpu-for-node"  # a node's vGPU device
    VFS_FOR_VGPU = "vfs-for-vgpu"  # SR-IOV VFs: the parents of the GPU's vGPU devices
    ATTACH = "attach"  # a node's vGPU into its domain's definition
    DEFINE_VM = "define-vm"  # a VM the config declares that libvirt lacks
    NETWORK_FOR_CLUSTER = "network-for-cluster"  # a cluster's network that libvirt lacks
    POOL_FOR_CLUSTER = "pool-for-cluster"  # a cluster's storage pool that libvirt lacks
    VOLUME_FOR_VM = "volume-for-vm"  # a VM's disk: an overlay of its base image
    START_VM = "start-vm"  # a VM with auto_start that is not running
    # delete
    NOT_WANTED = "not-wanted"  # on a GPU the config manages, nothing asks for it
    DEVICE_REMOVED = "device-removed"  # a hostdev whose vGPU device goes away
    VM_DROPPED = "vm-dropped"  # a domain aihow defined that the config no longer declares
    # update
    MIG_MODE = "mig-mode"  # the config asks for another MIG mode
    MIG_MODE_PENDING = "mig-mode-pending"  # asked for already; a GPU reset commits it
    LEASES = "leases"  # a network lacks the config's static DHCP leases, or is stopped
    POOL_STOPPED = "pool-stopped"  # a storage pool that exists but is not active
    AUTOSTART = "autostart"  # a running VM whose libvirt autostart differs from auto_start
    # replace
    CHANGED = "changed"  # attributes that cannot change in place differ
    DEPENDENCY_REPLACED = "dependency-replaced"  # what it depends on is deleted or replaced
    RESTART_FOR_CHANGE = "restart-for-change"  # shut down around a change, then started
    # any action: a shut-off VM's slice moves to make room for another (repack: shut-off)
    REPACK = "repack"
    # no-op
    KEPT = "kept"  # an instance the config still wants
    DOMAIN_KEPT = "domain-kept"  # an existing domain: never redefined
    UNCHANGED = "unchanged"
    ADOPTED = "adopted"  # a network, pool or volume found on the host (ai-how's): reused
    # delete (running)
    STOP_VM = "stop-vm"  # a running VM that aihow must delete is shut down first
    # plan notes (``Plan.notes``): facts the plan does not act on but a reviewer must see
    NAME_REUSED = "name-reused"  # a positional VM name now means another node of the config
    DOMAIN_LEFT_ALONE = "domain-left-alone"  # not aihow's, not in the config: never touched
