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
"""

from __future__ import annotations

import contextlib
import ctypes
import errno as E
import functools
import os
import resource
import weakref
from typing import TYPE_CHECKING, Any, Protocol

from pyvfio import _ioctl, _mem
from pyvfio._limits import holds_cap_ipc_lock, memlock_kib
from pyvfio._uapi import vfio as v
from pyvfio.dma import DmaBuffer, DmaMapping
from pyvfio.errors import (
    ClosedError,
    DeviceNotBoundError,
    GroupNotViableError,
    MemlockLimitError,
    Peer,
    PermissionDeniedError,
    UnsupportedError,
    VfioError,
)
from pyvfio.host.sysfs import LIVE, Sysfs
from pyvfio.info import IommuInfo, IovaRange
from pyvfio.iova import IovaAllocator
from pyvfio.noiommu import UNSAFE_NOIOMMU, NoIommuBackend, check_backend
from pyvfio.pci.address import normalize
from pyvfio.vfio_user.client import SCHEME, VfioUserClient, is_vfio_user, socket_path

if TYPE_CHECKING:
    import mmap

    from pyvfio.device import Device

    #: What map() accepts besides an address: writable, contiguous memory.
    Buffer = bytearray | memoryview | mmap.mmap | ctypes.Array[Any]

#: ``unsafe-noiommu`` is the explicit opt-in for VFIO's no-IOMMU mode (pyvfio.noiommu).
BACKENDS = ("auto", "type1", "iommufd", "vfio-user", UNSAFE_NOIOMMU)
#: Drivers that leave a group viable: vfio's own, and those the kernel marks
#: driver_managed_dma (pci-stub, and pcieport for bridges and ports).
VIABLE_DRIVERS = frozenset({"vfio-pci", "pci-stub", "pcieport"})


def _is_vfio_driver(driver: str | None) -> bool:
    return driver is not None and (driver == "vfio-pci" or driver.endswith("-vfio-pci"))


def _close(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


def blocking_peers(group: int, sysfs: Sysfs = LIVE) -> tuple[Peer, ...]:
    """Members of ``group`` on a driver that makes the group not viable."""
    peers = []
    for addr in sysfs.group_devices(group):
        driver = sysfs.link_name(f"sys/bus/pci/devices/{addr}/driver")
        if driver is not None and driver not in VIABLE_DRIVERS and not _is_vfio_driver(driver):
            peers.append(Peer(addr, driver))
    return tuple(peers)


def not_viable_error(
    address: str, group: int, sysfs: Sysfs = LIVE, ioctl: str | None = None
) -> GroupNotViableError:
    peers = blocking_peers(group, sysfs)
    named = ", ".join(map(str, peers)) or "a member on a host driver"
    return GroupNotViableError(
        f"IOMMU group {group} of {address} is not viable: {named}; bind them to vfio-pci "
        f"or unbind them (pyvfio bind --group {address})",
        peers=peers,
        group=group,
        ioctl=ioctl,
        device=address,
    )


def _check_bound(address: str, sysfs: Sysfs) -> int:
    """The device's IOMMU group; DeviceNotBoundError/UnsupportedError saying what to do."""
    sysfs.device_dir(address)
    driver = sysfs.driver(address)
    if not _is_vfio_driver(driver):
        raise DeviceNotBoundError(
            f"{address} is {'bound to ' + driver if driver else 'not bound to any driver'}, "
            f"not vfio-pci: bind it first (pyvfio bind {address})",
            device=address,
        )
    group = sysfs.iommu_group(address)
    if group is None:
        raise UnsupportedError(
            f"{address} has no IOMMU group: the IOMMU is off; enable VT-d/AMD-Vi in the "
            "firmware and boot with intel_iommu=on or amd_iommu=on (pyvfio doctor)",
            device=address,
        )
    return group


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
        with open("/proc/self/status") as f:
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


class _Backend(Protocol):
    name: str

    def attach(self, address: str, group: int) -> int: ...
    def detach(self, address: str) -> None: ...
    def info(self) -> IommuInfo: ...
    def map(self, vaddr: int, iova: int, size: int) -> None: ...
    def unmap(self, iova: int, size: int) -> None: ...
    def fileno(self) -> int: ...
    def close(self) -> None: ...


class _Group:
    """An open ``/dev/vfio/N`` attached to the container, and its open devices."""

    __slots__ = ("devices", "fd", "number")

    def __init__(self, number: int, fd: int) -> None:
        self.number, self.fd, self.devices = number, fd, set[str]()


class Type1Backend:
    """``/dev/vfio/vfio`` with ``VFIO_TYPE1v2_IOMMU``."""

    name = "type1"

    def __init__(self, sysfs: Sysfs, path: str = "/dev/vfio/vfio") -> None:
        self.sysfs = sysfs
        if not os.path.exists(path):
            raise UnsupportedError(
                f"{path} does not exist: load the vfio module (modprobe vfio-pci)", device=path
            )
        self.fd = _ioctl.open_node(path)
        self.groups: dict[int, _Group] = {}
        self.iommu_set = False
        try:
            version = _ioctl.get_api_version(self.fd)
            if version != v.VFIO_API_VERSION:
                raise UnsupportedError(
                    f"{path} speaks VFIO API {version}, pyvfio {v.VFIO_API_VERSION}", device=path
                )
            if not _ioctl.check_extension(self.fd, v.VfioExtension.VFIO_TYPE1v2_IOMMU):
                raise UnsupportedError(
                    "this kernel's VFIO has no TYPE1v2 IOMMU (modprobe vfio_iommu_type1)",
                    device=path,
                )
        except BaseException:
            _close(self.fd)
            raise

    def fileno(self) -> int:
        return self.fd

    def attach(self, address: str, group: int) -> int:
        grp = self.groups.get(group)
        if grp is None:
            grp = self._open_group(address, group)
        fd = _ioctl.group_get_device_fd(grp.fd, address)
        grp.devices.add(address)
        return fd

    def _open_group(self, address: str, group: int) -> _Group:
        path = f"/dev/vfio/{group}"
        if not os.path.exists(path):
            raise DeviceNotBoundError(
                f"{path} is missing although {address} is on vfio-pci; is this a no-IOMMU group?",
                device=address,
            )
        fd = _ioctl.open_node(path)
        try:
            status = _ioctl.group_get_status(fd, address)
            if not status & v.VfioGroupFlag.VFIO_GROUP_FLAGS_VIABLE:
                raise not_viable_error(address, group, self.sysfs, "VFIO_GROUP_GET_STATUS")
            _ioctl.group_set_container(fd, self.fd, address)
            if not self.iommu_set:
                _ioctl.set_iommu(self.fd, v.VfioExtension.VFIO_TYPE1v2_IOMMU)
                self.iommu_set = True
        except BaseException:
            with contextlib.suppress(VfioError):
                _ioctl.group_unset_container(fd, address)
            _close(fd)
            raise
        grp = _Group(group, fd)
        self.groups[group] = grp
        return grp

    def detach(self, address: str) -> None:
        for number, grp in list(self.groups.items()):
            if address in grp.devices:
                grp.devices.discard(address)
                if not grp.devices:
                    del self.groups[number]
                    with contextlib.suppress(VfioError):
                        _ioctl.group_unset_container(grp.fd, address)
                    _close(grp.fd)

    def info(self) -> IommuInfo:
        return _ioctl.iommu_get_info(self.fd)

    def map(self, vaddr: int, iova: int, size: int) -> None:
        _ioctl.iommu_map_dma(self.fd, vaddr, iova, size)

    def unmap(self, iova: int, size: int) -> None:
        _ioctl.iommu_unmap_dma(self.fd, iova, size)

    def close(self) -> None:
        for grp in list(self.groups.values()):
            for address in list(grp.devices):
                self.detach(address)
        fd, self.fd = self.fd, -1
        if fd >= 0:
            _close(fd)


class IommufdBackend:
    """``/dev/iommu`` with one IOAS, devices through their ``/dev/vfio/devices/vfioN``."""

    name = "iommufd"

    def __init__(self, sysfs: Sysfs, path: str = "/dev/iommu") -> None:
        self.sysfs = sysfs
        if not os.path.exists(path):
            raise UnsupportedError(
                f"{path} does not exist: this kernel has no IOMMUFD (use backend='type1')",
                device=path,
            )
        self.fd = _ioctl.open_node(path)
        try:
            self.ioas = _ioctl.ioas_alloc(self.fd)
        except BaseException:
            _close(self.fd)
            raise
        self.devices: dict[str, int] = {}
        self.alignment = 0

    def fileno(self) -> int:
        return self.fd

    @staticmethod
    def cdev_of(address: str, sysfs: Sysfs) -> str | None:
        names = sysfs.listdir(f"sys/bus/pci/devices/{address}/vfio-dev")
        return f"/dev/vfio/devices/{names[0]}" if names else None

    def attach(self, address: str, group: int) -> int:
        cdev = self.cdev_of(address, self.sysfs)
        if cdev is None or not os.path.exists(cdev):
            raise UnsupportedError(
                f"{address} has no VFIO device cdev: this kernel lacks "
                "CONFIG_VFIO_DEVICE_CDEV (use backend='type1')",
                device=address,
            )
        fd = _ioctl.open_node(cdev)
        try:
            try:
                _ioctl.device_bind_iommufd(fd, self.fd, address)
            except VfioError as err:
                # iommu_device_claim_dma_owner: -EPERM while a kernel driver owns DMA
                # for a member of the group (owner_cnt set by another owner), -EBUSY
                # while the group is attached to a domain other than its default.
                if err.errno in (E.EPERM, E.EBUSY) and blocking_peers(group, self.sysfs):
                    raise not_viable_error(
                        address, group, self.sysfs, "VFIO_DEVICE_BIND_IOMMUFD"
                    ) from err
                raise
            _ioctl.device_attach_iommufd_pt(fd, self.ioas, address)
        except BaseException:
            _close(fd)
            raise
        self.devices[address] = fd
        return fd

    def detach(self, address: str) -> None:
        # Closing the device fd unbinds it from the iommufd; the device owns the fd.
        self.devices.pop(address, None)

    def info(self) -> IommuInfo:
        ranges, self.alignment = _ioctl.ioas_iova_ranges(self.fd, self.ioas)
        return IommuInfo(_mem.PAGE_SIZE, ranges)

    def map(self, vaddr: int, iova: int, size: int) -> None:
        _ioctl.ioas_map(self.fd, self.ioas, vaddr, iova, size)

    def unmap(self, iova: int, size: int) -> None:
        _ioctl.ioas_unmap(self.fd, self.ioas, iova, size)

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            with contextlib.suppress(VfioError):
                _ioctl.iommufd_destroy(fd, self.ioas)
            _close(fd)


class VfioUserBackend:
    """Devices behind vfio-user sockets: DMA mappings are messages to each server.

    Every mapping goes to every connected device, and a device opened later gets the
    mappings that exist (what a type1 container does for a group that joins). With
    ``share_memory`` (the default), memory with an fd (a DmaBuffer's memfd) is passed
    so the server maps it; otherwise, or for memory without an fd, the server reaches
    it through DMA_READ/WRITE messages the client answers (the spec's choice for a
    client that does not trust the server with its memory: an mmap cannot be revoked).
    """

    name = "vfio-user"

    def __init__(self, *, share_memory: bool = True, timeout: float | None = None) -> None:
        self.share_memory = share_memory
        self.timeout = timeout
        self.clients: dict[str, VfioUserClient] = {}
        #: iova -> (vaddr, size, fd, fd offset), replayed to devices that join later.
        self.maps: dict[int, tuple[int, int, int, int]] = {}

    def fileno(self) -> int:
        raise UnsupportedError(
            "a vfio-user Iommu has no kernel fd (each device has its socket: dev.fileno())"
        )

    def connect(self, address: str) -> VfioUserClient:
        """Connect to ``vfio-user:PATH`` and give it every live mapping."""
        client = (
            VfioUserClient(address)
            if self.timeout is None
            else VfioUserClient(address, timeout=self.timeout)
        )
        try:
            for iova, (vaddr, size, fd, offset) in self.maps.items():
                client.dma_map(iova, size, vaddr, fd, offset)
        except BaseException:
            client.close()
            raise
        self.clients[client.address] = client
        return client

    def attach(self, address: str, group: int) -> int:
        raise UnsupportedError(
            f"{address} is a PCI device on this host: a vfio-user Iommu opens only "
            "vfio-user:PATH devices (open it in Iommu('auto'))",
            device=address,
        )

    def detach(self, address: str) -> None:
        self.clients.pop(address, None)  # the device closes its client

    def info(self) -> IommuInfo:
        pgsizes = _mem.PAGE_SIZE
        avail = 65535
        for client in self.clients.values():
            pgsizes = (pgsizes & client.server.pgsizes) or pgsizes
            avail = min(avail, client.server.max_dma_maps)
        return IommuInfo(pgsizes, (IovaRange(0, (1 << 64) - 1),), max(0, avail - len(self.maps)))

    def map(self, vaddr: int, iova: int, size: int, fd: int = -1, fd_offset: int = 0) -> None:
        if not self.share_memory:
            fd, fd_offset = -1, 0
        done: list[VfioUserClient] = []
        try:
            for client in self.clients.values():
                client.dma_map(iova, size, vaddr, fd, fd_offset)
                done.append(client)
        except BaseException:
            for client in done:
                with contextlib.suppress(VfioError):
                    client.dma_unmap(iova, size)
            raise
        self.maps[iova] = (vaddr, size, fd, fd_offset)

    def unmap(self, iova: int, size: int) -> None:
        self.maps.pop(iova, None)
        failed: VfioError | None = None
        for client in self.clients.values():
            try:
                client.dma_unmap(iova, size)
            except VfioError as err:
                failed = failed or err
        if failed is not None:
            raise failed

    def close(self) -> None:
        for client in list(self.clients.values()):
            client.close()
        self.clients.clear()
        self.maps.clear()


def _finalize_backend(backend: _Backend) -> None:
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
        self._backend: _Backend | None = None
        self._finalizer: weakref.finalize[[_Backend], Iommu] | None = None
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

    def _start(self, name: str) -> _Backend:
        backend: _Backend
        if name == "type1":
            backend = Type1Backend(self._sysfs)
        elif name == "iommufd":
            backend = IommufdBackend(self._sysfs)
        elif name == UNSAFE_NOIOMMU:
            backend = NoIommuBackend(self._sysfs)
        else:
            backend = VfioUserBackend(share_memory=self._share_memory, timeout=self._timeout)
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

    def _require_backend(self) -> _Backend:
        if self._closed:
            raise ClosedError("the Iommu is closed")
        if self._backend is None:
            raise VfioError(
                "no device is open in this Iommu yet: open one first "
                "(iommu.open(BDF)); the IOMMU's ranges are known only then"
            )
        return self._backend

    def _choose(self, address: str) -> _Backend:
        if self._backend is not None:
            return self._backend
        cdev = IommufdBackend.cdev_of(address, self._sysfs)
        # A user granted only the type1 nodes (or none: then type1 names pyvfio grant)
        # must not be sent to an iommufd they cannot open.
        use_iommufd = cdev is not None and all(
            os.access(p, os.R_OK | os.W_OK, effective_ids=True) for p in ("/dev/iommu", cdev)
        )
        return self._start("iommufd" if use_iommufd else "type1")

    # -- devices ----------------------------------------------------------------------

    def open(self, address: str) -> Device:
        """Open a device (already bound to vfio-pci) into this address space."""
        from pyvfio.device import Device

        if self._closed:
            raise ClosedError("the Iommu is closed")
        if is_vfio_user(address):
            return self._open_vfio_user(address)
        if isinstance(self._backend, VfioUserBackend):
            raise UnsupportedError(
                f"this Iommu serves vfio-user devices ({SCHEME}PATH), not {address}: open "
                "it in an Iommu of its own (pyvfio.open)",
                device=address,
            )
        addr = normalize(address)
        if addr in self._devices:
            raise VfioError(f"{addr} is already open in this Iommu", errno=E.EBUSY, device=addr)
        group = _check_bound(addr, self._sysfs)
        check_backend(addr, group, self.requested, self._sysfs)
        backend = self._choose(addr)
        try:
            fd = backend.attach(addr, group)
        except PermissionDeniedError as err:
            raise _not_granted(addr, err) from err
        except VfioError as err:
            if err.errno == E.EBUSY and err.ioctl in ("VFIO_GROUP_GET_DEVICE_FD", None):
                raise VfioError(
                    f"{addr} is already open (another process or Iommu holds its group or device)",
                    errno=E.EBUSY,
                    ioctl=err.ioctl,
                    device=addr,
                ) from err
            raise
        device = Device(self, addr, fd, group)
        self._devices[addr] = device
        return device

    def _open_vfio_user(self, address: str) -> Device:
        from pyvfio.device import Device

        addr = SCHEME + socket_path(address)
        if self._backend is None:
            self._start("vfio-user")
        backend = self._backend
        if not isinstance(backend, VfioUserBackend):
            raise UnsupportedError(
                f"{addr} is a vfio-user device but this Iommu is {self.backend}: open it "
                "with pyvfio.open or in Iommu('vfio-user')",
                device=addr,
            )
        if addr in self._devices:
            raise VfioError(f"{addr} is already open in this Iommu", errno=E.EBUSY, device=addr)
        client = backend.connect(addr)
        try:
            device = Device(self, addr, client, None)
        except BaseException:
            backend.detach(addr)
            client.close()
            raise
        self._devices[addr] = device
        return device

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
        if not isinstance(backend, VfioUserBackend):  # a vfio-user server pins nothing
            self._check_memlock(size)
        if iova is None:
            iova = allocator.allocate(size, align=align, max_iova=max_iova)
        else:
            if max_iova is not None and iova + size - 1 > max_iova:
                raise ValueError(f"iova {iova:#x} + {size:#x} ends above max_iova {max_iova:#x}")
            allocator.reserve(iova, size)
        try:
            if isinstance(backend, VfioUserBackend):
                backend.map(vaddr, iova, size, -1 if fd is None else fd, fd_offset)
            else:
                backend.map(vaddr, iova, size)
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
        memfd = isinstance(backend, VfioUserBackend) and backend.share_memory
        buf = DmaBuffer(self, size, max_iova=max_iova, hugepages=hugepages, memfd=memfd)
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
