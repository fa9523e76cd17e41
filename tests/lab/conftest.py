"""Fixtures for tests that run in the lab guest (as root, on the real kernel)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pyvfio.lab.pytest_plugin import LabFixture

from .labhelp import nvme_settled, on_vfio


@pytest.fixture
def edu_addr(lab: LabFixture) -> Iterator[str]:
    """The first edu device, bound to vfio-pci for the test."""
    yield from on_vfio(lab.address("edu"))


@pytest.fixture
def nvme_addr(lab: LabFixture) -> Iterator[str]:
    """The NVMe controller, bound to vfio-pci for the test (back to nvme after)."""
    address = lab.address("nvme")
    nvme_settled(address)
    yield from on_vfio(address)
    nvme_settled(address)
