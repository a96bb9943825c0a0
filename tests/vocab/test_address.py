"""The one spelling of every resource: Address formats and parses each kind, and a
malformed address is one clear line naming it."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from planner.vocab import Address, AddressError, Kind, Slot

HEX = "0123456789abcdef"
pci = st.builds(lambda d, b, s, f: f"{d}:{b}:{s}.{f}",
                st.text(HEX, min_size=4, max_size=4), st.text(HEX, min_size=2, max_size=2),
                st.text(HEX, min_size=2, max_size=2), st.integers(0, 7))
# profile names as the catalog and NVML spell them: 1g.5gb, 1g.5gb+me, 1c.3g.20gb, ci3.x
profile = st.from_regex(r"[0-9a-z][0-9a-z.+\-]{0,15}", fullmatch=True)
start = st.integers(0, 15)
name = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,30}", fullmatch=True)
key = st.one_of(st.uuids().map(str), pci)

addresses = st.one_of(
    pci.map(Address.gpu),
    pci.map(lambda p: Address.gpu(p).mig()),
    pci.map(lambda p: Address.gpu(p).vfs()),
    st.builds(lambda p, n, s: Address.gpu(p).gi(n, s), pci, profile, start),
    st.builds(lambda p, n, s, m, t: Address.gpu(p).gi(n, s).ci(m, t),
              pci, profile, start, profile, start),
    key.map(Address.vgpu),
    name.map(Address.domain),
    st.builds(lambda d, k: Address.domain(d).hostdev(k), name, key),
)


@given(addresses)
def test_format_of_parse_is_the_same_text_for_every_kind(addr: Address) -> None:
    parsed = Address.parse(str(addr))
    assert str(parsed) == str(addr)
    assert (parsed.kind, parsed.pci, parsed.gi_slot, parsed.ci_slot, parsed.key,
            parsed.domain_name) == (addr.kind, addr.pci, addr.gi_slot, addr.ci_slot,
                                    addr.key, addr.domain_name)
    assert pickle.loads(pickle.dumps(addr)).kind == addr.kind


def test_each_kind_is_spelled_once() -> None:
    gpu = Address.gpu("0000:17:00.0")
    gi = gpu.gi("3g.40gb", 4)
    cases = {
        "gpu[0000:17:00.0]": None,
        "gpu[0000:17:00.0].mig": Kind.MIG_MODE,
        "gpu[0000:17:00.0].vfs": Kind.SRIOV,
        "gpu[0000:17:00.0].gi[3g.40gb@4]": Kind.GPU_INSTANCE,
        "gpu[0000:17:00.0].gi[3g.40gb@4].ci[1c.3g.40gb@2]": Kind.COMPUTE_INSTANCE,
        "vgpu[2f0c6a3e-0000-4000-8000-000000000001]": Kind.VGPU,
        "vgpu[0000:65:00.4]": Kind.VGPU,
        "domain[hpc-compute-01]": Kind.DOMAIN,
        "domain[hpc-compute-01].hostdev[0000:65:00.4]": Kind.HOSTDEV,
    }
    for text, kind in cases.items():
        assert Address.parse(text).kind is kind, text
    ci = Address.parse("gpu[0000:17:00.0].gi[3g.40gb@4].ci[1c.3g.40gb@2]")
    assert ci == gi.ci("1c.3g.40gb", 2) and ci.gi_address == gi
    assert ci.gi_slot == Slot("3g.40gb", 4) and ci.ci_slot == Slot("1c.3g.40gb", 2)
    assert ci.gpu_address == gpu and ci.pci == "0000:17:00.0"
    hd = Address.parse("domain[hpc-compute-01].hostdev[abc]")
    assert (hd.domain_name, hd.key) == ("hpc-compute-01", "abc")
    assert str(gpu.mig()) == "gpu[0000:17:00.0].mig"  # an Address is its text
    assert {gpu.mig(): 1}["gpu[0000:17:00.0].mig"] == 1


@pytest.mark.parametrize("text,why", [
    ("", "empty resource address"),
    ("gpu[0000:17:00.0].foo", r"no resource is addressed as gpu\.foo"),
    ("gpu[17:00.0].mig", "is not a PCI address"),
    ("gpu[0000:17:00.0].gi[3g.40gb]", r"'3g.40gb' is not PROFILE@START"),
    ("gpu[0000:17:00.0].gi[3g.40gb@x]", "is not PROFILE@START"),
    ("gpu[0000:17:00.0].gi[3g.40gb@04]", r"write it as 'gpu\[0000:17:00.0\].gi\[3g.40gb@4\]'"),
    ("gpu[0000:17:00.0].ci[1g.5gb@0]", r"no resource is addressed as gpu\.ci"),
    ("domain[a]].hostdev[b]", "cannot read part"),
    ("vgpu", r"vgpu needs a \[value\]"),
    ("vgpu[]", "is empty"),
    ("domain[x].hostdev", r"no resource is addressed as domain\.hostdev"),
    ("gpus[0000:17:00.0].instances[1g.5gb@0]", r"no resource is addressed as gpus"),
])
def test_a_malformed_address_is_one_line_naming_it(text: str, why: str) -> None:
    with pytest.raises(AddressError, match=why) as exc:
        Address.parse(text)
    assert "\n" not in str(exc.value)
    if text:
        assert repr(text) in str(exc.value)


def test_building_refuses_what_no_resource_is() -> None:
    with pytest.raises(AddressError, match="only a GPU instance holds compute instances"):
        Address.gpu("0000:17:00.0").ci("1g.5gb", 0)
    with pytest.raises(AddressError, match="only a domain holds hostdevs"):
        Address.vgpu("x").hostdev("y")
    with pytest.raises(AddressError, match="holds a bracket"):
        Address.domain("a]b")
