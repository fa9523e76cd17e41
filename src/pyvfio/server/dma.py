"""The client's memory as the server sees it: the DMA_MAP'ed ranges.

A range mapped with a file descriptor is mmap'ed here, and device DMA reads and
writes it directly; a range mapped without one is reached with
``VFIO_USER_DMA_READ``/``WRITE`` messages to the client, in pieces of at most the
client's ``max_data_xfer_size``.  A DMA that crosses from one range into the next
adjacent one is split at the border.
"""

from __future__ import annotations

import bisect
import errno
import mmap
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from pyvfio.errors import VfioUserError
from pyvfio.server.device import DmaAccess
from pyvfio.vfio_user.protocol import (
    Command,
    DmaMapFlag,
    vfio_user_dma_map,
    vfio_user_dma_region_access,
)

__all__ = ["DmaRange", "DmaSpace"]

#: ``request(command, payload) -> reply payload``: one server-to-client command.
Requester = Callable[[int, bytes], bytes]


@dataclass(eq=False)
class DmaRange:
    """One DMA_MAP: ``addr``..``addr + size``, readable/writable as the flags say."""

    addr: int
    size: int
    flags: int
    fd: int = -1
    offset: int = 0
    mapping: mmap.mmap | None = field(default=None, repr=False)

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
        try:
            if self.mapping is not None:
                self.mapping.close()
        finally:
            self.mapping = None
            if self.fd >= 0:
                fd, self.fd = self.fd, -1
                os.close(fd)


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
        """Add a range; ``fd`` (or -1) is this space's (and closed) on success.

        VfioUserError: EINVAL (size 0, wrapping, unknown flags), EEXIST (overlap, as
        the spec asks), ENOSPC (too many maps), or the errno of a failing mmap.
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
        entry = DmaRange(addr, size, request.flags, -1, request.offset)
        if fd >= 0:
            # Always readable: Python's mmap cannot map write-only.
            prot = mmap.PROT_READ | (mmap.PROT_WRITE if entry.writable else 0)
            try:
                entry.mapping = mmap.mmap(fd, size, mmap.MAP_SHARED, prot, offset=request.offset)
            except (OSError, ValueError, OverflowError) as err:
                code = err.errno if isinstance(err, OSError) and err.errno else errno.EINVAL
                raise VfioUserError(
                    f"DMA_MAP {addr:#x}+{size:#x}: cannot mmap the fd at offset "
                    f"{request.offset:#x}: {err}",
                    errno=code,
                ) from err
            # Python's mmap holds its own dup of the fd until the mapping closes.
            os.close(fd)
        self._ranges.insert(position, entry)
        return entry

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
                out.append(entry.mapping[offset : offset + length])
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
