"""A device region (a BAR, the config space, the ROM): typed access, mmap where allowed.

Accesses go through the mmap where the region (or the sparse area holding the
offset) may be mapped, as a single load or store of the access's width, which MMIO
registers need; everything else goes through the device's transport: ``pread``/
``pwrite`` on the device fd at the region's offset, which vfio-pci serves (the MSI-X
table of a BAR, for instance), or ``VFIO_USER_REGION_READ``/``WRITE`` messages over a
vfio-user socket. Offsets and widths are checked before any system call.

The typed accessors are drivers' hot path (issue 16), so what can be decided once is:
mapping a region makes one memoryview per width over the mapped window (``cast("I")``
and so on), whose indexing is a single load or store of that width and refuses an index
past the window; a region that is never mapped keeps the fd and file offset ``pread``
reaches it at. An access then checks only its offset's type, sign and alignment, in
one Python frame; anything unusual (a bad offset, a later sparse area, a closed device)
falls to the checked path, which raises the errors the reader is told about.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import mmap
import os
import struct
from array import array
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

from pyvfio import _ioctl, _mem
from pyvfio.errors import UnsupportedError, VfioError
from pyvfio.info import RegionInfo, SparseArea

if TYPE_CHECKING:
    from pyvfio._transport import DeviceTransport

_CTYPES = {1: ctypes.c_uint8, 2: ctypes.c_uint16, 4: ctypes.c_uint32, 8: ctypes.c_uint64}
#: What a pread's bytes hold: little-endian registers, as vfio-pci's pread returns them.
_U8, _U16, _U32, _U64 = (struct.Struct(f"<{code}") for code in "BHIQ")
_pread, _pwrite = os.pread, os.pwrite
assert array("I").itemsize == 4 and struct.calcsize("=I") == 4  # the block ops' unit


class RegionOwner(Protocol):
    """What a Region needs of its device (a `~pyvfio.Device` is one): the address its
    errors name, and the transport, which raises `ClosedError` (or
    `DeviceRemovedError`) once the device is closed. The underscored member is the
    device's side for its regions, not for its callers."""

    @property
    def bdf(self) -> str: ...

    def _require_transport(self) -> DeviceTransport: ...


class Region:
    """One region of a device: ``size``, ``flags``, typed reads and writes, ``map()``.

    ``read8``...``write64`` are single accesses of their width; ``read_block32`` and
    ``write_block32`` are runs of 32-bit accesses, one per register, checked once.
    """

    __slots__ = (
        "_areas",
        "_attached",
        "_base",
        "_device",
        "_fd",
        "_file_offset",
        "_r8",
        "_r16",
        "_r32",
        "_r64",
        "_read_end",
        "_readable",
        "_size",
        "_view",
        "_w8",
        "_w16",
        "_w32",
        "_w64",
        "_whole",
        "_writable",
        "_write_end",
        "info",
        "name",
    )

    def __init__(self, device: RegionOwner, info: RegionInfo, name: str) -> None:
        self._device = device
        self.info = info
        self.name = name
        self._base = 0  # address of the mapping, 0 while unmapped
        self._whole = 0  # the same when one mapping covers the whole region
        self._areas: tuple[SparseArea, ...] = ()
        self._view: memoryview | None = None
        # Plain values computed once: IntFlag tests and property lookups were a third
        # of an MMIO read and 40% of a config read (issue 16).
        self._size = info.size
        self._readable = info.readable
        self._writable = info.writable
        # The mapped window's views per width, for reading and for writing; None while
        # unmapped, or where the region may not be read (written).
        self._r8: memoryview | None = None
        self._r16: memoryview | None = None
        self._r32: memoryview | None = None
        self._r64: memoryview | None = None
        self._w8: memoryview | None = None
        self._w16: memoryview | None = None
        self._w32: memoryview | None = None
        self._w64: memoryview | None = None
        # A never-mapped region's pread/pwrite target, learnt from the transport at the
        # first access; the end a read (write) may reach through it, -1 for "not here".
        self._attached = False
        self._fd = -1
        self._file_offset = 0
        self._read_end = -1
        self._write_end = -1

    def __repr__(self) -> str:
        return f"<Region {self.name} of {self._device.bdf}: {self.info}>"

    @property
    def size(self) -> int:
        return self.info.size

    @property
    def flags(self) -> int:
        return int(self.info.flags)

    @property
    def index(self) -> int:
        return self.info.index

    @property
    def mapped(self) -> bool:
        return self._base != 0

    # -- mapping ---------------------------------------------------------------------

    def map(self) -> memoryview:
        """A writable memoryview over the mmap'd region (sparse-mmap aware).

        Where the kernel allows only some areas (a sparse-mmap capability, e.g. around
        an MSI-X table), the whole size is reserved and only those areas are mapped:
        the view's other bytes are not accessible, use ``read32``/``write32`` there.
        UnsupportedError when the region may not be mapped at all.
        """
        if self._view is not None:
            return self._view
        transport = self._device._require_transport()
        areas = self.info.mmap_areas()
        if not areas:
            why = self.info.no_mmap_reason or "the kernel or server does not allow it"
            raise UnsupportedError(
                f"{self.name} of {self._device.bdf} cannot be mmap'd ({why}); use read32/write32",
                device=self._device.bdf,
            )
        fd = transport.mmap_fd(self.info)
        size = _mem.round_up(self.size, _mem.PAGE_SIZE)
        prot = (mmap.PROT_READ if self.info.readable else 0) | (
            mmap.PROT_WRITE if self.info.writable else 0
        )
        whole = len(areas) == 1 and areas[0].offset == 0 and areas[0].size >= self.size
        try:
            if whole:
                base = _mem.map_memory(size, prot, mmap.MAP_SHARED, fd, self.info.offset)
            else:
                base = self._map_areas(areas, size, prot, fd)
        except OSError as err:
            bdf = self._device.bdf
            raise _ioctl.os_error(err, f"mmap of {self.name} of {bdf}", bdf) from err
        self._base, self._areas = base, areas
        self._whole = base if whole else 0
        self._view = _mem.view(base, self.size)
        self._make_views(areas)
        return self._view

    def _make_views(self, areas: tuple[SparseArea, ...]) -> None:
        """The per-width views of the window mapped from offset 0 on (the whole region,
        or a sparse region's first area): the hot path's, which the view's own bound
        keeps inside the window. Accesses elsewhere take the checked path."""
        assert self._view is not None
        window = max((min(a.size, self._size) for a in areas if a.offset == 0), default=0)
        if not window:
            return
        # Native order ("I", not "<I"): a memoryview item is a load of the CPU's order,
        # as the ctypes loads of the checked path are.
        whole = self._view
        r8 = whole[:window]
        r16 = whole[: window & ~1].cast("H")
        r32 = whole[: window & ~3].cast("I")
        r64 = whole[: window & ~7].cast("Q")
        if self._readable:
            self._r8, self._r16, self._r32, self._r64 = r8, r16, r32, r64
        if self._writable:
            self._w8, self._w16, self._w32, self._w64 = r8, r16, r32, r64

    def _drop_views(self) -> None:
        r8, r16, r32, r64 = self._r8, self._r16, self._r32, self._r64
        w8, w16, w32, w64 = self._w8, self._w16, self._w32, self._w64
        self._r8 = self._r16 = self._r32 = self._r64 = None
        self._w8 = self._w16 = self._w32 = self._w64 = None
        for view in (r8, r16, r32, r64, w8, w16, w32, w64):
            if view is not None:
                view.release()  # (twice for a view both lists hold: release is idempotent)

    def _map_areas(self, areas: tuple[SparseArea, ...], size: int, prot: int, fd: int) -> int:
        """Reserve ``size`` bytes and lay each area over its place; the reservation's
        address. Unmapping the reservation unmaps the areas laid into it too, so a
        failure part-way gives all of it back."""
        base = _mem.map_memory(size, _mem.PROT_NONE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        try:
            for area in areas:
                _mem.map_memory(
                    area.size,
                    prot,
                    mmap.MAP_SHARED | _mem.MAP_FIXED,
                    fd,
                    self.info.offset + area.offset,
                    address=base + area.offset,
                )
        except BaseException:
            with contextlib.suppress(OSError):
                _mem.unmap_memory(base, size)
            raise
        return base

    def unmap(self) -> None:
        """Drop the mapping (idempotent); the next access maps the region again."""
        if self._base:
            base, self._base, self._areas, self._whole = self._base, 0, (), 0
            self._drop_views()  # first: the hot path must not reach unmapped memory
            if self._view is not None:
                self._view.release()
                self._view = None
            _mem.unmap_memory(base, _mem.round_up(self.size, _mem.PAGE_SIZE))

    def _release(self) -> None:
        """The device is closing: unmap, and forget the fd (a closed fd's number is
        soon another file's), so every later access asks the device and is refused."""
        self._attached = False
        self._fd, self._read_end, self._write_end = -1, -1, -1
        self.unmap()

    def _attach(self, transport: DeviceTransport) -> None:
        """Learn a never-mapped region's ``pread`` target once, at its first access."""
        self._attached = True
        if self.info.mmap_allowed:
            return  # accesses go through the mapping (made at the first one)
        fd = transport.region_fd(self.info)
        if fd >= 0:
            self._fd, self._file_offset = fd, self.info.offset
            self._read_end = self._size if self._readable else -1
            self._write_end = self._size if self._writable else -1

    def _mapped_address(self, offset: int, width: int) -> int:
        """The address of ``offset`` if a mapped area holds all ``width`` bytes, else 0."""
        if not self._base:
            if self.info.mmap_allowed:
                try:
                    self.map()
                except VfioError:
                    return 0
            else:
                return 0
        for area in self._areas:
            if area.offset <= offset and offset + width <= area.offset + area.size:
                return self._base + offset
        return 0

    # -- the checked path ------------------------------------------------------------

    def _check(self, offset: int, width: int, write: bool, align: int = 0) -> None:
        """Refuse a bad access before any system call; ``align`` defaults to the width
        of a single access (1, 2, 4, 8), 1 for a run of bytes."""
        if not isinstance(offset, int) or isinstance(offset, bool):
            raise TypeError(f"offset must be an int, not {type(offset).__name__}")
        if not isinstance(width, int):
            raise TypeError(f"length must be an int, not {type(width).__name__}")
        if offset < 0 or width < 0 or offset + width > self._size:
            raise ValueError(
                f"{self.name} of {self._device.bdf}: access of {width} bytes at "
                f"{offset:#x} is outside its {self.size:#x} bytes"
            )
        align = align or (width if width in _CTYPES else 1)
        if offset % align:
            raise ValueError(
                f"{self.name}: {width}-byte access at {offset:#x} is not {align}-byte aligned"
            )
        if write and not self._writable:
            raise UnsupportedError(
                f"{self.name} of {self._device.bdf} is read-only",
                errno=errno.EROFS,
                device=self._device.bdf,
            )
        if not write and not self._readable:
            raise UnsupportedError(
                f"{self.name} of {self._device.bdf} is not readable",
                errno=errno.EACCES,
                device=self._device.bdf,
            )

    def _read(self, offset: int, width: int) -> int:
        self._check(offset, width, False)
        addr = self._mapped_address(offset, width)
        if addr:
            return int(_CTYPES[width].from_address(addr).value)
        return int.from_bytes(self.read(offset, width), "little")

    def _write(self, offset: int, width: int, value: int) -> None:
        self._check(offset, width, True)
        if not isinstance(value, int) or not 0 <= value < 1 << (8 * width):
            raise ValueError(f"value {value!r} does not fit in {width} bytes")
        addr = self._mapped_address(offset, width)
        if addr:
            _CTYPES[width].from_address(addr).value = value
        else:
            self.write(offset, value.to_bytes(width, "little"))

    def _failed(self, err: OSError, doing: str, length: int, offset: int) -> VfioError:
        bdf = self._device.bdf
        what = f"{doing} {length} bytes at {offset:#x} of {self.name} of {bdf}"
        return _ioctl.os_error(err, what, bdf)

    def _short(self, doing: str, offset: int, done: int, length: int) -> VfioError:
        where = "of" if doing == "read" else "to"
        return VfioError(
            f"short {doing} {where} {self.name} at {offset:#x}: {done} of {length} bytes",
            errno=errno.EIO,
            device=self._device.bdf,
        )

    # -- single accesses: the hot path -----------------------------------------------
    # Each is one frame: a well-formed offset goes straight to the mapped window's view
    # (its index check is the upper bound: IndexError past the window) or to a pread/
    # pwrite of a never-mapped region; everything else takes the checked path, which
    # raises the helpful errors or reaches a later sparse area. A failed store stores
    # nothing: the view checks the value before it writes.

    def read8(self, offset: int) -> int:
        if type(offset) is int and offset >= 0:
            view = self._r8
            if view is not None:
                try:
                    return view[offset]
                except IndexError:
                    pass
            elif offset < self._read_end:
                try:
                    data = _pread(self._fd, 1, self._file_offset + offset)
                except OSError as err:
                    raise self._failed(err, "reading", 1, offset) from err
                if len(data) == 1:
                    return data[0]
                raise self._short("read", offset, len(data), 1)
        return self._read(offset, 1)

    def read16(self, offset: int) -> int:
        if type(offset) is int and offset >= 0 and not offset & 1:
            view = self._r16
            if view is not None:
                try:
                    return view[offset >> 1]
                except IndexError:
                    pass
            elif offset <= self._read_end - 2:
                try:
                    data = _pread(self._fd, 2, self._file_offset + offset)
                except OSError as err:
                    raise self._failed(err, "reading", 2, offset) from err
                if len(data) == 2:
                    return _U16.unpack(data)[0]  # type: ignore[no-any-return]
                raise self._short("read", offset, len(data), 2)
        return self._read(offset, 2)

    def read32(self, offset: int) -> int:
        if type(offset) is int and offset >= 0 and not offset & 3:
            view = self._r32
            if view is not None:
                try:
                    return view[offset >> 2]
                except IndexError:
                    pass
            elif offset <= self._read_end - 4:
                try:
                    data = _pread(self._fd, 4, self._file_offset + offset)
                except OSError as err:
                    raise self._failed(err, "reading", 4, offset) from err
                if len(data) == 4:
                    return _U32.unpack(data)[0]  # type: ignore[no-any-return]
                raise self._short("read", offset, len(data), 4)
        return self._read(offset, 4)

    def read64(self, offset: int) -> int:
        if type(offset) is int and offset >= 0 and not offset & 7:
            view = self._r64
            if view is not None:
                try:
                    return view[offset >> 3]
                except IndexError:
                    pass
            elif offset <= self._read_end - 8:
                try:
                    data = _pread(self._fd, 8, self._file_offset + offset)
                except OSError as err:
                    raise self._failed(err, "reading", 8, offset) from err
                if len(data) == 8:
                    return _U64.unpack(data)[0]  # type: ignore[no-any-return]
                raise self._short("read", offset, len(data), 8)
        return self._read(offset, 8)

    def write8(self, offset: int, value: int) -> None:
        if type(offset) is int and offset >= 0 and type(value) is int:
            view = self._w8
            if view is not None:
                try:
                    view[offset] = value
                    return
                except (IndexError, ValueError):
                    pass
            elif offset < self._write_end and 0 <= value <= 0xFF:
                self._pwrite_fast(_U8.pack(value), offset)
                return
        self._write(offset, 1, value)

    def write16(self, offset: int, value: int) -> None:
        if type(offset) is int and offset >= 0 and not offset & 1 and type(value) is int:
            view = self._w16
            if view is not None:
                try:
                    view[offset >> 1] = value
                    return
                except (IndexError, ValueError):
                    pass
            elif offset <= self._write_end - 2 and 0 <= value <= 0xFFFF:
                self._pwrite_fast(_U16.pack(value), offset)
                return
        self._write(offset, 2, value)

    def write32(self, offset: int, value: int) -> None:
        if type(offset) is int and offset >= 0 and not offset & 3 and type(value) is int:
            view = self._w32
            if view is not None:
                try:
                    view[offset >> 2] = value
                    return
                except (IndexError, ValueError):
                    pass
            elif offset <= self._write_end - 4 and 0 <= value <= 0xFFFFFFFF:
                self._pwrite_fast(_U32.pack(value), offset)
                return
        self._write(offset, 4, value)

    def write64(self, offset: int, value: int) -> None:
        if type(offset) is int and offset >= 0 and not offset & 7 and type(value) is int:
            view = self._w64
            if view is not None:
                try:
                    view[offset >> 3] = value
                    return
                except (IndexError, ValueError):
                    pass
            elif offset <= self._write_end - 8 and 0 <= value <= 0xFFFFFFFFFFFFFFFF:
                self._pwrite_fast(_U64.pack(value), offset)
                return
        self._write(offset, 8, value)

    def _pwrite_fast(self, data: bytes, offset: int) -> None:
        """``pwrite`` of a checked access to a never-mapped region (config space)."""
        try:
            done = _pwrite(self._fd, data, self._file_offset + offset)
        except OSError as err:
            raise self._failed(err, "writing", len(data), offset) from err
        if done != len(data):
            raise self._short("write", offset, done, len(data))

    # -- runs of 32-bit registers ----------------------------------------------------

    def read_block32(self, offset: int, count: int) -> list[int]:
        """``count`` 32-bit registers from ``offset`` up, as a list of ints.

        One 4-byte load (or ``pread``, or vfio-user message) per register, in order:
        never a copy that could merge or split accesses, which registers with side
        effects would see. The whole run is checked (bounds, alignment, readable)
        before the first access.
        """
        self._check_block(offset, count, False)
        self._prepare()
        first = offset >> 2
        view = self._r32
        if view is not None and first + count <= len(view):
            # tolist() loads each element on its own, at its width (CPython's
            # memoryview unpacks item by item): one 32-bit load per register.
            return view[first : first + count].tolist()
        if self._read_end >= 0:
            fd, at, unpack = self._fd, self._file_offset + offset, _U32.unpack
            words = []
            for i in range(count):
                try:
                    data = _pread(fd, 4, at + 4 * i)
                except OSError as err:
                    raise self._failed(err, "reading", 4, offset + 4 * i) from err
                if len(data) != 4:
                    raise self._short("read", offset + 4 * i, len(data), 4)
                words.append(unpack(data)[0])
            return words
        return [self._read(at, 4) for at in range(offset, offset + 4 * count, 4)]

    def write_block32(self, offset: int, values: Iterable[int]) -> None:
        """Write ``values`` to consecutive 32-bit registers from ``offset`` up.

        One 4-byte store (or ``pwrite``, or vfio-user message) per register, in order,
        never a copy that could merge accesses. Every value and the whole run are
        checked before the first store: a bad one stores nothing.
        """
        items = _listed(values)
        self._check_block(offset, len(items), True)
        words = _words(items)
        self._prepare()
        first = offset >> 2
        view = self._w32
        if view is not None and first + len(words) <= len(view):
            for i, word in enumerate(words, first):
                view[i] = word  # a 4-byte store each (a slice assignment would memcpy)
            return
        if self._write_end >= 0:
            pack = _U32.pack
            for i, word in enumerate(words):
                self._pwrite_fast(pack(word), offset + 4 * i)
            return
        for i, word in enumerate(words):
            self._write(offset + 4 * i, 4, word)

    def _check_block(self, offset: int, count: int, write: bool) -> None:
        if not isinstance(count, int) or isinstance(count, bool):
            raise TypeError(f"count must be an int, not {type(count).__name__}")
        if count < 0:
            raise ValueError(f"count must be 0 or more registers, not {count}")
        self._check(offset, 4 * count, write, align=4)

    def _prepare(self) -> None:
        """Before a block's first access: map the region (or learn its pread target),
        as a first read32 would."""
        if self._base or self._attached:
            return  # mapped, or the way to the region is known
        transport = self._device._require_transport()  # refused once the device is closed
        if self.info.mmap_allowed:
            with contextlib.suppress(VfioError):  # else by pread or messages, as read32
                self.map()
        self._attach(transport)

    # -- bytes -----------------------------------------------------------------------

    def read(self, offset: int, length: int) -> bytes:
        """``length`` bytes through ``pread`` on the device fd or a vfio-user message
        (never the mmap)."""
        self._check(offset, length, False)
        transport = self._device._require_transport()
        if not self._attached:
            self._attach(transport)
        try:
            data = transport.region_read(self.info, offset, length)
        except VfioError:
            raise
        except OSError as err:
            raise self._failed(err, "reading", length, offset) from err
        if len(data) != length:
            raise self._short("read", offset, len(data), length)
        return data

    def write(self, offset: int, data: bytes) -> None:
        """Write ``data`` through ``pwrite`` on the device fd or a vfio-user message."""
        self._check(offset, len(data), True)
        transport = self._device._require_transport()
        if not self._attached:
            self._attach(transport)
        try:
            done = transport.region_write(self.info, offset, data)
        except VfioError:
            raise
        except OSError as err:
            raise self._failed(err, "writing", len(data), offset) from err
        if done != len(data):
            raise self._short("write", offset, done, len(data))


def _listed(values: Iterable[int]) -> list[int] | array[int]:
    """The values of a block write, one per register (not the bytes of a buffer)."""
    if isinstance(values, array) and values.typecode == "I":
        return values
    if isinstance(values, (str, bytes, bytearray, memoryview)):
        raise TypeError(f"values must be ints, one per register, not {type(values).__name__}")
    return list(values)


def _words(items: list[int] | array[int]) -> array[int]:
    """``items`` as 32-bit words, or the ValueError naming the first that is not one."""
    if isinstance(items, array):
        return items
    for value in items:
        if not isinstance(value, int) or not 0 <= value <= 0xFFFFFFFF:
            raise ValueError(f"value {value!r} does not fit in 4 bytes")
    return array("I", items)
