"""The hardware catalog's types: one GpuModel per supported GPU, loaded from data/*.toml."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class GiProfile:
    """A GPU-instance profile as NVML describes it (nvmlGpuInstanceProfileInfo_v2)."""

    enum: int  # NVML_GPU_INSTANCE_PROFILE_* passed to GetGpuInstanceProfileInfo
    id: int  # the profile id every other GI call takes (nvidia-smi's ID column)
    name: str  # "1g.5gb" (NVML's name is "MIG " + this)
    instance_count: int  # instanceCount: most instances of this profile at once
    memory_mib: int
    sm_count: int
    copy_engines: int
    decoders: int
    encoders: int
    jpegs: int
    ofas: int
    compute_slices: int  # the "g" in the name (sliceCount)
    placement_size: int  # memory slices occupied (grid units on RTX PRO 6000)
    placements: tuple[int, ...]  # legal placement starts
    p2p: bool = False
    min_driver: str | None = None  # e.g. "525" when the profile needs a newer driver
    vgpu_type: str | None = None  # MIG-backed vGPU type name confirmed by a source, "A100-1-5C"
    uncertain: tuple[str, ...] = ()  # fields whose value is not confirmed on hardware
    source: str = ""
    aliases: tuple[str, ...] = ()  # other names drivers print for this profile ("1g.24gb")
    notes: tuple[str, ...] = ()  # what is assumed for an uncertain field, and why

    @property
    def media(self) -> str:
        """The media-engine variant, from the NVML enum: "" (plain), "me" (+me, REV1),
        "me.all" (+me.all), "no-me" (-me), "gfx" (+gfx) or "rev2" (1g with 2x memory)."""
        return _MEDIA_BY_ENUM.get(self.enum, "")

    @property
    def nvml_name(self) -> str:
        return f"MIG {self.name}"

    def span(self, start: int) -> range:
        return range(start, start + self.placement_size)


# NVML_GPU_INSTANCE_PROFILE_* values (nvml.h) of the variants that carry placement rules.
_MEDIA_BY_ENUM = {
    0x7: "me", 0x8: "me",  # 1/2_SLICE_REV1
    0x9: "rev2",  # 1_SLICE_REV2
    0xA: "gfx", 0xB: "gfx", 0xC: "gfx", 0x11: "gfx",  # *_GFX
    0xD: "no-me", 0xE: "no-me",  # *_NO_ME
    0xF: "me.all", 0x10: "me.all",  # *_ALL_ME
}


@dataclass(frozen=True)
class CiProfile:
    """A compute-instance profile inside a GI of ``gi_compute_slices``."""

    id: int  # NVML_COMPUTE_INSTANCE_PROFILE_* (enum and id coincide for CIs)
    slice_count: int
    instance_count: int
    placements: tuple[int, ...]
    is_default: bool = False  # the one "-C" / "-cci" without an id creates

    def name(self, gi: GiProfile) -> str:
        """``1c.3g.20gb`` for a partial CI, the GI's own name for a full one."""
        if self.slice_count == gi.compute_slices:
            return gi.name
        return f"{self.slice_count}c.{gi.name}"


@dataclass(frozen=True)
class GpuModel:
    id: str  # command-line id: "a100-40gb"
    display_name: str  # "NVIDIA A100 40GB"
    product_names: tuple[str, ...]  # names NVML reports, matched exactly or by glob
    pci_device_ids: tuple[str, ...]  # lowercase hex device ids ("20b0"), where known
    architecture: str  # "ampere" | "hopper" | "blackwell"
    memory_slices: int  # placement grid size (8; 4 on A30; 12 on RTX PRO 6000)
    compute_slices: int  # 7 (4 on A30, RTX PRO 6000)
    memory_mib: int
    sm_count: int
    max_instances: int
    min_driver: str
    mig_mode_persists_reboot: bool  # Ampere: InfoROM bit; Hopper+: lost on reboot
    mode_change_needs_reset: bool  # Ampere: driver resets the GPU; Hopper+: no reset
    gi_profiles: tuple[GiProfile, ...]
    ci_profiles: dict[int, tuple[CiProfile, ...]] = field(default_factory=dict)  # by GI g
    vgpu_board: str | None = None  # vGPU type board prefix, e.g. "A100", "H100XM"
    notes: tuple[str, ...] = ()
    sources: dict[str, str] = field(default_factory=dict)  # tag -> where the numbers come from
    # Every board prefix the model's boards use ("H100XM" SXM5, "H100" PCIe); vgpu_board first.
    vgpu_boards: tuple[str, ...] = ()
    uncertain: tuple[str, ...] = ()  # model-level fields not confirmed ("pci_device_ids")
    # MIG-backed vGPU types exist only on +gfx GPU instances (RTX PRO 6000), and their names
    # carry no GFX suffix: DC-1-24C runs on 1g.24gb+gfx, never on plain 1g.24gb.
    vgpu_needs_gfx: bool = False

    def profile(self, name: str) -> GiProfile | None:
        """The profile called ``name`` (or one of its aliases; "MIG " prefix allowed)."""
        name = name.removeprefix("MIG ")
        exact = next((p for p in self.gi_profiles if p.name == name), None)
        return exact or next((p for p in self.gi_profiles if name in p.aliases), None)

    def profile_by_id(self, profile_id: int) -> GiProfile | None:
        return next((p for p in self.gi_profiles if p.id == profile_id), None)

    def profile_by_enum(self, enum: int) -> GiProfile | None:
        return next((p for p in self.gi_profiles if p.enum == enum), None)

    def ci_profiles_for(self, gi: GiProfile) -> tuple[CiProfile, ...]:
        return self.ci_profiles.get(gi.compute_slices, ())
