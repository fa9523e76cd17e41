"""Memory a device may reach by DMA: buffers pyvfio allocates, and mappings of the caller's."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import weakref
from dataclasses import dataclass
from typing import Protocol

from pyvfio import _mem
from pyvfio.errors import ClosedError, UnsupportedError


@dataclass(frozen=True)
class DmaMapping:
    """``size`` bytes at host address ``vaddr`` visible to devices at ``iova``."""

    iova: int
    size: int
    vaddr: int

    def __str__(self) -> str:
        return f"iova {self.iova:#x} -> va {self.vaddr:#x} ({self.size:#x} bytes)"


class DmaOwner(Protocol):
    """What a DmaBuffer needs of its Iommu (a `~pyvfio.Iommu` is one): mapping its
    memory (the IOVA; no DmaMapping is made, the buffer is the public object), and
    being told when the buffer is freed, to unmap it (unless the Iommu is closed:
    then nothing is mapped any more). The members are the Iommu's side for its
    buffers, not for its callers."""

    def _map_buffer(
        self, address: int, size: int, /, *, max_iova: int | None, align: int, fd: int | None
    ) -> int: ...

    def _unmap_buffer(self, buf: DmaBuffer) -> None: ...


def _release(address: int, size: int, memfd: int) -> None:
    with contextlib.suppress(OSError):
        _mem.unmap_memory(address, size)
    if memfd >= 0:
        with contextlib.suppress(OSError):
            os.close(memfd)


def check_numa_node(node: object) -> None:
    """TypeError/ValueError unless ``node`` is None or a NUMA node number (an int >= 0)."""
    if node is None:
        return
    if not isinstance(node, int) or isinstance(node, bool):
        raise TypeError(f"numa_node must be an int or None, not {type(node).__name__}")
    if not 0 <= node < _MAX_NUMA_NODES:
        raise ValueError(
            f"numa_node {node} is not a NUMA node number: nodes count from 0 "
            f"(/sys/devices/system/node lists this host's); None places the memory anywhere"
        )


#: The kernel's limit (CONFIG_NODES_SHIFT is at most 10).
_MAX_NUMA_NODES = 1 << 10


def _place(address: int, size: int, node: int, hugepages: bool) -> None:
    """The buffer's pages bound to ``node`` and faulted in there, or an error naming it."""
    try:
        _mem.bind_to_node(address, size, node)
    except OSError as err:
        if err.errno == errno.EINVAL:
            raise ValueError(
                f"NUMA node {node} has no memory on this host (or does not exist): choose "
                "one of /sys/devices/system/node/has_memory, or numa_node=None"
            ) from err
        if err.errno == errno.ENOSYS:
            raise UnsupportedError(
                "this kernel has no NUMA support (CONFIG_NUMA): there is one node, "
                "so allocate with numa_node=None",
                errno=err.errno,
            ) from err
        what = "2 MiB hugepages" if hugepages else "memory"
        raise MemoryError(
            f"cannot place {size} bytes of {what} on NUMA node {node}: {err.strerror} "
            f"(free memory per node: /sys/devices/system/node/node{node}/meminfo)"
        ) from err


class DmaBuffer:
    """Zeroed host memory mapped for DMA: ``.iova``, ``.size``, ``.view``, ``.address``.

    ``free()`` (or leaving the ``with`` block) unmaps it from the IOMMU, then frees
    the memory; views taken of ``.view`` must not be used after that. With ``memfd``
    (what a vfio-user Iommu asks for) the memory is a memfd's, which a vfio-user
    server maps through the fd; the kernel backends use anonymous memory.

    With ``numa_node`` every page is placed on that NUMA node (``mbind(MPOL_BIND)``,
    faulted in at once): the node of the device that reads it (`Device.numa_node`), so
    its DMA does not cross the interconnect between sockets.
    """

    __slots__ = (
        "__weakref__",
        "_finalizer",
        "_iommu",
        "_memfd",
        "_view",
        "address",
        "hugepages",
        "iova",
        "numa_node",
        "size",
    )

    def __init__(
        self,
        iommu: DmaOwner,
        size: int,
        *,
        max_iova: int | None = None,
        hugepages: bool = False,
        memfd: bool = False,
        numa_node: int | None = None,
    ) -> None:
        check_numa_node(numa_node)
        page = _mem.HUGE_PAGE_SIZE if hugepages else _mem.PAGE_SIZE
        self.size = _mem.round_up(size, page)
        self.hugepages = hugepages
        self.numa_node = numa_node
        self._iommu = iommu
        self._memfd = -1
        try:
            if memfd:
                self.address, self._memfd = _mem.shared(self.size, hugepages=hugepages)
            else:
                self.address = _mem.anonymous(self.size, hugepages=hugepages)
        except OSError as err:
            what = (
                "2 MiB hugepages (see /proc/meminfo HugePages_Free; "
                "echo N > /proc/sys/vm/nr_hugepages)"
                if hugepages
                else "memory"
            )
            raise MemoryError(
                f"cannot allocate {self.size} bytes of {what}: {err.strerror}"
            ) from err
        self._finalizer = weakref.finalize(self, _release, self.address, self.size, self._memfd)
        try:
            if numa_node is not None:
                _place(self.address, self.size, numa_node, hugepages)
            fd = self._memfd if self._memfd >= 0 else None
            self.iova = iommu._map_buffer(
                self.address, self.size, max_iova=max_iova, align=page, fd=fd
            )
        except BaseException:
            self._finalizer()
            raise
        self._view: memoryview | None = _mem.view(self.address, self.size)

    def __repr__(self) -> str:
        state = "freed" if self._view is None else f"iova {self.iova:#x}"
        return f"<DmaBuffer {self.size:#x} bytes, {state}>"

    @property
    def view(self) -> memoryview:
        """A writable view of the buffer's bytes."""
        if self._view is None:
            raise ClosedError("the DMA buffer was freed")
        return self._view

    @property
    def freed(self) -> bool:
        return self._view is None

    def _check(self, offset: int, length: int) -> None:
        """ValueError unless ``length`` bytes at ``offset`` lie inside the buffer (a slice
        would silently shorten, and ``u32`` would reach memory that is not the buffer's)."""
        if not isinstance(offset, int) or not isinstance(length, int):
            raise TypeError(
                f"offset and length must be ints, not {type(offset).__name__} and "
                f"{type(length).__name__}"
            )
        if offset < 0 or length < 0 or offset + length > self.size:
            raise ValueError(
                f"{length} bytes at {offset:#x} do not fit in the {self.size:#x}-byte buffer"
            )

    def read(self, offset: int = 0, length: int | None = None) -> bytes:
        view = self.view
        if length is None:
            length = self.size - offset if isinstance(offset, int) else 0
        self._check(offset, length)
        return bytes(view[offset : offset + length])

    def write(self, data: bytes, offset: int = 0) -> None:
        view = self.view
        self._check(offset, len(data))
        view[offset : offset + len(data)] = data

    def u32(self, offset: int) -> ctypes.c_uint32:
        """A live 32-bit word of the buffer (for polling what a device writes)."""
        if self._view is None:  # the address is no longer ours
            raise ClosedError("the DMA buffer was freed")
        self._check(offset, 4)
        return ctypes.c_uint32.from_address(self.address + offset)

    def free(self) -> None:
        """Unmap from the IOMMU, then free the memory (idempotent)."""
        if self._view is None:
            return
        view, self._view = self._view, None
        view.release()
        try:
            self._iommu._unmap_buffer(self)
        finally:
            self._finalizer()

    def __enter__(self) -> DmaBuffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.free()
