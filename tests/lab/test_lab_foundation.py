"""The lab itself, checked from inside the guest: groups, binding, /dev/vfio."""

from __future__ import annotations

import os
from pathlib import Path

from pyvfio import _ioctl
from pyvfio._uapi import vfio as v
from pyvfio.host import inventory
from pyvfio.host.sysfs import LIVE
from pyvfio.lab import guest
from pyvfio.lab.pytest_plugin import LabFixture
from pyvfio.lab.topology import parse_spec

from .labhelp import MAIN_TOPOLOGY, main_lab

pytestmark = main_lab

CHIPSET = ("0000:00:1f.0", "0000:00:1f.2", "0000:00:1f.3")


def test_manifest_lists_the_topology_asked_for(lab: LabFixture) -> None:
    assert lab.manifest.accel in ("kvm", "tcg")
    assert [f"{d.name}@{d.place}" for d in lab.manifest.devices] == [
        "{}@{}".format(*parse_spec(s)) for s in MAIN_TOPOLOGY
    ]


def test_every_lab_device_is_present_with_its_ids_and_group(lab: LabFixture) -> None:
    groups = LIVE.iommu_groups()
    for device, address in guest.devices():
        info = inventory.device_info(address)
        assert info.ids == device.ids, device
        assert info.iommu_group is not None, f"{address} has no IOMMU group"
        assert address in groups[info.iommu_group]


def test_groups_follow_the_topology(lab: LabFixture) -> None:
    for device, address in guest.devices():
        group = LIVE.iommu_group(address)
        assert group is not None, f"{address} is in no IOMMU group"
        members = LIVE.group_devices(group)
        if device.place in ("root", "rootport"):
            # Root-bus endpoints and devices below an ACS root port are alone.
            assert members == [address], (device, members)
        else:
            # Below a switch without ACS: the downstream port shares the group.
            port = Path(os.path.realpath(f"/sys/bus/pci/devices/{address}")).parent.name
            assert sorted(members) == sorted([port, address]), (device, members)


def test_q35_chipset_group_holds_lpc_sata_and_smbus() -> None:
    group = LIVE.iommu_group(CHIPSET[0])
    assert group is not None
    assert LIVE.group_devices(group) == list(CHIPSET)
    drivers = {a: LIVE.driver(a) for a in CHIPSET}
    assert drivers == {CHIPSET[0]: "lpc_ich", CHIPSET[1]: "ahci", CHIPSET[2]: "i801_smbus"}


def test_edu_binds_to_vfio_pci_through_driver_override(edu_addr: str) -> None:
    rel = f"sys/bus/pci/devices/{edu_addr}"
    assert LIVE.read_attr(f"{rel}/driver_override") == "vfio-pci"
    assert LIVE.driver(edu_addr) == "vfio-pci"
    assert os.path.exists(f"/dev/vfio/{LIVE.iommu_group(edu_addr)}")


def test_container_answers_api_version_and_type1v2() -> None:
    fd = _ioctl.open_node("/dev/vfio/vfio")
    try:
        assert _ioctl.get_api_version(fd) == v.VFIO_API_VERSION == 0
        assert _ioctl.check_extension(fd, v.VfioExtension.VFIO_TYPE1v2_IOMMU)
        assert not _ioctl.check_extension(fd, v.VfioExtension.VFIO_SPAPR_TCE_IOMMU)
    finally:
        os.close(fd)


def test_edu_group_is_viable(edu_addr: str) -> None:
    fd = _ioctl.open_node(f"/dev/vfio/{LIVE.iommu_group(edu_addr)}")
    try:
        status = _ioctl.group_get_status(fd)
        assert status & v.VfioGroupFlag.VFIO_GROUP_FLAGS_VIABLE
        assert not status & v.VfioGroupFlag.VFIO_GROUP_FLAGS_CONTAINER_SET
    finally:
        os.close(fd)


def test_doctor_names_type1_only_on_the_stock_kernel(edu_addr: str) -> None:
    from pyvfio.host import doctor

    result = doctor.check_backends(LIVE)
    assert result.status is doctor.Status.PASS
    assert "type1" in result.message and "iommufd" not in result.message
