"""Read-only host checks for ``aihow validate CONFIG --host URI``.

``PCIePassthroughValidator`` keeps the name of ai-how's validator and fixes what it got
wrong (docs/reference/ai-how-pcie-validator.md): exact driver names instead of
substrings, 3D controllers (class 0302) counted as GPUs, the IOMMU judged by a populated
``/sys/kernel/iommu_groups`` rather than the kernel command line, VFIO found when built
into the kernel, cloud workers checked as well as compute nodes, and a GPU partitioned
with MIG expected on ``nvidia`` rather than being reported as a "conflicting driver".

The checks never change the host. They read a ``HostState`` (NVML view, from
``planner.host.probe``) when there is one, and the sysfs tree under ``root`` plus
``proc_root`` (both from the host's Environment: ``/`` and ``/proc`` on a real host). A
GPU handed whole to a VM is bound to vfio-pci and invisible to NVML, so passthrough
devices are looked up in sysfs only. Every result is a ``CheckRow``; the caller prints
them and exits 1 on a fail.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from planner.config.vms import expand_vms
from planner.errors import AihowError
from planner.hardware.catalog import get_model, match_model
from planner.hardware.model import GiProfile, GpuModel
from planner.host.state import Gpu, HostState
from planner.host.sysfs import PCI_DEVICES, Sysfs
from planner.lang.pci import normalize_pci
from planner.lang.values import GpuSelector

if TYPE_CHECKING:
    from planner.config.models import ClusterConfig
    from planner.host.environment import Environment

Status = Literal["ok", "fail", "warn", "skip"]

NVIDIA_VENDOR = "0x10de"
# Drivers a device in a passed-through IOMMU group may have without stealing the group.
_GROUP_OK_DRIVERS = frozenset({"vfio-pci", "pcieport", "pci-stub"})
_BRIDGE_CLASS = "0x0604"


@dataclass(frozen=True)
class CheckRow:
    check: str  # what was checked: "iommu", "gpu-driver", "profile-fit", ...
    subject: str  # what it was checked on: a PCI address, a VM, "host"
    status: Status
    hint: str  # what was found, and on a fail what to do about it


# --- what the config asks of the host ------------------------------------------------


@dataclass(frozen=True)
class ManagedGpu:
    """A ``global.gpus`` entry with ``select``: aihow manages that GPU."""

    selector: GpuSelector
    mig: bool
    layout: tuple[tuple[str, int | None], ...]  # (GI profile name, pinned start)
    where: str  # "global.gpus[0]"


@dataclass(frozen=True)
class MigRequest:
    """A VM's ``gpu_config`` with ``mode: mig``."""

    vm: str
    profile: str | None  # GI profile name; None when only mig_uuid is given
    mig_uuid: str | None
    selector: GpuSelector | None
    placement: int | None


@dataclass(frozen=True)
class PassthroughDevice:
    """A whole PCI device given to a VM (``pcie_passthrough`` or ``gpu_config: passthrough``)."""

    vm: str
    pci: str | None  # None when only a selector is known (gpu_config.gpu by index/uuid)
    selector: GpuSelector | None
    device_type: str  # gpu | audio | network | storage | other


@dataclass(frozen=True)
class HostRequirements:
    gpus: tuple[ManagedGpu, ...] = ()
    mig: tuple[MigRequest, ...] = ()
    passthrough: tuple[PassthroughDevice, ...] = ()
    vgpu_backend: Literal["mdev", "vfio-vf"] = "mdev"
    vm_names: tuple[str, ...] = ()

    @property
    def needs_vfio(self) -> bool:
        return bool(self.mig or self.passthrough)


def requirements_from_config(cfg: ClusterConfig) -> HostRequirements:
    """What ``cfg`` needs of the host: managed GPUs, MIG slices, passthrough devices."""
    managed = []
    for i, entry in enumerate(cfg.global_.gpus):
        if entry.select is None:
            continue  # an ai-how inventory record; planning ignores it
        layout: tuple[tuple[str, int | None], ...] = ()
        if entry.layout is not None:
            layout = tuple((p.gi_name, start) for p, start in entry.layout.profiles())
        managed.append(
            ManagedGpu(entry.select, entry.mig == "enabled", layout, f"global.gpus[{i}]")
        )
    mig: list[MigRequest] = []
    passthrough: list[PassthroughDevice] = []
    vms = expand_vms(cfg)
    for vm in vms:
        for dev in vm.pcie_devices:
            passthrough.append(
                PassthroughDevice(vm.name, normalize_pci(dev.pci_address), None, dev.device_type)
            )
        gc = vm.gpu_config
        if gc is None:
            continue
        if gc.mode == "mig":
            profile = gc.mig_profile.gi_name if gc.mig_profile is not None else None
            mig.append(MigRequest(vm.name, profile, gc.mig_uuid, gc.gpu, gc.placement))
        elif gc.mode == "passthrough" and gc.gpu is not None:
            pci = gc.gpu.value if gc.gpu.kind.value == "pci" else None
            passthrough.append(PassthroughDevice(vm.name, pci, gc.gpu, "gpu"))
    return HostRequirements(
        gpus=tuple(managed),
        mig=tuple(mig),
        passthrough=tuple(passthrough),
        vgpu_backend=cfg.global_.host.vgpu_backend,
        vm_names=tuple(vm.name for vm in vms),
    )


# --- the validator ---------------------------------------------------------------------


# HostState -> (check, subject, status, hint) rows: the planner's fit check.
FitCheck = Callable[[HostState], Sequence[tuple[str, str, str, str]]]


class PCIePassthroughValidator:
    """Read-only checks of a host against what a config needs of it."""

    def __init__(
        self,
        host: HostState | None,
        root: str | os.PathLike[str] = "/",
        *,
        proc_root: str | os.PathLike[str] | None = None,
        nvml_error: str | None = None,
        fit: FitCheck | None = None,
    ) -> None:
        self.host = host
        self.fit = fit
        self.sysfs = Sysfs(root, writable=False)
        self.proc_root = Path(proc_root) if proc_root is not None else Path(root) / "proc"
        self.nvml_error = nvml_error  # why there is no HostState, for the hints

    # -- entry point --

    def validate(self, req: HostRequirements) -> list[CheckRow]:
        rows: list[CheckRow] = []
        if req.needs_vfio:
            rows += self.check_iommu()
            rows += self.check_vfio()
        mig_gpus = self._mig_gpus(req, rows)
        for gpu in mig_gpus:
            rows.append(self._check_driver(gpu.pci, "nvidia", "gpu-driver"))
        if req.mig:
            rows += self.check_vgpu(req, mig_gpus)
        if req.mig or req.gpus:
            rows += self.check_fit()
        passed = {d.pci for d in req.passthrough if d.pci}
        for dev in req.passthrough:
            rows += self.check_passthrough(dev, mig_gpus, passed)
        return rows

    # -- system --

    def check_iommu(self) -> list[CheckRow]:
        groups = self.sysfs.list("sys/kernel/iommu_groups")
        if groups:
            return [CheckRow("iommu", "host", "ok", f"{len(groups)} IOMMU groups")]
        cmdline = self._read_proc("cmdline") or ""
        if "intel_iommu=on" in cmdline.split() or "amd_iommu=on" in cmdline.split():
            hint = ("the kernel command line asks for the IOMMU but no groups exist: enable "
                    "VT-d/AMD-Vi in the firmware setup")
        else:
            hint = ("/sys/kernel/iommu_groups is empty: add intel_iommu=on (Intel; AMD is on by "
                    "default) to the kernel command line, enable VT-d/AMD-Vi in firmware, reboot")
        return [CheckRow("iommu", "host", "fail", hint)]

    def check_vfio(self) -> list[CheckRow]:
        modules = self._read_proc("modules") or ""
        loaded = {line.split(" ", 1)[0] for line in modules.splitlines() if line}
        rows = []
        # A built-in module has no /proc/modules line but still shows in /sys/module
        # (vfio_pci also as the driver directory).
        need = (
            ("vfio_pci", ("sys/module/vfio_pci", "sys/bus/pci/drivers/vfio-pci")),
            ("vfio_iommu_type1", ("sys/module/vfio_iommu_type1",)),
        )
        for name, paths in need:
            if name in loaded or any(self.sysfs.exists(p) for p in paths):
                rows.append(CheckRow("vfio", name, "ok", "loaded or built in"))
            else:
                rows.append(CheckRow("vfio", name, "fail", f"not loaded: modprobe {name} "
                                     f"(and list it in /etc/modules-load.d/ for boot)"))
        return rows

    # -- GPUs --

    def _resolve(self, selector: GpuSelector) -> list[Gpu]:
        if self.host is None:
            return []
        out = []
        for g in self.host.gpus:
            names = (g.name, g.model or "")
            if selector.matches(pci=g.pci, index=g.index, uuid=g.uuid, names=names):
                out.append(g)
        return out

    def _model(self, gpu: Gpu) -> GpuModel | None:
        if gpu.model:
            try:
                return get_model(gpu.model)
            except KeyError:
                pass
        return match_model(gpu.name, gpu.pci_device_id)

    def _mig_gpus(self, req: HostRequirements, rows: list[CheckRow]) -> list[Gpu]:
        """The GPUs the config partitions, each checked to exist and be MIG-capable."""
        wanted: dict[str, tuple[Gpu, str]] = {}
        selectors: list[tuple[GpuSelector, str]] = [
            (m.selector, m.where) for m in req.gpus if m.mig
        ]
        selectors += [(r.selector, r.vm) for r in req.mig if r.selector is not None]
        if self.host is None and (selectors or req.mig):
            rows.append(CheckRow("gpu-present", "host", "fail",
                                 f"cannot read GPUs through NVML: {self.nvml_error or 'no probe'}"
                                 "; is the NVIDIA driver loaded (nvidia-smi works)?"))
            return []
        for selector, who in selectors:
            found = self._resolve(selector)
            if not found:
                have = ", ".join(f"{g.index}={g.pci} ({g.name})" for g in self.host.gpus
                                 ) if self.host else ""
                rows.append(CheckRow("gpu-present", str(selector), "fail",
                                     f"{who}: no GPU matches {selector}; "
                                     f"NVML sees: {have or 'none'}"))
            for g in found:
                wanted.setdefault(g.pci, (g, who))
        if any(r.selector is None for r in req.mig) and self.host and not req.gpus:
            # Slices without a GPU named and no GPU managed: any MIG-capable GPU will do.
            for g in self.host.gpus:
                if g.mig_capable and self._model(g) is not None:
                    wanted.setdefault(g.pci, (g, "gpu_config without gpu"))
        if req.mig and not wanted and not any(r.check == "gpu-present" for r in rows):
            rows.append(CheckRow("gpu-present", "host", "fail",
                                 "VMs ask for MIG slices but no MIG-capable GPU is present or "
                                 "managed (global.gpus with select and mig: enabled)"))
        out = []
        for pci, (g, who) in sorted(wanted.items()):
            rows.append(CheckRow("gpu-present", pci, "ok", f"{g.name} (GPU {g.index})"))
            model = self._model(g)
            if not g.mig_capable or model is None:
                why = ("NVML reports no MIG support" if not g.mig_capable
                       else "not in the aihow GPU catalog")
                rows.append(CheckRow("mig-capable", pci, "fail",
                                     f"{g.name}: {why}; {who} needs MIG. Use a MIG-capable GPU "
                                     "(A30, A100, H100, H200, B200, ...) or gpu_config mode "
                                     "passthrough"))
                continue
            mode = "enabled" if g.mig_current else "disabled"
            extra = " (change pending: reset or reboot)" if g.mig_change_pending else ""
            rows.append(CheckRow("mig-capable", pci, "ok", f"{model.id}, MIG {mode}{extra}"))
            out.append(g)
        return out

    def _check_driver(self, pci: str, want: str, check: str, subject: str = "") -> CheckRow:
        subject = subject or pci
        if not self.sysfs.exists(f"{PCI_DEVICES}/{pci}"):
            return CheckRow(check, subject, "fail", f"no PCI device {pci} in /sys/bus/pci/devices")
        driver = self.sysfs.pci_driver(pci)
        if driver == want:
            return CheckRow(check, subject, "ok", f"bound to {driver}")
        found = f"bound to {driver}" if driver else "bound to no driver"
        if want == "nvidia":
            hint = (f"{found}; a GPU partitioned with MIG must stay on nvidia: "
                    f"driverctl unset-override {pci} (or echo {pci} > "
                    f"/sys/bus/pci/drivers/{driver or 'DRIVER'}/unbind and modprobe nvidia)")
        else:
            hint = (f"{found}; bind it to vfio-pci: driverctl set-override {pci} vfio-pci "
                    "(libvirt managed='yes' also detaches it at VM start)")
        return CheckRow(check, subject, "fail", hint)

    # -- whole-device passthrough --

    def check_passthrough(self, dev: PassthroughDevice, mig_gpus: Iterable[Gpu],
                          passed: frozenset[str] | set[str] = frozenset()) -> list[CheckRow]:
        pci = dev.pci
        if pci is None and dev.selector is not None:
            found = self._resolve(dev.selector)
            pci = found[0].pci if found else None
        if pci is None:
            return [CheckRow("passthrough-present", dev.vm, "fail",
                             f"{dev.selector}: no such GPU (NVML cannot see vfio-bound GPUs: "
                             "give gpu_config.gpu as a PCI address)")]
        subject = f"{dev.vm}:{pci}"
        if not self.sysfs.exists(f"{PCI_DEVICES}/{pci}"):
            return [CheckRow("passthrough-present", subject, "fail",
                             f"no PCI device {pci} in /sys/bus/pci/devices (lspci -s {pci})")]
        rows = [CheckRow("passthrough-present", subject, "ok",
                         f"class {self._pci_class(pci) or '?'}")]
        if any(g.pci == pci for g in mig_gpus):
            rows.append(CheckRow("passthrough-driver", subject, "fail",
                                 f"{pci} is also partitioned with MIG; a GPU is either split "
                                 "into slices on the host or given whole to one VM"))
            return rows
        rows.append(self._check_driver(pci, "vfio-pci", "passthrough-driver", subject))
        rows.append(self._check_group(pci, subject, passed))
        return rows

    def _pci_class(self, pci: str) -> str | None:
        text = self.sysfs.read_optional(f"{PCI_DEVICES}/{pci}/class")
        return text.strip().lower()[:6] if text else None  # "0x030200" -> "0x0302"

    def _check_group(self, pci: str, subject: str, passed: Iterable[str] = ()) -> CheckRow:
        """Every other device in the group is on a VFIO-safe driver, unbound, a bridge, or
        passed through too (its own row reports its driver)."""
        group = self.sysfs.link_name(f"{PCI_DEVICES}/{pci}/iommu_group")
        if group is None:
            return CheckRow("iommu-group", subject, "fail",
                            f"{pci} has no IOMMU group: the IOMMU is off")
        members = self.sysfs.list(f"sys/kernel/iommu_groups/{group}/devices")
        bad = []
        for other in members:
            if other == pci or other in passed:
                continue
            driver = self.sysfs.pci_driver(other)
            if driver is None or driver in _GROUP_OK_DRIVERS:
                continue
            if self._pci_class(other) == _BRIDGE_CLASS:
                continue
            bad.append(f"{other} ({driver})")
        if bad:
            return CheckRow("iommu-group", subject, "fail",
                            f"IOMMU group {group} also holds {', '.join(bad)}: bind "
                            "them to vfio-pci too (or pass them through as well)")
        return CheckRow("iommu-group", subject, "ok", f"group {group}: {len(members)} device(s)")

    # -- vGPU --

    def check_vgpu(self, req: HostRequirements, gpus: Sequence[Gpu]) -> list[CheckRow]:
        rows = []
        parents = self.host.vgpu_parents if self.host is not None else ()
        wanted = {r.profile for r in req.mig if r.profile is not None}
        for g in gpus:
            mine = [p for p in parents if p.pci == g.pci or p.physfn == g.pci]
            total = self.sysfs.read_optional(f"{PCI_DEVICES}/{g.pci}/sriov_totalvfs")
            numvfs = self.sysfs.read_optional(f"{PCI_DEVICES}/{g.pci}/sriov_numvfs")
            vfs_off = total is not None and int(total or 0) > 0 and int(numvfs or 0) == 0
            if vfs_off:
                # Not a failure: aihow apply enables the VFs itself (its plan has the step).
                rows.append(CheckRow("sriov-vfs", g.pci, "warn",
                                     f"SR-IOV VFs are off (0 of {(total or '').strip()}); aihow "
                                     "apply enables them, by hand: "
                                     f"/usr/lib/nvidia/sriov-manage -e {g.pci}"))
            elif total is not None and int(total or 0) > 0:
                rows.append(CheckRow("sriov-vfs", g.pci, "ok",
                                     f"{numvfs.strip() if numvfs else '?'} VFs enabled"))
            backends = {p.backend for p in mine}
            if not mine and vfs_off:
                rows.append(CheckRow("vgpu-types", g.pci, "warn",
                                     "vGPU types are listed on the VFs, which are off: checked "
                                     "again once they are on (without the NVIDIA vGPU manager "
                                     "none will appear)"))
                continue
            if not mine:
                rows.append(CheckRow("vgpu-types", g.pci, "fail",
                                     "no vGPU types (no mdev_supported_types or "
                                     "nvidia/creatable_vgpu_types on the GPU or its VFs): "
                                     "install the NVIDIA vGPU manager"))
                continue
            if req.vgpu_backend not in backends:
                other = sorted(backends)[0]
                rows.append(CheckRow("vgpu-types", g.pci, "fail",
                                     f"config asks for vgpu_backend {req.vgpu_backend} but this "
                                     f"host's vGPU manager uses {other}: set "
                                     f"global.host.vgpu_backend: {other}"))
                continue
            model = self._model(g)
            names = {t.name for p in mine for t in p.types}
            missing = []
            for profile in sorted(wanted):
                gi = model.profile(profile) if model else None
                if gi is None:
                    continue  # reported by profile-fit
                if not any(_type_matches(n, gi) for n in names):
                    missing.append(profile)
            if missing:
                rows.append(CheckRow("vgpu-types", g.pci, "fail",
                                     f"no MIG-backed vGPU type for {', '.join(missing)} "
                                     f"({req.vgpu_backend}); types offered: "
                                     f"{', '.join(sorted(names)) or 'none'}"))
            else:
                rows.append(CheckRow("vgpu-types", g.pci, "ok",
                                     f"{req.vgpu_backend}: {len(names)} type(s) on "
                                     f"{len(mine)} parent(s)"))
        return rows

    # -- fit and MIG UUIDs: the planner's own resolve --

    def check_fit(self) -> list[CheckRow]:
        """Whether the slices fit and pinned MIG UUIDs are free, as ``aihow plan`` decides
        it: the rows come from the planner (``fit``, given by the caller, since the host
        layer does not import the planner), never from a second implementation here."""
        if self.fit is None or self.host is None:
            return []
        return [CheckRow(check, subject, status, hint)  # type: ignore[arg-type]
                for check, subject, status, hint in self.fit(self.host)]

    # -- helpers --

    def _read_proc(self, name: str) -> str | None:
        try:
            return (self.proc_root / name).read_text()
        except OSError:
            return None


_TYPE_RE = re.compile(r"-(\d+)-(\d+)C(ME|NOME|MEALL|GFX)?$")
_EXT = {"": "", "+me": "ME", "-me": "NOME", "+me.all": "MEALL", "+gfx": "GFX"}


def _type_matches(type_name: str, gi: GiProfile) -> bool:
    """``NVIDIA A100-3-20C`` / ``GRID A100-3-20C`` is the vGPU type of ``3g.20gb``."""
    if gi.vgpu_type and type_name.split()[-1] == gi.vgpu_type:
        return True
    m = _TYPE_RE.search(type_name)
    pm = re.match(r"^(\d+)g\.(\d+)gb(.*)$", gi.name)
    if not m or not pm:
        return False
    return (m[1], m[2], m[3] or "") == (pm[1], pm[2], _EXT.get(pm[3], "?"))


def render_table(rows: Sequence[CheckRow]) -> str:
    """The rows as one aligned text table: CHECK, SUBJECT, STATUS, HINT."""
    head = ("CHECK", "SUBJECT", "STATUS", "HINT")
    cells = [head] + [(r.check, r.subject, r.status.upper(), r.hint) for r in rows]
    w = [max(len(c[i]) for c in cells) for i in range(3)]
    return "\n".join(f"{a:<{w[0]}}  {b:<{w[1]}}  {c:<{w[2]}}  {d}".rstrip()
                     for a, b, c, d in cells)


def validate_host(cfg: ClusterConfig, env: Environment, **kwargs: Any) -> list[CheckRow]:
    """Probe the host read-only and check it against ``cfg``. ``fit`` (HostState -> rows)
    supplies the fit and MIG UUID rows: the CLI passes the planner's."""
    root = env.root()
    host: HostState | None = None
    nvml_error = None
    try:
        host = env.probe()
    except AihowError as err:
        nvml_error = str(err)
    kwargs.setdefault("proc_root", env.proc_root())
    validator = PCIePassthroughValidator(host, root, nvml_error=nvml_error, **kwargs)
    return validator.validate(requirements_from_config(cfg))
