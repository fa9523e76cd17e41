"""The edu suite on the lab's own 6.12 kernel, through both backends it offers:
iommufd (/dev/iommu + the device cdev) and the type1 container beside it."""

from __future__ import annotations

import pytest

from .edu_suite import EduSuite
from .labhelp import MAIN_TOPOLOGY

pytestmark = pytest.mark.lab(devices=MAIN_TOPOLOGY, kernel="iommufd")


class TestIommufdKernel(EduSuite):
    @pytest.fixture(params=["iommufd", "type1"])
    def backend(self, request: pytest.FixtureRequest) -> str:
        return str(request.param)


def test_doctor_names_both_backends() -> None:
    from pyvfio.host import doctor
    from pyvfio.host.sysfs import LIVE

    result = doctor.check_backends(LIVE)
    assert result.status is doctor.Status.PASS
    assert "type1" in result.message and "iommufd" in result.message
