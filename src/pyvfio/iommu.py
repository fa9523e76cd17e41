"""One IOMMU address space shared by devices: a type1 container or an iommufd IOAS.

``Iommu`` is what QEMU calls a container: the devices opened through it see the same
IOVA space, and every DMA mapping made through it is visible to all of them. Two
kernel interfaces provide it:

* ``type1``: ``/dev/vfio/vfio`` + one ``/dev/vfio/N`` per IOMMU group
  (``VFIO_GROUP_SET_CONTAINER``, ``VFIO_SET_IOMMU(TYPE1v2)``, ``VFIO_IOMMU_MAP_DMA``);
* ``iommufd``: ``/dev/iommu`` + the device cdev ``/dev/vfio/devices/vfioN``
  (``VFIO_DEVICE_BIND_IOMMUFD``, ``IOMMU_IOAS_ALLOC``, ``VFIO_DEVICE_ATTACH_IOMMUFD_PT``,
  ``IOMMU_IOAS_MAP``).

A third needs no kernel VFIO at all: ``vfio-user``, devices served over UNIX sockets
(``vfio-user:PATH``), where a mapping is a ``VFIO_USER_DMA_MAP`` message to each
device's server, with the memory's fd when it has one.

``backend="auto"`` picks vfio-user for a ``vfio-user:`` address, else iommufd where
``/dev/iommu`` and the first device's cdev exist, type1 otherwise. IOVAs come from
pyvfio's allocator, which honours the ranges the kernel reports and a per-allocation
``max_iova`` (the device's DMA mask).

Each interface is a module of `pyvfio.backends` behind its ``Backend`` protocol (the
vfio-user one imported only when first used); :func:`open` is ``pyvfio.open``, a
device in an Iommu of its own.
"""

from __future__ import annotations

import builtins
import contextlib
import ctypes
import errno as E
import functools
import mmap
import os
import resource
import threading
import uuid
import weakref
from array import array
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from pyvfio import _mem, backends
from pyvfio._limits import holds_cap_ipc_lock, memlock_kib
from pyvfio.backends import UNSAFE_NOIOMMU, Backend, IommufdBackend, Type1Backend
from pyvfio.device import Device, parse_vf_token
from pyvfio.dma import DmaBuffer, DmaMapping
from pyvfio.errors import (
    ClosedError,
    MemlockLimitError,
    PermissionDeniedError,
    UnsupportedError,
    VfioError,
)
from pyvfio.info import IommuInfo
from pyvfio.iova import IovaAllocator
from pyvfio.noiommu import check_backend
from pyvfio.pci.address import normalize
from pyvfio.sysfs import LIVE, Sysfs
from pyvfio.vfio_user import SCHEME, is_vfio_user, socket_path
from pyvfio.viability import VIABLE_DRIVERS, blocking_peers, bound_group, not_viable_error

if TYPE_CHECKING:
    from pyvfio._transport import DeviceTransport

    #: What map() accepts besides an address: writable, contiguous memory.
    Buffer = bytearray | memoryview | mmap.mmap | ctypes.Array[Any]

#: A mapping's address, size, and what keeps its buffer exported (None for an address).
_Memory = tuple[int, int, "ctypes.Array[ctypes.c_char] | None"]

#: ``unsafe-noiommu`` is the explicit opt-in for VFIO's no-IOMMU mode (pyvfio.noiommu).
BACKENDS = ("auto", *backends.NAMES)


def _has_cap_ipc_lock() -> bool:
    """CAP_IPC_LOCK (bit 14 of CapEff) exempts a process from RLIMIT_MEMLOCK for pinning.

    Asked only when a mapping would pass RLIMIT_MEMLOCK, and read once per effective
    uid: reading /proc on every map was most of a map's cost (the primitives
    benchmark), and a process that drops root (a child that setresuid()s to the user
    it serves) loses its capabilities with it. A process that
    drops only the capability still meets the kernel's own check, which raises
    MemlockLimitError from the ioctl.
    """
    return _cap_ipc_lock_for(os.geteuid())


@functools.cache
def _cap_ipc_lock_for(euid: int) -> bool:
    try:
        with builtins.open("/proc/self/status") as f:  # this module's open() is pyvfio's
            return holds_cap_ipc_lock(f, euid)
    except OSError:
        return holds_cap_ipc_lock((), euid)


def _not_granted(address: str, err: PermissionDeniedError) -> PermissionDeniedError:
    """The node's error, naming the device and the user to grant it to."""
    import pwd

    try:
        user = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        user = str(os.geteuid())
    node = err.device or "its VFIO node"
    text = err.message.split(": run as root", 1)[0]
    return PermissionDeniedError(
        f"{text}: user {user} may not open {address}; as root, give it to them: "
        f"pyvfio grant {address} --user {user}",
        errno=err.errno or E.EACCES,
        ioctl=err.ioctl,
        device=node,
    )


def _finalize_backend(backend: Backend) -> None:
    with contextlib.suppress(Exception):
        backend.close()


class Iommu:
    """An IOMMU address space: open devices into it, map and allocate DMA memory.

    Threads may share an Iommu: map, unmap, their batched forms and DMA buffers'
    allocation and freeing hold its lock, which also guards the one argument struct
    per backend that the map and unmap ioctls are packed into.
    """

    def __init__(
        self,
        backend: str = "auto",
        *,
        sysfs: Sysfs = LIVE,
        share_memory: bool = True,
        timeout: float | None = None,
    ) -> None:
        """``backend``: ``auto``, ``type1``, ``iommufd`` or ``vfio-user``.

        ``share_memory`` and ``timeout`` concern vfio-user only: whether DMA memory is
        passed to the servers as fds (else served through DMA_READ/WRITE messages),
        and how long a server may take to answer (VfioUserClient's default if None).
        """
        if backend not in BACKENDS:
            raise ValueError(f"unknown IOMMU backend {backend!r}: use one of {', '.join(BACKENDS)}")
        self.requested = backend
        self._sysfs = sysfs
        self._share_memory = share_memory
        self._timeout = timeout
        self._backend: Backend | None = None
        self._finalizer: weakref.finalize[[Backend], Iommu] | None = None
        self._allocator: IovaAllocator | None = None
        self._info: IommuInfo | None = None
        # The lock map and unmap hold: the allocator, these books and the backend's
        # preallocated ioctl arguments are shared by every call.
        self._lock = threading.Lock()
        self._mappings: dict[int, tuple[int, int]] = {}  # iova -> (size, vaddr)
        self._pinned = 0
        self._keep: dict[int, object] = {}  # caller buffers kept alive while mapped
        self._buffers: weakref.WeakSet[DmaBuffer] = weakref.WeakSet()
        self._devices: dict[str, Device] = {}
        self._closed = False
        if backend != "auto":
            self._start(backend)

    def _start(self, name: str) -> Backend:
        backend = backends.start(
            name, self._sysfs, share_memory=self._share_memory, timeout=self._timeout
        )
        self._backend = backend
        self._finalizer = weakref.finalize(self, _finalize_backend, backend)
        return backend

    def __repr__(self) -> str:
        state = (
            "closed"
            if self._closed
            else f"{len(self._devices)} device(s), {len(self._mappings)} mapping(s)"
        )
        return f"<Iommu {self.backend}: {state}>"

    @property
    def backend(self) -> str:
        """``type1``, ``iommufd`` or ``vfio-user`` (``auto`` until the first device)."""
        return self._backend.name if self._backend else self.requested

    @property
    def mode(self) -> str | None:
        """What serves this Iommu, in the kernel VFIO selftests' names:
        ``vfio_type1v2_iommu`` (``/dev/vfio/vfio`` of VFIO itself, vfio_iommu_type1),
        ``iommufd_compat_type1v2`` (the type1 ioctls on iommufd's compatibility container,
        CONFIG_IOMMUFD_VFIO_CONTAINER), ``iommufd`` (``/dev/iommu``); ``vfio-user``, and
        ``vfio_noiommu_iommu`` / ``iommufd_compat_noiommu`` for ``unsafe-noiommu``. None
        while ``backend="auto"`` has not chosen yet."""
        return self._backend.mode if self._backend else None

    @property
    def devices(self) -> tuple[Device, ...]:
        return tuple(self._devices.values())

    @property
    def sysfs(self) -> Sysfs:
        """Where this Iommu reads the host's sysfs (the live one, or a recorded tree)."""
        return self._sysfs

    def fileno(self) -> int:
        return self._require_backend().fileno()

    def _require_backend(self) -> Backend:
        if self._closed:
            raise ClosedError("the Iommu is closed")
        if self._backend is None:
            raise VfioError(
                "no device is open in this Iommu yet: open one first "
                "(iommu.open(BDF)); the IOMMU's ranges are known only then"
            )
        return self._backend

    # -- devices ----------------------------------------------------------------------

    def open(self, address: str, *, vf_token: str | uuid.UUID | None = None) -> Device:
        """Open a device (already bound to vfio-pci) into this address space.

        ``vf_token``: for an SR-IOV VF whose PF is on vfio-pci, the token (a UUID) the
        PF's user set with `Device.set_vf_token`; vfio-pci refuses the VF without it
        (`VfTokenError`). type1 passes it in the device's name; the iommufd cdev path
        takes it from Linux 6.17 (``auto`` picks type1 before that).
        """
        return self._open(address, vf_token=vf_token)

    def _open(
        self,
        address: str,
        *,
        owns_iommu: bool = False,
        vf_token: str | uuid.UUID | None = None,
    ) -> Device:
        if self._closed:
            raise ClosedError("the Iommu is closed")
        token = None if vf_token is None else parse_vf_token(vf_token)
        if token is not None and is_vfio_user(address):
            raise UnsupportedError(
                f"{address}: a VF token is vfio-pci's, for an SR-IOV VF on this host; a "
                "vfio-user device takes none (open it without vf_token)",
                device=address,
            )
        if is_vfio_user(address):
            addr, group = SCHEME + socket_path(address), None
            backend = self._vfio_user_backend(addr)
            self._check_not_open(addr)
            transport = backend.attach(addr, None)
        else:
            addr, group, backend = self._pci_backend(address, token is not None)
            transport = self._attach_pci(backend, addr, group, token)
        try:
            device = Device(
                self,
                addr,
                transport,
                group,
                owns_iommu=owns_iommu,
                on_close=self._forget,
                group_fds=backend.group_fds,
                numa_node=None if group is None else self._sysfs.numa_node(addr),
            )
        except BaseException:  # the Device closed its transport
            backend.detach(addr)
            raise
        self._devices[addr] = device
        return device

    def _check_not_open(self, addr: str) -> None:
        if addr in self._devices:
            raise VfioError(f"{addr} is already open in this Iommu", errno=E.EBUSY, device=addr)

    def _vfio_user_backend(self, addr: str) -> Backend:
        if self._backend is None:
            return self._start("vfio-user")
        if self._backend.name != "vfio-user":
            raise UnsupportedError(
                f"{addr} is a vfio-user device but this Iommu is {self.backend}: open it "
                "with pyvfio.open or in Iommu('vfio-user')",
                device=addr,
            )
        return self._backend

    def _pci_backend(self, address: str, vf_token: bool = False) -> tuple[str, int, Backend]:
        """The device's address, its group (checked: bound to vfio, the backend allowed
        for it) and the backend, started for it under ``auto``."""
        if self._backend is not None and self._backend.name == "vfio-user":
            raise UnsupportedError(
                f"this Iommu serves vfio-user devices ({SCHEME}PATH), not {address}: open "
                "it in an Iommu of its own (pyvfio.open)",
                device=address,
            )
        addr = normalize(address)
        self._check_not_open(addr)
        group = bound_group(addr, self._sysfs)
        check_backend(addr, group, self.requested, self._sysfs)
        if self._backend is None:
            chosen = backends.choose(addr, self._sysfs, vf_token=vf_token)
            return addr, group, self._start(chosen)
        return addr, group, self._backend

    @staticmethod
    def _attach_pci(
        backend: Backend, addr: str, group: int, vf_token: str | None = None
    ) -> DeviceTransport:
        try:
            if vf_token is None:
                return backend.attach(addr, group)
            return backend.attach(addr, group, vf_token=vf_token)
        except PermissionDeniedError as err:
            raise _not_granted(addr, err) from err
        except VfioError as err:
            # EBUSY: the group node opens once (None: open() of it), a device fd of the
            # group path once per group user, an iommufd cdev binds once.
            if err.errno == E.EBUSY and err.ioctl in (
                "VFIO_GROUP_GET_DEVICE_FD",
                "VFIO_DEVICE_BIND_IOMMUFD",
                None,
            ):
                raise VfioError(
                    f"{addr} is already open (another process or Iommu holds its group or device)",
                    errno=E.EBUSY,
                    ioctl=err.ioctl,
                    device=addr,
                ) from err
            raise

    def _forget(self, device: Device) -> None:
        if self._devices.pop(device.bdf, None) is not None and self._backend is not None:
            self._backend.detach(device.bdf)

    # -- address space ----------------------------------------------------------------

    @property
    def info(self) -> IommuInfo:
        """Page sizes, usable IOVA ranges and (type1) mappings still available."""
        return self._require_backend().info()

    @property
    def iova_ranges(self) -> tuple[tuple[int, int], ...]:
        return tuple((r.start, r.last) for r in self.info.iova_ranges)

    @property
    def mappings(self) -> tuple[DmaMapping, ...]:
        """The live mappings, in the order they were made (buffers' and pages' too)."""
        return tuple(DmaMapping(iova, size, va) for iova, (size, va) in self._mappings.items())

    def _alloc(self) -> IovaAllocator:
        if self._allocator is None:
            info = self._require_backend().info()
            self._info = info
            self._allocator = IovaAllocator(
                [(r.start, r.last) for r in info.iova_ranges],
                page_size=max(info.min_page_size, _mem.PAGE_SIZE),
            )
        return self._allocator

    def _check_memlock(self, size: int) -> None:
        """MemlockLimitError, before the kernel is asked, for a mapping that would pin
        more than RLIMIT_MEMLOCK. The limit is read on every map (a process may change
        it; one getrlimit call); whether CAP_IPC_LOCK exempts the process is asked only
        when the limit would be passed."""
        soft = resource.getrlimit(resource.RLIMIT_MEMLOCK)[0]
        if (
            soft != resource.RLIM_INFINITY
            and self._pinned + size > soft
            and not _has_cap_ipc_lock()
        ):
            raise MemlockLimitError(
                f"mapping {size} bytes for DMA would pin {self._pinned + size} bytes, over "
                f"RLIMIT_MEMLOCK of {soft} bytes: raise it (ulimit -l "
                f"{memlock_kib(self._pinned + size)}, or memlock in "
                "/etc/security/limits.conf; pyvfio grant says what a user needs)",
                limit=soft,
                requested=size,
            )

    def _memory(self, buffer_or_address: Buffer | int, size: int | None, call: str) -> _Memory:
        """The address and size of what ``call`` (``map()``) was given, and what keeps a
        buffer alive and unresizable while it is mapped (its exported buffer)."""
        if isinstance(buffer_or_address, int):
            if isinstance(buffer_or_address, bool):
                raise TypeError(f"{call} needs a writable buffer or an address, not a bool")
            if size is None:
                raise TypeError(f"{call[:-1]}address, size): the size is required with an address")
            return int(buffer_or_address), size, None
        cls = type(buffer_or_address)
        try:
            # bytearray and mmap count bytes in len() and are contiguous: no view needed
            # to learn the size. The array below holds the one export the mapping needs.
            n = (
                len(buffer_or_address)
                if cls is bytearray or cls is mmap.mmap
                else len(memoryview(buffer_or_address).cast("B"))
            )
            keep = (ctypes.c_char * n).from_buffer(buffer_or_address)
        except (TypeError, ValueError) as err:
            raise TypeError(
                f"{call} needs a writable, contiguous buffer or an address: {err}"
            ) from err
        return ctypes.addressof(keep), n if size is None else size, keep

    def map(
        self,
        buffer_or_address: Buffer | int,
        size: int | None = None,
        iova: int | None = None,
        *,
        max_iova: int | None = None,
        align: int | None = None,
        fd: int | None = None,
        fd_offset: int = 0,
    ) -> DmaMapping:
        """Make memory the caller owns visible to the devices; the mapping with its IOVA.

        ``buffer_or_address`` is a writable buffer (bytearray, mmap, ...) whose
        address and size are page aligned, or an address with ``size``. ``iova``
        fixes the IOVA; otherwise the allocator picks one below ``max_iova``.
        ``fd`` says the memory is that file mapped from ``fd_offset`` (a memfd, say):
        a vfio-user server then maps it itself; the kernel backends ignore it.
        """
        with self._lock:
            iova, size, vaddr = self._map(
                buffer_or_address, size, iova, max_iova, align, fd, fd_offset
            )
        return DmaMapping(iova, size, vaddr)

    def _map(
        self,
        buffer_or_address: Buffer | int,
        size: int | None,
        iova: int | None,
        max_iova: int | None,
        align: int | None,
        fd: int | None,
        fd_offset: int,
    ) -> tuple[int, int, int]:
        """map() under the lock; the IOVA, size and address, with no DmaMapping made."""
        backend = self._require_backend()
        allocator = self._allocator or self._alloc()
        vaddr, size, keep = self._memory(buffer_or_address, size, "map()")
        page = allocator.page_size
        if size <= 0 or size % page or vaddr % page:
            raise ValueError(
                f"DMA mappings must be page aligned: address {vaddr:#x} and "
                f"size {size:#x} must both be multiples of {page:#x}"
            )
        if backend.pins_memory:
            self._check_memlock(size)
        if iova is None:
            iova = allocator.allocate(size, align=align, max_iova=max_iova)
        else:
            if max_iova is not None and iova + size - 1 > max_iova:
                raise ValueError(f"iova {iova:#x} + {size:#x} ends above max_iova {max_iova:#x}")
            allocator.reserve(iova, size)
        try:
            backend.map(vaddr, iova, size, -1 if fd is None else fd, fd_offset)
        except BaseException:
            allocator.free(iova)
            keep = None  # the traceback keeps this frame: let the buffer go now
            raise
        self._mappings[iova] = (size, vaddr)
        self._pinned += size
        if keep is not None:
            self._keep[iova] = keep
        return iova, size, vaddr

    def unmap(self, mapping_or_iova: DmaMapping | int) -> None:
        """Remove a mapping made with :meth:`map` (by the mapping or its IOVA)."""
        iova = mapping_or_iova.iova if isinstance(mapping_or_iova, DmaMapping) else mapping_or_iova
        with self._lock:
            record = self._mappings.get(iova)
            if not isinstance(iova, int):
                raise TypeError(f"unmap() takes a DmaMapping or its IOVA, not {iova!r}")
            if record is None:
                raise ValueError(f"no DMA mapping starts at iova {iova:#x}")
            backend = self._require_backend()
            size = record[0]
            del self._mappings[iova]
            self._pinned -= size
            self._keep.pop(iova, None)
            try:
                backend.unmap(iova, size)
            finally:
                if self._allocator is not None:
                    self._allocator.free(iova)

    def map_pages(
        self,
        buffer_or_address: Buffer | int,
        page_size: int | None = None,
        *,
        size: int | None = None,
        max_iova: int | None = None,
        fd: int | None = None,
        fd_offset: int = 0,
    ) -> array[int]:
        """Map memory page by page; the pages' IOVAs in order, as an ``array('Q')``.

        For a driver that hands a device many pages (buffer pools, PRP or descriptor
        lists): each ``page_size`` piece of the memory (by default the IOMMU page
        size) is a mapping of its own at an IOVA of its own, so any page can later be
        unmapped alone (the kernel refuses to unmap part of a mapping), and no object
        is made per page. ``buffer_or_address``, ``max_iova``, ``fd`` and
        ``fd_offset`` are as for :meth:`map`; an address needs ``size``. The address
        must be page aligned and the size a multiple of ``page_size``, itself a
        multiple of the IOMMU page size.

        All or nothing: when a page cannot be mapped (the kernel's limit of mappings,
        RLIMIT_MEMLOCK, the IOVA space), the pages already mapped are unmapped and
        the error is raised. Each page is one of :attr:`mappings`; :meth:`unmap_pages`
        (or :meth:`unmap`, page by page) removes them.
        """
        with self._lock:
            backend = self._require_backend()
            allocator = self._allocator or self._alloc()
            vaddr, size, keep = self._memory(buffer_or_address, size, "map_pages()")
            page = allocator.page_size
            if page_size is None:
                page_size = page
            elif type(page_size) is not int or page_size <= 0 or page_size % page:
                raise ValueError(
                    f"page_size must be a positive multiple of the IOMMU page size {page:#x}, "
                    f"not {page_size!r}"
                )
            if size <= 0 or size % page_size or vaddr % page:
                raise ValueError(
                    f"map_pages() maps whole pages: address {vaddr:#x} must be a multiple "
                    f"of {page:#x} and size {size:#x} a positive multiple of page_size "
                    f"{page_size:#x}"
                )
            if backend.pins_memory:
                self._check_memlock(size)
            iovas: array[int] = array("Q")
            mappings, keeps = self._mappings, self._keep
            fd, offset = (-1, 0) if fd is None else (fd, fd_offset - vaddr)
            try:
                for va in range(vaddr, vaddr + size, page_size):
                    iova = allocator.allocate(page_size, max_iova=max_iova)
                    try:
                        backend.map(va, iova, page_size, fd, 0 if fd < 0 else va + offset)
                    except BaseException:
                        allocator.free(iova)
                        raise
                    mappings[iova] = (page_size, va)
                    iovas.append(iova)
                    if keep is not None:
                        keeps[iova] = keep
                    self._pinned += page_size
            except BaseException:
                self._unmap_all(backend, allocator, reversed(iovas))
                keep = None  # the traceback keeps this frame: let the buffer go now
                raise
            return iovas

    def unmap_pages(self, iovas: Iterable[int]) -> None:
        """Unmap pages :meth:`map_pages` mapped, by their IOVAs (all of them or any).

        Every IOVA is checked before anything is unmapped: one that starts no mapping,
        or is listed twice, raises ValueError and nothing is unmapped. When the kernel
        fails to unmap a page, the others are still unmapped, every page leaves
        :attr:`mappings`, and the first error is raised.
        """
        with self._lock:
            todo = list(iovas)
            mappings = self._mappings
            for iova in todo:
                if not isinstance(iova, int) or isinstance(iova, bool):
                    raise TypeError(
                        f"unmap_pages() takes the IOVAs map_pages() returned, not {iova!r}"
                    )
                if iova not in mappings:
                    raise ValueError(f"no DMA mapping starts at iova {iova:#x}")
            if len(set(todo)) != len(todo):
                twice = next(i for i in todo if todo.count(i) > 1)
                raise ValueError(f"iova {twice:#x} is listed twice: each page unmaps once")
            backend = self._require_backend()
            if not todo:
                return
            failed = self._unmap_all(backend, self._alloc(), todo)
        if failed is not None:
            raise failed

    def _unmap_all(
        self, backend: Backend, allocator: IovaAllocator, iovas: Iterable[int]
    ) -> VfioError | None:
        """Unmap each of ``iovas`` (mappings all); the first VfioError, the rest go on."""
        mappings, keeps = self._mappings, self._keep
        failed: VfioError | None = None
        for iova in iovas:
            size = mappings.pop(iova)[0]
            self._pinned -= size
            keeps.pop(iova, None)
            try:
                backend.unmap(iova, size)
            except VfioError as err:
                failed = failed or err
            finally:
                allocator.free(iova)
        return failed

    def dma_alloc(
        self,
        size: int,
        max_iova: int | None = None,
        *,
        hugepages: bool = False,
        numa_node: int | None = None,
    ) -> DmaBuffer:
        """Zeroed memory mapped for DMA below ``max_iova`` (the device's DMA mask), on
        NUMA node ``numa_node`` if given (a device's is its ``numa_node``)."""
        if not isinstance(size, int) or size <= 0:
            raise ValueError(f"DMA buffer size must be a positive int, not {size!r}")
        backend = self._require_backend()
        buf = DmaBuffer(
            self,
            size,
            max_iova=max_iova,
            hugepages=hugepages,
            memfd=backend.share_memory,
            numa_node=numa_node,
        )
        self._buffers.add(buf)
        return buf

    def _map_buffer(
        self, address: int, size: int, /, *, max_iova: int | None, align: int, fd: int | None
    ) -> int:
        """A DmaBuffer's memory mapped; its IOVA (the buffer is the public object, so
        no DmaMapping is made for it)."""
        with self._lock:
            return self._map(address, size, None, max_iova, align, fd, 0)[0]

    def _unmap_buffer(self, buf: DmaBuffer) -> None:
        self._buffers.discard(buf)
        if not self._closed and buf.iova in self._mappings:
            self.unmap(buf.iova)

    # -- lifetime -----------------------------------------------------------------------

    def close(self) -> None:
        """Free DMA, close devices, groups and the container (idempotent)."""
        if self._closed:
            return
        try:
            for buf in list(self._buffers):
                with contextlib.suppress(VfioError):
                    buf.free()
            for iova in list(self._mappings):
                with contextlib.suppress(VfioError):
                    self.unmap(iova)
            for device in list(self._devices.values()):
                device.close()
        finally:
            self._closed = True
            if self._finalizer is not None:
                self._finalizer()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Iommu:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open(address: str, backend: str = "auto", *, vf_token: str | uuid.UUID | None = None) -> Device:
    """Open a device already bound to vfio-pci, in an IOMMU address space of its own.

    ``vf_token``: an SR-IOV VF's token, when its PF is on vfio-pci (see `Iommu.open`).
    """
    iommu = Iommu(backend)
    try:
        return iommu._open(address, owns_iommu=True, vf_token=vf_token)
    except BaseException:
        iommu.close()
        raise


def __getattr__(name: str) -> Any:
    """``VfioUserBackend``, importable from here as before, without importing the
    vfio-user client with this module."""
    if name == "VfioUserBackend":
        from pyvfio.backends.vfio_user import VfioUserBackend

        return VfioUserBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BACKENDS",
    "UNSAFE_NOIOMMU",
    "VIABLE_DRIVERS",
    "Iommu",
    "IommufdBackend",
    "Type1Backend",
    "blocking_peers",
    "not_viable_error",
    "open",
]
