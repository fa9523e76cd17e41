"""A vIOMMU without interrupt remapping: type1 refuses the group, and pyvfio says why."""

from __future__ import annotations

import pytest

import pyvfio
from pyvfio.host import bind
from pyvfio.lab.pytest_plugin import LabFixture

from .labhelp import on_vfio

pytestmark = pytest.mark.lab(devices=("edu",), intremap=False)


def test_attach_without_interrupt_remapping_is_explained(lab: LabFixture) -> None:
    bind.load_module("vfio-pci")
    for address in on_vfio(lab.address("edu")):
        with pytest.raises(pyvfio.NoInterruptRemappingError) as info:
            pyvfio.open(address, backend="type1")
        err = info.value
        assert err.ioctl in ("VFIO_SET_IOMMU", "VFIO_GROUP_SET_CONTAINER")
        assert "allow_unsafe_interrupts" in str(err)
        with open("/sys/module/vfio_iommu_type1/parameters/allow_unsafe_interrupts") as f:
            assert f.read().strip() == "N"
