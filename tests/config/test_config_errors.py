"""Each kind of bad input gives one-line errors ``FILE:LINE:COL: key.path: message``,
all of a file's problems together, exit 1 and no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from planner.config import ClusterConfigParser
from planner.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
AIHOW = [
    sys.executable,
    "-c",
    "import sys; sys.argv[0] = 'aihow'; from planner.cli import main; main()",
]

# Line numbers matter below: line 1 is 'version: "1.0"'.
BASE = """\
version: "1.0"
metadata: {name: "t", description: "errors"}
global:
  host: {vgpu_backend: mdev}
  gpus:
    - select: "0000:17:00.0"
      mig: enabled
clusters:
  hpc:
    name: "hpc"
    base_image_path: "hpc.qcow2"
    network: {subnet: "192.168.100.0/24", bridge: "virbr100"}
    controller: {cpu_cores: 4, memory_gb: 8, disk_gb: 100, ip_address: "192.168.100.10"}
    compute_nodes:
      - cpu_cores: 8
        memory_gb: 16
        disk_gb: 100
        ip: "192.168.100.11"
        gpu_config: {mode: mig, mig_profile: 1g.5gb}
      - cpu_cores: 8
        memory_gb: 16
        disk_gb: 100
        ip: "192.168.100.12"
        gpu_config: {mode: mig, mig_profile: 1g.5gb}
    slurm_config: {partitions: ["gpu"], default_partition: "gpu"}
  cloud:
    name: "k8s"
    base_image_path: "cloud.qcow2"
    network: {subnet: "192.168.200.0/24", bridge: "virbr200"}
    control_plane: {cpu_cores: 4, memory_gb: 8, disk_gb: 100, ip_address: "192.168.200.10"}
    worker_nodes:
      - cpu_cores: 4
        memory_gb: 16
        disk_gb: 100
        ip: "192.168.200.11"
        gpu_config: {mode: mig, mig_profile: 1g.5gb}
    kubernetes_config: {cni: "calico", ingress: "nginx", storage_class: "local-path"}
"""


def errors_of(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        ClusterConfigParser(env=env or {}).parse_text(text, "c.yaml")
    lines = [str(d) for d in info.value.diagnostics]
    assert str(info.value).splitlines() == lines
    return lines


def edit(old: str, new: str, text: str = BASE) -> str:
    assert text.count(old) >= 1, old
    return text.replace(old, new, 1)


def test_base_is_valid() -> None:
    ClusterConfigParser(env={}).parse_text(BASE, "c.yaml")


CASES = {
    "mig needs profile or uuid": (
        edit(
            "gpu_config: {mode: mig, mig_profile: 1g.5gb}\n      - cpu",
            "gpu_config: {mode: mig}\n      - cpu",
        ),
        [
            "c.yaml:19:9: clusters.hpc.compute_nodes[0].gpu_config: mode mig needs one of "
            "mig_profile or mig_uuid"
        ],
    ),
    "mig profile and uuid both": (
        edit(
            "{mode: mig, mig_profile: 1g.5gb}\n    kube",
            "{mode: mig, mig_profile: 1g.5gb, "
            "mig_uuid: MIG-4f1a2b3c-0000-1111-2222-333344445555}\n    kube",
        ),
        [
            "c.yaml:36:54: clusters.cloud.worker_nodes[0].gpu_config.mig_uuid: give only one of "
            "mig_profile or mig_uuid, not both"
        ],
    ),
    "bad mig uuid": (
        edit(
            "{mode: mig, mig_profile: 1g.5gb}\n    kube", "{mode: mig, mig_uuid: MIG-42}\n    kube"
        ),
        [
            "c.yaml:36:43: clusters.cloud.worker_nodes[0].gpu_config.mig_uuid: invalid MIG UUID "
            "'MIG-42': expected MIG-<uuid> or the legacy MIG-GPU-<uuid>/<gi>/<ci>"
        ],
    ),
    "unknown key in gpu_config": (
        edit(
            "{mode: mig, mig_profile: 1g.5gb}\n    kube",
            "{mode: mig, mig_profle: 1g.5gb}\n    kube",
        ),
        [
            "c.yaml:36:33: clusters.cloud.worker_nodes[0].gpu_config.mig_profle: unknown key "
            "'mig_profle'; did you mean 'mig_profile'?"
        ],
    ),
    "unknown key in global.gpus": (
        edit("      mig: enabled\n", "      mig: enabled\n      layuot: 3g.20gb\n"),
        ["c.yaml:8:7: global.gpus[0].layuot: unknown key 'layuot'; did you mean 'layout'?"],
    ),
    "repack with mig disabled": (
        edit("      mig: enabled\n", "      mig: disabled\n      repack: shut-off\n",
             edit("{mode: mig, mig_profile: 1g.5gb}\n    kube", "{mode: none}\n    kube",
                  edit("        gpu_config: {mode: mig, mig_profile: 1g.5gb}\n      - cpu",
                       "        gpu_config: {mode: none}\n      - cpu",
                       edit("        gpu_config: {mode: mig, mig_profile: 1g.5gb}\n    slurm",
                            "        gpu_config: {mode: none}\n    slurm")))),
        ["c.yaml:8:7: global.gpus[0].repack: repack needs mig: enabled"],
    ),
    "repack value": (
        edit("      mig: enabled\n", "      mig: enabled\n      repack: always\n"),
        ["c.yaml:8:15: global.gpus[0].repack: must be one of 'never' or 'shut-off', got "
         "'always'"],
    ),
    "unknown key in global.host": (
        edit("{vgpu_backend: mdev}", "{vgpu_backed: mdev}"),
        [
            "c.yaml:4:10: global.host.vgpu_backed: unknown key 'vgpu_backed'; did you mean "
            "'vgpu_backend'?"
        ],
    ),
    "profile syntax": (
        edit("mig_profile: 1g.5gb}\n      - cpu", "mig_profile: 1g.5xb}\n      - cpu"),
        [
            "c.yaml:19:50: clusters.hpc.compute_nodes[0].gpu_config.mig_profile: invalid MIG "
            "profile '1g.5xb': at column 5, expected 'gb'"
        ],
    ),
    "selector syntax (quoted)": (
        edit('select: "0000:17:00.0"', 'select: "0000:17:00.9"'),
        [
            "c.yaml:6:27: global.gpus[0].select: invalid GPU selector '0000:17:00.9': "
            "at column 12, "
            "expected a PCI function 0-7 (in a PCI address)"
        ],
    ),
    "same mig_uuid twice across clusters": (
        edit(
            "{mode: mig, mig_profile: 1g.5gb}\n    kube",
            "{mode: mig, mig_uuid: MIG-4F1A2B3C-0000-1111-2222-333344445555}\n    kube",
            edit(
                "{mode: mig, mig_profile: 1g.5gb}\n      - cpu",
                "{mode: mig, mig_uuid: MIG-4f1a2b3c-0000-1111-2222-333344445555}\n      - cpu",
            ),
        ),
        [
            "c.yaml:36:43: clusters.cloud.worker_nodes[0].gpu_config.mig_uuid: mig_uuid "
            "MIG-4f1a2b3c-0000-1111-2222-333344445555 is claimed by k8s-cpu-worker-01 here and by "
            "hpc-compute-01 at clusters.hpc.compute_nodes[0] (line 15)"
        ],
    ),
    "same legacy mig_uuid twice": (
        edit(
            "{mode: mig, mig_profile: 1g.5gb}\n    kube",
            "{mode: mig, mig_uuid: 'MIG-GPU-0123ABCD-0123-0123-0123-0123456789AB/7/0'}\n    kube",
            edit(
                "{mode: mig, mig_profile: 1g.5gb}\n      - cpu",
                "{mode: mig, mig_uuid: 'MIG-GPU-0123abcd-0123-0123-0123-0123456789ab/07/00'}\n"
                "      - cpu",
            ),
        ),
        [
            "c.yaml:36:43: clusters.cloud.worker_nodes[0].gpu_config.mig_uuid: mig_uuid "
            "MIG-GPU-0123abcd-0123-0123-0123-0123456789ab/7/0 is claimed by k8s-cpu-worker-01 here "
            "and by hpc-compute-01 at clusters.hpc.compute_nodes[0] (line 15)"
        ],
    ),
    "same gpu and placement twice (PCI forms differ)": (
        edit(
            "{mode: mig, mig_profile: 1g.5gb}\n    kube",
            "{mode: mig, mig_profile: 1g.5gb, gpu: '17:00.0', placement: 3}\n    kube",
            edit(
                "{mode: mig, mig_profile: 1g.5gb}\n      - cpu",
                "{mode: mig, mig_profile: 2g.10gb, gpu: '0000:17:00.0', placement: 3}\n      - cpu",
            ),
        ),
        [
            "c.yaml:36:81: clusters.cloud.worker_nodes[0].gpu_config.placement: "
            "GPU 0000:17:00.0 at "
            "placement 3 is claimed by k8s-cpu-worker-01 here and by hpc-compute-01 at "
            "clusters.hpc.compute_nodes[0] (line 15)"
        ],
    ),
    "whole GPU passthrough also used for MIG": (
        edit(
            '        ip: "192.168.200.11"\n',
            '        ip: "192.168.200.11"\n        pcie_passthrough:\n          enabled: true\n'
            '          devices:\n            - {pci_address: "0000:17:00.0", device_type: gpu}\n',
        ),
        [
            "c.yaml:39:29: clusters.cloud.worker_nodes[0].pcie_passthrough.devices[0].pci_address: "
            "0000:17:00.0 is given whole to k8s-gpu-worker-01 through pcie_passthrough but is used "
            "for MIG by global.gpus[0]"
        ],
    ),
    "whole GPU passthrough vs gpu_config.gpu (uppercase, short form)": (
        edit(
            '    - select: "0000:17:00.0"\n      mig: enabled\n',
            "    []\n",
            edit(
                "{mode: mig, mig_profile: 1g.5gb}\n      - cpu",
                "{mode: mig, mig_profile: 1g.5gb, gpu: '3B:00.0'}\n      - cpu",
                edit(
                    '        ip: "192.168.200.11"\n',
                    '        ip: "192.168.200.11"\n        pcie_passthrough: {enabled: true, '
                    'devices: [{pci_address: "0000:3b:00.0", device_type: gpu}]}\n',
                ),
            ),
        ),
        [
            "c.yaml:35:67: clusters.cloud.worker_nodes[0].pcie_passthrough.devices[0].pci_address: "
            "0000:3b:00.0 is given whole to k8s-gpu-worker-01 through pcie_passthrough but is used "
            "for MIG by clusters.hpc.compute_nodes[0].gpu_config.gpu"
        ],
    ),
    "duplicate IP": (
        edit('ip: "192.168.100.12"', 'ip: "192.168.100.10"'),
        [
            "c.yaml:23:13: clusters.hpc.compute_nodes[1].ip: IP address 192.168.100.10 of "
            "hpc-compute-02 is already used by hpc-controller at clusters.hpc.controller"
        ],
    ),
    "duplicate cluster names": (
        edit('name: "k8s"', 'name: "hpc"'),
        [
            "c.yaml:27:11: clusters.cloud.name: cluster name 'hpc' is also the hpc cluster's name; "
            "their networks and pools would collide"
        ],
    ),
    "VM name not a libvirt domain name": (
        edit('name: "k8s"', 'name: "k8s/a"'),
        [
            "c.yaml:27:11: clusters.cloud.name: VM name 'k8s/a-control-plane' "
            "is not a valid libvirt "
            "domain name: use 1-63 letters, digits, '-', '_' or '.', starting and ending "
            "with a letter or digit"
        ],
    ),
    "VM name too long": (  # the VM layer's rule: libvirt domain and host names
        edit('name: "k8s"', 'name: "' + "k" * 60 + '"'),
        [
            "c.yaml:27:11: clusters.cloud.name: VM name '" + "k" * 60 + "' is not a valid libvirt "
            "domain name: use 1-63 letters, digits, '-', '_' or '.', starting and ending "
            "with a letter or digit"
        ],
    ),
    "bridge name plan would refuse": (
        edit('bridge: "virbr100"', 'bridge: "virbr 100"'),
        [
            "c.yaml:12:51: clusters.hpc.network.bridge: bridge name 'virbr 100' is not valid: "
            "use 1-63 letters, digits, '-', '_' or '.', starting and ending with a letter "
            "or digit"
        ],
    ),
    "wrong types and ranges": (
        edit(
            '{cpu_cores: 4, memory_gb: 8, disk_gb: 100, ip_address: "192.168.100.10"}',
            '{cpu_cores: four, memory_gb: 8, disk_gb: 5, ip_address: "192.168.100.300"}',
        ),
        [
            "c.yaml:13:29: clusters.hpc.controller.cpu_cores: "
            "must be an integer, got a string 'four'",
            "c.yaml:13:58: clusters.hpc.controller.disk_gb: must be at least 10, got 5",
            "c.yaml:13:73: clusters.hpc.controller.ip_address: '192.168.100.300' is not an IPv4 "
            "address",
        ],
    ),
    "missing key": (
        edit(', bridge: "virbr200"', ""),
        ["c.yaml:29:5: clusters.cloud.network.bridge: required key 'bridge' is missing"],
    ),
    "unknown root key": (
        edit("clusters:\n", "mig: {}\nclusters:\n"),
        ["c.yaml:8:1: mig: unknown key 'mig'; known keys: version, metadata, global, clusters"],
    ),
    "version not quoted": (
        edit('version: "1.0"', "version: 1.0"),
        ['c.yaml:1:10: version: must be the string "1.0" (quote it), got 1.0'],
    ),
    "template count / ip": (
        edit(
            """    worker_nodes:
      - cpu_cores: 4
        memory_gb: 16
        disk_gb: 100
        ip: "192.168.200.11"
        gpu_config: {mode: mig, mig_profile: 1g.5gb}
""",
            """    worker_nodes:
      count: 0
      ip: "192.168.200.11"
      cpu_cores: 4
      memory_gb: 16
      disk_gb: 100
""",
        ),
        [
            "c.yaml:32:14: clusters.cloud.worker_nodes.count: must be at least 1, got 0",
            "c.yaml:33:11: clusters.cloud.worker_nodes.ip: "
            "must be one of 'DHCP', got '192.168.200.11'",
        ],
    ),
    "mode none with a profile": (
        edit(
            "{mode: mig, mig_profile: 1g.5gb}\n    kube",
            "{mode: none, mig_profile: 1g.5gb}\n    kube",
        ),
        [
            "c.yaml:36:34: clusters.cloud.worker_nodes[0].gpu_config.mig_profile: 'mig_profile' is "
            "only valid with mode: mig (mode is none)"
        ],
    ),
    "PCI function out of range": (
        edit(
            '        ip: "192.168.200.11"\n',
            '        ip: "192.168.200.11"\n        pcie_passthrough: {enabled: true, '
            'devices: [{pci_address: "0000:41:00.8", device_type: gpu}]}\n',
        ),
        [
            "c.yaml:36:67: clusters.cloud.worker_nodes[0].pcie_passthrough.devices[0].pci_address: "
            "not a PCI address: '0000:41:00.8' (expected dddd:bb:dd.f or bb:dd.f)"
        ],
    ),
    "undefined variable": (
        edit('base_image_path: "hpc.qcow2"', 'base_image_path: "${AIHOW_NOPE}/hpc.qcow2"'),
        [
            "c.yaml:11:23: clusters.hpc.base_image_path: ${AIHOW_NOPE}: unbound variable (give a "
            "default: ${AIHOW_NOPE:-...})"
        ],
    ),
    "variable error message": (
        edit(
            'base_image_path: "hpc.qcow2"',
            "base_image_path: ${IMAGES:?set IMAGES to the image dir}",
        ),
        ["c.yaml:11:22: clusters.hpc.base_image_path: IMAGES: set IMAGES to the image dir"],
    ),
    "YAML syntax": (edit('    name: "k8s"\n', '    name: "k8s\n  x: ]\n'), None),
}


@pytest.mark.parametrize("name", CASES)
def test_bad_input_one_line_each(name: str) -> None:
    text, expected = CASES[name]
    lines = errors_of(text)
    for line in lines:
        assert line.startswith("c.yaml:") and "\n" not in line
    if expected is not None:
        assert lines == expected
    else:  # YAML syntax: the unterminated quote runs on until line 29
        assert lines == [
            "c.yaml:29:23: while parsing a block mapping expected <block end>, but found '<scalar>'"
        ]


def test_all_errors_of_a_file_together() -> None:
    text = edit(
        "mig_profile: 1g.5gb}\n      - cpu",
        "mig_profle: 1g.5gb}\n      - cpu",
        edit(
            'ip: "192.168.100.12"',
            'ip: "192.168.100.10"',
            edit("{vgpu_backend: mdev}", "{vgpu_backend: sriov}"),
        ),
    )
    lines = errors_of(text)
    # schema errors stop before the cross-checks; every schema error is listed
    assert [x.split(": ", 2)[1] for x in lines] == [
        "global.host.vgpu_backend",
        "clusters.hpc.compute_nodes[0].gpu_config.mig_profle",
    ]
    text = edit('ip: "192.168.100.12"', 'ip: "192.168.100.10"', edit('name: "k8s"', 'name: "hpc"'))
    assert len(errors_of(text)) == 2


# Nine levels of nine aliases: 9**9 leaves if expanded.
ALIAS_BOMB = "a: &a [1, 2, 3, 4, 5, 6, 7, 8, 9]\n" + "".join(
    f"{n}: &{n} [{', '.join(['*' + p] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True)
)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "c.yaml:1:1: the document must be a mapping with version, metadata and clusters"),
        (
            "- a\n- b\n",
            "c.yaml:1:1: the document must be a mapping with version, metadata and clusters",
        ),
        ("a: &x [*x]\n", None),
        (ALIAS_BOMB, None),
        ("version: !!binary aGk=\n", None),
        ("? [a, b]\n: c\n", "c.yaml:1:3: a mapping key must be a plain scalar"),
        ("a: 1\na: 2\n", None),
    ],
)
def test_odd_documents(text: str, message: str | None) -> None:
    lines = errors_of(text)
    if message is not None:
        assert lines[0] == message
    if text.startswith("a: &a"):  # an alias bomb is refused, not expanded
        assert any("document too large" in x for x in lines)
    assert all(x.startswith("c.yaml:") for x in lines)


def _run_cli(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*AIHOW, "validate", str(path)], capture_output=True, text=True, cwd=ROOT, check=False
    )


@pytest.mark.parametrize(
    "name",
    [
        "unknown key in gpu_config",
        "same mig_uuid twice across clusters",
        "YAML syntax",
        "undefined variable",
    ],
)
def test_cli_reports_errors_exit_1_no_traceback(tmp_path: Path, name: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(CASES[name][0])
    run = _run_cli(path)
    assert run.returncode == 1
    assert run.stdout == ""
    assert "Traceback" not in run.stderr
    lines = run.stderr.splitlines()
    assert lines and all(x.startswith(f"{path}:") for x in lines)
    expected = CASES[name][1]
    if expected is not None:
        assert [x.replace(str(path), "c.yaml", 1) for x in lines] == expected


def test_cli_missing_file(tmp_path: Path) -> None:
    run = _run_cli(tmp_path / "nope.yaml")
    assert run.returncode == 1
    assert run.stderr.startswith("error: ") and "cannot read config" in run.stderr
    assert "Traceback" not in run.stderr
