"""The client's memory as the server sees it: the DMA_MAP'ed ranges.

A range mapped with a file descriptor is mmap'ed here, and device DMA reads and
writes it directly; a range mapped without one is reached with
``VFIO_USER_DMA_READ``/``WRITE`` messages to the client, in pieces of at most the
client's ``max_data_xfer_size``.  A DMA that crosses from one range into the next
adjacent one is split at the border.

The fd is mapped only when the client cannot take the memory away under the
mapping (`pyvfio._mem.unsafe_to_map`: a memfd sealed against shrinking, large
enough), and for at most `MAX_MAPPED` ranges and `MAX_MAPPED_BYTES`; any other
range is served by messages, as if no fd had come.  The mapping keeps no fd open.
"""

from __future__ import annotations

import bisect
import errno
import logging
import mmap
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from pyvfio import _mem
from pyvfio.errors import VfioUserError
from pyvfio.server.device import DmaAccess
from pyvfio.vfio_user.protocol import (
    Command,
    DmaMapFlag,
    vfio_user_dma_map,
    vfio_user_dma_region_access,
)

__all__ = ["MAX_MAPPED", "MAX_MAPPED_BYTES", "DmaRange", "DmaSpace"]

log = logging.getLogger("pyvfio.server")

#: Ranges mmap'ed at once; past that they are served by messages.  Each mapping is a
#: VMA of this process, and a client mapping tens of thousands would use up
#: vm.max_map_count (65530), after which Python's own allocations fail.
MAX_MAPPED: Final = 1024
#: Bytes mmap'ed at once, likewise: a sparse memfd costs its owner nothing, and
#: mappings of 128 TiB would leave this process no address space to allocate in.
MAX_MAPPED_BYTES: Final = 16 << 40

#: ``request(command, payload) -> reply payload``: one server-to-client command.
Requester = Callable[[int, bytes], bytes]


@dataclass(eq=False)
class DmaRange:
    """One DMA_MAP: ``addr``..``addr + size``, readable/writable as the flags say."""

    addr: int
    size: int
    flags: int
    offset: int = 0
    #: The client's memory mapped here (None: served by messages), and why not.
    mapping: memoryview | None = field(default=None, repr=False)
    address: int = 0
    unmapped_because: str = ""

    @property
    def end(self) -> int:
        return self.addr + self.size

    @property
    def readable(self) -> bool:
        return bool(self.flags & DmaMapFlag.VFIO_USER_F_DMA_REGION_READ)

    @property
    def writable(self) -> bool:
        return bool(self.flags & DmaMapFlag.VFIO_USER_F_DMA_REGION_WRITE)

    def release(self) -> None:
        mapping, self.mapping = self.mapping, None
        address, self.address = self.address, 0
        if mapping is not None:
            mapping.release()
        if address:
            _mem.unmap_memory(address, self.size)


class DmaSpace(DmaAccess):
    """The DMA ranges of one client connection."""

    def __init__(self, request: Requester, *, max_maps: int, max_xfer: int) -> None:
        self._request = request
        self.max_maps = max_maps
        self.max_xfer = max_xfer
        self._ranges: list[DmaRange] = []  # sorted by addr, never overlapping

    @property
    def ranges(self) -> tuple[DmaRange, ...]:
        return tuple(self._ranges)

    def map(self, request: vfio_user_dma_map, fd: int) -> DmaRange:
        """Add a range; ``fd`` (or -1) is the caller's, to close.

        VfioUserError: EINVAL (size 0, wrapping, unknown flags), EEXIST (overlap, as
        the spec asks), ENOSPC (too many maps), or the errno of a failing mmap of a
        sealed memfd.
        """
        addr, size = request.addr, request.size
        if size == 0 or addr + size > 1 << 64:
            raise VfioUserError(f"DMA_MAP of {size:#x} bytes at {addr:#x} is empty or wraps")
        # int(): the complement of an IntFlag stays inside its members, hiding unknown bits.
        known = int(
            DmaMapFlag.VFIO_USER_F_DMA_REGION_READ | DmaMapFlag.VFIO_USER_F_DMA_REGION_WRITE
        )
        if request.flags & ~known:
            raise VfioUserError(f"DMA_MAP flags {request.flags:#x} has unknown bits")
        if len(self._ranges) >= self.max_maps:
            raise VfioUserError(
                f"DMA_MAP over the limit of {self.max_maps} mappings", errno=errno.ENOSPC
            )
        position = bisect.bisect_left([r.addr for r in self._ranges], addr)
        neighbours = self._ranges[max(0, position - 1) : position + 1]
        for other in neighbours:
            if other.addr < addr + size and addr < other.end:
                raise VfioUserError(
                    f"DMA_MAP {addr:#x}+{size:#x} overlaps {other.addr:#x}+{other.size:#x}",
                    errno=errno.EEXIST,
                )
        entry = DmaRange(addr, size, request.flags, request.offset)
        if fd >= 0:
            entry.unmapped_because = self._unsafe(fd, request.offset, size)
            if entry.unmapped_because:
                log.info(
                    "DMA_MAP %#x+%#x: the fd is not mapped, %s; served by DMA_READ/WRITE",
                    addr, size, entry.unmapped_because,
                )  # fmt: skip
            else:
                self._mmap(entry, fd)
        self._ranges.insert(position, entry)
        return entry

    def _unsafe(self, fd: int, offset: int, size: int) -> str:
        mapped = [r for r in self._ranges if r.mapping is not None]
        if len(mapped) >= MAX_MAPPED:
            return f"{MAX_MAPPED} ranges are mapped already"
        if sum(r.size for r in mapped) + size > MAX_MAPPED_BYTES:
            return f"it would take the mapped memory past {MAX_MAPPED_BYTES >> 40} TiB"
        if offset % mmap.PAGESIZE:
            return f"offset {offset:#x} in the fd is not page-aligned"
        return _mem.unsafe_to_map(fd, offset, size) or ""

    @staticmethod
    def _mmap(entry: DmaRange, fd: int) -> None:
        # Always readable: the device reads what it writes back.
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if entry.writable else 0)
        try:
            entry.address = _mem.map_memory(entry.size, prot, mmap.MAP_SHARED, fd, entry.offset)
        except OSError as err:
            raise VfioUserError(
                f"DMA_MAP {entry.addr:#x}+{entry.size:#x}: cannot mmap the fd at offset "
                f"{entry.offset:#x}: {err.strerror}",
                errno=err.errno or errno.EINVAL,
            ) from err
        entry.mapping = _mem.view(entry.address, entry.size)

    def unmap(self, addr: int, size: int) -> None:
        """Remove the range mapped exactly as ``addr``/``size`` (ENOENT otherwise)."""
        for i, entry in enumerate(self._ranges):
            if entry.addr == addr and entry.size == size:
                del self._ranges[i]
                entry.release()
                return
        raise VfioUserError(f"DMA_UNMAP {addr:#x}+{size:#x} matches no mapping", errno=errno.ENOENT)

    def unmap_all(self) -> None:
        ranges, self._ranges = self._ranges, []
        for entry in ranges:
            entry.release()

    # -- device DMA -----------------------------------------------------------------------

    def _walk(self, addr: int, count: int, write: bool) -> list[tuple[DmaRange, int, int]]:
        """(range, offset in range, length) pieces covering the access, or EFAULT."""
        pieces: list[tuple[DmaRange, int, int]] = []
        cursor, end = addr, addr + count
        while cursor < end:
            position = bisect.bisect_right([r.addr for r in self._ranges], cursor) - 1
            entry = self._ranges[position] if position >= 0 else None
            if entry is None or cursor >= entry.end:
                raise VfioUserError(
                    f"DMA {'write' if write else 'read'} at {cursor:#x} hits memory the "
                    "client did not map",
                    errno=errno.EFAULT,
                )
            if not (entry.writable if write else entry.readable):
                raise VfioUserError(
                    f"DMA {'write' if write else 'read'} at {cursor:#x}: the client mapped "
                    f"{entry.addr:#x}+{entry.size:#x} {'read' if write else 'write'}-only",
                    errno=errno.EPERM,
                )
            length = min(end, entry.end) - cursor
            pieces.append((entry, cursor - entry.addr, length))
            cursor += length
        return pieces

    def read(self, addr: int, count: int) -> bytes:
        if count < 0:
            raise ValueError(f"DMA read of {count} bytes")
        out: list[bytes] = []  # joined once: each piece is copied out of its mapping once
        for entry, offset, length in self._walk(addr, count, write=False):
            if entry.mapping is not None:
                out.append(bytes(entry.mapping[offset : offset + length]))
                continue
            done = 0
            while done < length:
                piece = min(self.max_xfer, length - done)
                where = entry.addr + offset + done
                request = vfio_user_dma_region_access(addr=where, count=piece)
                reply = self._request(Command.VFIO_USER_DMA_READ, request.pack())
                data = reply[16 : 16 + piece]
                if len(data) != piece:
                    raise VfioUserError(
                        f"DMA_READ reply for {piece} bytes at {where:#x} held {len(data)}",
                        errno=errno.EIO,
                    )
                out.append(data)
                done += piece
        return out[0] if len(out) == 1 else b"".join(out)

    def write(self, addr: int, data: bytes) -> None:
        view = memoryview(data).cast("B")  # pieces are views, not copies
        cursor = 0
        for entry, offset, length in self._walk(addr, len(view), write=True):
            chunk = view[cursor : cursor + length]
            cursor += length
            if entry.mapping is not None:
                entry.mapping[offset : offset + length] = chunk
                continue
            done = 0
            while done < length:
                piece = min(self.max_xfer, length - done)
                where = entry.addr + offset + done
                request = vfio_user_dma_region_access(addr=where, count=piece)
                self._request(
                    Command.VFIO_USER_DMA_WRITE, request.pack() + chunk[done : done + piece]
                )
                done += piece
