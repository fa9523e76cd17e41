"""A device removed from the host while pyvfio holds it (sysfs ``remove``).

vfio-pci holds the removal until userspace closes the device and fires the request
interrupt meanwhile; pyvfio's ``watch_removal()`` hands that interrupt over. The test
removes its device and brings it back with a rescan. It shares the lab kernel's
two-edu guest, where it runs after that guest's other modules (collection order).
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest

import pyvfio
from pyvfio.drivers import edu as edu_mod
from pyvfio.drivers.edu import Edu
from pyvfio.host import bind
from pyvfio.lab.pytest_plugin import LabFixture

from .labhelp import IOMMUFD_LAB, kernel_log, open_fds

pytestmark = IOMMUFD_LAB


def _wait_for(path: str, present: bool, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while os.path.exists(path) != present:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_a_watched_device_closed_without_removal_is_just_closed(lab: LabFixture) -> None:
    address = lab.address("edu")
    original = bind.bind_vfio(address)
    try:
        dev = pyvfio.open(address)
        assert dev.watch_removal().kind == "req"
        assert not dev.removal_requested
        dev.close()
        with pytest.raises(pyvfio.ClosedError) as info:
            dev.bar(0)
        assert not isinstance(info.value, pyvfio.DeviceRemovedError)
    finally:
        bind.give_back(address, original)


def test_sysfs_remove_while_open_is_announced_then_finishes_at_close(lab: LabFixture) -> None:
    address = lab.address("edu")
    sysfs_dir = f"/sys/bus/pci/devices/{address}"
    original = bind.bind_vfio(address)
    fds = open_fds()
    dev = pyvfio.open(address)
    edu = Edu(dev)
    buf = dev.dma_alloc(4096, max_iova=edu_mod.DMA_MASK)
    msi = dev.enable_irqs("msi")[0]
    request = dev.watch_removal()
    assert dev.watch_removal() is request
    assert not dev.removal_requested
    remover = subprocess.Popen(["sh", "-c", f"echo 1 > {sysfs_dir}/remove"])
    try:
        assert request.wait(timeout=60) >= 1
        assert dev.removal_requested
        assert "Relaying device request to user" in kernel_log()  # vfio_pci_core_request
        assert remover.poll() is None, "the removal finished while the device was open"
        assert os.path.exists(sysfs_dir)
        # Until close() the device still works, so a driver can quiesce it first.
        assert edu.is_alive()
        buf.write(b"last words")
        edu.to_device(buf, 10, irq=msi)
        edu.from_device(buf, 10, offset=100, irq=msi)
        assert buf.read(100, 10) == b"last words"
    finally:
        dev.close()
        status = remover.wait(timeout=120)  # the kernel finishes the removal now
    assert status == 0
    assert _wait_for(sysfs_dir, present=False), f"{sysfs_dir} is still there"
    assert open_fds() == fds
    assert dev.closed and dev.iommu.closed and buf.freed
    with pytest.raises(pyvfio.DeviceRemovedError, match="rescan"):
        edu.bar0.read32(edu_mod.REG_ID)
    with pytest.raises(pyvfio.DeviceRemovedError):
        dev.enable_irqs("msi")
    assert isinstance(pyvfio.DeviceRemovedError("x"), pyvfio.ClosedError)
    dev.close()  # twice is fine
    with pytest.raises(pyvfio.DeviceNotFoundError):
        pyvfio.open(address)

    with open("/sys/bus/pci/rescan", "w") as f:
        f.write("1")
    assert _wait_for(sysfs_dir, present=True), "the rescan did not bring the device back"
    bind.bind_vfio(address)
    try:
        with Edu.open(address) as again:
            assert again.is_alive()
            assert not again.device.removal_requested
    finally:
        bind.give_back(address, original)
