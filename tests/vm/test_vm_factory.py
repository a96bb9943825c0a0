"""VMSpec and domain XML rendering: every variant validated by libvirt's own schema."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import pytest

from planner.errors import AihowError
from planner.lang import parse_profile
from planner.vm.vm_factory import (
    DirectBoot,
    GpuAttachment,
    MdevDevice,
    PciDevice,
    VirtioFsMount,
    VMFactory,
    VMSpec,
    VmSpecError,
    check_name,
    mac_for,
)

MDEV = "2f0c6a3e-5b1d-4c3e-9a7f-0123456789ab"


def spec(**over: object) -> VMSpec:
    base: dict[str, object] = {
        "name": "hpc-compute-01",
        "cluster_name": "hpc",
        "role": "compute",
        "cpu_cores": 4,
        "memory_gb": 16,
        "disk_gb": 40,
        "bridge": "virbr100",
    }
    base.update(over)
    return VMSpec(**base)  # type: ignore[arg-type]


VARIANTS = {
    "cpu-only": spec(),
    "mdev": spec(gpu=GpuAttachment.mdev(MDEV, mig_profile="1g.5gb")),
    "mdev-mig-uuid": spec(
        gpu=GpuAttachment.mdev(MDEV, mig_uuid="MIG-4b4d1e3f-0a1b-4c2d-8e3f-112233445566")
    ),
    "vf": spec(gpu=GpuAttachment.vf("0000:17:00.4", mig_profile="1g.10gb")),
    "whole-gpu": spec(
        gpu=GpuAttachment.whole_gpu("0000:41:00.0"), passthrough=(PciDevice("0000:41:00.1"),)
    ),
    "pcie-passthrough": spec(
        passthrough=(PciDevice("0000:01:00.0", "gpu"), PciDevice("0000:01:00.1", "other"))
    ),
    "virtio-fs": spec(
        role="controller",
        name="hpc-controller",
        virtio_fs=(VirtioFsMount("shared", "/srv/shared"), VirtioFsMount("ro", "/srv/ro", True)),
    ),
    "qemu-type": spec(virt_type="qemu", gpu=GpuAttachment.mdev(MDEV)),
    "direct-boot": spec(
        virt_type="qemu",
        boot=DirectBoot("/boot/vmlinuz", "/var/tmp/guest/initrd.cpio", "console=ttyS0 x=1"),
        console_log="/var/tmp/guest/console.log",
    ),
}


@pytest.fixture(scope="module")
def factory() -> VMFactory:
    return VMFactory()


def canon(elem: ET.Element) -> str:
    """The element without formatting whitespace (and without its tail)."""
    elem = ET.fromstring(ET.tostring(elem))
    elem.tail = None
    return ET.canonicalize(ET.tostring(elem, encoding="unicode"), strip_text=True)


def validate(tmp_path: Path, name: str, text: str) -> None:
    tool = shutil.which("virt-xml-validate")
    if tool is None:
        pytest.skip("virt-xml-validate is not installed (Debian package libvirt-clients)")
    path = tmp_path / f"{name}.xml"
    path.write_text(text)
    res = subprocess.run([tool, str(path)], capture_output=True, text=True, check=False)
    assert res.returncode == 0, f"{name}: {res.stdout}{res.stderr}\n{text}"


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_variant_passes_virt_xml_validate(
    factory: VMFactory, tmp_path: Path, variant: str
) -> None:
    validate(tmp_path, variant, factory.domain_xml(VARIANTS[variant]))


@pytest.mark.parametrize(
    "device", [MdevDevice(MDEV), PciDevice("17:00.4", "vf"), PciDevice("41:00.0", "gpu")]
)
def test_standalone_hostdev_xml_is_the_element_inside_the_domain(
    factory: VMFactory, device: MdevDevice | PciDevice
) -> None:
    alone = ET.fromstring(factory.hostdev_xml(device))
    s = spec(gpu=GpuAttachment(device))
    inside = ET.fromstring(factory.domain_xml(s)).find("./devices/hostdev")
    assert inside is not None
    assert canon(alone) == canon(inside)


def test_volume_xml_validates_and_is_backed_by_the_base(factory: VMFactory, tmp_path: Path) -> None:
    text = factory.volume_xml(spec(), "/var/lib/libvirt/images/hpc/hpc-base.qcow2")
    validate(tmp_path, "volume", text)
    root = ET.fromstring(text)
    assert root.findtext("name") == "hpc-compute-01.qcow2"
    assert root.findtext("capacity") == "40"
    assert root.findtext("./backingStore/path") == "/var/lib/libvirt/images/hpc/hpc-base.qcow2"
    with pytest.raises(VmSpecError, match="absolute"):
        factory.volume_xml(spec(), "relative/base.qcow2")


def test_mdev_hostdev_shape(factory: VMFactory) -> None:
    root = ET.fromstring(factory.domain_xml(VARIANTS["mdev"]))
    (hd,) = root.findall("./devices/hostdev")
    assert hd.attrib == {
        "mode": "subsystem",
        "type": "mdev",
        "model": "vfio-pci",
        "managed": "no",
    }
    assert hd.find("./source/address").attrib == {"uuid": MDEV}  # type: ignore[union-attr]
    assert (
        root.findtext(
            "./metadata/{https://aihow.invalid/schemas/vm/1}vm/"
            "{https://aihow.invalid/schemas/vm/1}mig-profile"
        )
        == "1g.5gb"
    )


def test_vf_is_an_unmanaged_pci_hostdev_without_rom(factory: VMFactory) -> None:
    root = ET.fromstring(factory.domain_xml(VARIANTS["vf"]))
    (hd,) = root.findall("./devices/hostdev")
    assert (hd.get("type"), hd.get("managed")) == ("pci", "no")
    assert hd.find("./source/address").attrib == {  # type: ignore[union-attr]
        "domain": "0x0000",
        "bus": "0x17",
        "slot": "0x00",
        "function": "0x4",
    }
    assert hd.find("rom") is None


def test_whole_gpu_is_managed_with_rom_bar_and_listed_first(factory: VMFactory) -> None:
    root = ET.fromstring(factory.domain_xml(VARIANTS["whole-gpu"]))
    gpu, audio = root.findall("./devices/hostdev")
    assert gpu.get("managed") == "yes"
    assert gpu.find("rom").attrib == {"bar": "on"}  # type: ignore[union-attr]
    assert gpu.find("./source/address").get("bus") == "0x41"  # type: ignore[union-attr]
    assert audio.find("rom") is None
    assert audio.find("./source/address").get("function") == "0x1"  # type: ignore[union-attr]
    assert root.find("./features/kvm/hidden") is not None


@pytest.mark.parametrize("variant", ["mdev", "vf", "whole-gpu", "pcie-passthrough"])
def test_no_emulated_display_when_a_gpu_is_attached(factory: VMFactory, variant: str) -> None:
    root = ET.fromstring(factory.domain_xml(VARIANTS[variant]))
    assert root.find("./devices/graphics") is None
    assert root.find("./devices/video") is None
    assert root.find("./devices/console") is not None


def test_vnc_on_localhost_without_a_gpu(factory: VMFactory) -> None:
    root = ET.fromstring(factory.domain_xml(VARIANTS["cpu-only"]))
    graphics = root.find("./devices/graphics")
    assert graphics is not None and graphics.get("listen") == "127.0.0.1"
    assert root.find("./features/kvm") is None


def test_cpu_is_host_passthrough_without_forced_vendor_flags(factory: VMFactory) -> None:
    for s in VARIANTS.values():
        cpu = ET.fromstring(factory.domain_xml(s)).find("cpu")
        # TCG (virt_type qemu) cannot pass the host CPU through: QEMU's "max" instead.
        want = "host-passthrough" if s.virt_type == "kvm" else "maximum"
        assert cpu is not None and cpu.get("mode") == want
        assert cpu.findall("feature") == []
        assert cpu.find("topology").get("cores") == str(s.cpu_cores)  # type: ignore[union-attr]


def test_compute_node_basics(factory: VMFactory) -> None:
    root = ET.fromstring(factory.domain_xml(spec(cpu_cores=6, memory_gb=24)))
    assert root.findtext("name") == "hpc-compute-01"
    assert root.findtext("vcpu") == "6"
    assert root.find("memory").attrib == {"unit": "GiB"}  # type: ignore[union-attr]
    assert root.findtext("memory") == "24"
    assert root.find("./os/type").get("machine") == "q35"  # type: ignore[union-attr]
    disk = root.find("./devices/disk/source")
    assert disk is not None and disk.attrib == {
        "pool": "hpc-pool",
        "volume": "hpc-compute-01.qcow2",
    }
    nic = root.find("./devices/interface")
    assert nic is not None and nic.find("source").get("network") == "hpc-network"  # type: ignore[union-attr]
    assert nic.find("mac").get("address") == mac_for("hpc-compute-01")  # type: ignore[union-attr]


def test_disk_boot_and_no_console_log_by_default(factory: VMFactory) -> None:
    root = ET.fromstring(factory.domain_xml(spec()))
    assert root.find("./os/boot").attrib == {"dev": "hd"}  # type: ignore[union-attr]
    assert root.find("./os/kernel") is None
    assert root.find("./devices/serial/log") is None


def test_direct_kernel_boot_and_console_log(factory: VMFactory, tmp_path: Path) -> None:
    boot = DirectBoot("/k/vmlinuz", "/k/initrd", "console=ttyS0 aihow.token=a&b")
    text = factory.domain_xml(spec(boot=boot, console_log="/var/log/x/console.log"))
    validate(tmp_path, "boot", text)
    root = ET.fromstring(text)
    os_ = root.find("os")
    assert os_ is not None and os_.find("boot") is None  # the kernel, not the disk
    assert [(e.tag, e.text) for e in os_ if e.tag != "type"] == [
        ("kernel", "/k/vmlinuz"), ("initrd", "/k/initrd"),
        ("cmdline", "console=ttyS0 aihow.token=a&b"),
    ]
    log = root.find("./devices/serial/log")
    assert log is not None and log.attrib == {"file": "/var/log/x/console.log", "append": "off"}
    # The disk and the NIC are rendered as for any node: the boot changes nothing else.
    assert root.find("./devices/disk/source") is not None
    bare = ET.fromstring(factory.domain_xml(spec(boot=DirectBoot("/k/vmlinuz")))).find("os")
    assert bare is not None and [e.tag for e in bare] == ["type", "kernel"]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: DirectBoot("vmlinuz"), "kernel 'vmlinuz' must be an absolute path"),
        (lambda: DirectBoot("/k", "initrd"), "initrd 'initrd' must be an absolute path"),
        (lambda: DirectBoot("/k", None, "a\nb"), "command line must be one line"),
        (lambda: spec(console_log="console.log"), "console log 'console.log' must be"),
    ],
)
def test_bad_boot_and_console_log_are_rejected(make: object, message: str) -> None:
    with pytest.raises(VmSpecError, match=message):
        make()  # type: ignore[operator]


def test_mac_is_ai_hows_md5_derivation() -> None:
    # ai-how (utils/vm_utils.py): first 6 bytes of the MD5 hex digest, first byte with
    # the multicast bit cleared and the locally-administered bit set.
    for name in ("hpc-compute-01", "cloud-gpu-worker-03", "x"):
        hexd = hashlib.md5(name.encode()).hexdigest()
        octets = [hexd[i : i + 2] for i in range(0, 12, 2)]
        octets[0] = f"{(int(octets[0], 16) & 0xFE) | 0x02:02x}"
        assert mac_for(name) == ":".join(octets)
        first = int(mac_for(name)[:2], 16)
        assert first & 0x01 == 0 and first & 0x02 == 2
    assert mac_for("hpc-compute-01") != mac_for("hpc-compute-02")


def test_rendering_is_deterministic_and_uuid_derived_from_name(factory: VMFactory) -> None:
    a = factory.domain_xml(VARIANTS["mdev"])
    assert a == VMFactory().domain_xml(VARIANTS["mdev"])
    assert spec().uuid == spec(cpu_cores=8).uuid
    assert spec().uuid != spec(name="hpc-compute-02").uuid


def test_values_are_escaped(factory: VMFactory, tmp_path: Path) -> None:
    tricky = "/srv/a'b\"c&d<e>"
    s = spec(virtio_fs=(VirtioFsMount("data", tricky),))
    text = factory.domain_xml(s)
    validate(tmp_path, "escaped", text)
    src = ET.fromstring(text).find("./devices/filesystem/source")
    assert src is not None and src.get("dir") == tricky


@pytest.mark.parametrize(
    "bad",
    ["", "a/b", "has space", "new\nline", "-leading", "trailing-", "x" * 64, "quote'", "é"],
)
def test_invalid_names_are_rejected_with_a_clear_error(bad: str) -> None:
    with pytest.raises(VmSpecError, match="invalid VM name") as info:
        spec(name=bad)
    assert isinstance(info.value, AihowError)
    assert "\n" not in str(info.value).replace(repr(bad), "")
    with pytest.raises(VmSpecError, match="invalid cluster name"):
        spec(cluster_name=bad)


def test_valid_names() -> None:
    for good in ("hpc-compute-01", "a", "cloud_cluster.gpu-worker-12", "x" * 63):
        assert check_name(good) == good


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"cpu_cores": 0}, "cpu_cores must be a positive integer"),
        ({"memory_gb": True}, "memory_gb must be a positive integer"),
        ({"bridge": "vir br"}, "invalid bridge name"),
        (
            {
                "gpu": GpuAttachment.whole_gpu("41:00.0"),
                "passthrough": (PciDevice("41:00.0", "gpu"),),
            },
            "given to the VM twice",
        ),
    ],
)
def test_bad_specs_are_rejected(over: dict[str, object], message: str) -> None:
    with pytest.raises(VmSpecError, match=message):
        spec(**over)


def test_attachment_validation() -> None:
    with pytest.raises(VmSpecError, match="invalid mdev UUID"):
        GpuAttachment.mdev("not-a-uuid")
    with pytest.raises(VmSpecError, match="invalid MIG profile"):
        GpuAttachment.mdev(MDEV, mig_profile="9x.big")
    with pytest.raises(VmSpecError, match="invalid MIG UUID"):
        GpuAttachment.mdev(MDEV, mig_uuid="GPU-1234")
    with pytest.raises(VmSpecError, match="not through the whole GPU 0000:41:00.0"):
        GpuAttachment(PciDevice("41:00.0", "gpu"), mig_profile="1g.5gb")
    with pytest.raises(VmSpecError, match="neither a vGPU VF nor a whole GPU"):
        GpuAttachment(PciDevice("41:00.1"))
    with pytest.raises(VmSpecError, match="PCI address"):
        PciDevice("0000:01:00.9")
    att = GpuAttachment.mdev(
        MDEV.upper(),
        mig_profile=parse_profile("MIG 1g.5gb"),
        mig_uuid="mig-4B4D1E3F-0A1B-4C2D-8E3F-112233445566",
    )
    assert att.device.key == MDEV
    assert att.mig_profile == "1g.5gb"
    assert att.mig_uuid == "MIG-4b4d1e3f-0a1b-4c2d-8e3f-112233445566"


def decl(**over: object) -> SimpleNamespace:
    base: dict[str, object] = {
        "name": "cloud-gpu-worker-01",
        "cluster_type": "cloud",
        "cluster_name": "cloud",
        "role": "worker",
        "index": 1,
        "cpu_cores": 8,
        "memory_gb": 32,
        "disk_gb": 100,
        "ip": "192.168.200.11",
        "auto_start": True,
        "base_image_path": "/images/cloud.qcow2",
        "bridge": "virbr200",
        "subnet": "192.168.200.0/24",
        "pcie_devices": (
            SimpleNamespace(pci_address="0000:01:00.0", device_type="gpu"),
            {"pci_address": "0000:01:00.1", "device_type": "audio"},
        ),
        "gpu_config": None,
        "virtio_fs_mounts": ({"tag": "data", "host_path": "/srv/data", "mount_point": "/data"},),
        "key_path": "clusters.cloud.worker_nodes[0]",
    }
    base.update(over)
    return SimpleNamespace(**base)


def test_from_decl_carries_the_node_and_its_devices() -> None:
    s = VMSpec.from_decl(decl())  # type: ignore[arg-type]
    assert (s.name, s.cluster_name, s.role, s.cpu_cores, s.memory_gb, s.disk_gb) == (
        "cloud-gpu-worker-01",
        "cloud",
        "worker",
        8,
        32,
        100,
    )
    assert [(d.key, d.role) for d in s.passthrough] == [
        ("0000:01:00.0", "gpu"),
        ("0000:01:00.1", "other"),
    ]
    assert [(m.tag, m.host_path) for m in s.virtio_fs] == [("data", "/srv/data")]
    assert s.pool == "cloud-pool" and s.network == "cloud-network"
    assert s.base_volume == "cloud-base.qcow2"


def test_from_decl_gpu_listed_in_pcie_passthrough_is_given_once() -> None:
    s = VMSpec.from_decl(decl(), GpuAttachment.whole_gpu("01:00.0"))  # type: ignore[arg-type]
    assert [d.key for d in s.hostdevs] == ["0000:01:00.0", "0000:01:00.1"]


def test_from_decl_accepts_the_enabled_block_form() -> None:
    off = decl(
        pcie_devices={
            "enabled": False,
            "devices": [{"pci_address": "0000:01:00.0", "device_type": "gpu"}],
        }
    )
    assert VMSpec.from_decl(off).passthrough == ()  # type: ignore[arg-type]
    on = decl(
        pcie_devices={
            "enabled": True,
            "devices": [{"pci_address": "0000:01:00.0", "device_type": "gpu"}],
        }
    )
    assert [d.role for d in VMSpec.from_decl(on).passthrough] == ["gpu"]  # type: ignore[arg-type]


def test_from_decl_errors_name_the_key_path() -> None:
    with pytest.raises(VmSpecError, match=r"^clusters\.cloud\.worker_nodes\[0\]: invalid VM name"):
        VMSpec.from_decl(decl(name="bad name"))  # type: ignore[arg-type]
    with pytest.raises(VmSpecError, match=r"^clusters\.cloud\.worker_nodes\[0\]: invalid PCI"):
        VMSpec.from_decl(decl(pcie_devices=({"pci_address": "zz", "device_type": "gpu"},)))  # type: ignore[arg-type]


EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "config").glob("example-*.yaml"))


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_every_vm_of_the_example_configs_renders_valid_xml(
    factory: VMFactory, tmp_path: Path, example: Path
) -> None:
    """The real contract: VmDecls from load_config/expand_vms, each MIG node given a vGPU
    (an mdev on the mdev backend, a VF on vfio-vf), whole GPUs passed through as is."""
    import uuid

    from planner.config import load_config
    from planner.config.vms import expand_vms

    cfg = load_config(example)
    backend = cfg.global_.host.vgpu_backend
    rendered = []
    for n, d in enumerate(expand_vms(cfg)):
        gpu = None
        gc = d.gpu_config
        if gc is not None and gc.mode == "mig":
            profile = gc.mig_profile
            if backend == "mdev":
                gpu = GpuAttachment.mdev(
                    str(uuid.uuid5(uuid.NAMESPACE_URL, d.name)), mig_profile=profile
                )
            else:
                gpu = GpuAttachment.vf(f"0000:17:00.{n % 8}", mig_profile=profile)
        s = VMSpec.from_decl(d, gpu)
        text = factory.domain_xml(s)
        validate(tmp_path, s.name, text)
        root = ET.fromstring(text)
        assert root.findtext("name") == d.name
        assert root.findtext("vcpu") == str(d.cpu_cores)
        assert len(root.findall("./devices/hostdev")) == len(s.hostdevs)
        rendered.append(s)
    assert rendered, f"{example} declares no VMs"
    assert len({s.mac for s in rendered}) == len(rendered)


def test_enable_kvm_false_renders_a_tcg_domain_and_survives_the_plan(tmp_path: Path) -> None:
    """ai-how's ``hardware.acceleration.enable_kvm: false``: the domain type is qemu
    (emulated), carried through the plan's domain attributes; true (the default) keeps
    the attributes as they were (no ``virt_type`` key: plans stay byte-identical)."""
    from planner.config import expand_vms, load_config
    from planner.vm.vm_factory import domain_attrs, spec_from_attrs

    example = Path(__file__).resolve().parents[2] / "config/example-mig-cluster.yaml"
    text = example.read_text()
    assert text.count("enable_kvm: true") == 2
    off = tmp_path / "tcg.yaml"
    off.write_text(text.replace("enable_kvm: true", "enable_kvm: false", 1))  # hpc only
    vms = {vm.name: vm for vm in expand_vms(load_config(off))}
    hpc, k8s = domain_attrs(vms["hpc-compute-01"]), domain_attrs(vms["k8s-control-plane"])
    assert hpc.virt_type == "qemu" and "virt_type" not in k8s.to_json()
    assert spec_from_attrs(hpc).virt_type == "qemu" and spec_from_attrs(k8s).virt_type == "kvm"
    root = ET.fromstring(VMFactory().domain_xml(spec_from_attrs(hpc)))
    assert root.get("type") == "qemu" and root.find("cpu").get("mode") == "maximum"  # type: ignore[union-attr]
