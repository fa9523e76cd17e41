"""Bad input on real devices: each LAB and NVME case of tests/robustness_cases.py gives one
clear error of the documented type and leaves the device and the host as they were.

"As they were": the open objects answer the same (config space bytes, edu's ID and
liveness, the Iommu's mappings, free IOVA blocks and dma_avail, the IRQs enabled, the
DMA buffer's bytes), a device opened afresh afterwards reads as one opened before, no
file descriptor is left open, and no driver binding of the guest changed.
"""

from __future__ import annotations

import gc
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest

import pyvfio
from pyvfio.drivers import edu as edu_mod
from pyvfio.drivers.edu import Edu
from pyvfio.drivers.nvme import Controller
from pyvfio.host.sysfs import LIVE, PCI_DEVICES
from pyvfio.lab.pytest_plugin import LabFixture
from robustness_cases import LAB, NVME, Case

from .labhelp import main_lab, nvme_settled, on_vfio, open_fds

pytestmark = main_lab

BUF = 0x2000


# One binding per module, not per case: a hundred binds and give-backs (the kernel's
# nvme driver re-initialising the controller each time) cost minutes of CI under TCG,
# and each case still checks that no binding moved.
@pytest.fixture(scope="module")
def edu_addr(lab: LabFixture) -> Iterator[str]:
    yield from on_vfio(lab.address("edu"))


@pytest.fixture(scope="module")
def nvme_addr(lab: LabFixture) -> Iterator[str]:
    address = lab.address("nvme")
    nvme_settled(address)
    yield from on_vfio(address)
    nvme_settled(address)


@dataclass
class EduContext:
    """What a LAB case is handed: edu opened through its own Iommu, with DMA and INTx."""

    dev: pyvfio.Device
    bar0: pyvfio.Region
    config: pyvfio.Config
    iommu: pyvfio.Iommu
    buf: pyvfio.DmaBuffer
    edu: Edu
    irq: pyvfio.Interrupt


@contextmanager
def edu_context(address: str) -> Iterator[EduContext]:
    with pyvfio.Iommu("type1") as iommu:
        dev = iommu.open(address)
        edu = Edu(dev)
        buf = dev.dma_alloc(BUF, max_iova=edu_mod.DMA_MASK)
        buf.write(bytes(range(256)) * (BUF // 256))
        [irq] = dev.enable_irqs("intx")
        yield EduContext(dev, edu.bar0, dev.config, iommu, buf, edu, irq)


def host_drivers() -> dict[str, str | None]:
    return {addr: LIVE.driver(addr) for addr in LIVE.listdir(PCI_DEVICES)}


def fresh_edu(address: str) -> tuple[bytes, int]:
    """Config space and ID of edu opened afresh (vfio-pci restores config on close)."""
    with pyvfio.open(address) as dev:
        return dev.config.read(0, 256), dev.bar(0).read32(edu_mod.REG_ID)


def live_state(c: EduContext) -> tuple[Any, ...]:
    return (
        c.config.read(0, c.config.size),
        c.bar0.read32(edu_mod.REG_ID),
        c.iommu.mappings,
        c.iommu.info.dma_avail,
        c.iommu._alloc().free_blocks(),
        {kind: len(irqs) for kind, irqs in c.dev.enabled_irqs.items()},
        c.buf.read(),
    )


def run(case: Case, context: object) -> None:
    if case.error is None:
        case.call(context)
        return
    with pytest.raises(case.error, match=re.escape(case.match)) as info:
        case.call(context)
    assert "\n" not in str(info.value), "an error is one line"


@pytest.mark.parametrize("case", LAB, ids=[c.id for c in LAB])
def test_bad_call_on_edu_changes_nothing(case: Case, edu_addr: str) -> None:
    gc.collect()
    fds, drivers = open_fds(), host_drivers()
    before_open = fresh_edu(edu_addr)
    with edu_context(edu_addr) as c:
        before = live_state(c)
        run(case, c)
        if not case.closes:
            assert live_state(c) == before
            assert c.edu.is_alive()
    assert fresh_edu(edu_addr) == before_open
    gc.collect()
    assert open_fds() == fds, "a file descriptor leaked"
    assert host_drivers() == drivers, "a driver binding changed"


def nvme_state(ctrl: Controller) -> tuple[Any, ...]:
    return (ctrl.read(0, 8), len(ctrl.queues), ctrl.device.iommu.mappings, ctrl.csts)


@pytest.mark.parametrize("case", NVME, ids=[c.id for c in NVME])
def test_bad_call_on_nvme_changes_nothing(case: Case, nvme_addr: str) -> None:
    gc.collect()
    fds, drivers = open_fds(), host_drivers()
    with Controller.open(nvme_addr) as ctrl:
        serial, before = ctrl.info.serial, nvme_state(ctrl)
        run(case, ctrl)
        if not case.closes:
            assert nvme_state(ctrl) == before
    with Controller.open(nvme_addr) as ctrl:
        assert (ctrl.info.serial, ctrl.read(0, 8)) == (serial, before[0])
    gc.collect()
    assert open_fds() == fds, "a file descriptor leaked"
    assert host_drivers() == drivers, "a driver binding changed"
