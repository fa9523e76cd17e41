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
import os
import resource
import weakref
from typing import TYPE_CHECKING, Any

from pyvfio import _mem, backends
from pyvfio._limits import holds_cap_ipc_lock, memlock_kib
from pyvfio.backends import UNSAFE_NOIOMMU, Backend, IommufdBackend, Type1Backend
from pyvfio.device import Device
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
    import mmap

    from pyvfio._transport import DeviceTransport

    #: What map() accepts besides an address: writable, contiguous memory.
    Buffer = bytearray | memoryview | mmap.mmap | ctypes.Array[Any]

#: ``unsafe-noiommu`` is the explicit opt-in for VFIO's no-IOMMU mode (pyvfio.noiommu).
BACKENDS = ("auto", *backends.NAMES)


def _has_cap_ipc_lock() -> bool:
    """CAP_IPC_LOCK (bit 14 of CapEff) exempts a process from RLIMIT_MEMLOCK for pinning.

    Read once per effective uid: reading /proc on every map was most of a map's cost
    (the primitives benchmark), and a process that drops root (a child that
    setresuid()s to the user it serves) loses its capabilities with it. A process that
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
    """An IOMMU address space: open devices into it, map and allocate DMA memory."""

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
        self._mappings: dict[int, DmaMapping] = {}
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
    def devices(self) -> tuple[Device, ...]:
        return tuple(self._devices.values())

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

    def open(self, address: str) -> Device:
        """Open a device (already bound to vfio-pci) into this address space."""
        return self._open(address)

    def _open(self, address: str, *, owns_iommu: bool = False) -> Device:
        if self._closed:
            raise ClosedError("the Iommu is closed")
        if is_vfio_user(address):
            addr, group = SCHEME + socket_path(address), None
            backend = self._vfio_user_backend(addr)
            self._check_not_open(addr)
            transport = backend.attach(addr, None)
        else:
            addr, group, backend = self._pci_backend(address)
            transport = self._attach_pci(backend, addr, group)
        try:
            device = Device(
                self,
                addr,
                transport,
                group,
                owns_iommu=owns_iommu,
                on_close=self._forget,
                group_fds=backend.group_fds,
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

    def _pci_backend(self, address: str) -> tuple[str, int, Backend]:
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
            return addr, group, self._start(backends.choose(addr, self._sysfs))
        return addr, group, self._backend

    @staticmethod
    def _attach_pci(backend: Backend, addr: str, group: int) -> DeviceTransport:
        try:
            return backend.attach(addr, group)
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
        return tuple(self._mappings.values())

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
        if _has_cap_ipc_lock():
            return
        soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
        if soft != resource.RLIM_INFINITY and self._pinned + size > soft:
            raise MemlockLimitError(
                f"mapping {size} bytes for DMA would pin {self._pinned + size} bytes, over "
                f"RLIMIT_MEMLOCK of {soft} bytes: raise it (ulimit -l "
                f"{memlock_kib(self._pinned + size)}, or memlock in "
                "/etc/security/limits.conf; pyvfio grant says what a user needs)",
                limit=soft,
                requested=size,
            )

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
        backend = self._require_backend()
        allocator = self._alloc()
        if isinstance(buffer_or_address, bool):
            raise TypeError("map() needs a writable buffer or an address, not a bool")
        if isinstance(buffer_or_address, int):
            if size is None:
                raise TypeError("map(address, size): the size is required with an address")
            vaddr, keep = buffer_or_address, None
        else:
            try:
                keep = (ctypes.c_char * len(memoryview(buffer_or_address).cast("B"))).from_buffer(
                    buffer_or_address
                )
            except (TypeError, ValueError) as err:
                raise TypeError(
                    f"map() needs a writable, contiguous buffer or an address: {err}"
                ) from err
            vaddr = ctypes.addressof(keep)
            size = len(keep) if size is None else size
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
            raise
        mapping = DmaMapping(iova, size, vaddr)
        self._mappings[iova] = mapping
        self._pinned += size
        if keep is not None:
            self._keep[iova] = keep
        return mapping

    def unmap(self, mapping_or_iova: DmaMapping | int) -> None:
        """Remove a mapping made with :meth:`map` (by the mapping or its IOVA)."""
        iova = mapping_or_iova.iova if isinstance(mapping_or_iova, DmaMapping) else mapping_or_iova
        mapping = self._mappings.get(iova)
        if not isinstance(iova, int):
            raise TypeError(f"unmap() takes a DmaMapping or its IOVA, not {iova!r}")
        if mapping is None:
            raise ValueError(f"no DMA mapping starts at iova {iova:#x}")
        backend = self._require_backend()
        del self._mappings[iova]
        self._pinned -= mapping.size
        self._keep.pop(iova, None)
        try:
            backend.unmap(iova, mapping.size)
        finally:
            if self._allocator is not None:
                self._allocator.free(iova)

    def dma_alloc(
        self, size: int, max_iova: int | None = None, *, hugepages: bool = False
    ) -> DmaBuffer:
        """Zeroed memory mapped for DMA below ``max_iova`` (the device's DMA mask)."""
        if not isinstance(size, int) or size <= 0:
            raise ValueError(f"DMA buffer size must be a positive int, not {size!r}")
        backend = self._require_backend()
        buf = DmaBuffer(
            self, size, max_iova=max_iova, hugepages=hugepages, memfd=backend.share_memory
        )
        self._buffers.add(buf)
        return buf

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


def open(address: str, backend: str = "auto") -> Device:
    """Open a device already bound to vfio-pci, in an IOMMU address space of its own."""
    iommu = Iommu(backend)
    try:
        return iommu._open(address, owns_iommu=True)
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
