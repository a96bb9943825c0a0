"""A simulated ``nvidia-smi`` over the simulated host, driven through the fake NVML.

``DIR/bin/nvidia-smi`` runs ``python -m planner.sim.nvidia_smi --root DIR ARGS...``. It goes
through ``FakeNvml`` (as the real tool goes through NVML), so its view and NVML's always
agree and NVML faults hit it too. Supported:

    nvidia-smi -L | -q [-i ID] | [-i ID] -mig 0|1 | [-i ID] -r/--gpu-reset
    nvidia-smi mig [-i ID] -lgip | -lgipp | -lgi | -cgi LIST [-C] | -lcip [-gi IDS]
                   | -cci [LIST] [-gi IDS] | -lci [-gi IDS] | -dci [-ci IDS] [-gi IDS]
                   | -dgi [-gi IDS]

Texts, tables and exit codes follow real output (table layout and row order:
docs/reference/vgpu-on-mig.md section 8). Exit codes
mirror the NVML return code of a failure (the man page's 2 invalid argument, 3 not
supported, 6 not found; "In use" is 19, Insufficient Resources 23 which is UNCERTAIN), a
failed reset exits 255. UNCERTAIN texts: the message for an unknown profile on -cgi.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from planner.errors import AihowError
from planner.hardware.catalog import match_model
from planner.sim import driver, faults, latency
from planner.sim.codes import DriverError, Nvml, error_string
from planner.sim.fake_nvml import FakeNvml
from planner.sim.nvml_sessions import other_sessions_open
from planner.sim.state import SimStore

INVALID_ARGS = "Invalid combination of input arguments. Please run 'nvidia-smi -h' for help."
NO_MIG = "No MIG-enabled devices found."

_LONG = {
    "--list-gpus": "-L",
    "--query": "-q",
    "--id": "-i",
    "--multi-instance-gpu": "-mig",
    "--gpu-reset": "-r",
    "--list-gpu-instance-profiles": "-lgip",
    "--list-gpu-instance-possible-placements": "-lgipp",
    "--list-gpu-instances": "-lgi",
    "--create-gpu-instance": "-cgi",
    "--default-compute-instance": "-C",
    "--list-compute-instance-profiles": "-lcip",
    "--create-compute-instance": "-cci",
    "--list-compute-instances": "-lci",
    "--destroy-compute-instance": "-dci",
    "--destroy-gpu-instance": "-dgi",
    "--gpu-instance-id": "-gi",
    "--compute-instance-id": "-ci",
}
_TAKES_VALUE = {"-i", "-mig", "-cgi", "-gi", "-ci"}
_OPTIONAL_VALUE = {"-cci"}


class Usage(Exception):
    pass


@dataclass
class Out:
    lines: list[str] = field(default_factory=list)
    code: int = 0

    def __call__(self, text: str = "") -> None:
        self.lines.append(text)


def bus_id(pci: str) -> str:
    """nvidia-smi's form of a PCI address: 00000000:17:00.0."""
    domain, rest = pci.split(":", 1)
    return f"{int(domain, 16):08X}:{rest.upper()}"


def gib(mib: int) -> str:
    return f"{mib / 1024:.2f}"


class Smi:
    def __init__(self, root: str) -> None:
        self.root = root
        self.nvml = FakeNvml(root)
        self.nv = self.nvml
        self.nvml.nvmlInit()

    # -- GPU selection
    def gpus(self) -> list[tuple[int, Any]]:
        n = self.nv.nvmlDeviceGetCount()
        return [(i, self.nv.nvmlDeviceGetHandleByIndex(i)) for i in range(n)]

    def select(self, ids: str | None) -> list[tuple[int, Any]]:
        all_gpus = self.gpus()
        if ids is None:
            return all_gpus
        chosen = []
        for token in ids.split(","):
            token = token.strip()
            match = None
            for i, h in all_gpus:
                pci = self.nv.nvmlDeviceGetPciInfo(h).busId
                if (
                    token == str(i)
                    or token.upper() in (pci, pci[4:], pci[9:])
                    or token == self.uuid(h)
                ):
                    match = (i, h)
            if match is None:
                raise LookupError(token)
            chosen.append(match)
        return chosen

    def process_name(self, pid: int) -> str:
        """As the real tool, from the process table (the simulated host's DIR/proc)."""
        try:
            raw = (Path(self.root) / "proc" / str(pid) / "cmdline").read_bytes()
        except OSError:
            return "[Not Found]"
        return raw.split(b"\0", 1)[0].decode(errors="replace")

    def uuid(self, h: Any) -> str:
        return str(self.nv.nvmlDeviceGetUUID(h))

    def pci(self, h: Any) -> str:
        return str(self.nv.nvmlDeviceGetPciInfo(h).busId)

    def mig_mode(self, h: Any) -> tuple[int, int] | None:
        try:
            cur, pend = self.nv.nvmlDeviceGetMigMode(h)
        except self.nv.NVMLError_NotSupported:
            return None
        return cur, pend

    def mig_enabled(self, sel: list[tuple[int, Any]]) -> list[tuple[int, Any]]:
        return [(i, h) for i, h in sel if (self.mig_mode(h) or (0, 0))[0] == 1]

    # -- NVML reads
    def gi_profiles(self, h: Any) -> list[Any]:
        out = []
        for enum in range(self.nv.NVML_GPU_INSTANCE_PROFILE_COUNT):
            try:
                out.append(self.nv.nvmlDeviceGetGpuInstanceProfileInfo(h, enum))
            except (self.nv.NVMLError_NotSupported, self.nv.NVMLError_InvalidArgument):
                continue  # a profile this GPU lacks, anywhere in the range
        # Grouped by slice count; inside a group the order real output shows, which follows
        # neither the enum nor the id (RTX PRO 6000: 14, 21, 47, 65, 67), so it is data: the
        # catalog lists each model's profiles in that order. Unknown ones go last by memory.
        order = self._smi_order(h)
        return sorted(out, key=lambda p: (p.sliceCount, order.get(int(p.id), len(order)),
                                          p.memorySizeMB))

    def _smi_order(self, h: Any) -> dict[int, int]:
        pci = self.nv.nvmlDeviceGetPciInfo(h)
        device_id = f"{(int(pci.pciDeviceId) >> 16) & 0xFFFF:04x}"
        model = match_model(str(self.nv.nvmlDeviceGetName(h)), device_id)
        return {p.id: k for k, p in enumerate(model.gi_profiles)} if model else {}

    def gis(self, h: Any) -> list[tuple[Any, Any, Any]]:
        """(handle, info, profile) of every GI, in -lgi order: grouped by profile in -lgip
        order, GI id ascending inside a profile (as a real RTX PRO 6000 prints them)."""
        out = []
        for prof in self.gi_profiles(h):
            arr = (self.nv.c_nvmlGpuInstance_t * prof.instanceCount)()
            count = self.nv.c_uint()
            self.nv.nvmlDeviceGetGpuInstances(h, prof.id, arr, self.nv.byref(count))
            rows = [(arr[k], self.nv.nvmlGpuInstanceGetInfo(arr[k])) for k in range(count.value)]
            out += [(g, info, prof) for g, info in sorted(rows, key=lambda r: r[1].id)]
        return out

    def gi_placements(self, h: Any, profile_id: int) -> list[Any]:
        """The possible placements (start, size structs) of a GI profile."""
        placements = (self.nv.c_nvmlGpuInstancePlacement_t * 16)()
        count = self.nv.c_uint()
        self.nv.nvmlDeviceGetGpuInstancePossiblePlacements(
            h, profile_id, placements, self.nv.byref(count)
        )
        return [placements[k] for k in range(count.value)]

    def ci_profiles(self, gi: Any) -> list[Any]:
        out = []
        for enum in range(self.nv.NVML_COMPUTE_INSTANCE_PROFILE_COUNT):
            try:
                out.append(
                    self.nv.nvmlGpuInstanceGetComputeInstanceProfileInfo(
                        gi, enum, self.nv.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED
                    )
                )
            except (self.nv.NVMLError_NotSupported, self.nv.NVMLError_InvalidArgument):
                continue
        return out

    def cis(self, gi: Any) -> list[tuple[Any, Any, Any]]:
        out = []
        for prof in self.ci_profiles(gi):
            arr = (self.nv.c_nvmlComputeInstance_t * prof.instanceCount)()
            count = self.nv.c_uint()
            self.nv.nvmlGpuInstanceGetComputeInstances(gi, prof.id, arr, self.nv.byref(count))
            for k in range(count.value):
                out.append((arr[k], self.nv.nvmlComputeInstanceGetInfo(arr[k]), prof))
        return sorted(out, key=lambda r: r[1].id)

    def default_ci_profile(self, gi: Any) -> Any:
        # The default ("*") CI profile is the one that spans the whole GI.
        profs = self.ci_profiles(gi)
        return max(profs, key=lambda p: p.sliceCount)


def _name(info: Any) -> str:
    raw = info.name
    return raw.decode() if isinstance(raw, bytes) else str(raw)


# ---------------------------------------------------------------- top-level commands


def cmd_list(smi: Smi, out: Out) -> None:
    for i, h in smi.gpus():
        out(f"GPU {i}: {smi.nv.nvmlDeviceGetName(h)} (UUID: {smi.uuid(h)})")
        mode = smi.mig_mode(h)
        if not mode or not mode[0]:
            continue
        for k in range(smi.nv.nvmlDeviceGetMaxMigDeviceCount(h)):
            try:
                m = smi.nv.nvmlDeviceGetMigDeviceHandleByIndex(h, k)
            except smi.nv.NVMLError_NotFound:
                break
            name = str(smi.nv.nvmlDeviceGetName(m)).split(" MIG ", 1)[-1]
            # padded to 16; a longer name keeps one blank before "Device" (ASSUMED: no real
            # -L output with a name over 16 characters was found)
            out(f"  {'MIG ' + name:<15} Device {k:>2}: (UUID: {smi.uuid(m)})")


def cmd_query(smi: Smi, out: Out, sel: list[tuple[int, Any]]) -> None:
    out()
    out("==============NVSMI LOG==============")
    out()
    out(f"{'Driver Version':<42}: {smi.nv.nvmlSystemGetDriverVersion()}")
    out()
    out(f"{'Attached GPUs':<42}: {len(smi.gpus())}")
    for _, h in sel:
        out(f"GPU {smi.pci(h)}")
        out(f"    {'Product Name':<38}: {smi.nv.nvmlDeviceGetName(h)}")
        out(f"    {'GPU UUID':<38}: {smi.uuid(h)}")
        _query_processes(smi, out, h)
        mode = smi.mig_mode(h)
        out("    MIG Mode")
        names = {0: "Disabled", 1: "Enabled"}
        out(f"        {'Current':<34}: {names[mode[0]] if mode else 'N/A'}")
        out(f"        {'Pending':<34}: {names[mode[1]] if mode else 'N/A'}")
        if not mode or not mode[0]:
            out(f"    {'MIG Devices':<38}: None")
            continue
        out("    MIG Devices")
        for k in range(smi.nv.nvmlDeviceGetMaxMigDeviceCount(h)):
            try:
                m = smi.nv.nvmlDeviceGetMigDeviceHandleByIndex(h, k)
            except smi.nv.NVMLError_NotFound:
                break
            out("        MIG Device")
            out(f"            {'Index':<30}: {k}")
            out(f"            {'GPU Instance ID':<30}: {smi.nv.nvmlDeviceGetGpuInstanceId(m)}")
            out(
                f"            {'Compute Instance ID':<30}: "
                f"{smi.nv.nvmlDeviceGetComputeInstanceId(m)}"
            )
            out(f"            {'MIG Device UUID':<30}: {smi.uuid(m)}")


def _query_processes(smi: Smi, out: Out, h: Any) -> None:
    procs = smi.nv.nvmlDeviceGetComputeRunningProcesses(h)
    if not procs:
        out(f"    {'Processes':<38}: None")
        return
    out("    Processes")
    for p in procs:
        gi = "N/A" if p.gpuInstanceId == 0xFFFFFFFF else str(p.gpuInstanceId)
        ci = "N/A" if p.computeInstanceId == 0xFFFFFFFF else str(p.computeInstanceId)
        out(f"        {'GPU instance ID':<34}: {gi}")
        out(f"        {'Compute instance ID':<34}: {ci}")
        out(f"        {'Process ID':<34}: {p.pid}")
        out(f"            {'Type':<30}: C")
        out(f"            {'Name':<30}: {smi.process_name(p.pid)}")
        out(f"            {'Used GPU Memory':<30}: {(p.usedGpuMemory or 0) // (1024 * 1024)} MiB")


def cmd_mig_mode(smi: Smi, out: Out, sel: list[tuple[int, Any]], value: str) -> None:
    if value not in ("0", "1"):
        raise Usage(value)
    enable = int(value)
    word = "enable" if enable else "disable"
    for _, h in sel:
        bid = smi.pci(h)
        try:
            status = smi.nv.nvmlDeviceSetMigMode(h, enable)
        except smi.nv.NVMLError as exc:
            out(f"Unable to {word} MIG Mode for GPU {bid}: {exc}")
            out.code = out.code or int(exc.value)
            continue
        if status == Nvml.SUCCESS:
            out(f"{'Enabled' if enable else 'Disabled'} MIG Mode for GPU {bid}")
        else:
            out(
                f"Warning: MIG mode is in pending {word} state for GPU {bid}:{error_string(status)}"
            )
            out(
                f"{bid} is currently being used by one or more other processes (e.g. CUDA "
                "application or a monitoring application such as another instance of "
                "nvidia-smi). Please first kill all processes using the device and retry the "
                "command or reboot the system to make MIG mode effective."
            )
    out("All done.")


def cmd_reset(smi: Smi, out: Out, sel: list[tuple[int, Any]]) -> None:
    """Reset the selected GPUs in one command. nvidia-smi(1): no other NVML client may be
    open; on an NVSwitch board an Ampere GPU resets alone only while Fabric Manager runs,
    otherwise all its NVLink peers must be in the same command (vgpu-on-mig.md section 6)."""
    store = SimStore(smi.root)
    failed: list[tuple[str, str]] = []
    done: list[str] = []
    bids = [smi.pci(h) for _, h in sel]
    smi.nvml.nvmlShutdown()  # our own session is not a holder of what we reset
    try:
        busy = other_sessions_open(smi.root)
    finally:
        smi.nvml.nvmlInit()  # (after the check: NVML comes back for the output)
    chosen = {bid[4:].lower() for bid in bids}
    for bid in bids:
        pci = bid[4:].lower()
        with latency.lasting(smi.root, "nvidia-smi.gpu-reset"), \
                store.transaction() as state:
            fault = faults.trip(state, "nvidia-smi.gpu-reset")
            gpu = state.gpu(pci)
            assert gpu is not None
            missing = driver.reset_peers_missing(state, gpu, chosen)
            try:
                if fault is not None:
                    raise DriverError(faults.nvml_code(fault))
                if missing:
                    peers = ", ".join(f"00000000:{p[5:].upper()}" for p in missing)
                    failed.append((bid, "Fabric Manager is not running, so its NVLink peers "
                                        f"must be reset with it: {peers}"))
                    continue
                if busy:
                    raise DriverError(Nvml.IN_USE)
                driver.reset_gpu(state, gpu)
            except DriverError as exc:
                failed.append((bid, error_string(exc.code)))
                continue
        done.append(bid)
    for bid in done:
        out(f"GPU {bid} was successfully reset.")
    if failed:
        out("The following GPUs could not be reset:")
        for bid, why in failed:
            out(f"  GPU {bid}: {why}")
        out()
        n = len(failed)
        out(
            f"{n} device{' is' if n == 1 else 's are'} currently being used by one or more other "
            "processes (e.g., Fabric Manager, CUDA application, graphics application such as an "
            "X server, or a monitoring application such as another instance of nvidia-smi). "
            f"Please first kill all processes using {'this device' if n == 1 else 'these devices'}"
            " and all compute applications running in the system."
        )
        out.code = 255
        return
    out("All done.")


# ---------------------------------------------------------------- mig subcommands

# -lgip and -lgi in the wider layout that drivers 580 and 610 print (a real RTX PRO 6000 on
# 610.43.02, an H100 on 580): the name column holds 18 characters, so "MIG 1g.24gb+me.all"
# keeps two blanks before its ID. Older drivers print narrower tables (14 or 16 characters
# for the name); the simulator prints this layout for every driver version (ASSUMED).
LGIP_TOP = [
    "+-------------------------------------------------------------------------------+",
    "| GPU instance profiles:                                                        |",
    "| GPU   Name               ID    Instances   Memory     P2P    SM    DEC   ENC  |",
    "|                                Free/Total   GiB              CE    JPEG  OFA  |",
    "|===============================================================================|",
]
LGIP_SEP = "+-------------------------------------------------------------------------------+"
LGI_TOP = [
    "+---------------------------------------------------------+",
    "| GPU instances:                                          |",
    "| GPU   Name               Profile  Instance   Placement  |",
    "|                            ID       ID       Start:Size |",
    "|=========================================================|",
]
LGI_SEP = "+---------------------------------------------------------+"
LCI_TOP = [
    "+--------------------------------------------------------------------+",
    "| Compute instances:                                                 |",
    "| GPU     GPU       Name             Profile   Instance   Placement  |",
    "|       Instance                       ID        ID       Start:Size |",
    "|         ID                                                         |",
    "|====================================================================|",
]
LCI_SEP = "+--------------------------------------------------------------------+"
LCIP_TOP = [
    "+--------------------------------------------------------------------------------------+",
    "| Compute instance profiles:                                                           |",
    "| GPU     GPU       Name             Profile  Instances   Exclusive       Shared       |",
    "|       Instance                       ID     Free/Total     SM       DEC   ENC   OFA  |",
    "|         ID                                                          CE    JPEG       |",
    "|======================================================================================|",
]
LCIP_SEP = (
    "+--------------------------------------------------------------------------------------+"
)


def lgip_rows(i: int, p: Any, free: int) -> list[str]:
    ft = f"{free}/{p.instanceCount}"
    p2p = "Yes" if p.isP2pSupported else "No"
    # the SM count is left-aligned ("46 ", "188"), the other numbers right-aligned
    first = (
        f"|{i:>4}  {_name(p):<18}{p.id:>4}{ft:>8}        {gib(p.memorySizeMB):<11}"
        f"{p2p:<7}{p.multiprocessorCount:<3}{p.decoderCount:>5}{p.encoderCount:>6}   |"
    )
    second = "|" + " " * 57 + f"{p.copyEngineCount:>7}{p.jpegCount:>6}{p.ofaCount:>6}   |"
    return [first, second, LGIP_SEP]


def lgi_row(i: int, name: str, profile_id: int, gi_id: int, start: int, size: int) -> str:
    return f"|{i:>4}  {name:<20}{profile_id:>4}{gi_id:>9}{f'{start}:{size}':>13}     |"


def lci_row(
    i: int, gi_id: int, name: str, profile_id: int, ci_id: int, start: int, size: int
) -> str:
    return (
        f"|{i:>4}{gi_id:>7}       {name:<17}{profile_id:>5}{ci_id:>10}{f'{start}:{size}':>13}     |"
    )


def lcip_rows(i: int, gi_id: int, p: Any, free: int, default: bool, gp: Any) -> list[str]:
    ft = f"{free}/{p.instanceCount}"
    first = (
        f"|{i:>4}{gi_id:>7}       {_name(p):<17}{p.id:>5}{'*' if default else ' '}{ft:>8}"
        f"{p.multiprocessorCount:>13}{p.sharedDecoderCount:>9}{p.sharedEncoderCount:>6}"
        f"{p.sharedOfaCount:>6}   |"
    )
    second = "|" + " " * 62 + f"{p.sharedCopyEngineCount:>9}{p.sharedJpegCount:>6}" + " " * 9 + "|"
    return [first, second, LCIP_SEP]


def _ids(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise Usage(text) from None


def _none_found(out: Out, what: str) -> None:
    """nvidia-smi's answer when there is nothing to list or change: exit NOT_FOUND (6)."""
    out(f"No {what} found.")
    out.code = Nvml.NOT_FOUND


def _table(out: Out, top: list[str], sep: str, rows: list[str], what: str) -> None:
    """A listing: the header, then each row under a separator; nothing found without rows."""
    if not rows:
        _none_found(out, what)
        return
    out.lines += top
    for r in rows:
        out.lines += [r, sep]


def mig_lgip(smi: Smi, out: Out, sel: list[tuple[int, Any]]) -> None:
    out.lines += LGIP_TOP
    for i, h in sel:
        for p in smi.gi_profiles(h):
            free = smi.nv.nvmlDeviceGetGpuInstanceRemainingCapacity(h, p.id)
            out.lines += lgip_rows(i, p, free)


def mig_lgipp(smi: Smi, out: Out, sel: list[tuple[int, Any]]) -> None:
    for i, h in sel:
        for p in smi.gi_profiles(h):
            placements = smi.gi_placements(h, p.id)
            starts = ",".join(str(pl.start) for pl in placements)
            size = placements[0].size if placements else 0
            label = "Placements:" if len(placements) > 1 else "Placement :"
            out(f"GPU {i:>2} Profile ID {p.id:>2} {label} {{{starts}}}:{size}")


def mig_lgi(smi: Smi, out: Out, sel: list[tuple[int, Any]]) -> None:
    rows = []
    for i, h in sel:
        for _, info, prof in smi.gis(h):
            rows.append(
                lgi_row(
                    i,
                    _name(prof),
                    info.profileId,
                    info.id,
                    info.placement.start,
                    info.placement.size,
                )
            )
    _table(out, LGI_TOP, LGI_SEP, rows, "GPU instances")


def _profile_token(smi: Smi, h: Any, token: str) -> tuple[Any, int | None]:
    text, _, start = token.strip().partition(":")
    want = text.strip()
    for p in smi.gi_profiles(h):
        name = _name(p)
        if want in (str(p.id), name, name.removeprefix("MIG ")):
            if start:
                try:
                    return p, int(start)
                except ValueError:
                    raise Usage(token) from None
            return p, None
    raise KeyError(token)


def mig_cgi(smi: Smi, out: Out, sel: list[tuple[int, Any]], items: str, with_ci: bool) -> None:
    nv = smi.nv
    for i, h in sel:
        for token in [t for t in items.split(",") if t.strip()]:
            try:
                prof, start = _profile_token(smi, h, token)
            except KeyError:
                out(f"Unable to find GPU instance profile {token.strip()} on GPU {i:>2}")
                out(f"Failed to create GPU instances: {error_string(Nvml.INVALID_ARGUMENT)}")
                out.code = Nvml.INVALID_ARGUMENT
                return
            try:
                if start is None:
                    gi = nv.nvmlDeviceCreateGpuInstance(h, prof.id)
                else:
                    placement = nv.c_nvmlGpuInstancePlacement_t()
                    placement.start = start
                    placements = smi.gi_placements(h, prof.id)
                    placement.size = int(placements[0].size) if placements else 0
                    gi = nv.nvmlDeviceCreateGpuInstanceWithPlacement(
                        h, prof.id, nv.byref(placement)
                    )
            except nv.NVMLError as exc:
                out(
                    f"Unable to create a GPU instance on GPU {i:>2} using profile "
                    f"{token.strip()}: {exc}"
                )
                out(f"Failed to create GPU instances: {exc}")
                out.code = int(exc.value)
                return
            info = nv.nvmlGpuInstanceGetInfo(gi)
            out(
                f"Successfully created GPU instance ID {info.id:>2} on GPU {i:>2} using profile "
                f"{_name(prof)} (ID {prof.id:>2})"
            )
            if with_ci and not _create_ci(smi, out, i, gi, info.id, None):
                return


def _create_ci(smi: Smi, out: Out, i: int, gi: Any, gi_id: int, token: str | None) -> bool:
    nv = smi.nv
    profs = smi.ci_profiles(gi)
    if token is None:
        prof = smi.default_ci_profile(gi)
    else:
        want = token.strip()
        prof = next(
            (p for p in profs if want in (str(p.id), _name(p), _name(p).removeprefix("MIG "))),
            None,
        )
        if prof is None:
            out(
                f"Unable to find compute instance profile {want} on GPU {i:>2} "
                f"GPU instance ID {gi_id:>2}"
            )
            out(f"Failed to create compute instances: {error_string(Nvml.INVALID_ARGUMENT)}")
            out.code = Nvml.INVALID_ARGUMENT
            return False
    try:
        ci = nv.nvmlGpuInstanceCreateComputeInstance(gi, prof.id)
    except nv.NVMLError as exc:
        out(
            f"Unable to create a compute instance on GPU {i:>2} GPU instance ID {gi_id:>2} "
            f"using profile {token.strip() if token else prof.id}: {exc}"
        )
        out(f"Failed to create compute instances: {exc}")
        out.code = int(exc.value)
        return False
    info = nv.nvmlComputeInstanceGetInfo(ci)
    out(
        f"Successfully created compute instance ID {info.id:>2} on GPU {i:>2} GPU instance ID "
        f"{gi_id:>2} using profile {_name(prof)} (ID {prof.id:>2})"
    )
    return True


def _target_gis(
    smi: Smi, sel: list[tuple[int, Any]], gi_ids: list[int] | None
) -> list[tuple[int, Any, Any]]:
    out = []
    for i, h in sel:
        for g, info, _prof in smi.gis(h):
            if gi_ids is None or info.id in gi_ids:
                out.append((i, g, info))
    return out


def mig_cci(
    smi: Smi, out: Out, sel: list[tuple[int, Any]], items: str | None, gi_ids: list[int] | None
) -> None:
    targets = _target_gis(smi, sel, gi_ids)
    if not targets:
        _none_found(out, "GPU instances")
        return
    tokens: list[str | None] = [t for t in items.split(",") if t.strip()] if items else [None]
    for i, gi, info in targets:
        for token in tokens:
            if not _create_ci(smi, out, i, gi, info.id, token):
                return


def mig_lci(smi: Smi, out: Out, sel: list[tuple[int, Any]], gi_ids: list[int] | None) -> None:
    rows = []
    for i, gi, gi_info in _target_gis(smi, sel, gi_ids):
        gp_name = None
        for _, info, prof in smi.cis(gi):
            gp_name = _name(prof)
            rows.append(
                lci_row(
                    i,
                    gi_info.id,
                    gp_name,
                    info.profileId,
                    info.id,
                    info.placement.start,
                    info.placement.size,
                )
            )
    _table(out, LCI_TOP, LCI_SEP, rows, "compute instances")


def mig_lcip(smi: Smi, out: Out, sel: list[tuple[int, Any]], gi_ids: list[int] | None) -> None:
    targets = _target_gis(smi, sel, gi_ids)
    if not targets:
        _none_found(out, "GPU instances")
        return
    out.lines += LCIP_TOP
    for i, gi, info in targets:
        default = smi.default_ci_profile(gi)
        for p in smi.ci_profiles(gi):
            free = smi.nv.nvmlGpuInstanceGetComputeInstanceRemainingCapacity(gi, p.id)
            out.lines += lcip_rows(i, info.id, p, free, p.id == default.id, None)


def mig_dci(
    smi: Smi,
    out: Out,
    sel: list[tuple[int, Any]],
    ci_ids: list[int] | None,
    gi_ids: list[int] | None,
) -> None:
    found = False
    errors: list[str] = []
    for i, gi, info in _target_gis(smi, sel, gi_ids):
        for ci, ci_info, _ in smi.cis(gi):
            if ci_ids is not None and ci_info.id not in ci_ids:
                continue
            found = True
            try:
                smi.nv.nvmlComputeInstanceDestroy(ci)
            except smi.nv.NVMLError as exc:
                out(
                    f"Unable to destroy compute instance ID {ci_info.id:>2} from GPU {i:>2} "
                    f"GPU instance ID {info.id:>2}: {exc}"
                )
                errors.append(str(exc))
                out.code = out.code or int(exc.value)
                continue
            out(
                f"Successfully destroyed compute instance ID {ci_info.id:>2} from GPU {i:>2} "
                f"GPU instance ID {info.id:>2}"
            )
    if not found:
        _none_found(out, "compute instances")
    elif errors:
        out(f"Failed to destroy compute instances: {errors[0]}")


def mig_dgi(smi: Smi, out: Out, sel: list[tuple[int, Any]], gi_ids: list[int] | None) -> None:
    targets = _target_gis(smi, sel, gi_ids)
    if not targets:
        _none_found(out, "GPU instances")
        return
    errors: list[str] = []
    for i, gi, info in targets:
        try:
            smi.nv.nvmlGpuInstanceDestroy(gi)
        except smi.nv.NVMLError as exc:
            out(f"Unable to destroy GPU instance ID {info.id:>2} from GPU {i:>2}: {exc}")
            errors.append(str(exc))
            out.code = out.code or int(exc.value)
            continue
        out(f"Successfully destroyed GPU instance ID {info.id:>2} from GPU {i:>2}")
    if errors:
        out(f"Failed to destroy GPU instances: {errors[0]}")


# ---------------------------------------------------------------- argument handling


def parse(args: Sequence[str]) -> tuple[bool, dict[str, str | None]]:
    """(is ``mig`` subcommand, {flag: value}) with long options mapped to short ones."""
    items = list(args)
    is_mig = bool(items) and items[0] == "mig"
    if is_mig:
        items = items[1:]
    opts: dict[str, str | None] = {}
    k = 0
    while k < len(items):
        raw = items[k]
        name, eq, inline = raw.partition("=")
        flag = _LONG.get(name, name)
        if not flag.startswith("-"):
            raise Usage(raw)
        value: str | None = None
        if eq:
            value = inline
        elif flag in _TAKES_VALUE:
            k += 1
            if k >= len(items):
                raise Usage(raw)
            value = items[k]
        elif flag in _OPTIONAL_VALUE and k + 1 < len(items) and not items[k + 1].startswith("-"):
            k += 1
            value = items[k]
        if flag in opts:
            raise Usage(raw)
        opts[flag] = value
        k += 1
    return is_mig, opts


MIG_ACTIONS = ("-lgip", "-lgipp", "-lgi", "-cgi", "-lcip", "-cci", "-lci", "-dci", "-dgi")
MIG_ALLOWED = {*MIG_ACTIONS, "-i", "-gi", "-ci", "-C"}


def run(root: str, args: Sequence[str]) -> Out:
    out = Out()
    try:
        is_mig, opts = parse(args)
    except Usage:
        out(INVALID_ARGS)
        out.code = 2
        return out
    try:
        smi = Smi(root)
    except AihowError as exc:
        out(
            f"NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. ({exc})"
        )
        out.code = 9
        return out
    except Exception as exc:  # NVMLError from an injected nvmlInit fault
        value = getattr(exc, "value", None)
        if value is None:
            raise
        out(
            "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
            "Make sure that the latest NVIDIA driver is installed and running."
        )
        out.code = int(value)
        return out
    try:
        _dispatch(smi, out, is_mig, opts)
    except Usage:
        out.lines = [INVALID_ARGS]
        out.code = 2
    except LookupError:
        out.lines = ["No devices were found"]
        out.code = Nvml.NOT_FOUND
    except smi.nv.NVMLError as exc:
        out(f"Failed: {exc}")
        out.code = int(exc.value)
    finally:
        smi.nv.nvmlShutdown()
    return out


def _dispatch(smi: Smi, out: Out, is_mig: bool, opts: dict[str, str | None]) -> None:
    if not is_mig:
        if "-L" in opts and len(opts) == 1:
            cmd_list(smi, out)
        elif "-q" in opts and set(opts) <= {"-q", "-i"}:
            cmd_query(smi, out, smi.select(opts.get("-i")))
        elif "-mig" in opts and set(opts) <= {"-mig", "-i"}:
            cmd_mig_mode(smi, out, smi.select(opts.get("-i")), str(opts["-mig"]))
        elif "-r" in opts and set(opts) <= {"-r", "-i"}:
            cmd_reset(smi, out, smi.select(opts.get("-i")))
        else:
            raise Usage(str(opts))
        return
    actions = [a for a in MIG_ACTIONS if a in opts]
    if len(actions) != 1 or not set(opts) <= MIG_ALLOWED:
        raise Usage(str(opts))
    if "-C" in opts and actions[0] != "-cgi":
        raise Usage("-C")
    sel = smi.mig_enabled(smi.select(opts.get("-i")))
    if not sel:
        out(NO_MIG)
        out.code = Nvml.NOT_FOUND
        return
    action = actions[0]
    gi_ids, ci_ids = _ids(opts.get("-gi")), _ids(opts.get("-ci"))
    handlers: dict[str, Callable[[], None]] = {
        "-lgip": lambda: mig_lgip(smi, out, sel),
        "-lgipp": lambda: mig_lgipp(smi, out, sel),
        "-lgi": lambda: mig_lgi(smi, out, sel),
        "-cgi": lambda: mig_cgi(smi, out, sel, str(opts["-cgi"]), "-C" in opts),
        "-lcip": lambda: mig_lcip(smi, out, sel, gi_ids),
        "-cci": lambda: mig_cci(smi, out, sel, opts.get("-cci"), gi_ids),
        "-lci": lambda: mig_lci(smi, out, sel, gi_ids),
        "-dci": lambda: mig_dci(smi, out, sel, ci_ids, gi_ids),
        "-dgi": lambda: mig_dgi(smi, out, sel, gi_ids),
    }
    handlers[action]()


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2 or args[0] != "--root":
        print(
            "usage: python -m planner.sim.nvidia_smi --root DIR [nvidia-smi arguments]",
            file=sys.stderr,
        )
        return 2
    result = run(args[1], args[2:])
    text = "\n".join(result.lines)
    if text:
        print(text)
    return result.code


if __name__ == "__main__":
    sys.exit(main())
