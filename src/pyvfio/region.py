"""A device region (a BAR, the config space, the ROM): typed access, mmap where allowed.

Accesses go through the mmap where the region (or the sparse area holding the
offset) may be mapped, as a single load or store of the access's width, which MMIO
registers need; everything else goes through the device's transport: ``pread``/
``pwrite`` on the device fd at the region's offset, which vfio-pci serves (the MSI-X
table of a BAR, for instance), or ``VFIO_USER_REGION_READ``/``WRITE`` messages over a
vfio-user socket. Offsets and widths are checked before any system call.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import mmap
from typing import TYPE_CHECKING, Protocol

from pyvfio import _ioctl, _mem
from pyvfio.errors import UnsupportedError, VfioError
from pyvfio.info import RegionInfo, SparseArea

if TYPE_CHECKING:
    from pyvfio._transport import DeviceTransport

_CTYPES = {1: ctypes.c_uint8, 2: ctypes.c_uint16, 4: ctypes.c_uint32, 8: ctypes.c_uint64}
_U32, _U64 = ctypes.c_uint32, ctypes.c_uint64


class RegionOwner(Protocol):
    """What a Region needs of its device (a `~pyvfio.Device` is one): the address its
    errors name, and the transport, which raises `ClosedError` (or
    `DeviceRemovedError`) once the device is closed. The underscored member is the
    device's side for its regions, not for its callers."""

    @property
    def bdf(self) -> str: ...

    def _require_transport(self) -> DeviceTransport: ...


class Region:
    """One region of a device: ``size``, ``flags``, typed reads and writes, ``map()``."""

    __slots__ = (
        "_areas",
        "_base",
        "_device",
        "_readable",
        "_size",
        "_view",
        "_whole",
        "_writable",
        "info",
        "name",
    )

    def __init__(self, device: RegionOwner, info: RegionInfo, name: str) -> None:
        self._device = device
        self.info = info
        self.name = name
        self._base = 0  # address of the mapping, 0 while unmapped
        self._areas: tuple[SparseArea, ...] = ()
        self._view: memoryview | None = None
        # Plain attributes for the register fast path: IntFlag tests and property
        # lookups were a third of an MMIO read (bench/README.md).
        self._size = info.size
        self._readable = info.readable
        self._writable = info.writable
        self._whole = 0  # the mapping's base when one mapping covers the whole region

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
        return self._view

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
        """Drop the mapping (idempotent); later accesses fall back to pread/pwrite."""
        if self._base:
            base, self._base, self._areas, self._whole = self._base, 0, (), 0
            if self._view is not None:
                self._view.release()
                self._view = None
            _mem.unmap_memory(base, _mem.round_up(self.size, _mem.PAGE_SIZE))

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

    # -- access ----------------------------------------------------------------------

    def _check(self, offset: int, width: int, write: bool) -> None:
        if not isinstance(offset, int) or isinstance(offset, bool):
            raise TypeError(f"offset must be an int, not {type(offset).__name__}")
        if not isinstance(width, int):
            raise TypeError(f"length must be an int, not {type(width).__name__}")
        if offset < 0 or width < 0 or offset + width > self._size:
            raise ValueError(
                f"{self.name} of {self._device.bdf}: access of {width} bytes at "
                f"{offset:#x} is outside its {self.size:#x} bytes"
            )
        if width in _CTYPES and offset % width:
            raise ValueError(
                f"{self.name}: {width}-byte access at {offset:#x} is not {width}-byte aligned"
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

    # The 32- and 64-bit accessors are the drivers' hot path: when one mapping covers
    # the region, a well-formed access goes straight to a single load or store, and
    # anything else takes the checked path (which raises the helpful errors).

    def read8(self, offset: int) -> int:
        return self._read(offset, 1)

    def read16(self, offset: int) -> int:
        return self._read(offset, 2)

    def read32(self, offset: int) -> int:
        base = self._whole
        if (
            base
            and type(offset) is int
            and 0 <= offset <= self._size - 4
            and not offset & 3
            and self._readable
        ):
            return _U32.from_address(base + offset).value
        return self._read(offset, 4)

    def read64(self, offset: int) -> int:
        base = self._whole
        if (
            base
            and type(offset) is int
            and 0 <= offset <= self._size - 8
            and not offset & 7
            and self._readable
        ):
            return _U64.from_address(base + offset).value
        return self._read(offset, 8)

    def write8(self, offset: int, value: int) -> None:
        self._write(offset, 1, value)

    def write16(self, offset: int, value: int) -> None:
        self._write(offset, 2, value)

    def write32(self, offset: int, value: int) -> None:
        base = self._whole
        if (
            base
            and type(offset) is int
            and 0 <= offset <= self._size - 4
            and not offset & 3
            and self._writable
            and type(value) is int
            and 0 <= value <= 0xFFFFFFFF
        ):
            _U32.from_address(base + offset).value = value
        else:
            self._write(offset, 4, value)

    def write64(self, offset: int, value: int) -> None:
        base = self._whole
        if (
            base
            and type(offset) is int
            and 0 <= offset <= self._size - 8
            and not offset & 7
            and self._writable
            and type(value) is int
            and 0 <= value <= 0xFFFFFFFFFFFFFFFF
        ):
            _U64.from_address(base + offset).value = value
        else:
            self._write(offset, 8, value)

    def read(self, offset: int, length: int) -> bytes:
        """``length`` bytes through ``pread`` on the device fd or a vfio-user message
        (never the mmap)."""
        self._check(offset, length, False)
        transport = self._device._require_transport()
        try:
            data = transport.region_read(self.info, offset, length)
        except VfioError:
            raise
        except OSError as err:
            bdf = self._device.bdf
            doing = f"reading {length} bytes at {offset:#x} of {self.name} of {bdf}"
            raise _ioctl.os_error(err, doing, bdf) from err
        if len(data) != length:
            raise VfioError(
                f"short read of {self.name} at {offset:#x}: {len(data)} of {length} bytes",
                errno=errno.EIO,
                device=self._device.bdf,
            )
        return data

    def write(self, offset: int, data: bytes) -> None:
        """Write ``data`` through ``pwrite`` on the device fd or a vfio-user message."""
        self._check(offset, len(data), True)
        transport = self._device._require_transport()
        try:
            done = transport.region_write(self.info, offset, data)
        except VfioError:
            raise
        except OSError as err:
            bdf = self._device.bdf
            doing = f"writing {len(data)} bytes at {offset:#x} of {self.name} of {bdf}"
            raise _ioctl.os_error(err, doing, bdf) from err
        if done != len(data):
            raise VfioError(
                f"short write to {self.name} at {offset:#x}: {done} of {len(data)} bytes",
                errno=errno.EIO,
                device=self._device.bdf,
            )
