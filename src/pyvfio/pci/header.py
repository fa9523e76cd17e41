"""The first 64 bytes of configuration space: identity, command/status, BARs, bus numbers.

Decoded by `decode_header` for `pyvfio.pci.config.parse_config`; the three layouts
(``PCI_HEADER_TYPE_NORMAL``, ``_BRIDGE``, ``_CARDBUS``) place the BARs, the expansion
ROM, the capabilities pointer and the subsystem IDs differently.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from pyvfio._uapi.pci_regs import (
    PCI_BASE_ADDRESS_0,
    PCI_BASE_ADDRESS_IO_MASK,
    PCI_BASE_ADDRESS_MEM_MASK,
    PCI_BASE_ADDRESS_MEM_PREFETCH,
    PCI_BASE_ADDRESS_MEM_TYPE_1M,
    PCI_BASE_ADDRESS_MEM_TYPE_64,
    PCI_BASE_ADDRESS_MEM_TYPE_MASK,
    PCI_BASE_ADDRESS_SPACE,
    PCI_BASE_ADDRESS_SPACE_IO,
    PCI_BIST,
    PCI_CACHE_LINE_SIZE,
    PCI_CAPABILITY_LIST,
    PCI_CB_CAPABILITY_LIST,
    PCI_CB_CARD_BUS,
    PCI_CB_PRIMARY_BUS,
    PCI_CB_SUBORDINATE_BUS,
    PCI_CB_SUBSYSTEM_ID,
    PCI_CB_SUBSYSTEM_VENDOR_ID,
    PCI_CLASS_DEVICE,
    PCI_CLASS_PROG,
    PCI_COMMAND,
    PCI_DEVICE_ID,
    PCI_HEADER_TYPE,
    PCI_HEADER_TYPE_BRIDGE,
    PCI_HEADER_TYPE_CARDBUS,
    PCI_HEADER_TYPE_MASK,
    PCI_HEADER_TYPE_MFD,
    PCI_HEADER_TYPE_NORMAL,
    PCI_INTERRUPT_LINE,
    PCI_INTERRUPT_PIN,
    PCI_LATENCY_TIMER,
    PCI_PRIMARY_BUS,
    PCI_REVISION_ID,
    PCI_ROM_ADDRESS,
    PCI_ROM_ADDRESS1,
    PCI_ROM_ADDRESS_ENABLE,
    PCI_ROM_ADDRESS_MASK,
    PCI_SECONDARY_BUS,
    PCI_STATUS,
    PCI_STD_NUM_BARS,
    PCI_SUBORDINATE_BUS,
    PCI_SUBSYSTEM_ID,
    PCI_SUBSYSTEM_VENDOR_ID,
    PCI_VENDOR_ID,
)
from pyvfio.pci.layout import u8, u16, u32

__all__ = ["Bar", "BarType", "ExpansionRom", "Header", "HeaderType", "decode_bars", "decode_header"]

_MEM_TYPE_RESERVED = 0x06  # the fourth memory type, reserved since PCI 2.2


class HeaderType(enum.IntEnum):
    """Header layout, bits 6:0 of the Header Type register (``PCI_HEADER_TYPE_*``)."""

    NORMAL = PCI_HEADER_TYPE_NORMAL
    BRIDGE = PCI_HEADER_TYPE_BRIDGE
    CARDBUS = PCI_HEADER_TYPE_CARDBUS


class BarType(enum.Enum):
    """What a Base Address Register decodes."""

    IO = "io"
    MEM32 = "mem32"
    MEM1M = "mem1m"  # legacy "below 1 MiB" memory type (PCI 2.x)
    MEM64 = "mem64"


@dataclass(frozen=True, slots=True)
class Bar:
    """A Base Address Register as programmed: where it decodes, not how large it is.

    ``raw`` is the register value; for a 64-bit BAR it joins both registers.
    """

    index: int
    type: BarType
    prefetchable: bool
    address: int
    raw: int

    def __str__(self) -> str:
        if self.type is BarType.IO:
            return f"BAR {self.index}: I/O ports at {self.address:#x}"
        width = {BarType.MEM32: "32-bit", BarType.MEM1M: "low-1M", BarType.MEM64: "64-bit"}
        prefetch = "prefetchable" if self.prefetchable else "non-prefetchable"
        return f"BAR {self.index}: memory at {self.address:#x} ({width[self.type]}, {prefetch})"


@dataclass(frozen=True, slots=True)
class ExpansionRom:
    """The Expansion ROM Base Address register."""

    address: int
    enabled: bool
    raw: int

    def __str__(self) -> str:
        return f"expansion ROM at {self.address:#x} [{'enabled' if self.enabled else 'disabled'}]"


@dataclass(frozen=True, slots=True)
class Header:
    """The first 64 bytes: identity, command/status, BARs, bus numbers of a bridge.

    ``subsystem_*`` are None for bridges (their subsystem IDs live in a Bridge Subsystem
    ID capability), ``expansion_rom`` for CardBus bridges or an unprogrammed register,
    and the bus numbers for endpoints.
    """

    vendor_id: int
    device_id: int
    command: int
    status: int
    revision: int
    prog_if: int
    subclass: int
    base_class: int
    cache_line_size: int
    latency_timer: int
    header_type: HeaderType | int
    multifunction: bool
    bist: int
    bars: tuple[Bar, ...]
    expansion_rom: ExpansionRom | None
    subsystem_vendor_id: int | None
    subsystem_id: int | None
    capabilities_pointer: int | None
    interrupt_line: int
    interrupt_pin: int
    primary_bus: int | None
    secondary_bus: int | None
    subordinate_bus: int | None

    @property
    def class_code(self) -> int:
        """The 24-bit class code: base class, subclass, programming interface."""
        return self.base_class << 16 | self.subclass << 8 | self.prog_if

    @property
    def device_class(self) -> int:
        """Base class and subclass, as lspci shows them (``0604`` for a PCI bridge)."""
        return self.base_class << 8 | self.subclass

    @property
    def is_bridge(self) -> bool:
        return self.header_type == HeaderType.BRIDGE

    def __str__(self) -> str:
        parts = [
            f"{self.vendor_id:04x}:{self.device_id:04x}",
            f"class {self.class_code:06x}",
            f"rev {self.revision:02x}",
        ]
        if self.subsystem_vendor_id is not None and self.subsystem_id is not None:
            parts.append(f"subsystem {self.subsystem_vendor_id:04x}:{self.subsystem_id:04x}")
        kind = (
            self.header_type.name.lower()
            if isinstance(self.header_type, HeaderType)
            else f"header type {self.header_type:#04x}"
        )
        parts.append(kind + (", multi-function" if self.multifunction else ""))
        if self.secondary_bus is not None:
            parts.append(f"buses {self.secondary_bus:02x}-{self.subordinate_bus or 0:02x}")
        return " ".join(parts)


def decode_bars(
    data: bytes, base: int, count: int, problems: list[str], what: str = "BAR"
) -> tuple[Bar, ...]:
    """The ``count`` BARs from ``base`` (the header's, or an SR-IOV capability's VF BARs)."""
    bars = []
    index = 0
    while index < count:
        offset = base + 4 * index
        raw = u32(data, offset)
        # A register reading 0 is either unimplemented or an unassigned 32-bit memory BAR;
        # without sizing the two look the same. All-ones means nobody answered.
        if raw in (0, 0xFFFFFFFF):
            index += 1
            continue
        if raw & PCI_BASE_ADDRESS_SPACE == PCI_BASE_ADDRESS_SPACE_IO:
            bars.append(Bar(index, BarType.IO, False, raw & PCI_BASE_ADDRESS_IO_MASK, raw))
            index += 1
            continue
        prefetchable = bool(raw & PCI_BASE_ADDRESS_MEM_PREFETCH)
        mem_type = raw & PCI_BASE_ADDRESS_MEM_TYPE_MASK
        if mem_type == PCI_BASE_ADDRESS_MEM_TYPE_64:
            address = raw & PCI_BASE_ADDRESS_MEM_MASK
            if index + 1 >= count:
                problems.append(f"{what} {index} is 64-bit but is the last BAR; read as 32-bit")
                bars.append(Bar(index, BarType.MEM32, prefetchable, address, raw))
                index += 1
                continue
            raw64 = u32(data, offset + 4) << 32 | raw
            bars.append(
                Bar(index, BarType.MEM64, prefetchable, raw64 & PCI_BASE_ADDRESS_MEM_MASK, raw64)
            )
            index += 2
            continue
        if mem_type == _MEM_TYPE_RESERVED:
            problems.append(f"{what} {index} has the reserved memory type 3; skipped")
        else:
            kind = BarType.MEM1M if mem_type == PCI_BASE_ADDRESS_MEM_TYPE_1M else BarType.MEM32
            bars.append(Bar(index, kind, prefetchable, raw & PCI_BASE_ADDRESS_MEM_MASK, raw))
        index += 1
    return tuple(bars)


def decode_header(data: bytes, problems: list[str]) -> Header:
    """The header of ``data`` (at least 64 bytes); what is malformed goes to ``problems``."""
    raw_type = u8(data, PCI_HEADER_TYPE)
    layout = raw_type & PCI_HEADER_TYPE_MASK
    header_type: HeaderType | int = (
        HeaderType(layout) if layout in HeaderType._value2member_map_ else layout
    )
    subsystem_vendor_id: int | None = None
    subsystem_id: int | None = None
    rom_register: int | None = None
    capabilities_pointer: int | None = None
    primary = secondary = subordinate = None
    if header_type == HeaderType.NORMAL:
        bars = decode_bars(data, PCI_BASE_ADDRESS_0, PCI_STD_NUM_BARS, problems)
        subsystem_vendor_id = u16(data, PCI_SUBSYSTEM_VENDOR_ID)
        subsystem_id = u16(data, PCI_SUBSYSTEM_ID)
        rom_register = u32(data, PCI_ROM_ADDRESS)
        capabilities_pointer = u8(data, PCI_CAPABILITY_LIST)
    elif header_type == HeaderType.BRIDGE:
        bars = decode_bars(data, PCI_BASE_ADDRESS_0, 2, problems)
        rom_register = u32(data, PCI_ROM_ADDRESS1)
        capabilities_pointer = u8(data, PCI_CAPABILITY_LIST)
        primary, secondary = u8(data, PCI_PRIMARY_BUS), u8(data, PCI_SECONDARY_BUS)
        subordinate = u8(data, PCI_SUBORDINATE_BUS)
    elif header_type == HeaderType.CARDBUS:
        bars = decode_bars(data, PCI_BASE_ADDRESS_0, 1, problems)
        capabilities_pointer = u8(data, PCI_CB_CAPABILITY_LIST)
        if len(data) >= PCI_CB_SUBSYSTEM_ID + 2:  # just past the 64-byte header
            subsystem_vendor_id = u16(data, PCI_CB_SUBSYSTEM_VENDOR_ID)
            subsystem_id = u16(data, PCI_CB_SUBSYSTEM_ID)
        primary, secondary = u8(data, PCI_CB_PRIMARY_BUS), u8(data, PCI_CB_CARD_BUS)
        subordinate = u8(data, PCI_CB_SUBORDINATE_BUS)
    else:
        bars = ()
        problems.append(f"unknown header type {layout:#04x}: only the common fields decoded")
    rom = None
    if rom_register is not None and rom_register not in (0, 0xFFFFFFFF):
        rom = ExpansionRom(
            rom_register & PCI_ROM_ADDRESS_MASK,
            bool(rom_register & PCI_ROM_ADDRESS_ENABLE),
            rom_register,
        )
    return Header(
        vendor_id=u16(data, PCI_VENDOR_ID),
        device_id=u16(data, PCI_DEVICE_ID),
        command=u16(data, PCI_COMMAND),
        status=u16(data, PCI_STATUS),
        revision=u8(data, PCI_REVISION_ID),
        prog_if=u8(data, PCI_CLASS_PROG),
        subclass=u8(data, PCI_CLASS_DEVICE),
        base_class=u8(data, PCI_CLASS_DEVICE + 1),
        cache_line_size=u8(data, PCI_CACHE_LINE_SIZE),
        latency_timer=u8(data, PCI_LATENCY_TIMER),
        header_type=header_type,
        multifunction=bool(raw_type & PCI_HEADER_TYPE_MFD),
        bist=u8(data, PCI_BIST),
        bars=bars,
        expansion_rom=rom,
        subsystem_vendor_id=subsystem_vendor_id,
        subsystem_id=subsystem_id,
        capabilities_pointer=capabilities_pointer,
        interrupt_line=u8(data, PCI_INTERRUPT_LINE),
        interrupt_pin=u8(data, PCI_INTERRUPT_PIN),
        primary_bus=primary,
        secondary_bus=secondary,
        subordinate_bus=subordinate,
    )
