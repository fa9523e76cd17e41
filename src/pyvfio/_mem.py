"""mmap/munmap through libc, where Python's mmap module falls short; memfds shared
with another process, and the check before mapping one that process handed over.

VFIO needs the address of a mapping (for MAP_DMA and for single-width MMIO loads),
MAP_FIXED to lay a sparse BAR's areas into one reserved range, and MAP_HUGETLB for
DMA buffers; ``mmap.mmap`` offers none of the three (and keeps a dup of the fd for
as long as the mapping lives).

A mapping of a file another process controls is a hazard: when that process
truncates the file, the next access to a page past the new end kills us with
SIGBUS. So memory pyvfio shares is a memfd sealed against shrinking
(`sealed_memfd`), and memory a peer shares is mapped only when `unsafe_to_map`
finds it sealed the same way and large enough (vfio-user, both directions).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
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
_fstatfs = _libc.fstatfs
_fstatfs.argtypes = (ctypes.c_int, ctypes.c_void_p)
_fstatfs.restype = ctypes.c_int
_madvise = _libc.madvise
_madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
_madvise.restype = ctypes.c_int
# glibc has no mbind() (libnuma has): the system call itself, by its number.
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
#: __NR_mbind by machine (arch/x86/entry/syscalls/syscall_64.tbl; asm-generic/unistd.h).
_NR_MBIND = {"x86_64": 237, "aarch64": 235, "riscv64": 235}.get(os.uname().machine)

MAP_FAILED = ctypes.c_void_p(-1).value
PAGE_SIZE = mmap.PAGESIZE
HUGE_PAGE_SIZE = 2 << 20
MAP_FIXED = 0x10
MAP_HUGETLB = 0x40000
MAP_HUGE_2MB = 21 << 26  # MAP_HUGE_SHIFT = 26, log2(2 MiB) = 21
MAP_POPULATE = 0x8000
PROT_NONE, PROT_RW = 0, mmap.PROT_READ | mmap.PROT_WRITE
#: mbind(2)'s policy and flags (include/uapi/linux/mempolicy.h).
MPOL_BIND = 2
MPOL_MF_STRICT, MPOL_MF_MOVE = 1 << 0, 1 << 1
#: Fault in every page now, writable (Linux 5.14+): a page the policy cannot place is
#: ENOMEM (or EFAULT for hugetlb) here, not SIGBUS on first touch.
MADV_POPULATE_WRITE = 23
#: ``statfs.f_type`` of hugetlbfs (linux/magic.h), where MFD_HUGETLB memfds live.
HUGETLBFS_MAGIC = 0x958458F6
#: What a memfd pyvfio shares is sealed with: its size can never change (a peer
#: cannot truncate it under our mapping, nor grow it), and no seal can be added
#: (a peer cannot make it read-only under our writable mapping).
SHARED_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL


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


def bind_to_node(address: int, length: int, node: int) -> None:
    """Place the pages of ``length`` bytes at ``address`` on NUMA node ``node`` only
    (``mbind(MPOL_BIND)``), then fault them all in there; OSError with the errno:
    EINVAL for a node without memory, ENOMEM when it has too little free, ENOSYS for a
    kernel without CONFIG_NUMA."""
    if _NR_MBIND is None:
        raise OSError(errno.ENOSYS, f"mbind's number on {os.uname().machine} is not known")
    bits = 8 * ctypes.sizeof(ctypes.c_ulong)
    mask = (ctypes.c_ulong * (node // bits + 1))()
    mask[node // bits] = 1 << (node % bits)
    flags = MPOL_MF_STRICT | MPOL_MF_MOVE
    maxnode = ctypes.c_ulong(len(mask) * bits + 1)  # the kernel reads maxnode - 1 bits
    args = (ctypes.c_void_p(address), ctypes.c_ulong(length), MPOL_BIND, mask, maxnode, flags)
    if _syscall(_NR_MBIND, *args) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    if _madvise(address, length, MADV_POPULATE_WRITE) != 0:
        err = ctypes.get_errno()
        if err != errno.EINVAL:  # EINVAL: before 5.14; the DMA map's pinning faults them in
            raise OSError(err, os.strerror(err))


def sealed_memfd(name: str, length: int, *, hugepages: bool = False) -> int:
    """A zeroed memfd of ``length`` bytes, sealed with `SHARED_SEALS`; the caller's fd."""
    flags = os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING
    if hugepages:
        flags |= os.MFD_HUGETLB | os.MFD_HUGE_2MB
    fd = os.memfd_create(name, flags)
    try:
        os.ftruncate(fd, length)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, SHARED_SEALS)
    except BaseException:
        os.close(fd)
        raise
    return fd


def unsafe_to_map(fd: int, offset: int, length: int) -> str | None:
    """Why mapping ``length`` bytes at ``offset`` of a peer's ``fd`` could kill this
    process with SIGBUS later, or None when it cannot.

    Safe means a memfd (shmem) sealed with F_SEAL_SHRINK that holds the whole range:
    its size can only grow from what we see. Anything else (no seal, a regular file,
    a pipe, a device) the peer could truncate, or was never memory. A hugetlbfs memfd
    is refused too: its owner can release pages (``fallocate(PUNCH_HOLE)`` drops their
    reservation) and then use up the free huge pages, and our next access faults with
    none left, which is SIGBUS again.
    """
    try:
        # The seals first: once F_SEAL_SHRINK is seen, the size read next cannot drop.
        seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
    except OSError:
        return "it is not a memfd (only a memfd can be sealed against shrinking)"
    if not seals & fcntl.F_SEAL_SHRINK:
        return (
            "it is not sealed against shrinking (create it with MFD_ALLOW_SEALING and add "
            "F_SEAL_SHRINK): its owner could truncate it under the mapping"
        )
    statfs = (ctypes.c_long * 16)()  # struct statfs is 120 bytes; f_type comes first
    if _fstatfs(fd, statfs) == 0 and statfs[0] & 0xFFFFFFFF == HUGETLBFS_MAGIC:
        return "it is hugetlbfs memory, whose pages its owner can release under the mapping"
    size = os.fstat(fd).st_size
    if offset < 0 or length < 0 or offset + length > size:
        return f"it holds {size:#x} bytes, not the {length:#x} at {offset:#x} to be mapped"
    return None


def shared(length: int, *, hugepages: bool = False, name: str = "pyvfio-dma") -> tuple[int, int]:
    """Zeroed memory backed by a sealed memfd: ``(address, fd)``; the caller closes the fd.

    A vfio-user server maps the same pages through the fd (``VFIO_USER_DMA_MAP``
    passes it), which anonymous memory cannot offer; the seals let it map them
    without the risk `unsafe_to_map` describes. OSError if none is free.
    """
    fd = sealed_memfd(name, length, hugepages=hugepages)
    try:
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
