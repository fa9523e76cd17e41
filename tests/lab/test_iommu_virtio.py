"""QEMU's virtio-iommu-pci on the lab's kernel: no interrupt remapping, so VFIO refuses
its groups (type1 and iommufd, each as the kernel answers) until allow_unsafe_interrupts
is set; then the edu suite runs through both backends. And what doctor says of it."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

import pyvfio
from pyvfio.cli import app
from pyvfio.host import bind
from pyvfio.lab.pytest_plugin import LabFixture

from .edu_suite import EduSuite
from .labhelp import VIRTIO_LAB, on_vfio

# PENDING (2026-12-03): written, not yet seen passing in the lab (the lab kernel with
# AMD_IOMMU/VIRTIO_IOMMU was still building at the session's end); out of the test
# command until a run passes: then drop `pending`.
pytestmark = [VIRTIO_LAB, pytest.mark.pending]

UNSAFE = {
    "type1": "/sys/module/vfio_iommu_type1/parameters/allow_unsafe_interrupts",
    "iommufd": "/sys/module/iommufd/parameters/allow_unsafe_interrupts",
}


def _set(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _get(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


@pytest.fixture
def unsafe_interrupts() -> Iterator[None]:
    """Both modules' allow_unsafe_interrupts on for a test, then back as they were."""
    bind.load_module("vfio-pci")
    old = {path: _get(path) for path in UNSAFE.values()}
    for path in UNSAFE.values():
        _set(path, "Y")
    try:
        yield
    finally:
        for path, value in old.items():
            _set(path, value)


def test_the_guest_has_virtio_iommu_described_by_viot() -> None:
    units = os.listdir("/sys/class/iommu")
    assert units and all(u.startswith("virtio") for u in units), units
    assert os.path.exists("/sys/firmware/acpi/tables/VIOT")


def test_type1_refuses_the_group_without_interrupt_remapping(lab: LabFixture) -> None:
    bind.load_module("vfio-pci")
    assert _get(UNSAFE["type1"]) == "N"
    for address in on_vfio(lab.address("edu")):
        with pytest.raises(pyvfio.NoInterruptRemappingError) as info:
            pyvfio.open(address, backend="type1")
        assert info.value.ioctl in ("VFIO_SET_IOMMU", "VFIO_GROUP_SET_CONTAINER")
        assert "allow_unsafe_interrupts" in str(info.value)


def test_iommufd_refuses_the_bind_without_interrupt_remapping(lab: LabFixture) -> None:
    """iommufd_device_bind: EPERM when the group cannot isolate MSI and
    iommufd.allow_unsafe_interrupts is off; pyvfio's error names both causes of EPERM."""
    bind.load_module("vfio-pci")
    assert _get(UNSAFE["iommufd"]) == "N"
    for address in on_vfio(lab.address("edu")):
        with pytest.raises(pyvfio.VfioError) as info:
            pyvfio.open(address, backend="iommufd")
        assert info.value.errno == errno.EPERM
        assert info.value.ioctl == "VFIO_DEVICE_BIND_IOMMUFD"
        assert "iommufd.allow_unsafe_interrupts=1" in str(info.value)


def test_doctor_says_what_virtio_iommu_lacks() -> None:
    runner = CliRunner()
    found = {
        c["name"]: c for c in json.loads(runner.invoke(app, ["doctor", "--json"]).stdout)["checks"]
    }
    assert found["ACPI IOMMU table"]["message"] == "VIOT (virtio-iommu) present"
    driver = found["IOMMU driver"]
    assert driver["status"] == "WARN" and driver["message"].startswith("virtio-iommu (virtio")
    assert "interrupt remapping (MSI isolation)" in driver["message"]
    remap = found["interrupt remapping"]
    assert remap["status"] == "FAIL" and "does not remap interrupts" in remap["message"], remap
    for path in UNSAFE.values():
        _set(path, "Y")
    try:
        found = {
            c["name"]: c
            for c in json.loads(runner.invoke(app, ["doctor", "--json"]).stdout)["checks"]
        }
        assert found["interrupt remapping"]["status"] == "WARN", found["interrupt remapping"]
    finally:
        for path in UNSAFE.values():
            _set(path, "N")


@pytest.mark.usefixtures("unsafe_interrupts")
class TestVirtioIommu(EduSuite):
    """The suite, with MSI unisolated and accepted (allow_unsafe_interrupts)."""

    @pytest.fixture(params=["type1", "iommufd"])
    def backend(self, request: pytest.FixtureRequest) -> str:
        return str(request.param)
