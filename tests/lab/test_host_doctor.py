"""pyvfio doctor on the real kernel: with the vIOMMU and intel_iommu=on, and without each."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from pyvfio.cli import app
from pyvfio.host import doctor
from pyvfio.host.doctor import Status
from pyvfio.host.sysfs import LIVE
from pyvfio.lab.pytest_plugin import LabFixture

from .labhelp import NOIOMMU_LAB, main_lab

runner = CliRunner()
IOMMU_CHECKS = ("ACPI IOMMU table", "IOMMU active", "kernel command line", "interrupt remapping")


def checks(*args: str) -> tuple[int, dict[str, dict[str, str]]]:
    done = runner.invoke(app, ["doctor", "--json", *args])
    data = json.loads(done.stdout)
    return done.exit_code, {c["name"]: c for c in data["checks"]}


@main_lab
def test_doctor_passes_the_iommu_and_interrupt_remapping_checks(lab: LabFixture) -> None:
    _, found = checks(lab.address("edu"))
    for name in IOMMU_CHECKS:
        assert found[name]["status"] == "PASS", found[name]
    assert "ECAP.IR set" in found["interrupt remapping"]["message"]
    assert found["VFIO modules"]["status"] == "PASS"
    edu = lab.address("edu")
    assert found[f"{edu} group"]["status"] == "PASS"
    assert found[f"{edu} in use"]["status"] == "PASS"


@main_lab
def test_doctor_fails_a_device_in_a_group_that_is_not_viable() -> None:
    code, found = checks("00:1f.2")
    assert code == 1
    group = found["0000:00:1f.2 group"]
    assert group["status"] == "FAIL" and "pyvfio bind --group 0000:00:1f.2" in group["hint"]


@NOIOMMU_LAB
def test_without_the_viommu_the_iommu_checks_fail_with_the_firmware_hint() -> None:
    """No vIOMMU (on the lab's kernel, to share the no-IOMMU tests' boot)."""
    code, found = checks()
    assert code == 1
    for name in ("ACPI IOMMU table", "IOMMU active", "interrupt remapping"):
        assert found[name]["status"] == "FAIL", found[name]
        assert "virtual IOMMU" in found[name]["hint"], found[name]


@pytest.mark.lab(devices=("edu",), iommu_cmdline=False)
def test_without_intel_iommu_on_the_checks_follow_the_kernel_default() -> None:
    """Debian's kernel has CONFIG_INTEL_IOMMU_DEFAULT_ON_INTGPU_OFF=y: VT-d is on
    without the option, and doctor must say so rather than ask for it."""
    code, found = checks()
    assert found["ACPI IOMMU table"]["status"] == "PASS"
    default = doctor._vtd_default_on(LIVE)
    if default:
        assert code == 0, found
        for name in IOMMU_CHECKS:
            assert found[name]["status"] == "PASS", found[name]
        assert "turns VT-d on by default" in found["kernel command line"]["message"]
        return
    assert code == 1, found
    for name in ("IOMMU active", "kernel command line", "interrupt remapping"):
        assert found[name]["status"] == "FAIL", found[name]
        assert "add intel_iommu=on" in found[name]["hint"], found[name]
    assert doctor.check_iommu(LIVE).status is Status.FAIL
