"""QEMU's ``edu`` device as data (hw/misc/edu.c, docs/specs/edu.rst): its identity and
its BAR0 register map, shared by the driver (`pyvfio.drivers.edu`) and the device
served over vfio-user (`pyvfio.server.edu`).

BAR0 registers (all 32-bit unless noted):

====  ==========================================================================
0x00  identification, 0xRRrr00ed (major RR, minor rr)
0x04  liveness: reads back the bitwise NOT of what was written
0x08  factorial: write n, read n! once status bit 0 clears
0x20  status: bit 0 computing (RO), bit 7 raise interrupt 0x1 when the factorial ends
0x24  interrupt status (RO); 0x60 raise (WO); 0x64 acknowledge (WO)
0x80  DMA source address (64-bit); 0x88 destination (64-bit); 0x90 count (64-bit)
0x98  DMA command: bit 0 start/busy, bit 1 direction (1: device to RAM), bit 2
      raise interrupt 0x100 when done
====  ==========================================================================

The device's DMA mask is 28 bits (QEMU masks higher address bits away), and its
buffer is 4 KiB at device address 0x40000.
"""

from __future__ import annotations

from typing import Final

VENDOR_ID: Final = 0x1234
DEVICE_ID: Final = 0x11E8
REVISION: Final = 0x10
CLASS_CODE: Final = 0x00FF00  # PCI_CLASS_OTHERS (0x00ff): base class 0, subclass 0xff
#: What REG_ID reads: version 1.0.
IDENT: Final = 0x010000ED
BAR0_SIZE: Final = 1 << 20

REG_ID, REG_LIVENESS, REG_FACTORIAL = 0x00, 0x04, 0x08
REG_STATUS, REG_IRQ_STATUS, REG_IRQ_RAISE, REG_IRQ_ACK = 0x20, 0x24, 0x60, 0x64
REG_DMA_SRC, REG_DMA_DST, REG_DMA_COUNT, REG_DMA_CMD = 0x80, 0x88, 0x90, 0x98
STATUS_COMPUTING, STATUS_IRQ_FACT = 0x01, 0x80
#: REG_DMA_CMD bits: start (and busy while it runs), direction, interrupt when done.
DMA_START, DMA_TO_RAM, DMA_IRQ = 0x1, 0x2, 0x4
IRQ_FACTORIAL, IRQ_DMA = 0x1, 0x100

#: The device's DMA mask: addresses above it lose their high bits in QEMU.
DMA_MASK: Final = (1 << 28) - 1
#: The device-side buffer, as edu.rst documents it.
BUFFER_ADDR, BUFFER_SIZE = 0x40000, 4096
