"""The iommufd backend on a real kernel: the lab's own build (CONFIG_IOMMUFD, all built in).

Debian's kernels have no IOMMUFD, so these run on ``kernel="iommufd"``, which the
host builds (once, cached) before booting; see docs/lab-kernel.md.  The same kernel
offers the type1 container too, so both backends are checked side by side.
"""

from __future__ import annotations

import errno
import os
import random
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import pyvfio
from pyvfio.drivers import edu as edu_mod
from pyvfio.drivers.edu import Edu
from pyvfio.host import bind
from pyvfio.host.sysfs import LIVE
from pyvfio.lab.pytest_plugin import LabFixture

from .labhelp import IOMMUFD_LAB, on_vfio, open_fds

pytestmark = IOMMUFD_LAB

#: intel-iommu reserves the x86 MSI window in every domain (IOMMU_RESV_MSI).
MSI_WINDOW = (0xFEE00000, 0xFEEFFFFF)
#: The q35 chipset's group: LPC (lpc_ich), SATA (ahci) and SMBus (i801_smbus).
CHIPSET = ("0000:00:1f.0", "0000:00:1f.2", "0000:00:1f.3")


@pytest.fixture
def edus(lab: LabFixture) -> Iterator[list[str]]:
    """Both edu devices, bound to vfio-pci for the test and given back after."""
    first, second = lab.addresses("edu")
    for a in on_vfio(first):
        for b in on_vfio(second):
            yield [a, b]


@pytest.fixture
def edu_addr(edus: list[str]) -> str:
    return edus[0]


def cdev_of(address: str) -> Path:
    (name,) = os.listdir(f"/sys/bus/pci/devices/{address}/vfio-dev")
    return Path("/dev/vfio/devices") / name


def round_trip(edu: Edu, *, msi: bool) -> None:
    dev = edu.device
    irq = dev.enable_irqs("msi")[0] if msi else None
    # As much as edu takes: QEMU aborts a transfer that touches its buffer's last byte.
    payload = random.Random(10).randbytes(edu_mod.DMA_LIMIT)
    with (
        dev.dma_alloc(4096, max_iova=edu_mod.DMA_MASK) as out,
        dev.dma_alloc(4096, max_iova=edu_mod.DMA_MASK) as back,
    ):
        out.write(payload)
        edu.to_device(out, irq=irq)
        edu.from_device(back, irq=irq)
        assert back.read(0, edu_mod.DMA_LIMIT) == payload
    if irq is not None:
        dev.disable_irqs("msi")


# -- the kernel -------------------------------------------------------------------------


def test_kernel_offers_iommufd_and_both_vfio_interfaces(edus: list[str]) -> None:
    assert stat.S_ISCHR(os.stat("/dev/iommu").st_mode)
    assert stat.S_ISCHR(os.stat("/dev/vfio/vfio").st_mode)  # type1 stays available
    for address in edus:
        assert stat.S_ISCHR(os.stat(cdev_of(address)).st_mode), address
        assert os.path.exists(f"/dev/vfio/{LIVE.iommu_group(address)}"), address


def test_built_in_vfio_pci_counts_as_loaded() -> None:
    # No module files exist for this kernel: modprobe would fail, /sys/module answers.
    assert not Path(f"/lib/modules/{os.uname().release}/modules.dep").exists()
    assert bind.module_loaded("vfio-pci")
    bind.load_module("vfio-pci")
    bind.load_module("vfio_iommu_type1")


# -- the iommufd backend ----------------------------------------------------------------


def test_iommufd_opens_edu_and_reads_bar0(edu_addr: str) -> None:
    with pyvfio.Iommu(backend="iommufd") as iommu:
        dev = iommu.open(edu_addr)
        assert iommu.backend == "iommufd"
        edu = Edu(dev)
        assert edu.bar0.read32(edu_mod.REG_ID) == 0x010000ED
        assert edu.is_alive()


def test_iommufd_dma_round_trip_polled_and_by_msi(edu_addr: str) -> None:
    with pyvfio.Iommu(backend="iommufd") as iommu:
        edu = Edu(iommu.open(edu_addr))
        round_trip(edu, msi=False)
        round_trip(edu, msi=True)


def test_iommufd_msi(edu_addr: str) -> None:
    with pyvfio.Iommu(backend="iommufd") as iommu:
        edu = Edu(iommu.open(edu_addr))
        irq = edu.device.enable_irqs("msi")[0]
        with pytest.raises(TimeoutError):
            irq.wait(timeout=0.05)
        edu.raise_interrupt(0x42)
        assert irq.wait(timeout=5) == 1
        assert edu.interrupt_status == 0x42
        edu.acknowledge(0x42)
        assert edu.factorial(5, irq=irq) == 120


def test_two_devices_share_one_ioas(edus: list[str]) -> None:
    with pyvfio.Iommu(backend="iommufd") as iommu:
        first, second = (Edu(iommu.open(address)) for address in edus)
        assert {d.bdf for d in iommu.devices} == set(edus)
        shared = iommu.dma_alloc(4096, max_iova=edu_mod.DMA_MASK)
        back = iommu.dma_alloc(4096, max_iova=edu_mod.DMA_MASK)
        shared.write(b"one IOAS, two devices")
        # The first device reads the buffer, the second writes its copy back: both
        # reach the same IOVAs, so the mappings live in one IOAS.
        first.to_device(shared, 21)
        first.from_device(back, 21)
        second.to_device(back, 21, device_offset=64)
        second.from_device(shared, 21, offset=100, device_offset=64)
        assert shared.read(100, 21) == b"one IOAS, two devices"


def test_allocator_honours_the_ioas_iova_ranges(edu_addr: str) -> None:
    with pyvfio.Iommu(backend="iommufd") as iommu:
        dev = iommu.open(edu_addr)
        ranges = [(r.start, r.last) for r in iommu.info.iova_ranges]
        assert ranges and ranges == sorted(ranges)
        # The MSI window is reserved: no range may overlap it.
        assert all(last < MSI_WINDOW[0] or start > MSI_WINDOW[1] for start, last in ranges)
        assert any(start <= MSI_WINDOW[0] - 1 <= last for start, last in ranges)
        # Fill the space just below the window: the allocator must not step into it.
        near = [iommu.dma_alloc(1 << 20, max_iova=MSI_WINDOW[0] + (1 << 20) - 1) for _ in range(4)]
        for buf in near:
            assert any(start <= buf.iova and buf.iova + buf.size - 1 <= last
                       for start, last in ranges), hex(buf.iova)  # fmt: skip
            assert buf.iova + buf.size - 1 < MSI_WINDOW[0] or buf.iova > MSI_WINDOW[1]
        with pytest.raises((ValueError, pyvfio.VfioError)):
            iommu.map(near[0].address, 4096, iova=MSI_WINDOW[0])
        assert dev.iommu is iommu


def test_group_with_kernel_drivers_is_not_viable_and_names_them() -> None:
    # iommufd has no group status: binding answers EPERM (the group has another DMA
    # owner), which pyvfio turns into the same error type1 gives.
    for smbus in on_vfio(CHIPSET[2]):
        with pyvfio.Iommu(backend="iommufd") as iommu:
            with pytest.raises(pyvfio.GroupNotViableError) as info:
                iommu.open(smbus)
            assert info.value.ioctl == "VFIO_DEVICE_BIND_IOMMUFD"
            assert {p.address: p.driver for p in info.value.peers} == {
                CHIPSET[0]: "lpc_ich",
                CHIPSET[1]: "ahci",
            }
            assert "pyvfio bind --group" in str(info.value)


def test_whole_chipset_group_on_vfio_pci_opens() -> None:
    for _ in on_vfio(CHIPSET[0]):
        for _ in on_vfio(CHIPSET[1]):
            for smbus in on_vfio(CHIPSET[2]):
                with pyvfio.Iommu(backend="iommufd") as iommu:
                    assert iommu.open(smbus).config.read16(0) == 0x8086


def test_auto_picks_iommufd_here(edu_addr: str) -> None:
    with pyvfio.Iommu() as iommu:
        assert iommu.backend == "auto"
        iommu.open(edu_addr)
        assert iommu.backend == "iommufd"
    with pyvfio.open(edu_addr) as dev:
        assert dev.iommu.backend == "iommufd"


def test_type1_backend_works_on_this_kernel_too(edus: list[str]) -> None:
    with pyvfio.Iommu(backend="type1") as iommu:
        edu = Edu(iommu.open(edus[1]))
        assert iommu.backend == "type1"
        assert edu.ident == 0x010000ED
        round_trip(edu, msi=True)


def test_a_device_open_through_type1_is_busy_for_iommufd(edu_addr: str) -> None:
    with pyvfio.Iommu(backend="type1") as type1:
        type1.open(edu_addr)
        with pyvfio.Iommu(backend="iommufd") as iommufd, pytest.raises(pyvfio.VfioError) as info:
            iommufd.open(edu_addr)
        assert info.value.errno is not None


#: What either backend says of a device another process or Iommu holds (iommu.py).
ALREADY_OPEN = "{} is already open (another process or Iommu holds its group or device)"


@pytest.mark.parametrize("holder", ["iommufd", "type1"])
def test_a_device_another_process_holds_is_already_open_on_both_backends(
    edu_addr: str, holder: str
) -> None:
    # The kernel answers a second iommufd bind of a cdev with EINVAL (vfio_df_open), a
    # type1 open with EBUSY: both are "already open", with the same error and message.
    hold = (
        f"import pyvfio, sys; d = pyvfio.open({edu_addr!r}, backend={holder!r}); "
        "print('held', flush=True); sys.stdin.read()"
    )
    with subprocess.Popen(
        [sys.executable, "-c", hold], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as other:
        assert other.stdout is not None and other.stdout.readline() == "held\n"
        try:
            for backend in ("iommufd", "type1"):
                with (
                    pyvfio.Iommu(backend=backend) as iommu,
                    pytest.raises(pyvfio.VfioError) as info,
                ):
                    iommu.open(edu_addr)
                assert str(info.value).startswith(ALREADY_OPEN.format(edu_addr)), (backend, info)
                assert info.value.errno == errno.EBUSY, backend
                assert "Invalid argument" not in str(info.value)
        finally:
            other.communicate("")
    assert other.returncode == 0
    with pyvfio.open(edu_addr, backend="iommufd"):  # free again once the holder is gone
        pass


def test_a_device_another_iommu_of_this_process_holds_is_already_open(edu_addr: str) -> None:
    with pyvfio.Iommu(backend="iommufd") as first:
        first.open(edu_addr)
        with pyvfio.Iommu(backend="iommufd") as second, pytest.raises(pyvfio.VfioError) as info:
            second.open(edu_addr)
        assert str(info.value).startswith(ALREADY_OPEN.format(edu_addr))
        assert info.value.ioctl == "VFIO_DEVICE_BIND_IOMMUFD"


@pytest.mark.parametrize("backend", ["iommufd", "type1"])
def test_close_releases_every_fd(edus: list[str], backend: str) -> None:
    before = open_fds()
    iommu = pyvfio.Iommu(backend=backend)
    devices = [iommu.open(address) for address in edus]
    for dev in devices:
        dev.bar(0).map()
        dev.enable_irqs("msi")
    bufs = [iommu.dma_alloc(4096) for _ in range(8)]
    assert len(iommu.mappings) == 8
    bufs[0].free()
    assert open_fds() != before
    iommu.close()
    iommu.close()  # twice is fine
    assert all(dev.closed for dev in devices)
    assert open_fds() == before
    with pytest.raises(pyvfio.ClosedError):
        iommu.dma_alloc(4096)
