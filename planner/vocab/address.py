"""Resource addresses: the one spelling of every resource in plans, journals and messages.

    gpu[0000:17:00.0]                                the GPU itself (prefix of the next four)
    gpu[0000:17:00.0].mig                            its MIG mode
    gpu[0000:17:00.0].vfs                            its SR-IOV virtual functions
    gpu[0000:17:00.0].gi[3g.40gb@4]                  a GPU instance, PROFILE@START
    gpu[0000:17:00.0].gi[3g.40gb@4].ci[3g.40gb@0]    a compute instance in it
    vgpu[KEY]                                        a vGPU: mdev UUID or VF PCI address
    domain[NAME]                                     a libvirt domain
    domain[NAME].hostdev[KEY]                        a vGPU in the domain's definition
    domain[NAME].running                             the domain runs
    network[NAME]                                    a libvirt network
    pool[NAME]                                       a libvirt storage pool
    pool[NAME].volume[NAME]                          a volume in it

Instances are named by profile and placement, never by the ids the driver assigns anew
at every creation. ``Address.parse(str(a)) == a`` for every address.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from planner.vocab.kinds import Kind

_PCI_RE = r"[0-9a-fA-F]{4,8}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]"
_PCI = re.compile(_PCI_RE)
_SEGMENT = re.compile(r"([a-z]+)(?:\[([^\[\]]*)\])?")
# Every well-formed address in one match (a plan file holds one per change, so reading
# a large plan parses tens of thousands): anything else takes the general path, which
# says what is wrong. Starts are written without leading zeros, as the builders write them.
_N = r"[^\[\]]+"  # a name, key or PCI address inside brackets
_V = rf"({_N})"
_SLOT = r"([^\[\]@]+)@(0|[1-9][0-9]*)"
_WELL_FORMED = re.compile(
    rf"gpu\[{_V}\](?:\.(mig|vfs)|\.gi\[{_SLOT}\](?:\.ci\[{_SLOT}\])?)?"
    rf"|vgpu\[{_V}\]|domain\[{_V}\](?:\.hostdev\[{_V}\])?")

# Each kind's addresses exactly as the builders write them, one regex per kind without
# groups (the alternatives above with the PCI address checked in place, and the shapes
# only the general path reads): a string one of these matches whole is an address of
# that kind that ``Address.parse`` reads back as the same text. The check of a plan's
# changes as written (``planner.vocab.canonical``) matches them in pydantic-core, whose
# regex engine reads these patterns alike.
_S = r"[^\[\]@]+@(?:0|[1-9][0-9]*)"
SHAPES: dict[Kind, str] = {
    Kind.MIG_MODE: rf"gpu\[{_PCI_RE}\]\.mig",
    Kind.SRIOV: rf"gpu\[{_PCI_RE}\]\.vfs",
    Kind.GPU_INSTANCE: rf"gpu\[{_PCI_RE}\]\.gi\[{_S}\]",
    Kind.COMPUTE_INSTANCE: rf"gpu\[{_PCI_RE}\]\.gi\[{_S}\]\.ci\[{_S}\]",
    Kind.VGPU: rf"vgpu\[{_N}\]",
    Kind.DOMAIN: rf"domain\[{_N}\]",
    Kind.HOSTDEV: rf"domain\[{_N}\]\.hostdev\[{_N}\]",
    Kind.RUNNING: rf"domain\[{_N}\]\.running",
    Kind.NETWORK: rf"network\[{_N}\]",
    Kind.POOL: rf"pool\[{_N}\]",
    Kind.VOLUME: rf"pool\[{_N}\]\.volume\[{_N}\]",
}


def domain_name_of(text: str) -> str | None:
    """The domain NAME of a well-formed ``domain[NAME]...`` address's text, else None:
    what ``Address.parse(text).domain_name`` gives, without building the address."""
    if not text.startswith("domain["):
        return None
    return text[7:text.index("]", 7)]


class AddressError(ValueError):
    """A malformed resource address; the message quotes it and says what is wrong."""


@dataclass(frozen=True, slots=True, order=True)
class Slot:
    """Where an instance sits: its profile name and its start slice, ``PROFILE@START``."""

    profile: str
    start: int

    def __str__(self) -> str:
        return f"{self.profile}@{self.start}"

    @classmethod
    def parse(cls, text: str) -> Slot:
        profile, at, start = text.rpartition("@")
        if not at or not profile or not start.isdigit() or "@" in profile:
            raise AddressError(f"{text!r} is not PROFILE@START")
        return cls(profile, int(start))


class Address(str):
    """A parsed address. It *is* its text (a ``str``: equal, hashed, sorted and written
    as the text), with the parts read off it. Built by the class methods
    (``Address.gpu(pci).gi("3g.40gb", 4)``) or by ``Address.parse``."""

    kind: Kind | None  # None: the GPU itself, not a resource
    pci: str | None
    gi_slot: Slot | None
    ci_slot: Slot | None
    key: str | None  # the vGPU's device key, or the hostdev's; a network's, pool's or
    # volume's name
    domain_name: str | None
    pool_name: str | None

    def __new__(cls, text: str, kind: Kind | None, *, pci: str | None = None,
                gi_slot: Slot | None = None, ci_slot: Slot | None = None,
                key: str | None = None, domain_name: str | None = None,
                pool_name: str | None = None) -> Address:
        self = super().__new__(cls, text)
        self.kind, self.pci, self.gi_slot, self.ci_slot = kind, pci, gi_slot, ci_slot
        self.key, self.domain_name, self.pool_name = key, domain_name, pool_name
        return self

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (Address.parse, (str(self),))

    @property
    def text(self) -> str:
        return str(self)


    # --- building ---------------------------------------------------------------------

    @classmethod
    def gpu(cls, pci: str) -> Address:
        return cls(f"gpu[{_value(pci, 'PCI address')}]", None, pci=pci)

    def mig(self) -> Address:
        return Address(f"{self._gpu_text()}.mig", Kind.MIG_MODE, pci=self.pci)

    def vfs(self) -> Address:
        return Address(f"{self._gpu_text()}.vfs", Kind.SRIOV, pci=self.pci)

    def gi(self, profile: str, start: int) -> Address:
        slot = Slot(_value(profile, "profile"), start)
        return Address(f"{self._gpu_text()}.gi[{slot}]", Kind.GPU_INSTANCE, pci=self.pci,
                       gi_slot=slot)

    def ci(self, profile: str, start: int) -> Address:
        if self.kind is not Kind.GPU_INSTANCE:
            raise AddressError(f"{self.text}: only a GPU instance holds compute instances")
        slot = Slot(_value(profile, "profile"), start)
        return Address(f"{self}.ci[{slot}]", Kind.COMPUTE_INSTANCE, pci=self.pci,
                       gi_slot=self.gi_slot, ci_slot=slot)

    @classmethod
    def vgpu(cls, key: str) -> Address:
        return cls(f"vgpu[{_value(key, 'device key')}]", Kind.VGPU, key=key)

    @classmethod
    def domain(cls, name: str) -> Address:
        return cls(f"domain[{_value(name, 'domain name')}]", Kind.DOMAIN, domain_name=name)

    def hostdev(self, key: str) -> Address:
        if self.kind is not Kind.DOMAIN:
            raise AddressError(f"{self.text}: only a domain holds hostdevs")
        return Address(f"{self}.hostdev[{_value(key, 'device key')}]", Kind.HOSTDEV,
                       key=key, domain_name=self.domain_name)

    def running(self) -> Address:
        if self.kind is not Kind.DOMAIN:
            raise AddressError(f"{self.text}: only a domain runs")
        return Address(f"{self}.running", Kind.RUNNING, domain_name=self.domain_name)

    @classmethod
    def network(cls, name: str) -> Address:
        return cls(f"network[{_value(name, 'network name')}]", Kind.NETWORK, key=name)

    @classmethod
    def pool(cls, name: str) -> Address:
        return cls(f"pool[{_value(name, 'pool name')}]", Kind.POOL, key=name, pool_name=name)

    def volume(self, name: str) -> Address:
        if self.kind is not Kind.POOL:
            raise AddressError(f"{self.text}: only a pool holds volumes")
        return Address(f"{self}.volume[{_value(name, 'volume name')}]", Kind.VOLUME,
                       key=name, pool_name=self.pool_name)

    def _gpu_text(self) -> str:
        if self.kind is not None or self.pci is None:
            raise AddressError(f"{self}: not a GPU address")
        return str(self)

    # --- reading ----------------------------------------------------------------------

    @property
    def gpu_address(self) -> Address | None:
        """``gpu[PCI]`` for the GPU's resources, else None."""
        return Address.gpu(self.pci) if self.pci is not None else None

    @property
    def gi_address(self) -> Address | None:
        """The GPU instance of a GI or CI address."""
        if self.pci is None or self.gi_slot is None:
            return None
        return Address.gpu(self.pci).gi(self.gi_slot.profile, self.gi_slot.start)

    @classmethod
    def parse(cls, text: str) -> Address:
        """The address ``text`` spells; AddressError naming it when it is malformed."""
        if not isinstance(text, str) or not text:
            raise AddressError("empty resource address")
        fast = _parse_well_formed(text)
        if fast is not None:
            return fast
        parts: list[tuple[str, str | None]] = []
        for n, chunk in enumerate(_split(text), 1):
            m = _SEGMENT.fullmatch(chunk)
            if m is None:
                raise AddressError(f"resource address {text!r}: cannot read part {n} {chunk!r}")
            parts.append((m.group(1), m.group(2)))
        try:
            addr = _build(parts)
        except AddressError as exc:
            raise AddressError(f"resource address {text!r}: {exc}") from None
        if str(addr) != text:  # e.g. a start written "04": one spelling per resource
            raise AddressError(f"resource address {text!r}: write it as {str(addr)!r}")
        return addr


def _parse_well_formed(text: str) -> Address | None:
    """The address ``text`` spells when it has one of the known shapes, exactly as the
    builders write it; None sends it to the general path."""
    m = _WELL_FORMED.fullmatch(text)
    if m is None:
        return None
    pci, sub, gi_p, gi_s, ci_p, ci_s, vgpu_key, dom, hostdev_key = m.groups()
    if vgpu_key is not None:
        return Address(text, Kind.VGPU, key=vgpu_key)
    if dom is not None:
        if hostdev_key is None:
            return Address(text, Kind.DOMAIN, domain_name=dom)
        return Address(text, Kind.HOSTDEV, key=hostdev_key, domain_name=dom)
    if not _PCI.fullmatch(pci):
        return None
    if sub is not None:
        return Address(text, Kind.MIG_MODE if sub == "mig" else Kind.SRIOV, pci=pci)
    if gi_p is None:
        return Address(text, None, pci=pci)
    gi = Slot(gi_p, int(gi_s))
    if ci_p is None:
        return Address(text, Kind.GPU_INSTANCE, pci=pci, gi_slot=gi)
    return Address(text, Kind.COMPUTE_INSTANCE, pci=pci, gi_slot=gi,
                   ci_slot=Slot(ci_p, int(ci_s)))


def _value(text: str, what: str) -> str:
    if not text or any(c in text for c in "[]"):
        raise AddressError(f"{what} {text!r} is empty or holds a bracket")
    return text


def _build(parts: list[tuple[str, str | None]]) -> Address:
    names = tuple(n for n, _ in parts)
    head, value = parts[0]
    if value is None:
        raise AddressError(f"{head} needs a [value]")
    if head == "gpu":
        if not _PCI.fullmatch(value):
            raise AddressError(f"{value!r} is not a PCI address (DDDD:BB:DD.F)")
        gpu = Address.gpu(value)
        if names == ("gpu",):
            return gpu
        if names == ("gpu", "mig") and parts[1][1] is None:
            return gpu.mig()
        if names == ("gpu", "vfs") and parts[1][1] is None:
            return gpu.vfs()
        if names[:2] == ("gpu", "gi") and len(names) <= 3:
            gi_slot = Slot.parse(parts[1][1] or "")
            gi = gpu.gi(gi_slot.profile, gi_slot.start)
            if len(names) == 2:
                return gi
            if names[2] == "ci":
                ci_slot = Slot.parse(parts[2][1] or "")
                return gi.ci(ci_slot.profile, ci_slot.start)
    elif head == "vgpu" and names == ("vgpu",):
        return Address.vgpu(value)
    elif head == "domain":
        dom = Address.domain(value)
        if names == ("domain",):
            return dom
        if names == ("domain", "hostdev") and parts[1][1]:
            return dom.hostdev(parts[1][1])
        if names == ("domain", "running") and parts[1][1] is None:
            return dom.running()
    elif head == "network" and names == ("network",):
        return Address.network(value)
    elif head == "pool":
        pool = Address.pool(value)
        if names == ("pool",):
            return pool
        if names == ("pool", "volume") and parts[1][1]:
            return pool.volume(parts[1][1])
    shape = ".".join(names)
    raise AddressError(f"no resource is addressed as {shape} (known: gpu[PCI].mig, "
                       "gpu[PCI].vfs, gpu[PCI].gi[P@S], gpu[PCI].gi[P@S].ci[P@S], vgpu[KEY], "
                       "domain[NAME], domain[NAME].hostdev[KEY], domain[NAME].running, "
                       "network[NAME], pool[NAME], pool[NAME].volume[NAME])")


def _split(text: str) -> list[str]:
    """Split on dots outside brackets (PCI addresses and profiles hold dots)."""
    out: list[str] = []
    current: list[str] = []
    depth = 0
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == "." and depth == 0:
            out.append("".join(current))
            current = []
        else:
            current.append(ch)
    out.append("".join(current))
    return out
