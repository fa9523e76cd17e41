"""The kernel's rules for vfio drivers and viable groups, and the one "bound, in a
group" check that the core and ``pyvfio grant`` both make."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pyvfio import viability
from pyvfio.errors import DeviceNotBoundError, DeviceNotFoundError, UnsupportedError
from pyvfio.host import grant, inventory
from pyvfio.host.journal import STATE_DIR_ENV
from pyvfio.host.synthetic import SimulatedKernel, q35_lab
from pyvfio.iommu import Iommu

EDU, EDU_GROUP = "0000:00:10.0", 2

#: The kernel's variant drivers as they register (drivers/vfio/pci/*/: KBUILD_MODNAME).
KERNEL_VARIANTS = (
    "mlx5_vfio_pci",
    "hisi_acc_vfio_pci",
    "virtio_vfio_pci",
    "nvgrace_gpu_vfio_pci",
    "pds_vfio_pci",
    "qat_vfio_pci",
    "xe_vfio_pci",
)


@pytest.mark.parametrize("driver", ["vfio-pci", *KERNEL_VARIANTS])
def test_vfio_pci_and_each_kernel_variant_is_a_vfio_driver(driver: str) -> None:
    assert viability.is_vfio_driver(driver)
    assert not viability.blocks_group(driver)


def test_the_kernel_variants_are_all_listed() -> None:
    assert set(KERNEL_VARIANTS) == viability.VFIO_VARIANT_DRIVERS


@pytest.mark.parametrize(
    "driver", [None, "nvme", "e1000e", "pci-stub", "pcieport", "vfio", "vfio_pci_core", "vfio-pc"]
)
def test_other_drivers_are_not_vfio_drivers(driver: str | None) -> None:
    assert not viability.is_vfio_driver(driver)


@pytest.mark.parametrize(
    ("driver", "blocks"),
    [(None, False), ("pci-stub", False), ("pcieport", False), ("nvme", True), ("ahci", True)],
)
def test_which_drivers_make_a_group_not_viable(driver: str | None, blocks: bool) -> None:
    assert viability.blocks_group(driver) is blocks


@pytest.fixture
def kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SimulatedKernel:
    monkeypatch.setenv(STATE_DIR_ENV, str(tmp_path / "state"))
    return q35_lab(tmp_path / "root")


def test_a_device_on_a_variant_driver_is_bound_for_the_core_grant_and_ls(
    kernel: SimulatedKernel,
) -> None:
    kernel.host.bind(EDU, "mlx5_vfio_pci")
    assert viability.bound_group(EDU, kernel) == EDU_GROUP
    assert grant._check_device(EDU, kernel) == EDU_GROUP
    (group,) = [g for g in inventory.iommu_groups(kernel) if g.number == EDU_GROUP]
    assert group.viable and not group.blockers


def _not_bound_by_open(kernel: SimulatedKernel) -> Exception:
    with pytest.raises(Exception) as info:
        Iommu(sysfs=kernel).open(EDU)
    return info.value


def _not_bound_by_grant(kernel: SimulatedKernel) -> Exception:
    with pytest.raises(Exception) as info:
        grant._check_device(EDU, kernel)
    return info.value


@pytest.mark.parametrize("check", [_not_bound_by_open, _not_bound_by_grant])
def test_open_and_grant_refuse_an_unbound_device_with_the_same_error(
    kernel: SimulatedKernel, check: object
) -> None:
    assert callable(check)
    err = check(kernel)  # edu is on no driver
    assert type(err) is DeviceNotBoundError and err.device == EDU
    assert f"not bound to any driver, not vfio-pci: bind it first (pyvfio bind {EDU})" in str(err)
    kernel.host.bind(EDU, "vfio-pci")
    os.unlink(kernel.path(f"sys/bus/pci/devices/{EDU}/iommu_group"))
    err = check(kernel)  # on vfio-pci, but no IOMMU group
    assert type(err) is UnsupportedError and err.device == EDU
    assert "has no IOMMU group: the IOMMU is off" in str(err)


def test_grant_says_what_comes_after_binding(kernel: SimulatedKernel) -> None:
    with pytest.raises(DeviceNotBoundError, match=r"\(pyvfio bind .*\), then grant it$"):
        grant._check_device(EDU, kernel)
    with pytest.raises(DeviceNotFoundError):
        viability.bound_group("0000:00:0f.0", kernel)
