"""ClusterConfigParser: YAML text -> typed ClusterConfig, with every check that spans
more than one value (the schema-level checks live in the models).

All problems of a file are collected and raised together as one ConfigError whose
Diagnostics read ``FILE:LINE:COL: key.path: message``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from planner.config.diagnostics import known_keys, suggest, translate
from planner.config.expand import config_environment
from planner.config.limits import MAX_CONFIG_BYTES, InputTooLarge, read_text_limited
from planner.config.models import ClusterConfig
from planner.config.vms import VmDecl, expand_vms
from planner.config.yamlpos import Positions, YamlLoadError, load_yaml
from planner.errors import AihowError, ConfigError, Diagnostic
from planner.lang import SelectorKind
from planner.lang.names import NAME_RULE, name_ok

# libvirt keeps domain names in file names; stay well under NAME_MAX.


class ClusterConfigParser:
    """Parse and check one config. ``env`` replaces the process environment (tests);
    ``root`` pins the repository root that ``${TOT}`` names."""

    def __init__(self, env: Mapping[str, str] | None = None, root: Path | None = None) -> None:
        self._env = env
        self._root = root

    def parse_file(self, path: str | Path) -> ClusterConfig:
        path = Path(path)
        try:
            text = read_text_limited(path, MAX_CONFIG_BYTES, "config")
        except InputTooLarge as exc:
            raise AihowError(str(exc)) from None
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise AihowError(f"{path}: cannot read config: {reason}") from None
        return self.parse_text(text, str(path), config_path=path)

    def parse_text(self, text: str, file: str, config_path: Path | None = None) -> ClusterConfig:
        """Parse ``text`` (named ``file`` in messages). Raises ConfigError."""
        env: Mapping[str, str] | None = None
        if "${" in text:  # ai-how renders only when the text contains '${'
            env = config_environment(config_path or Path(file), self._env, self._root)
        try:
            data, positions = load_yaml(text, file, env)
        except YamlLoadError as exc:
            raise ConfigError(_one_line(exc.diagnostics)) from None
        return self.build(data, positions, file)

    def build(self, data: Any, positions: Positions, file: str) -> ClusterConfig:
        if not isinstance(data, dict):
            raise ConfigError([Diagnostic(file, 1, 1, "", "the document must be a mapping "
                                          "with version, metadata and clusters")])
        problems: list[Diagnostic] = []
        if "source_path" in data:  # a field of the IR, never a YAML key
            line, col = positions.key("source_path")
            problems.append(Diagnostic(file, line, col, "source_path", "unknown key "
                                       "'source_path'" + suggest("source_path",
                                                                 known_keys(ClusterConfig))))
            data = {k: v for k, v in data.items() if k != "source_path"}
        try:
            cfg = ClusterConfig.model_validate({**data, "source_path": file})
        except ValidationError as exc:
            problems.extend(translate(exc, data, positions, file))
            raise ConfigError(_one_line(problems)) from None
        problems.extend(_Checker(cfg, positions, file).run())
        if problems:
            raise ConfigError(_one_line(problems))
        return cfg


def load_config(path: str | Path, *, root: Path | None = None) -> ClusterConfig:
    """Read, expand, validate and check a config file. Raises ConfigError (or AihowError
    when the file cannot be read). ``root`` pins ``${TOT}`` (default: the nearest
    ancestor holding ``.git``)."""
    return ClusterConfigParser(root=root).parse_file(path)


def load_config_text(text: str, name: str, *, root: Path | None = None) -> ClusterConfig:
    """``load_config`` of a config kept as text (a journal's, a generation's): ``name`` is
    the file it was read from, named in messages and the base of ``${TOT}``."""
    return ClusterConfigParser(root=root).parse_text(text, name, config_path=Path(name))


class _Checker:
    """The semantic checks of issue 2, over the IR and the expanded VMs."""

    def __init__(self, cfg: ClusterConfig, positions: Positions, file: str) -> None:
        self.cfg = cfg
        self.pos = positions
        self.file = file
        self.out: list[Diagnostic] = []
        self.vms = expand_vms(cfg)

    def error(self, path: str, message: str, *, at_key: bool = False) -> None:
        line, col = self.pos.key(path) if at_key else self.pos.value(path)
        self.out.append(Diagnostic(self.file, line, col, path, message))

    def run(self) -> list[Diagnostic]:
        self.global_gpus()
        self.gpu_configs()
        self.claims()
        self.whole_gpu_passthrough()
        self.names_and_addresses()
        return self.out

    # -- global.gpus ---------------------------------------------------------------------

    def global_gpus(self) -> None:
        seen: dict[str, str] = {}
        for i, gpu in enumerate(self.cfg.global_.gpus):
            path = f"global.gpus[{i}]"
            if gpu.select is None:
                for key in ("layout", "mig", "repack", "vgpu_compute_instances"):
                    if key in gpu.model_fields_set:
                        self.error(f"{path}.{key}", f"'{key}' needs 'select' (an entry without "
                                   "select is an inventory record that aihow does not manage)",
                                   at_key=True)
                continue
            sel = str(gpu.select)
            if sel in seen:
                self.error(f"{path}.select", f"GPU {sel} is already selected by {seen[sel]}")
            else:
                seen[sel] = path
            if gpu.layout is not None and gpu.mig == "disabled":
                self.error(f"{path}.layout", "a layout needs mig: enabled", at_key=True)
            if gpu.repack != "never" and gpu.mig == "disabled":
                self.error(f"{path}.repack", "repack needs mig: enabled", at_key=True)
            if "vgpu_compute_instances" in gpu.model_fields_set and gpu.mig == "disabled":
                self.error(f"{path}.vgpu_compute_instances", "vgpu_compute_instances needs "
                           "mig: enabled (it is about GPU instances that back vGPUs)",
                           at_key=True)

    # -- gpu_config on each node ---------------------------------------------------------

    def gpu_configs(self) -> None:
        disabled = {str(g.select): f"global.gpus[{i}]" for i, g in enumerate(self.cfg.global_.gpus)
                    if g.select is not None and g.mig == "disabled"}
        for vm in _distinct_nodes(self.vms):
            gc = vm.gpu_config
            if gc is None:
                continue
            base = f"{vm.key_path}.gpu_config"
            if gc.mode == "mig":
                if gc.mig_profile is None and gc.mig_uuid is None:
                    self.error(base, "mode mig needs one of mig_profile or mig_uuid", at_key=True)
                elif gc.mig_profile is not None and gc.mig_uuid is not None:
                    self.error(f"{base}.mig_uuid", "give only one of mig_profile or mig_uuid, "
                               "not both", at_key=True)
                if gc.mig_uuid is not None and gc.placement is not None:
                    self.error(f"{base}.placement", "placement goes with mig_profile; a mig_uuid "
                               "names an existing instance", at_key=True)
                if gc.gpu is not None and str(gc.gpu) in disabled:
                    self.error(f"{base}.gpu", f"GPU {gc.gpu} has mig: disabled in "
                               f"{disabled[str(gc.gpu)]}")
            else:
                for key in ("mig_profile", "mig_uuid", "placement"):
                    if getattr(gc, key) is not None:
                        self.error(f"{base}.{key}", f"'{key}' is only valid with mode: mig "
                                   f"(mode is {gc.mode})", at_key=True)
                if gc.mode == "passthrough" and not any(
                    d.device_type == "gpu" for d in vm.pcie_devices
                ):
                    self.error(f"{base}.mode", "mode passthrough needs pcie_passthrough enabled "
                               "with a device of device_type gpu on this node")

    # -- one slice, one VM ----------------------------------------------------------------

    def claims(self) -> None:
        by_uuid: dict[str, VmDecl] = {}
        by_place: dict[tuple[str, int], VmDecl] = {}
        for vm in self.vms:
            gc = vm.gpu_config
            if gc is None or gc.mode != "mig":
                continue
            base = f"{vm.key_path}.gpu_config"
            if gc.mig_uuid is not None:
                first = by_uuid.setdefault(gc.mig_uuid, vm)
                if first is not vm:
                    self._claimed_twice(f"{base}.mig_uuid", f"mig_uuid {gc.mig_uuid}", first, vm)
            if gc.gpu is not None and gc.placement is not None:
                key = (str(gc.gpu), gc.placement)
                first = by_place.setdefault(key, vm)
                if first is not vm:
                    self._claimed_twice(f"{base}.placement",
                                        f"GPU {gc.gpu} at placement {gc.placement}", first, vm)

    def _claimed_twice(self, path: str, what: str, first: VmDecl, vm: VmDecl) -> None:
        if first.key_path == vm.key_path:
            if first.index + 1 == vm.index:  # report a template once
                self.error(path, f"{what} would be claimed by every VM of this template "
                           f"({first.name}, {vm.name}, ...); a template may not pin a slice")
            return
        self.error(path, f"{what} is claimed by {vm.name} here and by {first.name} "
                   f"at {first.key_path} (line {self.pos.value(first.key_path)[0]})")

    # -- whole GPUs vs MIG ----------------------------------------------------------------

    def whole_gpu_passthrough(self) -> None:
        mig_use: dict[str, str] = {}
        for i, g in enumerate(self.cfg.global_.gpus):
            if g.select is not None and g.select.kind is SelectorKind.PCI and g.mig == "enabled":
                mig_use.setdefault(g.select.value, f"global.gpus[{i}]")
        for vm in _distinct_nodes(self.vms):
            gc = vm.gpu_config
            if gc is not None and gc.mode == "mig" and gc.gpu is not None \
                    and gc.gpu.kind is SelectorKind.PCI:
                mig_use.setdefault(gc.gpu.value, f"{vm.key_path}.gpu_config.gpu")
        whole: dict[str, tuple[VmDecl, str]] = {}
        both_start: set[tuple[str, str]] = set()
        for vm in self.vms:
            for j, dev in enumerate(vm.pcie_devices):
                path = f"{vm.key_path}.pcie_passthrough.devices[{j}].pci_address"
                if dev.pci_address in mig_use:
                    if vm.index == 0 or vm.key_path.endswith("]"):
                        self.error(path, f"{dev.pci_address} is given whole to {vm.name} through "
                                   f"pcie_passthrough but is used for MIG by "
                                   f"{mig_use[dev.pci_address]}")
                    continue
                first = whole.setdefault(dev.pci_address, (vm, path))
                if first[0] is not vm and first[0].cluster_type != vm.cluster_type \
                        and first[0].auto_start and vm.auto_start:
                    if (first[0].name, vm.name) in both_start:
                        continue  # one line per pair of VMs, not per shared device
                    both_start.add((first[0].name, vm.name))
                    self.error(path, f"PCI device {dev.pci_address} is passed through to "
                               f"{vm.name} here and to {first[0].name} at {first[1]}, and "
                               "both have auto_start; VMs sharing a device take turns, so "
                               "set auto_start: false on one of them")
                    continue
                if first[0] is vm or first[0].cluster_type != vm.cluster_type:
                    # ai-how's semantics (its example-multi-gpu-clusters.yaml): one device
                    # may be defined into VMs of both clusters, which run one at a time;
                    # apply refuses to start a second while another holds it.
                    continue
                if first[0].key_path != vm.key_path or first[0].index + 1 == vm.index:
                    self.error(path, f"PCI device {dev.pci_address} is passed through to "
                               f"{vm.name} here and to {first[0].name} at {first[1]} in the "
                               "same cluster (VMs of two clusters may share a device, one "
                               "running at a time)")

    # -- VM names, cluster names, addresses -----------------------------------------------

    def names_and_addresses(self) -> None:
        clusters = self.cfg.clusters
        if clusters.hpc is not None and clusters.cloud is not None \
                and clusters.hpc.name == clusters.cloud.name:
            self.error("clusters.cloud.name", f"cluster name {clusters.cloud.name!r} is also "
                       "the hpc cluster's name; their networks and pools would collide")
        for kind in ("hpc", "cloud"):
            cluster = getattr(clusters, kind, None)
            bridge = getattr(getattr(cluster, "network", None), "bridge", None)
            if bridge is not None and not name_ok(bridge):
                self.error(f"clusters.{kind}.network.bridge",
                           f"bridge name {str(bridge)[:60]!r} is not valid: {NAME_RULE}")
        bad_cluster: set[str] = set()
        names: dict[str, VmDecl] = {}
        ips: dict[str, VmDecl] = {}
        for vm in self.vms:
            cluster_key = f"clusters.{vm.cluster_type}.name"
            problem = "the cluster name is empty" if not vm.cluster_name.strip() \
                else _bad_domain_name(vm.name)
            if problem and cluster_key not in bad_cluster:
                bad_cluster.add(cluster_key)
                self.error(cluster_key, f"VM name {vm.name[:60]!r} is not a valid libvirt "
                           f"domain name: {problem}")
            first = names.setdefault(vm.name, vm)
            if first is not vm:
                self.error(vm.key_path, f"VM name {vm.name} is already used by {first.key_path}",
                           at_key=True)
            if vm.ip is not None:
                first = ips.setdefault(vm.ip, vm)
                if first is not vm:
                    key = "ip_address" if vm.role in ("controller", "control-plane") else "ip"
                    self.error(f"{vm.key_path}.{key}", f"IP address {vm.ip} of {vm.name} is "
                               f"already used by {first.name} at {first.key_path}")


def _one_line(diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    """Escape control characters (a YAML key may hold a newline) so each stays one line."""

    def clean(text: str) -> str:
        if text.isprintable():
            return text
        return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)

    return [Diagnostic(d.file, d.line, d.column, clean(d.path), clean(d.message))
            for d in diagnostics]


def _distinct_nodes(vms: tuple[VmDecl, ...]) -> list[VmDecl]:
    """One VmDecl per written node (a template's VMs share one node)."""
    seen: set[str] = set()
    out = []
    for vm in vms:
        if vm.key_path not in seen:
            seen.add(vm.key_path)
            out.append(vm)
    return out


def _bad_domain_name(name: str) -> str | None:
    """The VM layer's rule (``planner.lang.names``), so validate refuses what plan would."""
    return None if name_ok(name) else NAME_RULE
