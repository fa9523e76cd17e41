"""The edu suite on Debian's stock kernel, through the type1 container."""

from __future__ import annotations

import pytest

from .edu_suite import *  # noqa: F403 - the suite's tests and fixtures run here
from .labhelp import main_lab

pytestmark = main_lab


@pytest.fixture(params=["type1"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)
