"""Register tables: one description of a capability, read by the parser and built by the server.

A `Layout` lists a capability's registers (offset from the capability's start, width)
and, for each register, the fields its bits hold and the bits software may write.  The
parser decodes a capability with it (`Layout.decode`: each register read once, each
field pulled out of its bits) and the vfio-user server's config builder encodes one
with it (`Layout.encode`: the same fields put into the same bits, plus the write mask
the emulation applies), so a register is described once for both directions, the way
pyroute2's message tables both decode and encode.  The tables themselves sit beside
each capability's dataclass in `pyvfio.pci.capabilities` and `pyvfio.pci.extended`.

Offsets and bits are the kernel's names from `pyvfio._uapi.pci_regs`::

    Register(PCI_PM_CTRL, 2,
             Bits("no_soft_reset", PCI_PM_CTRL_NO_SOFT_RESET, FLAG),
             Bits("power_state", PCI_PM_CTRL_STATE_MASK),
             writable=PCI_PM_CTRL_STATE_MASK)
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "FLAG",
    "NUMBER",
    "PLUS_ONE",
    "POWER_OF_TWO",
    "Bits",
    "Codec",
    "Layout",
    "Register",
    "TruncatedError",
    "enum_or_int",
    "flag_text",
    "size_text",
    "u8",
    "u16",
    "u32",
]

Values = Mapping[str, object]


# --- Reading little-endian registers ---------------------------------------------------


class TruncatedError(Exception):
    """A register read fell past the end of the data."""


def read(data: bytes, offset: int, size: int) -> int:
    if offset + size > len(data):
        raise TruncatedError(offset)
    return int.from_bytes(data[offset : offset + size], "little")


def u8(data: bytes, offset: int) -> int:
    return read(data, offset, 1)


def u16(data: bytes, offset: int) -> int:
    return read(data, offset, 2)


def u32(data: bytes, offset: int) -> int:
    return read(data, offset, 4)


# --- How a field's bits read as a value ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Codec:
    """From a field's raw bits to its value, and back."""

    decode: Callable[[int], object]
    encode: Callable[[Any], int]


NUMBER: Final = Codec(int, int)
FLAG: Final = Codec(bool, lambda value: int(bool(value)))
#: An encoded log2: MSI's Multiple Message Capable (``0b011`` is 8 vectors).
POWER_OF_TWO: Final = Codec(lambda raw: 1 << raw, lambda count: int(count).bit_length() - 1)
#: An N-1 encoding: MSI-X's Table Size.
PLUS_ONE: Final = Codec(lambda raw: raw + 1, lambda count: int(count) - 1)


def enum_or_int(family: type[enum.IntEnum] | type[enum.IntFlag]) -> Codec:
    """The member of ``family`` for a known value (it prints by name), else the plain int."""
    if issubclass(family, enum.IntFlag):
        return Codec(family, int)
    known = family._value2member_map_
    return Codec(lambda raw: family(raw) if raw in known else raw, int)


@dataclass(frozen=True, slots=True)
class Bits:
    """A field: the bits ``mask`` of its register (all of them if None) and how they read.

    The bits are shifted down to bit ``at`` of the value: 0 for most fields; 32 for the
    high half of a 64-bit value split over two registers; None to leave them where they
    are (an offset into a BAR whose low bits hold the BAR's index).
    """

    name: str
    mask: int | None = None
    codec: Codec = NUMBER
    at: int | None = 0


class Register:
    """A register at ``offset`` (from the capability's start), ``width`` bytes wide.

    ``writable`` holds the bits the builder lets a client write (a function of the
    capability's values where it depends on them); ``when`` says whether the register
    is there at all (MSI's upper address only on a 64-bit capability).
    """

    __slots__ = ("fields", "offset", "when", "width", "writable")

    def __init__(
        self,
        offset: int,
        width: int,
        *fields: Bits,
        writable: int | Callable[[Values], int] = 0,
        when: Callable[[Values], bool] | None = None,
    ) -> None:
        self.offset = offset
        self.width = width
        self.fields = fields
        self.writable = writable
        self.when = when

    @property
    def all_bits(self) -> int:
        return (1 << 8 * self.width) - 1

    def mask_of(self, bits: Bits) -> int:
        return self.all_bits if bits.mask is None else bits.mask

    def shifts(self, bits: Bits) -> tuple[int, int, int]:
        """The field's mask, its lowest bit, and the bit of the value that one lands on."""
        mask = self.mask_of(bits)
        low = (mask & -mask).bit_length() - 1
        return mask, low, low if bits.at is None else bits.at

    def present(self, values: Values) -> bool:
        return self.when is None or self.when(values)


class Layout:
    """The registers of one capability and the dataclass its fields fill.

    ``size`` is the capability's length in bytes; by default the end of its last
    register.  ``more`` decodes what a table cannot say (a list of entries): it gets the
    data and the capability's offset and returns more field values.
    """

    __slots__ = ("_codecs", "_reads", "_size", "cls", "id", "more", "registers")

    def __init__(
        self,
        cls: type[Any],
        cap_id: int,
        *registers: Register,
        size: int | None = None,
        more: Callable[[bytes, int], dict[str, object]] | None = None,
    ) -> None:
        self.cls = cls
        self.id = cap_id
        self.registers = registers
        self.more = more
        self._size = size
        self._codecs: dict[str, Codec] = {}
        for register in registers:
            for bits in register.fields:
                if self._codecs.setdefault(bits.name, bits.codec) is not bits.codec:
                    raise ValueError(f"{bits.name} is read two ways")
        # What decode does for each register with fields, worked out once.
        self._reads = tuple(
            (register, tuple((bits.name, *register.shifts(bits)) for bits in register.fields))
            for register in registers
            if register.fields
        )

    @property
    def fields(self) -> tuple[str, ...]:
        """The names of the values the table decodes and encodes."""
        return tuple(self._codecs)

    def decode(self, data: bytes, pos: int) -> dict[str, object]:
        """The field values of the capability at ``pos``; None for a field whose register
        is absent.  Reads each present register once (raising `TruncatedError` past the
        end of the data); registers with no fields are not read."""
        raw: dict[str, int] = {}
        values: dict[str, object] = dict.fromkeys(self._codecs)
        for register, fields in self._reads:
            if register.when is not None and not register.when(values):
                continue
            value = read(data, pos + register.offset, register.width)
            for name, mask, low, at in fields:
                raw[name] = raw.get(name, 0) | (value & mask) >> low << at
                values[name] = self._codecs[name].decode(raw[name])
        if self.more is not None:
            values.update(self.more(data, pos))
        return values

    def encode(self, values: Values) -> Iterator[tuple[int, int, int, int]]:
        """``(offset, width, value, writable)`` of each register present for ``values``;
        fields not given are zero."""
        unknown = set(values) - set(self._codecs)
        if unknown:
            raise ValueError(f"{self.cls.__name__} has no field {', '.join(sorted(unknown))}")
        raw = {name: self._codecs[name].encode(value) for name, value in values.items()}
        present = [register for register in self.registers if register.present(values)]
        room = dict.fromkeys(raw, 0)  # how many bits of each value the registers hold
        for register in present:
            for bits in register.fields:
                if bits.name in room:
                    mask, low, at = register.shifts(bits)
                    room[bits.name] = max(room[bits.name], at + (mask >> low).bit_length())
        for name, bits_held in room.items():
            if not 0 <= raw[name] < 1 << bits_held:
                raise ValueError(f"{self.cls.__name__}.{name} {values[name]!r} does not fit")
        for register in present:
            value = 0
            for bits in register.fields:
                mask, low, at = register.shifts(bits)
                value |= (raw.get(bits.name, 0) >> at << low) & mask
            writable = register.writable
            mask = writable(values) if callable(writable) else writable
            yield register.offset, register.width, value, mask & register.all_bits

    @property
    def size(self) -> int:
        """The most bytes the capability spans."""
        if self._size is not None:
            return self._size
        return max(register.offset + register.width for register in self.registers)

    def size_for(self, values: Values) -> int:
        """The length of the capability built from ``values``: the end of the last
        register present, unless the table gives a fixed size."""
        if self._size is not None:
            return self._size
        return max(r.offset + r.width for r in self.registers if r.present(values))


# --- How fields print ----------------------------------------------------------------------


def flag_text(name: str, value: bool) -> str:
    """lspci's ``Name+`` / ``Name-`` notation."""
    return f"{name}{'+' if value else '-'}"


def size_text(size: int) -> str:
    """A size in bytes as lspci prints it: ``256M``, ``1G``, ``1536K``."""
    for unit in ("", "K", "M", "G", "T", "P"):
        if size < 1024 or size % 1024:
            return f"{size}{unit}"
        size //= 1024
    return f"{size}E"
