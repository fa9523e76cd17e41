"""The edu suite on Debian's stock kernel, through the type1 container."""

from __future__ import annotations

import pytest

from .edu_suite import EduSuite
from .labhelp import main_lab

pytestmark = main_lab


class TestStockKernel(EduSuite):
    @pytest.fixture(params=["type1"])
    def backend(self, request: pytest.FixtureRequest) -> str:
        return str(request.param)
