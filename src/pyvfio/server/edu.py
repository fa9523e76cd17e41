"""An edu-compatible device (QEMU hw/misc/edu.c, docs/specs/edu.rst), served over vfio-user.

Same identity (1234:11e8 rev 0x10, class 0x00ff00), 1 MiB BAR0, one 64-bit MSI
vector at 0x40 and INTA; the registers of ``pyvfio.drivers.edu_spec``, with QEMU's
rules: accesses below 0x80 are 32-bit only, from 0x80 on 32- or 64-bit (others read
all-ones and are ignored), the DMA registers cannot change while a transfer runs.

Where QEMU computes the factorial in a thread and runs DMA from a 100 ms timer, this
device computes at once and runs DMA right after answering the write that started
it (`PciDevice.defer`): a driver still sees the busy bits and must poll them or wait
for the interrupt.  A transfer leaving the 4 KiB buffer at 0x40000 is refused (QEMU
only logs it); a transfer the client's memory refuses is logged; both still end with
the completion interrupt, as QEMU's do.
"""

from __future__ import annotations

import logging
from typing import Final

from pyvfio.drivers import edu_spec as spec
from pyvfio.errors import VfioUserError
from pyvfio.server.device import MSI, PciDevice

__all__ = ["EduDevice"]

log = logging.getLogger("pyvfio.server.edu")

#: The name the buffer's address had here before the map moved to `edu_spec` (tests use it).
DMA_BUFFER_ADDR: Final = spec.BUFFER_ADDR


class EduDevice(PciDevice):
    """QEMU's edu, in Python, for a vfio-user client (``pyvfio serve edu``)."""

    def __init__(self, *, dma_mask: int = spec.DMA_MASK) -> None:
        super().__init__(
            vendor_id=spec.VENDOR_ID,
            device_id=spec.DEVICE_ID,
            revision=spec.REVISION,
            class_code=spec.CLASS_CODE,
            subsystem_vendor_id=0x1AF4,  # QEMU's default subsystem (Red Hat, Inc.)
            subsystem_id=0x1100,
            interrupt_pin=1,
            name="edu",
        )
        self.add_bar(0, spec.BAR0_SIZE, read=self._mmio_read, write=self._mmio_write)
        self.add_msi(1, is_64bit=True)
        self.dma_mask = dma_mask
        self.buffer = bytearray(spec.BUFFER_SIZE)
        self._clear()

    def _clear(self) -> None:
        self.liveness = 0
        self.fact = 0
        self.status = 0
        self.irq_status = 0
        self.dma_src = self.dma_dst = self.dma_count = self.dma_cmd = 0

    def reset(self) -> None:
        super().reset()
        self._clear()
        self.buffer[:] = bytes(spec.BUFFER_SIZE)

    # -- interrupts ---------------------------------------------------------------------

    def _msi_active(self) -> bool:
        # vfio-pci's view: MSI is on when the client wired its eventfd (QEMU's own msi
        # enable bit lives in the client's emulated config space, not here).
        return self.interrupts.mode == MSI

    def edu_raise(self, value: int) -> None:
        self.irq_status |= value
        if self.irq_status:
            self.raise_irq(0)

    def edu_lower(self, value: int) -> None:
        self.irq_status &= ~value & 0xFFFFFFFF
        if not self.irq_status and not self._msi_active():
            self.lower_intx()

    # -- BAR0 ---------------------------------------------------------------------------

    def _mmio_read(self, offset: int, size: int) -> bytes:
        value = self._register_read(offset, size)
        return (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")

    def _register_read(self, offset: int, size: int) -> int:
        if (offset < 0x80 and size != 4) or (offset >= 0x80 and size not in (4, 8)):
            return (1 << 64) - 1
        registers = {
            spec.REG_ID: spec.IDENT,
            spec.REG_LIVENESS: self.liveness,
            spec.REG_FACTORIAL: self.fact,
            spec.REG_STATUS: self.status,
            spec.REG_IRQ_STATUS: self.irq_status,
            spec.REG_DMA_SRC: self.dma_src,
            spec.REG_DMA_DST: self.dma_dst,
            spec.REG_DMA_COUNT: self.dma_count,
            spec.REG_DMA_CMD: self.dma_cmd,
        }
        return registers.get(offset, (1 << 64) - 1)

    def _mmio_write(self, offset: int, data: bytes) -> None:
        size = len(data)
        if (offset < 0x80 and size != 4) or (offset >= 0x80 and size not in (4, 8)):
            return
        value = int.from_bytes(data, "little")
        if offset == spec.REG_LIVENESS:
            self.liveness = ~value & 0xFFFFFFFF
        elif offset == spec.REG_FACTORIAL:
            if self.status & spec.STATUS_COMPUTING:
                return
            self.status |= spec.STATUS_COMPUTING
            self._factorial(value)
        elif offset == spec.REG_STATUS:
            if value & spec.STATUS_IRQ_FACT:
                self.status |= spec.STATUS_IRQ_FACT
            else:
                self.status &= ~spec.STATUS_IRQ_FACT
        elif offset == spec.REG_IRQ_RAISE:
            self.edu_raise(value)
        elif offset == spec.REG_IRQ_ACK:
            self.edu_lower(value)
        elif offset in (spec.REG_DMA_SRC, spec.REG_DMA_DST, spec.REG_DMA_COUNT):
            if self.dma_cmd & spec.DMA_START:
                return
            name = {
                spec.REG_DMA_SRC: "dma_src",
                spec.REG_DMA_DST: "dma_dst",
                spec.REG_DMA_COUNT: "dma_count",
            }
            setattr(self, name[offset], value)
        elif offset == spec.REG_DMA_CMD:
            if not value & spec.DMA_START or self.dma_cmd & spec.DMA_START:
                return
            self.dma_cmd = value
            self.defer(self._dma)

    # -- the engines --------------------------------------------------------------------

    def _factorial(self, n: int) -> None:
        result = 1
        while n > 0:  # 32-bit arithmetic, like QEMU's uint32_t loop
            result = (result * n) & 0xFFFFFFFF
            n -= 1
        self.fact = result
        self.status &= ~spec.STATUS_COMPUTING
        if self.status & spec.STATUS_IRQ_FACT:
            self.edu_raise(spec.IRQ_FACTORIAL)

    def _dma(self) -> None:
        if not self.dma_cmd & spec.DMA_START:
            return
        count = self.dma_count
        to_ram = bool(self.dma_cmd & spec.DMA_TO_RAM)
        device_addr, ram_addr = (
            (self.dma_src, self.dma_dst) if to_ram else (self.dma_dst, self.dma_src)
        )
        start = device_addr - spec.BUFFER_ADDR
        if not (start >= 0 and start + count <= spec.BUFFER_SIZE):
            log.warning(
                "edu: DMA range %#x+%#x is outside the buffer %#x-%#x; not transferred",
                device_addr, count, spec.BUFFER_ADDR, spec.BUFFER_ADDR + spec.BUFFER_SIZE - 1,
            )  # fmt: skip
        else:
            ram_addr &= self.dma_mask
            try:
                if to_ram:
                    self.dma_write(ram_addr, bytes(self.buffer[start : start + count]))
                else:
                    self.buffer[start : start + count] = self.dma_read(ram_addr, count)
            except VfioUserError as err:
                log.warning("edu: DMA %s %#x+%#x failed: %s",
                            "to" if to_ram else "from", ram_addr, count, err)  # fmt: skip
        self.dma_cmd &= ~spec.DMA_START
        if self.dma_cmd & spec.DMA_IRQ:
            self.edu_raise(spec.IRQ_DMA)
