"""Cluster config: YAML (ai-how "1.0" + MIG extension) -> frozen, typed IR.

Imports nothing of the project except planner.lang and planner.errors.
"""

from planner.config.models import (
    CloudCluster,
    ClusterConfig,
    Clusters,
    ControllerNode,
    GlobalConfig,
    GpuConfig,
    GpuEntry,
    HostConfig,
    HpcCluster,
    ListNode,
    NodeTemplate,
    PciDevice,
    PciePassthrough,
    VirtioFsMount,
)
from planner.config.parser import ClusterConfigParser, load_config, load_config_text
from planner.config.vms import VmDecl, expand_vms

__all__ = [
    "CloudCluster",
    "ClusterConfig",
    "ClusterConfigParser",
    "Clusters",
    "ControllerNode",
    "GlobalConfig",
    "GpuConfig",
    "GpuEntry",
    "HostConfig",
    "HpcCluster",
    "ListNode",
    "NodeTemplate",
    "PciDevice",
    "PciePassthrough",
    "VirtioFsMount",
    "VmDecl",
    "expand_vms",
    "load_config",
    "load_config_text",
]
