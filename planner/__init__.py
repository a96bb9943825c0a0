"""aihow: a declarative plan/apply compiler for NVIDIA MIG slices handed to libvirt VMs."""

__version__ = "0.1.0"
