"""Configs in the ai-how format load into typed values; the MIG extension is typed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from ruamel.yaml import YAML

from planner.config import ClusterConfigParser, expand_vms, load_config, load_config_text
from planner.config.schema import config_json_schema
from planner.errors import ConfigError
from planner.lang import Layout, LayoutItem, MigProfile, SelectorKind

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).parent / "data"
# The real entry point (console script ``aihow`` = planner.cli:main) in a fresh interpreter.
AIHOW = [
    sys.executable,
    "-c",
    "import sys; sys.argv[0] = 'aihow'; from planner.cli import main; main()",
]
VALID = sorted(DATA.glob("*.yaml")) + [
    ROOT / "config" / "example-mig-cluster.yaml",
    ROOT / "config" / "example-h100-vfio.yaml",
]


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_valid_configs_load(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.version == "1.0"
    assert cfg.source_path == str(path)
    assert expand_vms(cfg)


def test_a_config_kept_as_text_loads_under_its_own_name() -> None:
    """A journal's config text loads as the file it came from (no file is written)."""
    path = ROOT / "config" / "example-mig-cluster.yaml"
    cfg = load_config_text(path.read_text(), str(path))
    assert cfg == load_config(path)
    with pytest.raises(ConfigError) as err:
        load_config_text(path.read_text().replace('version: "1.0"', 'version: "9"', 1),
                         "kept/cluster.yaml")
    assert str(err.value).startswith("kept/cluster.yaml:")


@pytest.mark.parametrize("path", VALID[:3] + VALID[-2:], ids=lambda p: p.name)
def test_cli_validate_exit_zero(path: Path) -> None:
    run = subprocess.run(
        [*AIHOW, "validate", str(path)], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(f"OK {path}")
    assert run.stderr == ""


def test_example_mig_cluster_summary() -> None:
    run = subprocess.run(
        [*AIHOW, "validate", "config/example-mig-cluster.yaml"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert run.returncode == 0
    assert "clusters: hpc 'hpc' (5 VMs), cloud 'k8s' (4 VMs)" in run.stdout
    assert "VMs: 9" in run.stdout
    assert "MIG slices requested: 7 (7 x 1g.5gb)" in run.stdout


def test_compact_example_vms_named_as_ai_how() -> None:
    vms = expand_vms(load_config(DATA / "aihow-compact.yaml"))
    assert [v.name for v in vms] == [
        "hpc-cluster-controller",
        "hpc-cluster-compute-01",
        "cloud-cluster-control-plane",
        "cloud-cluster-cpu-worker-01",
        "cloud-cluster-gpu-worker-01",
    ]
    compute = vms[1]
    assert compute.key_path == "clusters.hpc.compute_nodes[0]"
    assert [d.pci_address for d in compute.pcie_devices] == ["0000:01:00.0", "0000:01:00.1"]
    assert compute.base_image_path == "build/packer/hpc-compute/hpc-compute/hpc-compute.qcow2"
    assert (compute.bridge, compute.subnet) == ("virbr100", "192.168.100.0/24")
    assert vms[4].auto_start is False and vms[4].role == "worker"


def test_template_and_dhcp_forms() -> None:
    cfg = load_config(DATA / "template-nodes.yaml")
    vms = expand_vms(cfg)
    compute = [v for v in vms if v.role == "compute"]
    assert [v.name for v in compute] == ["tpl-compute-01", "tpl-compute-02", "tpl-compute-03"]
    assert all(v.ip is None and v.key_path == "clusters.hpc.compute_nodes" for v in compute)
    assert [v.index for v in compute] == [0, 1, 2]
    assert all(
        v.gpu_config is not None and v.gpu_config.mig_profile == MigProfile(1, 10) for v in compute
    )
    workers = [v for v in vms if v.role == "worker"]
    assert workers[0].ip is None and workers[0].auto_start is False  # list node, ip: "DHCP"
    assert workers[1].ip == "10.20.0.11"
    assert cfg.clusters.cloud is not None
    node = cfg.clusters.cloud.worker_nodes[1]  # type: ignore[index]
    assert node.model_extra == {"worker_note": "extra keys are fine"}


def test_cloud_only() -> None:
    cfg = load_config(DATA / "cloud-only.yaml")
    assert cfg.clusters.hpc is None
    assert [v.name for v in expand_vms(cfg)] == [
        "cloud-cluster-control-plane",
        "cloud-cluster-cpu-worker-01",
        "cloud-cluster-cpu-worker-02",
    ]


def test_env_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIHOW_TEST_IMAGES", raising=False)
    monkeypatch.setenv("AIHOW_TEST_CORES", "6")
    monkeypatch.setenv("HOME", "/home/tester")
    cfg = load_config(DATA / "env-paths.yaml")
    hpc = cfg.clusters.hpc
    assert hpc is not None
    assert hpc.base_image_path == "/var/lib/aihow/images/hpc.qcow2"
    assert hpc.controller.cpu_cores == 6  # an expanded plain scalar is typed as YAML would
    mounts = {m.tag: m.host_path for m in hpc.controller.virtio_fs_mounts}
    assert mounts == {"repo": str(ROOT), "home": "/home/tester"}  # TOT = repository root


def test_tot_without_git_is_config_dir(tmp_path: Path) -> None:
    text = (DATA / "env-paths.yaml").read_text()
    (tmp_path / "c.yaml").write_text(text)
    env = {"HOME": "/h"}
    cfg = ClusterConfigParser(env=env).parse_file(tmp_path / "c.yaml")
    assert cfg.clusters.hpc is not None
    assert cfg.clusters.hpc.controller.virtio_fs_mounts[0].host_path == str(tmp_path.resolve())
    assert cfg.clusters.hpc.controller.cpu_cores == 4


def test_mig_extension_typed() -> None:
    cfg = load_config(DATA / "mig-extension.yaml")
    g = cfg.global_
    assert g.host.vgpu_backend == "vfio-vf" and g.host.libvirt_uri == "qemu:///system"
    kinds = [(e.select.kind, e.select.value) if e.select else None for e in g.gpus]
    assert kinds == [
        (SelectorKind.PCI, "0000:17:00.0"),
        (SelectorKind.INDEX, "1"),
        (SelectorKind.UUID, "GPU-0123abcd-0123-0123-0123-0123456789ab"),
        (SelectorKind.MODEL, "H100*"),
        None,
    ]
    assert g.gpus[0].layout == Layout((LayoutItem(MigProfile(3, 20), 1, 4),))
    assert [e.mig for e in g.gpus[:4]] == ["enabled", "disabled", "enabled", "enabled"]
    assert len(g.managed_gpus) == 4
    assert g.gpus[4].bus_address == "00000000:3B:00.0" and g.gpus[4].mig_capable is True
    assert g.model_extra == {"site_notes": "free-form keys under global are kept"}
    configs = [v.gpu_config for v in expand_vms(cfg) if v.role == "compute"]
    assert configs[0] is not None and configs[0].gpu is not None
    assert (configs[0].mig_profile, configs[0].gpu.value, configs[0].placement) == (
        MigProfile(1, 5),
        "0000:17:00.0",
        0,
    )
    assert (
        configs[2] is not None and configs[2].mig_uuid == "MIG-4f1a2b3c-0000-1111-2222-333344445555"
    )
    assert configs[3] is not None
    assert configs[3].mig_uuid == "MIG-GPU-0123abcd-0123-0123-0123-0123456789ab/7/0"
    assert configs[4] is not None and configs[4].mode == "passthrough"


def test_ir_is_frozen() -> None:
    cfg = load_config(DATA / "aihow-compact.yaml")
    with pytest.raises(Exception):  # noqa: B017 - pydantic raises ValidationError
        cfg.version = "2.0"  # type: ignore[misc]


def test_gpu_worker_needs_a_gpu_device_enabled() -> None:
    text = (
        (DATA / "cloud-only.yaml")
        .read_text()
        .replace(
            '        ip: "192.168.220.12"',
            '        ip: "192.168.220.12"\n        pcie_passthrough:\n          enabled: false\n'
            '          devices: [{pci_address: "0000:41:00.0", device_type: gpu}]',
        )
    )
    names = [v.name for v in expand_vms(ClusterConfigParser().parse_text(text, "c.yaml"))]
    assert names[-1] == "cloud-cluster-cpu-worker-02"
    text = text.replace("enabled: false", "enabled: true")
    vms = expand_vms(ClusterConfigParser().parse_text(text, "c.yaml"))
    assert [v.name for v in vms][-2:] == [
        "cloud-cluster-cpu-worker-01",
        "cloud-cluster-gpu-worker-01",
    ]


# --- JSON Schema ------------------------------------------------------------------------


def _schema_from_cli() -> dict:  # type: ignore[type-arg]
    run = subprocess.run([*AIHOW, "schema"], capture_output=True, text=True, cwd=ROOT, check=True)
    return json.loads(run.stdout)  # type: ignore[no-any-return]


def test_schema_validates_every_valid_config() -> None:
    schema = _schema_from_cli()
    assert schema == config_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for path in VALID:
        # The file as written (what an editor sees); env-paths.yaml has an unexpanded
        # ${VAR} where an integer goes, which only its rendered form can satisfy.
        if path.name != "env-paths.yaml":
            doc = YAML(typ="safe", pure=True).load(path.read_text())
            assert [e.message for e in validator.iter_errors(doc)] == [], path
        # The loaded IR dumped back to plain data validates too.
        dumped = load_config(path).model_dump(by_alias=True, mode="json")
        assert "source_path" not in dumped
        assert [e.message for e in validator.iter_errors(dumped)] == [], path


def test_schema_rejects_what_the_models_reject() -> None:
    validator = jsonschema.Draft202012Validator(config_json_schema())
    doc = YAML(typ="safe", pure=True).load(
        (ROOT / "config" / "example-mig-cluster.yaml").read_text()
    )
    doc["mig"] = {}  # no new root keys
    doc["global"]["gpus"][0]["mig_profle"] = "1g.5gb"  # closed extension block
    doc["clusters"]["hpc"]["compute_nodes"][0]["gpu_config"]["mode"] = "vgpu"
    assert len(list(validator.iter_errors(doc))) >= 3


# --- ai-how's own rules -----------------------------------------------------------------

AI_HOW_SCHEMA = json.loads((DATA / "ai-how-schema-reconstructed.json").read_text())


def _rendered(path: Path) -> object:
    """The file as ai-how validates it: ${VAR} expanded in the text, then parsed."""
    from planner.config.expand import config_environment, expand

    text = path.read_text()
    if "${" in text:
        text = expand(text, config_environment(path))
    return YAML(typ="safe", pure=True).load(text)


@pytest.mark.parametrize(
    "path",
    [p for p in VALID if p.name != "template-nodes.yaml"],
    ids=lambda p: p.name,
)
def test_examples_pass_ai_how_schema(path: Path) -> None:
    validator = jsonschema.Draft7Validator(AI_HOW_SCHEMA, format_checker=None)
    assert [e.message for e in validator.iter_errors(_rendered(path))] == []


def test_ai_how_schema_rejects_list_node_dhcp_which_aihow_accepts() -> None:
    # The documented ai-how bug (oneOf with no format checker): both branches match.
    path = DATA / "template-nodes.yaml"
    validator = jsonschema.Draft7Validator(AI_HOW_SCHEMA)
    errors = list(validator.iter_errors(_rendered(path)))
    assert errors and all("worker_nodes" in e.json_path for e in errors)
    assert load_config(path).clusters.cloud is not None


def test_ai_how_schema_rejects_new_root_keys() -> None:
    doc = _rendered(ROOT / "config" / "example-mig-cluster.yaml")
    assert isinstance(doc, dict)
    doc["mig"] = {}
    assert list(jsonschema.Draft7Validator(AI_HOW_SCHEMA).iter_errors(doc))


def test_variables_in_comments_are_not_expanded() -> None:
    # ai-how expands the whole text, comments included, and fails on an unset variable
    # there; aihow expands values only.
    text = "# see ${AIHOW_SURELY_UNSET}\n" + (DATA / "aihow-compact.yaml").read_text()
    assert ClusterConfigParser(env={}).parse_text(text, "c.yaml").version == "1.0"


def test_root_pins_tot_wherever_the_file_lives(tmp_path: Path) -> None:
    """plans/regen.py pins ${TOT} so committed plans do not depend on the checkout path."""
    example = Path(__file__).resolve().parents[2] / "config" / "example-mig-cluster.yaml"
    pinned = load_config(example, root=Path("/srv/ai-how"))
    found = load_config(example)
    paths = {m.host_path for d in expand_vms(pinned) for m in d.virtio_fs_mounts}
    assert paths == {"/srv/ai-how"}
    assert {m.host_path for d in expand_vms(found) for m in d.virtio_fs_mounts} == {
        str(example.parents[1])
    }
