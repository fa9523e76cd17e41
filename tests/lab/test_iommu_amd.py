"""The edu suite on QEMU's amd-iommu (AMD-Vi with interrupt remapping), on the lab's
kernel, through both backends; and what doctor, show and Iommu say there."""

from __future__ import annotations

import json
import os

import pytest
from typer.testing import CliRunner

import pyvfio
from pyvfio.cli import app
from pyvfio.host import bind
from pyvfio.lab.pytest_plugin import LabFixture

from .edu_suite import EduSuite
from .labhelp import AMD_LAB, kernel_log, on_vfio, wait_dmar_faults

# PENDING (2026-12-03): written, not yet seen passing in the lab (the lab kernel with
# AMD_IOMMU/VIRTIO_IOMMU was still building at the session's end); out of the test
# command until a run passes: then drop `pending`.
pytestmark = [AMD_LAB, pytest.mark.pending]


class TestAmdIommu(EduSuite):
    faults_logged = False  # see test_amd_iommu_blocks_dma_but_logs_no_fault

    @pytest.fixture(params=["type1", "iommufd"])
    def backend(self, request: pytest.FixtureRequest) -> str:
        return str(request.param)


def test_the_guest_has_amd_vi_with_interrupt_remapping() -> None:
    units = os.listdir("/sys/class/iommu")
    assert units and all(u.startswith("ivhd") for u in units), units
    assert os.path.exists("/sys/firmware/acpi/tables/IVRS")
    assert not os.path.exists("/sys/firmware/acpi/tables/DMAR")


def test_doctor_and_show_name_amd_vi(lab: LabFixture) -> None:
    runner = CliRunner()
    done = runner.invoke(app, ["doctor", "--json"])
    found = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
    assert found["ACPI IOMMU table"]["message"] == "IVRS (AMD-Vi) present"
    driver = found["IOMMU driver"]
    assert driver["status"] == "PASS" and driver["message"].startswith("AMD-Vi (ivhd0)"), driver
    assert "Interrupt remapping enabled" in driver["message"]
    remap = found["interrupt remapping"]
    assert remap["status"] == "PASS" and "enabled (kernel log)" in remap["message"], remap
    assert "VFIO's container, vfio_iommu_type1" in found["VFIO backends"]["message"]
    shown = runner.invoke(app, ["show", lab.address("edu"), "--json"])
    assert json.loads(shown.stdout)["group"]["iommu"] == {"unit": "ivhd0", "kind": "amd"}


@pytest.mark.parametrize("backend", ["type1", "iommufd"])
def test_iommu_says_which_mode_serves_it(lab: LabFixture, backend: str) -> None:
    bind.load_module("vfio-pci")
    for address in on_vfio(lab.address("edu")):
        with pyvfio.Iommu(backend=backend) as iommu:
            iommu.open(address)
            # The lab kernel keeps VFIO's own container (CONFIG_VFIO_CONTAINER=y).
            assert iommu.mode == {"type1": "vfio_type1v2_iommu", "iommufd": "iommufd"}[backend]


def test_amd_iommu_blocks_dma_but_logs_no_fault(lab: LabFixture) -> None:
    """DMA to a freed IOVA is blocked (the secret does not come back), and QEMU 7.2's
    amd-iommu logs no IO_PAGE_FAULT for it: the suite's fault-log checks are off here
    (EduSuite.faults_logged). Should QEMU start logging, this fails: turn them on."""
    from pyvfio.drivers import edu as edu_mod
    from pyvfio.drivers.edu import Edu

    bind.load_module("vfio-pci")
    for address in on_vfio(lab.address("edu")):
        with pyvfio.open(address, backend="type1") as dev:
            edu = Edu(dev)
            secret = b"amd-freed-secret" * 4
            with dev.dma_alloc(4096, max_iova=edu_mod.DMA_MASK) as sink:
                buf = dev.dma_alloc(4096, max_iova=edu_mod.DMA_MASK)
                old = buf.iova
                buf.write(secret)
                buf.free()
                edu.to_device(sink, len(secret))  # the device buffer: zeroes first
                before = kernel_log()
                edu.dma_raw(to_ram=False, ram_iova=old, length=len(secret))
                edu.from_device(sink, len(secret))
                assert sink.read(0, len(secret)) == bytes(len(secret))
                assert wait_dmar_faults(address, before, old) == []
