"""The configuration space a served device shows: built once, then emulated.

`ConfigSpaceBuilder` lays out the type 0 header and the capabilities a device
declares (``add_pm``, ``add_msi``, ``add_msix``, ``add_express``) and produces an
`EmulatedConfig`: the bytes plus, for every byte, which bits the client may write.
The emulation is what a real function does to config writes, and no more: read-only
bits stay put, BARs keep their size bits clear (so sizing by writing all-ones reads
back the size), the MSI/MSI-X enables and masks latch.  `pyvfio.pci.config.parse_config`
reads the result back (the unit tests check it, and lspci too).

Layouts follow the PCI Local Bus 3.0 and PCI Express Base specifications; register
names follow ``linux/pci_regs.h``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Final

from pyvfio.pci.config import CONFIG_SPACE_SIZE, EXT_CONFIG_SPACE_SIZE, CapId

__all__ = [
    "BarKind",
    "BarSpec",
    "ConfigSpaceBuilder",
    "EmulatedConfig",
    "MsiInfo",
    "MsixInfo",
]

PCI_COMMAND: Final = 0x04
PCI_STATUS: Final = 0x06
PCI_STATUS_CAP_LIST: Final = 0x10
PCI_BASE_ADDRESS_0: Final = 0x10
PCI_ROM_ADDRESS: Final = 0x30
PCI_CAPABILITY_LIST: Final = 0x34
PCI_INTERRUPT_LINE: Final = 0x3C
PCI_INTERRUPT_PIN: Final = 0x3D
# Command bits a function implements: I/O, memory, bus master, parity, SERR#, INTx disable.
_COMMAND_WRITABLE: Final = 0x0001 | 0x0002 | 0x0004 | 0x0040 | 0x0100 | 0x0400
_FIRST_CAP: Final = 0x40


class BarKind(Enum):
    """How a BAR decodes: memory below 4 GiB, memory anywhere (two registers), I/O."""

    MEM32 = "mem32"
    MEM64 = "mem64"
    IO = "io"


@dataclass(frozen=True, slots=True)
class BarSpec:
    """A BAR as declared: its index, size (a power of two) and kind."""

    index: int
    size: int
    kind: BarKind = BarKind.MEM32
    prefetchable: bool = False

    @property
    def low_bits(self) -> int:
        """The read-only type bits of the (low) register."""
        if self.kind is BarKind.IO:
            return 0x1
        bits = 0x4 if self.kind is BarKind.MEM64 else 0x0
        return bits | (0x8 if self.prefetchable else 0)


@dataclass(frozen=True, slots=True)
class MsiInfo:
    """Where the MSI capability sits and what it offers."""

    offset: int
    vectors: int
    is_64bit: bool
    per_vector_masking: bool


@dataclass(frozen=True, slots=True)
class MsixInfo:
    """Where the MSI-X capability sits and where its table and PBA live."""

    offset: int
    vectors: int
    table_bar: int
    table_offset: int
    pba_bar: int
    pba_offset: int

    @property
    def table_size(self) -> int:
        return 16 * self.vectors

    @property
    def pba_size(self) -> int:
        return 8 * ((self.vectors + 63) // 64)


class EmulatedConfig:
    """Config space bytes and the bits a client may change (`write` applies the mask)."""

    def __init__(
        self,
        data: bytes,
        writable: bytes,
        bars: dict[int, BarSpec],
        msi: MsiInfo | None,
        msix: MsixInfo | None,
        express_offset: int | None,
    ) -> None:
        self._initial = bytes(data)
        self.data = bytearray(data)
        self.writable = bytes(writable)
        self.bars = dict(bars)
        self.msi = msi
        self.msix = msix
        self.express_offset = express_offset

    @property
    def size(self) -> int:
        return len(self.data)

    def read(self, offset: int, count: int) -> bytes:
        return bytes(self.data[offset : offset + count])

    def write(self, offset: int, data: bytes) -> None:
        """Store ``data`` at ``offset`` through the write mask (callers check the range)."""
        for i, value in enumerate(data):
            mask = self.writable[offset + i]
            if mask:
                old = self.data[offset + i]
                self.data[offset + i] = (old & ~mask) | (value & mask)

    def reset(self) -> None:
        """Back to the values built, as a function reset leaves them."""
        self.data[:] = self._initial

    def u16(self, offset: int) -> int:
        return int.from_bytes(self.data[offset : offset + 2], "little")

    @property
    def command(self) -> int:
        return self.u16(PCI_COMMAND)

    @property
    def bus_master(self) -> bool:
        return bool(self.command & 0x4)

    @property
    def intx_disabled(self) -> bool:
        return bool(self.command & 0x400)

    @property
    def msi_enabled(self) -> bool:
        return self.msi is not None and bool(self.u16(self.msi.offset + 2) & 0x1)

    @property
    def msix_enabled(self) -> bool:
        return self.msix is not None and bool(self.u16(self.msix.offset + 2) & 0x8000)

    @property
    def interrupt_pin(self) -> int:
        return self.data[PCI_INTERRUPT_PIN]


class ConfigSpaceBuilder:
    """Lay out a type 0 header and capabilities, then `build` the `EmulatedConfig`.

    Capabilities are placed from 0x40 in the order added, each 4-byte aligned and
    linked from ``PCI_CAPABILITY_LIST``.  ``add_express`` makes the space 4096 bytes
    (extended space with no extended capabilities: a zero header at 0x100).
    """

    def __init__(
        self,
        vendor_id: int,
        device_id: int,
        *,
        class_code: int = 0xFF0000,
        revision: int = 0,
        subsystem_vendor_id: int = 0,
        subsystem_id: int = 0,
        interrupt_pin: int = 1,
    ) -> None:
        for name, value, bits in (
            ("vendor_id", vendor_id, 16),
            ("device_id", device_id, 16),
            ("class_code", class_code, 24),
            ("revision", revision, 8),
            ("subsystem_vendor_id", subsystem_vendor_id, 16),
            ("subsystem_id", subsystem_id, 16),
        ):
            if not 0 <= value < 1 << bits:
                raise ValueError(f"{name} {value:#x} does not fit in {bits} bits")
        if not 0 <= interrupt_pin <= 4:
            raise ValueError(f"interrupt_pin is 0 (none) or 1-4 (INTA-INTD), not {interrupt_pin}")
        self._data = bytearray(EXT_CONFIG_SPACE_SIZE)
        self._writable = bytearray(EXT_CONFIG_SPACE_SIZE)
        self._size = CONFIG_SPACE_SIZE
        self._next_cap = _FIRST_CAP
        self._last_cap: int | None = None
        self._bars: dict[int, BarSpec] = {}
        self._msi: MsiInfo | None = None
        self._msix: MsixInfo | None = None
        self._express: int | None = None
        self._put(0x00, 2, vendor_id)
        self._put(0x02, 2, device_id)
        self._put(0x08, 1, revision)
        self._put(0x09, 3, class_code)
        self._put(0x2C, 2, subsystem_vendor_id)
        self._put(0x2E, 2, subsystem_id)
        self._put(PCI_INTERRUPT_PIN, 1, interrupt_pin)
        self._mask(PCI_COMMAND, 2, _COMMAND_WRITABLE)
        self._mask(0x0C, 1, 0xFF)  # cache line size
        self._mask(0x0D, 1, 0xFF)  # latency timer
        self._mask(PCI_INTERRUPT_LINE, 1, 0xFF)

    def _put(self, offset: int, size: int, value: int) -> None:
        self._data[offset : offset + size] = value.to_bytes(size, "little")

    def _mask(self, offset: int, size: int, mask: int) -> None:
        self._writable[offset : offset + size] = mask.to_bytes(size, "little")

    # -- BARs -------------------------------------------------------------------------

    def add_bar(self, spec: BarSpec) -> None:
        """Declare a BAR; its register reads back the size when all-ones is written."""
        if not 0 <= spec.index <= 5:
            raise ValueError(f"BAR index is 0-5, not {spec.index}")
        if spec.size <= 0 or spec.size & (spec.size - 1):
            raise ValueError(f"BAR{spec.index} size {spec.size:#x} is not a power of two")
        if spec.kind is BarKind.MEM64 and spec.index == 5:
            raise ValueError("a 64-bit BAR takes two registers: BAR5 cannot be one")
        taken = set(self._bars) | {i + 1 for i, b in self._bars.items() if b.kind is BarKind.MEM64}
        wanted = {spec.index} | ({spec.index + 1} if spec.kind is BarKind.MEM64 else set())
        if taken & wanted:
            raise ValueError(f"BAR{spec.index} overlaps a BAR already declared")
        minimum = 4 if spec.kind is BarKind.IO else 16
        if spec.size < minimum:
            raise ValueError(f"BAR{spec.index} must be at least {minimum} bytes")
        if spec.kind is not BarKind.MEM64 and spec.size > 1 << 31:
            raise ValueError(f"BAR{spec.index} of {spec.size:#x} bytes needs BarKind.MEM64")
        self._bars[spec.index] = spec
        register = PCI_BASE_ADDRESS_0 + 4 * spec.index
        self._put(register, 4, spec.low_bits)
        size_mask = ~(spec.size - 1)
        self._mask(register, 4, size_mask & 0xFFFFFFFF & ~0xF if spec.kind is not BarKind.IO
                   else size_mask & 0xFFFFFFFC)  # fmt: skip
        if spec.kind is BarKind.MEM64:
            self._mask(register + 4, 4, (size_mask >> 32) & 0xFFFFFFFF)

    # -- capabilities -----------------------------------------------------------------

    def _add_cap(self, cap_id: int, length: int) -> int:
        offset = self._next_cap
        if offset + length > CONFIG_SPACE_SIZE:
            raise ValueError(f"no room for capability {cap_id:#04x} below 0x100")
        if self._last_cap is None:
            self._put(PCI_CAPABILITY_LIST, 1, offset)
            self._data[PCI_STATUS] |= PCI_STATUS_CAP_LIST
        else:
            self._data[self._last_cap + 1] = offset
        self._data[offset] = cap_id
        self._data[offset + 1] = 0
        self._last_cap = offset
        self._next_cap = (offset + length + 3) & ~3
        return offset

    def add_pm(self, *, d1: bool = False, d2: bool = False, no_soft_reset: bool = True) -> int:
        """Power Management, version 3; PMCSR's power state is writable.  Its offset."""
        offset = self._add_cap(CapId.PM, 8)
        pmc = 0x3 | (0x0200 if d1 else 0) | (0x0400 if d2 else 0)
        self._put(offset + 2, 2, pmc)
        self._put(offset + 4, 2, 0x0008 if no_soft_reset else 0)
        self._mask(offset + 4, 2, 0x0003)
        return offset

    def add_msi(
        self, vectors: int = 1, *, is_64bit: bool = True, per_vector_masking: bool = False
    ) -> int:
        """MSI with ``vectors`` (1, 2, 4 ... 32); enable, MME, address and data writable."""
        if vectors not in (1, 2, 4, 8, 16, 32):
            raise ValueError(f"MSI offers 1, 2, 4, 8, 16 or 32 vectors, not {vectors}")
        if self._msi is not None:
            raise ValueError("a function has one MSI capability")
        length = 10 + (4 if is_64bit else 0) + (10 if per_vector_masking else 0)
        offset = self._add_cap(CapId.MSI, length)
        control = (vectors.bit_length() - 1) << 1
        control |= (0x0080 if is_64bit else 0) | (0x0100 if per_vector_masking else 0)
        self._put(offset + 2, 2, control)
        self._mask(offset + 2, 2, 0x0071)  # enable, multiple message enable
        self._mask(offset + 4, 4, 0xFFFFFFFC)  # address, dword aligned
        data_at = offset + 8
        if is_64bit:
            self._mask(offset + 8, 4, 0xFFFFFFFF)
            data_at = offset + 12
        self._mask(data_at, 2, 0xFFFF)
        if per_vector_masking:
            self._mask(data_at + 4, 4, (1 << vectors) - 1)
        self._msi = MsiInfo(offset, vectors, is_64bit, per_vector_masking)
        return offset

    def add_msix(
        self,
        vectors: int,
        *,
        table_bar: int,
        table_offset: int = 0,
        pba_bar: int | None = None,
        pba_offset: int | None = None,
    ) -> int:
        """MSI-X with ``vectors`` (1-2048), its table and PBA in declared BARs.

        The PBA defaults to the same BAR, after the table, 8-byte aligned.
        """
        if not 1 <= vectors <= 2048:
            raise ValueError(f"MSI-X offers 1 to 2048 vectors, not {vectors}")
        if self._msix is not None:
            raise ValueError("a function has one MSI-X capability")
        pba_bar = table_bar if pba_bar is None else pba_bar
        if pba_offset is None:
            pba_offset = (table_offset + 16 * vectors + 7) & ~7
        info = MsixInfo(0, vectors, table_bar, table_offset, pba_bar, pba_offset)
        for bar, start, size, what in (
            (table_bar, table_offset, info.table_size, "table"),
            (pba_bar, pba_offset, info.pba_size, "PBA"),
        ):
            spec = self._bars.get(bar)
            if spec is None or spec.kind is BarKind.IO:
                raise ValueError(f"the MSI-X {what} needs memory BAR{bar} declared first")
            if start % 8 or start + size > spec.size:
                raise ValueError(f"the MSI-X {what} at {start:#x} does not fit BAR{bar}")
        offset = self._add_cap(CapId.MSIX, 12)
        self._put(offset + 2, 2, vectors - 1)
        self._mask(offset + 2, 2, 0xC000)  # enable, function mask
        self._put(offset + 4, 4, table_offset | table_bar)
        self._put(offset + 8, 4, pba_offset | pba_bar)
        self._msix = MsixInfo(offset, vectors, table_bar, table_offset, pba_bar, pba_offset)
        return offset

    def add_express(self, *, max_payload: int = 128, flr: bool = False) -> int:
        """A PCI Express v2 endpoint capability (x1 2.5 GT/s link); makes the space 4 KiB."""
        if max_payload not in (128, 256, 512, 1024, 2048, 4096):
            raise ValueError(f"max_payload is 128 to 4096 bytes, a power of two, not {max_payload}")
        if self._express is not None:
            raise ValueError("a function has one PCI Express capability")
        offset = self._add_cap(CapId.EXP, 0x3C)
        self._put(offset + 2, 2, 0x0002)  # version 2, endpoint (port type 0)
        devcap = (max_payload.bit_length() - 8) | (0x10000000 if flr else 0)
        self._put(offset + 4, 4, devcap)
        self._mask(offset + 8, 2, 0x7CFF)  # DevCtl: error reporting, payload, read request
        self._put(offset + 0x0C, 4, 0x00000011)  # LnkCap: 2.5 GT/s, x1
        self._put(offset + 0x12, 2, 0x0011)  # LnkSta: 2.5 GT/s, x1
        self._express = offset
        self._size = EXT_CONFIG_SPACE_SIZE
        return offset

    def build(self) -> EmulatedConfig:
        return EmulatedConfig(
            bytes(self._data[: self._size]),
            bytes(self._writable[: self._size]),
            self._bars,
            self._msi,
            self._msix,
            self._express,
        )
