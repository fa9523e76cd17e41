"""A driver for QEMU's ``edu`` device (1234:11e8), QEMU docs/specs/edu.rst.

The registers are in `pyvfio.drivers.edu_spec` (and importable from here). QEMU aborts
the *whole VM* when a transfer's device-side range leaves the device's 4 KiB buffer,
so this driver checks ranges first. QEMU's check (``edu_check_range``) wants the
transfer's end *strictly* inside the buffer, so a transfer may not touch the buffer's
last byte: at most 4095 bytes.
"""

from __future__ import annotations

import time

from pyvfio._uapi.pci_regs import PCI_DEVICE_ID, PCI_VENDOR_ID
from pyvfio.device import Device
from pyvfio.dma import DmaBuffer
from pyvfio.drivers.edu_spec import (
    BUFFER_ADDR,
    BUFFER_SIZE,
    DEVICE_ID,
    DMA_IRQ,
    DMA_MASK,
    DMA_START,
    DMA_TO_RAM,
    IRQ_DMA,
    IRQ_FACTORIAL,
    REG_DMA_CMD,
    REG_DMA_COUNT,
    REG_DMA_DST,
    REG_DMA_SRC,
    REG_FACTORIAL,
    REG_ID,
    REG_IRQ_ACK,
    REG_IRQ_RAISE,
    REG_IRQ_STATUS,
    REG_LIVENESS,
    REG_STATUS,
    STATUS_COMPUTING,
    STATUS_IRQ_FACT,
    VENDOR_ID,
)
from pyvfio.errors import ClosedError, UnsupportedError
from pyvfio.interrupt import Interrupt
from pyvfio.iommu import Iommu
from pyvfio.iommu import open as open_device

__all__ = [
    "BUFFER_ADDR",
    "BUFFER_SIZE",
    "DEVICE_ID",
    "DMA_IRQ",
    "DMA_LIMIT",
    "DMA_MASK",
    "DMA_START",
    "DMA_TO_RAM",
    "IRQ_DMA",
    "IRQ_FACTORIAL",
    "REG_DMA_CMD",
    "REG_DMA_COUNT",
    "REG_DMA_DST",
    "REG_DMA_SRC",
    "REG_FACTORIAL",
    "REG_ID",
    "REG_IRQ_ACK",
    "REG_IRQ_RAISE",
    "REG_IRQ_STATUS",
    "REG_LIVENESS",
    "REG_STATUS",
    "STATUS_COMPUTING",
    "STATUS_IRQ_FACT",
    "VENDOR_ID",
    "Edu",
]

#: The bytes a transfer may cover: QEMU aborts the VM if one reaches offset 4095.
DMA_LIMIT = BUFFER_SIZE - 1


def _check_live(buf: DmaBuffer) -> None:
    if buf.freed:  # its IOVA is unmapped, and may already belong to another buffer
        raise ClosedError(f"the DMA buffer at iova {buf.iova:#x} was freed: allocate a new one")


class Edu:
    """An edu device opened through VFIO (``Edu.open(BDF)`` or ``Edu(device)``)."""

    def __init__(self, device: Device) -> None:
        cfg = device.config
        ids = (cfg.read16(PCI_VENDOR_ID), cfg.read16(PCI_DEVICE_ID))
        if ids != (VENDOR_ID, DEVICE_ID):
            raise UnsupportedError(
                f"{device.bdf} is {ids[0]:04x}:{ids[1]:04x}, not QEMU's edu (1234:11e8)",
                device=device.bdf,
            )
        self.device = device
        self.bar0 = device.bar(0)
        device.enable_bus_master()

    @classmethod
    def open(cls, address: str, iommu: Iommu | None = None) -> Edu:
        device = iommu.open(address) if iommu else open_device(address)
        try:
            return cls(device)
        except BaseException:
            device.close()
            raise

    def close(self) -> None:
        self.device.close()

    def __enter__(self) -> Edu:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- registers ----------------------------------------------------------------------

    @property
    def ident(self) -> int:
        return self.bar0.read32(REG_ID)

    @property
    def version(self) -> tuple[int, int]:
        ident = self.ident
        return ident >> 24, (ident >> 16) & 0xFF

    def liveness(self, value: int) -> int:
        """Write ``value``; the device answers its bitwise NOT."""
        self.bar0.write32(REG_LIVENESS, value)
        return self.bar0.read32(REG_LIVENESS)

    def is_alive(self) -> bool:
        probe = 0x5A5AA5A5
        return self.liveness(probe) == probe ^ 0xFFFFFFFF

    def raise_interrupt(self, value: int) -> None:
        self.bar0.write32(REG_IRQ_RAISE, value)

    @property
    def interrupt_status(self) -> int:
        return self.bar0.read32(REG_IRQ_STATUS)

    def acknowledge(self, value: int) -> None:
        self.bar0.write32(REG_IRQ_ACK, value)

    def _handled(self, irq: Interrupt, value: int, timeout: float) -> None:
        """Wait for ``irq``, acknowledge ``value`` and unmask INTx."""
        irq.wait(timeout)
        self.acknowledge(value)
        if irq.kind == "intx":
            irq.unmask()

    # -- factorial ----------------------------------------------------------------------

    def factorial(self, n: int, *, irq: Interrupt | None = None, timeout: float = 5.0) -> int:
        """n! computed by the device (32-bit result), by polling or by its interrupt."""
        if not 0 <= n < 1 << 32:
            raise ValueError(f"factorial input must fit in 32 bits, not {n}")
        status = self.bar0.read32(REG_STATUS)
        want_irq = STATUS_IRQ_FACT if irq is not None else 0
        self.bar0.write32(REG_STATUS, (status & ~STATUS_IRQ_FACT) | want_irq)
        self.bar0.write32(REG_FACTORIAL, n)
        if irq is not None:
            self._handled(irq, IRQ_FACTORIAL, timeout)
        else:
            self._poll(REG_STATUS, STATUS_COMPUTING, timeout, "factorial")
        return self.bar0.read32(REG_FACTORIAL)

    def _poll(self, reg: int, busy_bit: int, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while self.bar0.read32(reg) & busy_bit:
            if time.monotonic() > deadline:
                raise TimeoutError(f"edu {what} did not finish within {timeout} s")
            time.sleep(0.0005)

    # -- DMA ------------------------------------------------------------------------------

    def _dma(
        self,
        command: int,
        ram_iova: int,
        device_offset: int,
        length: int,
        irq: Interrupt | None,
        timeout: float,
    ) -> None:
        if length <= 0 or device_offset < 0 or device_offset + length > DMA_LIMIT:
            raise ValueError(
                f"edu DMA of {length} bytes at device offset {device_offset:#x} leaves the "
                f"first {DMA_LIMIT} bytes of its buffer (QEMU would abort the VM)"
            )
        if ram_iova < 0 or ram_iova + length - 1 > DMA_MASK:
            raise ValueError(
                f"IOVA {ram_iova:#x}+{length:#x} is above edu's 28-bit DMA mask: "
                "allocate with max_iova=edu.DMA_MASK"
            )
        dev_addr = BUFFER_ADDR + device_offset
        src, dst = (dev_addr, ram_iova) if command & DMA_TO_RAM else (ram_iova, dev_addr)
        self.bar0.write64(REG_DMA_SRC, src)
        self.bar0.write64(REG_DMA_DST, dst)
        self.bar0.write64(REG_DMA_COUNT, length)
        self.bar0.write32(REG_DMA_CMD, command | DMA_START | (DMA_IRQ if irq else 0))
        if irq is not None:
            self._handled(irq, IRQ_DMA, timeout)
        else:
            self._poll(REG_DMA_CMD, DMA_START, timeout, "DMA")

    def to_device(
        self,
        buf: DmaBuffer,
        length: int | None = None,
        *,
        offset: int = 0,
        device_offset: int = 0,
        irq: Interrupt | None = None,
        timeout: float = 5.0,
    ) -> None:
        """DMA ``length`` bytes of ``buf`` (from ``offset``; default: as many as fit)
        into the device's buffer."""
        self._transfer(0, buf, length, offset, device_offset, irq, timeout)

    def from_device(
        self,
        buf: DmaBuffer,
        length: int | None = None,
        *,
        offset: int = 0,
        device_offset: int = 0,
        irq: Interrupt | None = None,
        timeout: float = 5.0,
    ) -> None:
        """DMA ``length`` bytes of the device's buffer into ``buf`` (at ``offset``;
        default: as many as fit)."""
        self._transfer(DMA_TO_RAM, buf, length, offset, device_offset, irq, timeout)

    def _transfer(
        self,
        command: int,
        buf: DmaBuffer,
        length: int | None,
        offset: int,
        device_offset: int,
        irq: Interrupt | None,
        timeout: float,
    ) -> None:
        """A transfer between ``buf`` (from ``offset``) and the device's buffer."""
        _check_live(buf)
        length = min(buf.size - offset, DMA_LIMIT - device_offset) if length is None else length
        if offset < 0 or offset + length > buf.size:
            raise ValueError(f"{length} bytes at {offset:#x} exceed the {buf.size:#x}-byte buffer")
        self._dma(command, buf.iova + offset, device_offset, length, irq, timeout)

    def dma_raw(
        self,
        *,
        to_ram: bool,
        ram_iova: int,
        length: int,
        device_offset: int = 0,
        timeout: float = 5.0,
    ) -> None:
        """A transfer to or from any IOVA, mapped or not (isolation tests use this)."""
        self._dma(DMA_TO_RAM if to_ram else 0, ram_iova, device_offset, length, None, timeout)
