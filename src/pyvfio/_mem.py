"""mmap/munmap through libc, where Python's mmap module falls short.

VFIO needs the address of a mapping (for MAP_DMA and for single-width MMIO loads),
MAP_FIXED to lay a sparse BAR's areas into one reserved range, and MAP_HUGETLB for
DMA buffers; ``mmap.mmap`` offers none of the three.
"""

from __future__ import annotations

import ctypes
import mmap
import os

_libc = ctypes.CDLL(None, use_errno=True)
_mmap = _libc.mmap
_mmap.argtypes = (
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
)
_mmap.restype = ctypes.c_void_p
_munmap = _libc.munmap
_munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
_munmap.restype = ctypes.c_int

MAP_FAILED = ctypes.c_void_p(-1).value
PAGE_SIZE = mmap.PAGESIZE
HUGE_PAGE_SIZE = 2 << 20
MAP_FIXED = 0x10
MAP_HUGETLB = 0x40000
MAP_HUGE_2MB = 21 << 26  # MAP_HUGE_SHIFT = 26, log2(2 MiB) = 21
MAP_POPULATE = 0x8000
PROT_NONE, PROT_RW = 0, mmap.PROT_READ | mmap.PROT_WRITE


def map_memory(
    length: int, prot: int, flags: int, fd: int = -1, offset: int = 0, address: int | None = None
) -> int:
    """``mmap(2)``; the address, or OSError with the errno."""
    ret = _mmap(address, length, prot, flags, fd, offset)
    if ret is None or ret == MAP_FAILED:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(ret)


def unmap_memory(address: int, length: int) -> None:
    if _munmap(address, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def anonymous(length: int, *, hugepages: bool = False) -> int:
    """Zeroed private memory, 2 MiB pages when ``hugepages`` (OSError if none are free)."""
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
    if hugepages:
        flags |= MAP_HUGETLB | MAP_HUGE_2MB
    return map_memory(length, PROT_RW, flags)


def shared(length: int, *, hugepages: bool = False, name: str = "pyvfio-dma") -> tuple[int, int]:
    """Zeroed memory backed by a memfd: ``(address, fd)``; the caller closes the fd.

    A vfio-user server maps the same pages through the fd (``VFIO_USER_DMA_MAP``
    passes it), which anonymous memory cannot offer. OSError if none is free.
    """
    flags = os.MFD_CLOEXEC | (os.MFD_HUGETLB | os.MFD_HUGE_2MB if hugepages else 0)
    fd = os.memfd_create(name, flags)
    try:
        os.ftruncate(fd, length)
        address = map_memory(length, PROT_RW, mmap.MAP_SHARED, fd)
    except BaseException:
        os.close(fd)
        raise
    return address, fd


def view(address: int, length: int) -> memoryview:
    """A writable byte view of ``length`` bytes at ``address`` (valid until unmapped)."""
    return memoryview((ctypes.c_char * length).from_address(address)).cast("B")


def round_up(value: int, to: int) -> int:
    return (value + to - 1) // to * to
