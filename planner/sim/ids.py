"""Identities of simulated devices, derived from stable inputs (never random, never DIR).

The same spec gives the same GPU UUIDs, MIG device UUIDs and PCI addresses on every run, so
plans made against a simulated host are reproducible.
"""

from __future__ import annotations

import uuid

# Namespace for every uuid5 the simulator derives.
SIM_NAMESPACE = uuid.UUID("5b1e0c62-0f0e-4c8e-9a52-6d1a4e0a7f31")


def gpu_uuid(model_id: str, pci: str) -> str:
    return "GPU-" + str(uuid.uuid5(SIM_NAMESPACE, f"gpu/{model_id}/{pci}"))


def mig_uuid(gpu_uuid_: str, boot: int, gi_serial: int, ci_serial: int) -> str:
    """Stable for the life of one MIG device (GI + CI); a re-created instance gets a new one."""
    return "MIG-" + str(
        uuid.uuid5(SIM_NAMESPACE, f"mig/{gpu_uuid_}/{boot}/{gi_serial}/{ci_serial}")
    )


def default_pci(index: int) -> str:
    """Bus numbers spaced like a two-socket server's GPU slots: 17, 31, 4b, 65, 7f, ..."""
    bus = 0x17 + 0x1A * index
    if bus > 0xFF:
        raise ValueError(f"no default PCI address for GPU {index}; give MODEL@PCI")
    return f"0000:{bus:02x}:00.0"


def default_gi_id_map(gpu_uuid_: str) -> str:
    """Most GPUs number GIs in placement order; some swap the halves (DCGM issue #138).

    A deterministic per-GPU choice, so no code can get away with inferring placement from id.
    """
    return "swapped-halves" if uuid.UUID(gpu_uuid_[4:]).int % 3 == 0 else "identity"


def vf_address(pf: str, k: int, offset: int = 4, stride: int = 1) -> str:
    """The k-th VF of a PF: devfn = PF devfn + offset + k*stride (A100: 41:00.0 -> 41:00.4)."""
    domain, bus, devfn_text = pf.split(":")
    dev, fn = devfn_text.split(".")
    routing = (int(bus, 16) << 8) | (int(dev, 16) << 3) | int(fn)
    routing += offset + k * stride
    bus_n, devfn = routing >> 8, routing & 0xFF
    return f"{domain}:{bus_n:02x}:{devfn >> 3:02x}.{devfn & 7}"
