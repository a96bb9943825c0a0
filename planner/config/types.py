"""Annotated pydantic types for the strings that carry a small language or a fixed form.

Each validator accepts the YAML string (or an already-parsed value), normalises it, and
shows in the JSON Schema as a string with a pattern, so editors can check it too.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from typing import Annotated, Any

from pydantic import Field, PlainSerializer, PlainValidator, Strict, WithJsonSchema

from planner.lang import (
    GpuSelector,
    Layout,
    MigProfile,
    normalize_pci,
    parse_layout,
    parse_profile,
    parse_selector,
)

HEX4 = r"^[0-9a-fA-F]{4}$"
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
IPV4_RE = rf"{_OCTET}(\.{_OCTET}){{3}}"
PCI_RE = r"^([0-9a-fA-F]{4,8}:)?[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$"
UUID_RE = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
MIG_UUID_RE = rf"^MIG-({UUID_RE}|GPU-{UUID_RE}/[0-9]+/[0-9]+)$"

_MIG_UUID = re.compile(rf"^MIG-(?P<uuid>{UUID_RE})$", re.IGNORECASE)
_MIG_LEGACY = re.compile(rf"^MIG-GPU-(?P<gpu>{UUID_RE})/(?P<gi>[0-9]+)/(?P<ci>[0-9]+)$",
                         re.IGNORECASE)


def _need_str(value: Any, what: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"{what} must be a string, got {type(value).__name__}")
    return str(value)


def _profile(value: Any) -> MigProfile:
    if isinstance(value, MigProfile):
        return value
    return _parse_profile(_need_str(value, "a MIG profile"))


@functools.lru_cache(maxsize=256)
def _parse_profile(text: str) -> MigProfile:
    # A fleet config names a handful of profiles thousands of times; MigProfile is frozen.
    # (An invalid one raises, and is parsed again each time: errors are rare.)
    return parse_profile(text)


def _selector(value: Any) -> GpuSelector:
    if isinstance(value, GpuSelector):
        return value
    # An index written as a YAML integer (select: 0) is a selector too.
    return parse_selector(_need_str(value, "a GPU selector"))


def _layout(value: Any) -> Layout:
    if isinstance(value, Layout):
        return value
    if not isinstance(value, str):
        raise ValueError(f"a layout must be a string, got {type(value).__name__}")
    return parse_layout(value)


def _pci(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"a PCI address must be a string, got {type(value).__name__}")
    return normalize_pci(value)


def normalize_mig_uuid(text: str) -> str:
    """``MIG-<uuid>`` -> lowercase uuid with the ``MIG-`` prefix.

    The legacy form ``MIG-GPU-<gpu-uuid>/<gi>/<ci>`` (drivers before R470) names the
    parent GPU and the GPU/compute instance ids, not a standalone UUID; it is kept in
    that form (uuid lowercased, ids as plain integers). Binding it needs the probe to map
    it to the instance's current MIG UUID.
    """
    m = _MIG_UUID.match(text.strip())
    if m:
        return "MIG-" + m["uuid"].lower()
    m = _MIG_LEGACY.match(text.strip())
    if m:
        return f"MIG-GPU-{m['gpu'].lower()}/{int(m['gi'])}/{int(m['ci'])}"
    raise ValueError(
        f"invalid MIG UUID {text!r}: expected MIG-<uuid> or the legacy MIG-GPU-<uuid>/<gi>/<ci>"
    )


def is_legacy_mig_uuid(text: str) -> bool:
    return text.startswith("MIG-GPU-")


def _mig_uuid(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"a MIG UUID must be a string, got {type(value).__name__}")
    return normalize_mig_uuid(value)


def _ipv4(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"an IPv4 address must be a string, got {type(value).__name__}")
    try:
        return str(ipaddress.IPv4Address(value.strip()))
    except ValueError:
        raise ValueError(f"{value!r} is not an IPv4 address") from None


def _ip_or_dhcp(value: Any) -> str:
    if value == "DHCP":
        return "DHCP"
    try:
        return _ipv4(value)
    except ValueError:
        raise ValueError(f"{value!r} is neither an IPv4 address nor \"DHCP\"") from None


def _subnet(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"a subnet must be a string, got {type(value).__name__}")
    if not re.fullmatch(r"([0-9]{1,3}\.){3}[0-9]{1,3}/[0-9]{1,2}", value.strip()):
        raise ValueError(f"{value!r} is not an IPv4 subnet in CIDR form (192.168.100.0/24)")
    try:
        ipaddress.IPv4Network(value.strip(), strict=False)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a valid IPv4 subnet: {exc}") from None
    return value.strip()


def _string(schema: dict[str, Any]) -> WithJsonSchema:
    return WithJsonSchema({"type": "string", **schema})


StrictInt = Annotated[int, Strict()]
PositiveInt = Annotated[int, Strict(), Field(ge=1)]


def _hex_id(value: Any) -> str:
    """A PCI vendor or device id: four hex digits. ai-how's ``gpu_inventory.sh`` writes
    ids such as ``device_id: 2330`` unquoted, which YAML reads as the integer 2330; its
    four decimal digits are the id as written, so it is taken back as that text."""
    if isinstance(value, int) and not isinstance(value, bool):
        text = str(value)
        if not re.fullmatch(r"[0-9]{4}", text):
            raise ValueError(f"{value} is not a 4-digit hex id; write it quoted, as 4 hex "
                             "digits (e.g. \"10de\")")
        return text
    if not isinstance(value, str):
        raise ValueError(f"a PCI id must be 4 hex digits, got {type(value).__name__}")
    if not re.fullmatch(HEX4, value):
        raise ValueError(f"{value!r} is not 4 hex digits (e.g. 10de)")
    return value


HexId = Annotated[str, PlainValidator(_hex_id), _string({"pattern": HEX4})]

ProfileField = Annotated[
    MigProfile,
    PlainValidator(_profile),
    PlainSerializer(str, return_type=str),
    _string({"pattern": r"^(MIG )?([0-9]+c\.)?[0-9]+g\.[0-9]+gb(\+me\.all|\+me|-me|\+gfx)?$",
             "description": "MIG profile name, e.g. 1g.5gb, 1g.10gb+me, 1c.3g.20gb"}),
]
SelectorField = Annotated[
    GpuSelector,
    PlainValidator(_selector),
    PlainSerializer(str, return_type=str),
    WithJsonSchema({
        "anyOf": [
            {"type": "string", "pattern": PCI_RE},
            {"type": "string", "pattern": r"^[0-9]+$"},
            {"type": "integer", "minimum": 0},
            {"type": "string", "pattern": rf"^GPU-{UUID_RE}$"},
            {"type": "string", "pattern": r"^model=.+$"},
        ],
        "description": "GPU selector: PCI address, index, GPU-<uuid> or model=GLOB",
    }),
]
LayoutField = Annotated[
    Layout,
    PlainValidator(_layout),
    PlainSerializer(str, return_type=str),
    _string({"description": "layout, e.g. '3g.20gb@4 + 2*1g.5gb'"}),
]
PciAddress = Annotated[
    str,
    PlainValidator(_pci),
    _string({"pattern": PCI_RE, "description": "PCI address dddd:bb:dd.f (or bb:dd.f)"}),
]
MigUuid = Annotated[
    str,
    PlainValidator(_mig_uuid),
    _string({"pattern": MIG_UUID_RE, "description": "MIG-<uuid> (or legacy MIG-GPU-<uuid>/gi/ci)"}),
]
IPv4 = Annotated[str, PlainValidator(_ipv4), _string({"pattern": f"^{IPV4_RE}$"})]
IPv4OrDhcp = Annotated[
    str, PlainValidator(_ip_or_dhcp), _string({"pattern": f"^({IPV4_RE}|DHCP)$"})
]
Subnet = Annotated[
    str, PlainValidator(_subnet), _string({"pattern": r"^([0-9]{1,3}\.){3}[0-9]{1,3}/[0-9]{1,2}$"})
]
ImagePath = Annotated[str, Field(pattern=r"\.qcow2$")]
