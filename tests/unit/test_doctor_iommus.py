"""doctor and show on each IOMMU (VT-d, AMD-Vi, virtio-iommu) and on iommufd's
compatibility container, on simulated hosts: every PASS, WARN and FAIL of the checks
issue 17 added. The lab's real guests give the cases they can (tests/lab/test_iommu_*.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pyvfio.host import details, doctor, iommus, snapshot
from pyvfio.host.doctor import Status
from pyvfio.testing import SimulatedKernel, amd_desktop, intel_server, q35_lab, virtio_guest

#: What QEMU 7.2's amd-iommu makes Linux 6.1 log (seen in the lab guest).
AMD_LOG = (
    "[    0.032000] AMD-Vi: Using global IVHD EFR:0x0, EFR2:0x0\n"
    "[    5.338634] AMD-Vi: Using strict mode due to virtualization\n"
    "[    5.632339] pci 0000:00:0a.0: AMD-Vi: Found IOMMU cap 0x40\n"
    "[    5.632528] AMD-Vi: Extended features (0x29d3, 0x0): PreF PPR GT IA GA HE\n"
    "[    5.632823] AMD-Vi: Interrupt remapping enabled\n"
)
#: What Linux logs when the IVRS has no IOAPIC entries (amd-iommu with intremap=off):
#: drivers/iommu/amd/init.c, check_ioapic_information().
AMD_NO_IR_LOG = (
    "[    0.500000] AMD-Vi: [Firmware Bug]: IOAPIC[0] not in IVRS table\n"
    "[    0.500001] AMD-Vi: [Firmware Bug]: No southbridge IOAPIC found\n"
    "[    0.500002] AMD-Vi: Disabling interrupt remapping\n"
)


def by_name(results: list[doctor.CheckResult]) -> dict[str, doctor.CheckResult]:
    return {r.name: r for r in results}


@pytest.fixture
def amd(tmp_path: Path) -> SimulatedKernel:
    kernel = amd_desktop(tmp_path / "amd")
    kernel.host.write("pyvfio/dmesg.txt", AMD_LOG)
    return kernel


# -- which IOMMU -------------------------------------------------------------------------


def test_acpi_names_each_iommu_table(tmp_path: Path, amd: SimulatedKernel) -> None:
    assert doctor.check_acpi(intel_server(tmp_path / "i")).message == "DMAR (Intel VT-d) present"
    assert doctor.check_acpi(amd).message == "IVRS (AMD-Vi) present"
    check = doctor.check_acpi(virtio_guest(tmp_path / "v"))
    assert check.status is Status.PASS and check.message == "VIOT (virtio-iommu) present"
    bare = q35_lab(tmp_path / "bare")
    bare.path("sys/firmware/acpi/tables/DMAR").unlink()
    check = doctor.check_acpi(bare)
    assert check.status is Status.FAIL and "VIOT (virtio-iommu)" in check.message


def test_iommu_driver_names_vtd_and_its_options(tmp_path: Path) -> None:
    check = doctor.check_iommu_driver(intel_server(tmp_path))
    assert check.status is Status.PASS
    assert check.message == "Intel VT-d (dmar0)"


def test_iommu_driver_on_amd_reads_the_amd_vi_log_and_amd_iommu_options(
    amd: SimulatedKernel,
) -> None:
    amd.host.write("proc/cmdline", "root=/dev/nvme0n1p2 amd_iommu=force_isolation iommu=pt\n")
    check = doctor.check_iommu_driver(amd)
    assert check.status is Status.PASS, check
    assert check.message.startswith("AMD-Vi (ivhd0); amd_iommu=force_isolation; ")
    assert "Using strict mode due to virtualization" in check.message
    assert "Interrupt remapping enabled" in check.message
    assert "Extended features (0x29d3, 0x0)" in check.message
    assert "Found IOMMU cap" not in check.message  # the driver's chatter stays out


def test_iommu_driver_on_virtio_iommu_says_what_it_lacks(tmp_path: Path) -> None:
    check = doctor.check_iommu_driver(virtio_guest(tmp_path))
    assert check.status is Status.WARN
    assert check.message.startswith("virtio-iommu (virtio1): translates DMA")
    assert "interrupt remapping (MSI isolation)" in check.message
    assert "dirty-page tracking" in check.message
    assert "allow_unsafe_interrupts" in check.hint


def test_iommu_driver_fails_with_a_viot_and_no_driver(tmp_path: Path) -> None:
    """Debian's 6.1 under QEMU's virtio-iommu-pci: the VIOT is there, nothing reads it."""
    check = doctor.check_iommu_driver(virtio_guest(tmp_path, driver=False))
    assert check.status is Status.FAIL
    assert "no driver took it" in check.message and "CONFIG_VIRTIO_IOMMU" in check.hint


def test_iommu_driver_fails_with_no_iommu(tmp_path: Path) -> None:
    kernel = q35_lab(tmp_path)
    check = doctor.check_iommu_driver(kernel)
    assert check.status is Status.FAIL and check.message == "none is active"
    assert "intel_iommu=on" in check.hint


def test_show_names_the_unit_that_translates_the_device(tmp_path: Path) -> None:
    kernel = virtio_guest(tmp_path)
    info = details.describe("00:10.0", kernel)
    assert info.iommu == "virtio-iommu (virtio1)"
    assert "  IOMMU: virtio-iommu (virtio1)" in str(info).splitlines()
    assert info.to_json()["group"]["iommu"] == {"unit": "virtio1", "kind": "virtio"}
    json.dumps(info.to_json())
    assert details.describe("00:11.0", kernel).iommu is None  # no iommu link: none said


# -- interrupt remapping ------------------------------------------------------------------


def test_amd_vi_with_interrupt_remapping_passes(amd: SimulatedKernel) -> None:
    check = doctor.check_interrupt_remapping(amd)
    assert check.status is Status.PASS and "enabled (kernel log)" in check.message


def test_amd_vi_without_interrupt_remapping_fails(amd: SimulatedKernel) -> None:
    """QEMU's amd-iommu with intremap=off: no IOAPIC in the IVRS, and the kernel says so."""
    amd.host.write("pyvfio/dmesg.txt", AMD_NO_IR_LOG)
    check = doctor.check_interrupt_remapping(amd)
    assert check.status is Status.FAIL, check
    assert "disabled" in check.message and "allow_unsafe_interrupts" in check.hint


def test_virtio_iommu_fails_interrupt_remapping_until_unsafe_interrupts_are_allowed(
    tmp_path: Path,
) -> None:
    kernel = virtio_guest(tmp_path)
    check = doctor.check_interrupt_remapping(kernel)
    assert check.status is Status.FAIL
    assert "virtio-iommu does not remap interrupts" in check.message
    assert "iommufd.allow_unsafe_interrupts=1" in check.hint
    kernel.host.write("sys/module/vfio_iommu_type1/parameters/allow_unsafe_interrupts", "Y\n")
    check = doctor.check_interrupt_remapping(kernel)
    assert check.status is Status.WARN
    assert "vfio_iommu_type1.allow_unsafe_interrupts is set" in check.message


# -- who serves /dev/vfio/vfio ---------------------------------------------------------------


def provider(kernel: SimulatedKernel) -> str | None:
    return iommus.vfio_container_provider(
        kernel, snapshot.device_nodes(kernel), snapshot.kernel_log(kernel)
    )


def nodes(kernel: SimulatedKernel, *names: str) -> None:
    kernel.host.write(
        "pyvfio/nodes.json",
        json.dumps({n: {"mode": 0o20666, "uid": 0, "gid": 0} for n in names}),
    )


def test_vfio_container_of_vfio_itself(tmp_path: Path) -> None:
    kernel = intel_server(tmp_path)
    nodes(kernel, "dev/vfio/vfio", "dev/iommu")
    kernel.host.write("sys/module/vfio_iommu_type1/parameters/allow_unsafe_interrupts", "N\n")
    assert provider(kernel) == "vfio"
    check = doctor.check_backends(kernel)
    assert check.status is Status.PASS
    assert "type1 (/dev/vfio/vfio: VFIO's container, vfio_iommu_type1)" in check.message
    assert "iommufd (/dev/iommu" in check.message


@pytest.mark.parametrize("evidence", ["log", "config", "no type1 module"])
def test_iommufds_compatibility_container_is_named(tmp_path: Path, evidence: str) -> None:
    kernel = intel_server(tmp_path)
    nodes(kernel, "dev/vfio/vfio", "dev/iommu")
    if evidence == "log":
        kernel.host.write(
            "pyvfio/dmesg.txt", "iommufd: IOMMUFD is providing /dev/vfio/vfio, not VFIO.\n"
        )
    elif evidence == "config":
        kernel.host.write("proc/sys/kernel/osrelease", "6.12.0-lab\n")
        kernel.host.write("boot/config-6.12.0-lab", "CONFIG_IOMMUFD_VFIO_CONTAINER=y\n")
    else:  # IOMMUFD_VFIO_CONTAINER needs VFIO_CONTAINER off, and type1 needs it on
        kernel.path("sys/module/vfio_iommu_type1").rmdir()
    assert provider(kernel) == "iommufd"
    check = doctor.check_backends(kernel)
    assert check.status is Status.PASS
    assert "type1 on iommufd's compatibility container" in check.message
    assert "CONFIG_IOMMUFD_VFIO_CONTAINER" in check.message


def test_no_container_node_no_provider(tmp_path: Path) -> None:
    kernel = intel_server(tmp_path)
    nodes(kernel, "dev/iommu")
    assert provider(kernel) is None
