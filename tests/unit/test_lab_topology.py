"""The lab's topology, manifest and accelerator choice, without booting anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyvfio.errors import LabError, LabSpecError, LabUnavailableError
from pyvfio.host import accel as host_accel
from pyvfio.lab import accel, kernels
from pyvfio.lab.topology import NVME_SERIAL, Manifest, Topology, parse_spec


def test_specs_parse_and_bad_ones_name_the_choices() -> None:
    assert parse_spec("edu") == ("edu", "root")
    assert parse_spec("nvme@switch") == ("nvme", "switch")
    for bad in ("gpu", "edu@pcie", "edu@", "EDU"):
        with pytest.raises(LabSpecError, match="edu, nvme, e1000e"):
            parse_spec(bad)
    with pytest.raises(ValueError):
        Topology(devices=("nope",))


def test_layout_gives_each_device_a_path_and_backing_file(tmp_path: Path) -> None:
    topo = Topology(devices=("edu", "nvme", "e1000e@rootport", "edu@switch", "edu"))
    devs = topo.layout(tmp_path)
    assert [d.qemu_id for d in devs] == ["edu0", "nvme0", "e1000e0", "edu1", "edu2"]
    assert [d.path for d in devs] == [
        ("10.0",),
        ("11.0",),
        ("18.0", "00.0"),
        ("19.0", "00.0", "00.0", "00.0"),
        ("12.0",),
    ]
    assert devs[1].backing_file == str(tmp_path / "nvme0.img")
    assert all(d.backing_file is None for d in devs if d.name != "nvme")


def test_qemu_args_build_ports_switches_and_the_viommu(tmp_path: Path) -> None:
    topo = Topology(devices=("nvme", "e1000e@rootport", "edu@switch"))
    args = topo.qemu_args(topo.layout(tmp_path))
    text = " ".join(args)
    assert args[:2] == ["-machine", "q35,kernel-irqchip=split"]
    assert "intel-iommu,intremap=on,caching-mode=on" in args
    assert f"nvme,id=nvme0,serial={NVME_SERIAL},drive=drv_nvme0,addr=10.0" in text
    assert "pcie-root-port,id=rp_e1000e0,chassis=1,slot=1,addr=18.0" in text
    # 2.5 GT/s: at QEMU's 16 GT/s every bus reset below the port fails (issue 19)
    assert text.count(",x-speed=2_5,x-width=1") == text.count("pcie-root-port") == 2
    assert "e1000e,id=e1000e0,netdev=net_e1000e0,bus=rp_e1000e0" in text
    assert "x3130-upstream,id=up_edu0,bus=rp_edu0" in text
    assert "xio3130-downstream,id=down_edu0,bus=up_edu0,chassis=3,slot=0" in text
    assert "edu,id=edu0,bus=down_edu0" in text
    # Chassis numbers must be unique or QEMU refuses to start.
    chassis = [a.split("chassis=")[1].split(",")[0] for a in args if "chassis=" in a]
    assert len(chassis) == len(set(chassis))


def test_without_viommu_or_cmdline() -> None:
    topo = Topology(devices=("edu",), viommu=False, iommu_cmdline=False)
    assert not any("intel-iommu" in a for a in topo.qemu_args(()))
    assert topo.kernel_args() == []
    assert topo.name == "edu+no-viommu+no-intel_iommu"
    assert Topology().kernel_args() == ["intel_iommu=on"]


def test_manifest_round_trip(tmp_path: Path) -> None:
    topo = Topology(devices=("edu", "nvme@rootport"))
    manifest = Manifest(topo.name, "tcg", "vmlinuz-x", topo.layout(tmp_path))
    manifest.dump(tmp_path / "m.json")
    assert Manifest.load(tmp_path / "m.json") == manifest


def test_accel_override_and_bad_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(accel.ACCEL_ENV, "tcg")
    assert accel.choose_accel() == "tcg"
    assert accel.choose_accel("kvm") == "kvm"
    monkeypatch.setenv(accel.ACCEL_ENV, "hvf")
    with pytest.raises(LabError, match="kvm or tcg"):
        accel.choose_accel()


def test_probe_firmware_puts_the_exit_code_at_the_reset_vector() -> None:
    rom = host_accel._probe_firmware()
    assert len(rom) == 64 << 10
    assert rom[0xFFF0:0xFFF4] == bytes([0xB0, 0x01, 0xE6, 0xF4])


def test_probe_reports_a_missing_qemu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    works, why = host_accel.probe("kvm", timeout=1)
    assert not works and "missing" in why


def test_kernel_resolution_explains_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kernels, "BOOT", tmp_path / "boot")
    monkeypatch.setattr(kernels, "MODULES", tmp_path / "modules")
    (tmp_path / "boot").mkdir()
    with pytest.raises(LabUnavailableError, match="apt-get install linux-image-amd64"):
        kernels.resolve_kernel("stock")
    for version in ("6.1.0-9-amd64", "6.1.0-56-amd64", "5.10.0-1-amd64"):
        (tmp_path / "boot" / f"vmlinuz-{version}").write_text("x")
        (tmp_path / "modules" / version).mkdir(parents=True)
    (tmp_path / "boot" / "vmlinuz-9.9.9-nomodules").write_text("x")
    assert kernels.resolve_kernel(None).name == "vmlinuz-6.1.0-56-amd64"
    with pytest.raises(LabUnavailableError, match="does not exist"):
        kernels.resolve_kernel(str(tmp_path / "nope"))


@pytest.mark.parametrize(
    ("iommu", "intremap", "device", "name"),
    [
        ("intel", True, "intel-iommu,intremap=on,caching-mode=on", "edu"),
        ("intel", False, "intel-iommu,intremap=off,caching-mode=on", "edu+no-intremap"),
        ("amd", True, "amd-iommu,intremap=on", "edu+amd"),
        ("amd", False, "amd-iommu,intremap=off", "edu+amd+no-intremap"),
        ("virtio", True, "virtio-iommu-pci", "edu+virtio"),
    ],
)
def test_each_iommu_gets_its_qemu_device_and_name(
    iommu: str, intremap: bool, device: str, name: str
) -> None:
    topo = Topology(iommu=iommu, intremap=intremap)
    args = topo.qemu_args(())
    assert args == ["-machine", "q35,kernel-irqchip=split", "-device", device]
    assert topo.name == name
    # Only VT-d wants a command-line option; AMD-Vi and virtio-iommu follow the firmware.
    assert topo.kernel_args() == (["intel_iommu=on"] if iommu == "intel" else [])


def test_without_a_viommu_the_iommu_choice_adds_no_device() -> None:
    topo = Topology(viommu=False, iommu="amd")
    assert topo.qemu_args(()) == ["-machine", "q35,kernel-irqchip=split"]
    assert topo.name == "edu+no-viommu"


def test_bad_iommu_choices_are_refused_with_the_fix() -> None:
    with pytest.raises(LabSpecError, match="unknown IOMMU 'arm': use one of intel, amd, virtio"):
        Topology(iommu="arm")
    with pytest.raises(LabSpecError, match="virtio-iommu never remaps interrupts"):
        Topology(iommu="virtio", intremap=False)


def test_virtio_iommu_refuses_the_stock_kernel_only() -> None:
    topo = Topology(iommu="virtio")
    for stock in (None, "stock"):
        with pytest.raises(LabSpecError, match="add --kernel iommufd"):
            topo.check_kernel(stock)
    topo.check_kernel("iommufd")
    topo.check_kernel("/boot/my-bzImage")  # a kernel of the user's: they know what it has
    Topology(iommu="amd").check_kernel(None)
    Topology(iommu="virtio", viommu=False).check_kernel(None)


def test_the_lab_marker_passes_the_iommu_to_the_topology() -> None:
    from pyvfio.lab import pytest_plugin

    assert "iommu" in pytest_plugin._TOPOLOGY_ARGS
