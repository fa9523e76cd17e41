"""The edu driver's tests that hold wherever the device comes from.

`pyvfio.drivers.edu` on an edu device, through nothing but the public API, as the
methods of `EduDriverSuite`: the lab's edu suite (tests/lab/edu_suite.py: QEMU's edu on
vfio-pci, type1 and iommufd) inherits them, and the vfio-user tests
(tests/vfio_user/test_edu_vfio_user.py: pyvfio's edu server over a socket) collect
them in a subclass of their own. Where a subclass is collected, the fixture ``edu``
gives the `Edu` driver on the opened device.
"""

from __future__ import annotations

import asyncio
import mmap
import random
import time

import pytest

import pyvfio
from pyvfio.drivers import edu as edu_mod
from pyvfio.drivers import edu_spec
from pyvfio.drivers.edu import Edu


class EduDriverSuite:
    """The edu driver on a device from anywhere: a ``Test...`` subclass collects these
    tests where the fixture ``edu`` gives the `Edu` driver on an opened edu device."""

    def test_region_access_is_checked_before_the_syscall(self, edu: Edu) -> None:
        bar = edu.bar0
        with pytest.raises(ValueError, match="outside"):
            bar.read32(bar.size)
        with pytest.raises(ValueError, match="aligned"):
            bar.read32(2)
        with pytest.raises(ValueError, match="does not fit"):
            bar.write32(0x04, 1 << 32)
        with pytest.raises(ValueError, match="outside"):
            edu.device.config.read32(edu.device.config.size)
        with pytest.raises(pyvfio.UnsupportedError):
            edu.device.bar(1)

    def test_block_operations_are_one_32_bit_access_per_register(self, edu: Edu) -> None:
        """edu answers only 4-byte accesses below 0x80 (a wider read is all ones, a
        wider write is dropped), so a run that merged two registers would show."""
        bar = edu.bar0
        bar.write32(edu_mod.REG_LIVENESS, 0x12345678)
        ident, liveness = bar.read_block32(edu_mod.REG_ID, 2)
        assert (ident, liveness) == (edu_spec.IDENT, 0x12345678 ^ 0xFFFFFFFF)
        # Liveness and factorial side by side, in one run of two stores.
        assert edu_mod.REG_FACTORIAL == edu_mod.REG_LIVENESS + 4
        bar.write_block32(edu_mod.REG_LIVENESS, [0x0F0F0F0F, 5])
        deadline = time.monotonic() + 5
        while bar.read32(edu_mod.REG_STATUS) & edu_mod.STATUS_COMPUTING:
            assert time.monotonic() < deadline, "the factorial did not finish"
            time.sleep(0.001)
        assert bar.read_block32(edu_mod.REG_LIVENESS, 2) == [0xF0F0F0F0, 120]
        with pytest.raises(ValueError, match="is not 4-byte aligned"):
            bar.read_block32(2, 1)
        with pytest.raises(ValueError, match="is outside its"):
            bar.write_block32(bar.size - 4, [0, 0])
        config = edu.device.config
        assert config.read_block32(0, 1) == [edu_mod.DEVICE_ID << 16 | edu_mod.VENDOR_ID]

    def test_factorial_by_polling_and_by_msi(self, edu: Edu) -> None:
        assert edu.factorial(10) == 3628800
        irq = edu.device.enable_irqs("msi")[0]
        assert edu.factorial(6, irq=irq) == 720
        assert edu.factorial(0, irq=irq) == 1
        with pytest.raises(TimeoutError):
            irq.wait(0.05)  # the handled interrupt was consumed, no stray one follows

    def test_dma_round_trip_through_the_iommu(self, edu: Edu) -> None:
        dev = edu.device
        irq = dev.enable_irqs("msi")[0]
        payload = random.Random(7).randbytes(4096)
        with (
            dev.dma_alloc(4096, max_iova=edu_mod.DMA_MASK) as out,
            dev.dma_alloc(4096, max_iova=edu_mod.DMA_MASK) as back,
        ):
            out.write(payload)
            edu.to_device(out, irq=irq)  # as much as the device takes: DMA_LIMIT bytes
            edu.from_device(back, irq=irq)
            assert back.read(0, edu_mod.DMA_LIMIT) == payload[: edu_mod.DMA_LIMIT]
            with pytest.raises(ValueError, match="abort the VM"):
                edu.to_device(out, 4096)
            # Polling completion too, and partial transfers at offsets.
            out.write(b"\xa5" * 100, offset=8)
            edu.to_device(out, 100, offset=8, device_offset=200)
            edu.from_device(back, 100, offset=1000, device_offset=200)
            assert back.read(1000, 100) == b"\xa5" * 100

    def test_iovas_above_the_28_bit_mask_are_refused(self, edu: Edu) -> None:
        dev, iommu = edu.device, edu.device.iommu
        bufs = [dev.dma_alloc(8192, max_iova=edu_mod.DMA_MASK) for _ in range(8)]
        try:
            assert all(b.iova + b.size - 1 <= edu_mod.DMA_MASK for b in bufs)
            with pytest.raises(ValueError, match="max_iova"):
                iommu.map(bufs[0].address, 4096, iova=1 << 28, max_iova=edu_mod.DMA_MASK)
            with pytest.raises(ValueError, match="28-bit"):
                edu.dma_raw(to_ram=True, ram_iova=1 << 28, length=16)
            with pytest.raises(ValueError, match="below the lowest usable IOVA"):
                dev.dma_alloc(4096, max_iova=0xFFF)  # IOVA 0 is never handed out
        finally:
            for b in bufs:
                b.free()

    def test_msi_and_asyncio_wait(self, edu: Edu) -> None:
        irq = edu.device.enable_irqs("msi", count=1)[0]
        with pytest.raises(TimeoutError):
            irq.wait(timeout=0.05)
        edu.raise_interrupt(0x55)
        assert irq.wait(timeout=5) == 1
        assert edu.interrupt_status == 0x55
        edu.acknowledge(0x55)

        async def fire_and_wait() -> int:
            edu.raise_interrupt(0x66)
            return await irq.wait_async(timeout=5)

        assert asyncio.run(fire_and_wait()) == 1
        edu.acknowledge(0x66)
        edu.device.disable_irqs("msi")
        with pytest.raises(pyvfio.ClosedError):
            irq.wait(0)

    def test_intx_delivered_and_unmasked(self, edu: Edu) -> None:
        info = edu.device.irq_info("intx")
        assert info.count == 1 and info.automasked
        irq = edu.device.enable_irqs("intx")[0]
        for value in (0x1, 0x2, 0x3):
            edu.raise_interrupt(value)
            assert irq.wait(timeout=5) == 1
            assert edu.interrupt_status & value
            edu.acknowledge(value)
            irq.unmask()

    def test_caller_memory_at_a_fixed_iova(self, edu: Edu) -> None:
        iommu = edu.device.iommu
        page = mmap.mmap(-1, 8192)
        mapping = iommu.map(page, iova=0x200000, max_iova=edu_mod.DMA_MASK)
        try:
            assert (mapping.iova, mapping.size) == (0x200000, 8192)
            with pytest.raises(ValueError, match="overlaps the live reservation"):
                iommu.map(page, iova=0x201000)  # overlaps the first mapping
            page[4096:4100] = b"ping"
            edu.dma_raw(to_ram=False, ram_iova=0x201000, length=4)
            edu.dma_raw(to_ram=True, ram_iova=0x200000, length=4)
            assert page[:4] == b"ping"
            with pytest.raises(ValueError, match="page aligned"):
                iommu.map(bytearray(100))
        finally:
            iommu.unmap(mapping)
            page.close()
