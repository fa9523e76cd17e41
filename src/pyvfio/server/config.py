"""The configuration space a served device shows: built once, then emulated.

`ConfigSpaceBuilder` lays out the header and the capabilities a device declares
(``add_pm``, ``add_msi``, ``add_msix``, ``add_express``, or any other the parser knows)
and produces an `EmulatedConfig`: the bytes plus, for every byte, which bits the client
may write.
The emulation is what a real function does to config writes, and no more: read-only
bits stay put, BARs keep their size bits clear (so sizing by writing all-ones reads
back the size), the MSI/MSI-X enables and masks latch.  `pyvfio.pci.config.parse_config`
reads the result back (the unit tests check it, and lspci too).

Each capability is written through its register table (`pyvfio.pci.layout`), the one
the parser decodes it with, which says which bits a client may write too; offsets and
bits are the kernel's names from `pyvfio._uapi.pci_regs`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Final

from pyvfio._uapi.pci_regs import (
    PCI_BASE_ADDRESS_0,
    PCI_BASE_ADDRESS_IO_MASK,
    PCI_BASE_ADDRESS_MEM_MASK,
    PCI_BASE_ADDRESS_MEM_PREFETCH,
    PCI_BASE_ADDRESS_MEM_TYPE_32,
    PCI_BASE_ADDRESS_MEM_TYPE_64,
    PCI_BASE_ADDRESS_SPACE_IO,
    PCI_CACHE_LINE_SIZE,
    PCI_CAP_LIST_ID,
    PCI_CAP_LIST_NEXT,
    PCI_CAPABILITY_LIST,
    PCI_CFG_SPACE_EXP_SIZE,
    PCI_CFG_SPACE_SIZE,
    PCI_CLASS_PROG,
    PCI_COMMAND,
    PCI_COMMAND_INTX_DISABLE,
    PCI_COMMAND_IO,
    PCI_COMMAND_MASTER,
    PCI_COMMAND_MEMORY,
    PCI_COMMAND_PARITY,
    PCI_COMMAND_SERR,
    PCI_DEVICE_ID,
    PCI_EXP_LNKCAP_SLS_2_5GB,
    PCI_EXP_LNKSTA,
    PCI_EXP_LNKSTA_CLS_2_5GB,
    PCI_EXP_LNKSTA_NLW_X1,
    PCI_EXP_TYPE_ENDPOINT,
    PCI_HEADER_TYPE,
    PCI_HEADER_TYPE_BRIDGE,
    PCI_INTERRUPT_LINE,
    PCI_INTERRUPT_PIN,
    PCI_LATENCY_TIMER,
    PCI_MSI_FLAGS,
    PCI_MSI_FLAGS_ENABLE,
    PCI_MSIX_ENTRY_SIZE,
    PCI_MSIX_FLAGS,
    PCI_MSIX_FLAGS_ENABLE,
    PCI_PRIMARY_BUS,
    PCI_REVISION_ID,
    PCI_SEC_LATENCY_TIMER,
    PCI_SECONDARY_BUS,
    PCI_STATUS,
    PCI_STATUS_CAP_LIST,
    PCI_STD_HEADER_SIZEOF,
    PCI_STD_NUM_BARS,
    PCI_SUBORDINATE_BUS,
    PCI_SUBSYSTEM_ID,
    PCI_SUBSYSTEM_VENDOR_ID,
    PCI_VENDOR_ID,
)
from pyvfio.pci.capabilities import EXP_LAYOUT, MSI_LAYOUT, MSIX_LAYOUT, PM_LAYOUT
from pyvfio.pci.layout import Layout

__all__ = [
    "BarKind",
    "BarSpec",
    "ConfigSpaceBuilder",
    "EmulatedConfig",
    "MsiInfo",
    "MsixInfo",
]

# Command bits a function implements: I/O, memory, bus master, parity, SERR#, INTx disable.
_COMMAND_WRITABLE: Final = (
    PCI_COMMAND_IO
    | PCI_COMMAND_MEMORY
    | PCI_COMMAND_MASTER
    | PCI_COMMAND_PARITY
    | PCI_COMMAND_SERR
    | PCI_COMMAND_INTX_DISABLE
)
_FIRST_CAP: Final = PCI_STD_HEADER_SIZEOF
_EXT_HEADER: Final = 4  # ID, version and next pointer of an extended capability
_EXT_NEXT_SHIFT: Final = 20


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
            return PCI_BASE_ADDRESS_SPACE_IO
        mem64 = self.kind is BarKind.MEM64
        bits = PCI_BASE_ADDRESS_MEM_TYPE_64 if mem64 else PCI_BASE_ADDRESS_MEM_TYPE_32
        return bits | (PCI_BASE_ADDRESS_MEM_PREFETCH if self.prefetchable else 0)


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
        return PCI_MSIX_ENTRY_SIZE * self.vectors

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
        return bool(self.command & PCI_COMMAND_MASTER)

    @property
    def intx_disabled(self) -> bool:
        return bool(self.command & PCI_COMMAND_INTX_DISABLE)

    @property
    def msi_enabled(self) -> bool:
        msi = self.msi
        return msi is not None and bool(self.u16(msi.offset + PCI_MSI_FLAGS) & PCI_MSI_FLAGS_ENABLE)

    @property
    def msix_enabled(self) -> bool:
        msix = self.msix
        return msix is not None and bool(
            self.u16(msix.offset + PCI_MSIX_FLAGS) & PCI_MSIX_FLAGS_ENABLE
        )

    @property
    def interrupt_pin(self) -> int:
        return self.data[PCI_INTERRUPT_PIN]


class ConfigSpaceBuilder:
    """Lay out a header and capabilities, then `build` the `EmulatedConfig`.

    Capabilities are placed from 0x40 in the order added, each 4-byte aligned and
    linked from ``PCI_CAPABILITY_LIST``; extended ones from 0x100, linked the same way.
    ``add_express`` or an extended capability makes the space 4096 bytes (with no
    extended capability, the header at 0x100 is zero: an empty list).

    ``add_pm``, ``add_msi``, ``add_msix`` and ``add_express`` check what a device
    declares; `add_capability` and `add_extended_capability` lay out any capability
    `pyvfio.pci` decodes, from the table it decodes it with (its `Layout`), with the
    field values given by name.  ``bridge=True`` makes a type 1 header, a PCI-to-PCI
    bridge's: two BARs, writable bus numbers, and no subsystem IDs (a bridge keeps
    those in a Bridge Subsystem ID capability).
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
        bridge: bool = False,
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
        if bridge and (subsystem_vendor_id or subsystem_id):
            raise ValueError("a bridge's subsystem IDs go in a Bridge Subsystem ID capability")
        self._data = bytearray(PCI_CFG_SPACE_EXP_SIZE)
        self._writable = bytearray(PCI_CFG_SPACE_EXP_SIZE)
        self._size = PCI_CFG_SPACE_SIZE
        self._bridge = bridge
        self._next_cap = _FIRST_CAP
        self._last_cap: int | None = None
        self._next_ext = PCI_CFG_SPACE_SIZE
        self._last_ext: int | None = None
        self._bars: dict[int, BarSpec] = {}
        self._msi: MsiInfo | None = None
        self._msix: MsixInfo | None = None
        self._express: int | None = None
        self._put(PCI_VENDOR_ID, 2, vendor_id)
        self._put(PCI_DEVICE_ID, 2, device_id)
        self._put(PCI_REVISION_ID, 1, revision)
        self._put(PCI_CLASS_PROG, 3, class_code)
        self._put(PCI_INTERRUPT_PIN, 1, interrupt_pin)
        self._mask(PCI_COMMAND, 2, _COMMAND_WRITABLE)
        self._mask(PCI_CACHE_LINE_SIZE, 1, 0xFF)
        self._mask(PCI_LATENCY_TIMER, 1, 0xFF)
        self._mask(PCI_INTERRUPT_LINE, 1, 0xFF)
        if bridge:
            self._put(PCI_HEADER_TYPE, 1, PCI_HEADER_TYPE_BRIDGE)
            for register in (
                PCI_PRIMARY_BUS,
                PCI_SECONDARY_BUS,
                PCI_SUBORDINATE_BUS,
                PCI_SEC_LATENCY_TIMER,
            ):
                self._mask(register, 1, 0xFF)
        else:
            self._put(PCI_SUBSYSTEM_VENDOR_ID, 2, subsystem_vendor_id)
            self._put(PCI_SUBSYSTEM_ID, 2, subsystem_id)

    def _put(self, offset: int, size: int, value: int) -> None:
        self._data[offset : offset + size] = value.to_bytes(size, "little")

    def _mask(self, offset: int, size: int, mask: int) -> None:
        self._writable[offset : offset + size] = mask.to_bytes(size, "little")

    # -- BARs -------------------------------------------------------------------------

    def add_bar(self, spec: BarSpec) -> None:
        """Declare a BAR; its register reads back the size when all-ones is written."""
        count = 2 if self._bridge else PCI_STD_NUM_BARS
        if not 0 <= spec.index < count:
            raise ValueError(f"BAR index is 0-{count - 1}, not {spec.index}")
        if spec.size <= 0 or spec.size & (spec.size - 1):
            raise ValueError(f"BAR{spec.index} size {spec.size:#x} is not a power of two")
        if spec.kind is BarKind.MEM64 and spec.index == count - 1:
            raise ValueError(f"a 64-bit BAR takes two registers: BAR{spec.index} cannot be one")
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
        address_bits = (
            PCI_BASE_ADDRESS_IO_MASK if spec.kind is BarKind.IO else PCI_BASE_ADDRESS_MEM_MASK
        )
        self._mask(register, 4, size_mask & address_bits & 0xFFFFFFFF)
        if spec.kind is BarKind.MEM64:
            self._mask(register + 4, 4, (size_mask >> 32) & 0xFFFFFFFF)

    # -- capabilities -----------------------------------------------------------------

    def _add_cap(self, cap_id: int, length: int) -> int:
        offset = self._next_cap
        if offset + length > PCI_CFG_SPACE_SIZE:
            raise ValueError(f"no room for capability {cap_id:#04x} below 0x100")
        if self._last_cap is None:
            self._put(PCI_CAPABILITY_LIST, 1, offset)
            self._data[PCI_STATUS] |= PCI_STATUS_CAP_LIST
        else:
            self._data[self._last_cap + PCI_CAP_LIST_NEXT] = offset
        self._data[offset + PCI_CAP_LIST_ID] = cap_id
        self._data[offset + PCI_CAP_LIST_NEXT] = 0
        self._last_cap = offset
        self._next_cap = (offset + length + 3) & ~3
        return offset

    def _encode(self, offset: int, layout: Layout, values: dict[str, object]) -> None:
        for register, width, value, writable in layout.encode(values):
            self._put(offset + register, width, value)
            self._mask(offset + register, width, writable)

    def add_capability(self, layout: Layout, **values: object) -> int:
        """Any standard capability from its table, with these field values (the others
        zero); writable where the table says a client may write.  Its offset."""
        offset = self._add_cap(layout.id, layout.size_for(values))
        self._encode(offset, layout, values)
        return offset

    def add_extended_capability(self, layout: Layout, version: int = 1, **values: object) -> int:
        """Any extended capability from its table (as `add_capability`), linked after
        the ones before it from 0x100; makes the space 4 KiB.  Its offset."""
        if not 0 <= version <= 0xF:
            raise ValueError(f"an extended capability's version is 0-15, not {version}")
        offset = self._next_ext
        length = layout.size_for(values)
        if offset + length > PCI_CFG_SPACE_EXP_SIZE:
            raise ValueError(f"no room for extended capability {layout.id:#06x}")
        if self._last_ext is not None:
            header = int.from_bytes(self._data[self._last_ext : self._last_ext + 4], "little")
            self._put(self._last_ext, _EXT_HEADER, header | offset << _EXT_NEXT_SHIFT)
        self._put(offset, _EXT_HEADER, layout.id | version << 16)
        self._encode(offset, layout, values)
        self._last_ext = offset
        self._next_ext = (offset + max(length, _EXT_HEADER) + 3) & ~3
        self._size = PCI_CFG_SPACE_EXP_SIZE
        return offset

    def add_pm(self, *, d1: bool = False, d2: bool = False, no_soft_reset: bool = True) -> int:
        """Power Management, version 3; PMCSR's power state is writable.  Its offset."""
        return self.add_capability(
            PM_LAYOUT, version=3, d1_support=d1, d2_support=d2, no_soft_reset=no_soft_reset
        )

    def add_msi(
        self, vectors: int = 1, *, is_64bit: bool = True, per_vector_masking: bool = False
    ) -> int:
        """MSI with ``vectors`` (1, 2, 4 ... 32); enable, MME, address and data writable."""
        if vectors not in (1, 2, 4, 8, 16, 32):
            raise ValueError(f"MSI offers 1, 2, 4, 8, 16 or 32 vectors, not {vectors}")
        if self._msi is not None:
            raise ValueError("a function has one MSI capability")
        offset = self.add_capability(
            MSI_LAYOUT,
            vectors=vectors,
            vectors_enabled=1,
            is_64bit=is_64bit,
            per_vector_masking=per_vector_masking,
        )
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
            pba_offset = (table_offset + PCI_MSIX_ENTRY_SIZE * vectors + 7) & ~7
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
        offset = self.add_capability(
            MSIX_LAYOUT,
            table_size=vectors,
            table_bir=table_bar,
            table_offset=table_offset,
            pba_bir=pba_bar,
            pba_offset=pba_offset,
        )
        self._msix = MsixInfo(offset, vectors, table_bar, table_offset, pba_bar, pba_offset)
        return offset

    def add_express(
        self, *, max_payload: int = 128, flr: bool = False, port_type: int = PCI_EXP_TYPE_ENDPOINT
    ) -> int:
        """A PCI Express v2 capability (x1 2.5 GT/s link), an endpoint unless
        ``port_type`` says otherwise (`pyvfio.pci.config.PortType`); makes the space 4 KiB."""
        if max_payload not in (128, 256, 512, 1024, 2048, 4096):
            raise ValueError(f"max_payload is 128 to 4096 bytes, a power of two, not {max_payload}")
        if self._express is not None:
            raise ValueError("a function has one PCI Express capability")
        offset = self.add_capability(
            EXP_LAYOUT,
            version=2,
            port_type=port_type,
            max_payload=max_payload,
            flr=flr,
            max_link_speed=PCI_EXP_LNKCAP_SLS_2_5GB,
            max_link_width=1,
        )
        self._put(offset + PCI_EXP_LNKSTA, 2, PCI_EXP_LNKSTA_CLS_2_5GB | PCI_EXP_LNKSTA_NLW_X1)
        self._express = offset
        self._size = PCI_CFG_SPACE_EXP_SIZE
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
