"""The plain-Python floor: the least Python that makes each primitive's system calls.

What a driver author would write by hand with no library: raw VFIO or iommufd setup
through ``os.open`` and ``fcntl.ioctl``, then, timed, one loop per primitive that does
nothing but the primitive's system call or memory access:

- MMIO read32 / write32: ``memoryview(bar0_mmap).cast("I")[i]``, a load or a store;
- config read32: ``os.pread`` of 4 bytes at the config region's offset, decoded with a
  precompiled ``struct.Struct``;
- DMA map + unmap of 4 KiB: ``fcntl.ioctl`` on preallocated ctypes structs at a fixed
  IOVA (``VFIO_IOMMU_MAP_DMA``/``UNMAP_DMA`` for type1, ``IOMMU_IOAS_MAP``/``UNMAP`` for
  iommufd), as ``bench/c/vfio_prims.c`` does;
- interrupt round trip: edu's raise register written, a non-blocking ``eventfd`` read
  (``poll`` only when nothing is pending), the acknowledge register written.

So pyvfio / floor is what pyvfio adds over Python's own cost of the same syscalls,
and floor / C what Python itself costs. This module uses nothing of pyvfio: the kernel
structs it needs are declared below (unit tests check them against ``pyvfio._uapi``,
the project's one mirror of the headers), so it keeps measuring the same floor whatever
pyvfio's internals become. ``root`` lets it read a synthetic sysfs tree (for the
instruction-count run, bench/instructions.py, whose stub answers the ioctls).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import mmap
import os
import select
import struct
from collections.abc import Callable, Iterator
from typing import Any

Op = Callable[[int], None]

PAGE = mmap.PAGESIZE
#: The fixed IOVAs vfio_prims.c maps at: one page, the page mapped beside live ones.
IOVA_ONE, IOVA_EXTRA, IOVA_LIVE = 0x100000, 0x200000, 0x400000

# -- kernel ABI: linux/vfio.h, linux/iommufd.h (all _IO(';', nr)) ----------------------
_TYPE = ord(";")
VFIO_BASE = 100


def _io(nr: int) -> int:
    return (_TYPE << 8) | nr


VFIO_SET_IOMMU = _io(VFIO_BASE + 2)
VFIO_GROUP_SET_CONTAINER = _io(VFIO_BASE + 4)
VFIO_GROUP_GET_DEVICE_FD = _io(VFIO_BASE + 6)
VFIO_DEVICE_GET_REGION_INFO = _io(VFIO_BASE + 8)
VFIO_DEVICE_SET_IRQS = _io(VFIO_BASE + 10)
VFIO_IOMMU_MAP_DMA = _io(VFIO_BASE + 13)
VFIO_IOMMU_UNMAP_DMA = _io(VFIO_BASE + 14)
VFIO_DEVICE_BIND_IOMMUFD = _io(VFIO_BASE + 18)
VFIO_DEVICE_ATTACH_IOMMUFD_PT = _io(VFIO_BASE + 19)
IOMMU_DESTROY = _io(0x80)
IOMMU_IOAS_ALLOC = _io(0x81)
IOMMU_IOAS_MAP = _io(0x85)
IOMMU_IOAS_UNMAP = _io(0x86)

VFIO_TYPE1v2_IOMMU = 3
VFIO_DMA_MAP_FLAG_READ_WRITE = 0x3
IOMMU_IOAS_MAP_FIXED_READ_WRITE = 0x7  # FIXED_IOVA | WRITEABLE | READABLE
VFIO_PCI_BAR0_REGION_INDEX, VFIO_PCI_CONFIG_REGION_INDEX = 0, 7
VFIO_PCI_MSI_IRQ_INDEX = 1
VFIO_IRQ_SET_DATA_NONE, VFIO_IRQ_SET_DATA_EVENTFD = 1 << 0, 1 << 2
VFIO_IRQ_SET_ACTION_TRIGGER = 1 << 5

# edu's registers (QEMU docs/specs/edu.rst) and config space.
EDU_ID, EDU_LIVENESS, EDU_IRQ_RAISE, EDU_IRQ_ACK = 0x00, 0x04, 0x60, 0x64
PCI_COMMAND, PCI_COMMAND_MEMORY, PCI_COMMAND_MASTER = 0x04, 0x2, 0x4


class vfio_iommu_type1_dma_map(ctypes.Structure):
    _fields_ = (
        ("argsz", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("vaddr", ctypes.c_uint64),
        ("iova", ctypes.c_uint64),
        ("size", ctypes.c_uint64),
    )


class vfio_iommu_type1_dma_unmap(ctypes.Structure):
    _fields_ = (
        ("argsz", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("iova", ctypes.c_uint64),
        ("size", ctypes.c_uint64),
    )


class iommu_ioas_alloc(ctypes.Structure):
    _fields_ = (
        ("size", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("out_ioas_id", ctypes.c_uint32),
    )


class iommu_destroy(ctypes.Structure):
    _fields_ = (("size", ctypes.c_uint32), ("id", ctypes.c_uint32))


class iommu_ioas_map(ctypes.Structure):
    _fields_ = (
        ("size", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("ioas_id", ctypes.c_uint32),
        ("__reserved", ctypes.c_uint32),
        ("user_va", ctypes.c_uint64),
        ("length", ctypes.c_uint64),
        ("iova", ctypes.c_uint64),
    )


class iommu_ioas_unmap(ctypes.Structure):
    _fields_ = (
        ("size", ctypes.c_uint32),
        ("ioas_id", ctypes.c_uint32),
        ("iova", ctypes.c_uint64),
        ("length", ctypes.c_uint64),
    )


class vfio_device_bind_iommufd(ctypes.Structure):
    _fields_ = (
        ("argsz", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("iommufd", ctypes.c_int32),
        ("out_devid", ctypes.c_uint32),
    )


class vfio_device_attach_iommufd_pt(ctypes.Structure):
    _fields_ = (("argsz", ctypes.c_uint32), ("flags", ctypes.c_uint32), ("pt_id", ctypes.c_uint32))


class vfio_region_info(ctypes.Structure):
    _fields_ = (
        ("argsz", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("index", ctypes.c_uint32),
        ("cap_offset", ctypes.c_uint32),
        ("size", ctypes.c_uint64),
        ("offset", ctypes.c_uint64),
    )


class vfio_irq_set_one(ctypes.Structure):
    """``vfio_irq_set`` with room for one eventfd in its ``data[]``."""

    _fields_ = (
        ("argsz", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("index", ctypes.c_uint32),
        ("start", ctypes.c_uint32),
        ("count", ctypes.c_uint32),
        ("fd", ctypes.c_int32),
    )


def _sized(struct_type: type[Any], field: str = "argsz", **values: int) -> Any:
    """A struct with its size field (``argsz`` in vfio.h, ``size`` in iommufd.h) set."""
    return struct_type(**{field: ctypes.sizeof(struct_type)}, **values)


def iommu_group(bdf: str, root: str = "/") -> int:
    """The device's IOMMU group number, from its sysfs ``iommu_group`` link."""
    link = os.readlink(os.path.join(root, f"sys/bus/pci/devices/{bdf}/iommu_group"))
    return int(os.path.basename(link))


def vfio_cdev(bdf: str, root: str = "/") -> str:
    """The device's VFIO cdev (``/dev/vfio/devices/vfioN``), from sysfs."""
    folder = os.path.join(root, f"sys/bus/pci/devices/{bdf}/vfio-dev")
    try:
        names = sorted(os.listdir(folder))
    except FileNotFoundError:
        names = []
    if not names:
        raise SystemExit(
            f"floor: {bdf} has no VFIO cdev ({folder} is empty): this kernel lacks "
            "CONFIG_VFIO_DEVICE_CDEV; use --backend type1"
        )
    return f"/dev/vfio/devices/{names[0]}"


class FloorDevice:
    """An edu device opened by raw syscalls, its BAR0 mapped and MSI on one eventfd.

    Setup is not timed, so it is plain and checked; only the loops that
    :meth:`ops` returns are the floor. ``close`` undoes everything (reverse order).
    """

    def __init__(self, bdf: str, backend: str, root: str = "/") -> None:
        if backend not in ("type1", "iommufd"):
            raise ValueError(f"backend must be type1 or iommufd, not {backend!r}")
        self.bdf, self.backend = bdf, backend
        self._fds: list[int] = []  # closed in reverse
        self.bar0: mmap.mmap | None = None
        self._views: list[memoryview] = []  # released before bar0 closes
        self.eventfd = -1
        try:
            if backend == "type1":
                self.iommu_fd, self.device_fd = self._open_type1(bdf, root)
                self.ioas = 0
            else:
                self.iommu_fd, self.device_fd, self.ioas = self._open_iommufd(bdf, root)
            bar = self._region(VFIO_PCI_BAR0_REGION_INDEX)
            self.config_offset = self._region(VFIO_PCI_CONFIG_REGION_INDEX).offset
            self.bar0 = mmap.mmap(self.device_fd, bar.size, mmap.MAP_SHARED, offset=bar.offset)
            self._enable_msi()
        except BaseException:
            self.close()
            raise

    def _keep(self, fd: int) -> int:
        self._fds.append(fd)
        return fd

    def _open_type1(self, bdf: str, root: str) -> tuple[int, int]:
        container = self._keep(os.open("/dev/vfio/vfio", os.O_RDWR | os.O_CLOEXEC))
        group = self._keep(os.open(f"/dev/vfio/{iommu_group(bdf, root)}", os.O_RDWR | os.O_CLOEXEC))
        fcntl.ioctl(group, VFIO_GROUP_SET_CONTAINER, ctypes.c_int32(container))
        fcntl.ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU)
        name = bytearray(bdf.encode() + b"\0")
        return container, self._keep(fcntl.ioctl(group, VFIO_GROUP_GET_DEVICE_FD, name))

    def _open_iommufd(self, bdf: str, root: str) -> tuple[int, int, int]:
        iommufd = self._keep(os.open("/dev/iommu", os.O_RDWR | os.O_CLOEXEC))
        alloc = _sized(iommu_ioas_alloc, "size")
        fcntl.ioctl(iommufd, IOMMU_IOAS_ALLOC, alloc)
        device = self._keep(os.open(vfio_cdev(bdf, root), os.O_RDWR | os.O_CLOEXEC))
        fcntl.ioctl(
            device, VFIO_DEVICE_BIND_IOMMUFD, _sized(vfio_device_bind_iommufd, iommufd=iommufd)
        )
        attach = _sized(vfio_device_attach_iommufd_pt, pt_id=alloc.out_ioas_id)
        fcntl.ioctl(device, VFIO_DEVICE_ATTACH_IOMMUFD_PT, attach)
        return iommufd, device, alloc.out_ioas_id

    def _region(self, index: int) -> vfio_region_info:
        info: vfio_region_info = _sized(vfio_region_info, index=index)
        fcntl.ioctl(self.device_fd, VFIO_DEVICE_GET_REGION_INFO, info)
        return info

    def _set_msi(self, fd: int | None) -> None:
        irq = _sized(vfio_irq_set_one, index=VFIO_PCI_MSI_IRQ_INDEX)
        if fd is None:
            irq.argsz = ctypes.sizeof(vfio_irq_set_one) - 4
            irq.flags = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER
        else:
            irq.flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER
            irq.count, irq.fd = 1, fd
        fcntl.ioctl(self.device_fd, VFIO_DEVICE_SET_IRQS, irq)

    def _enable_msi(self) -> None:
        # QEMU drops a device's MSI write while Bus Master Enable is clear.
        at = self.config_offset + PCI_COMMAND
        (cmd,) = struct.unpack("<H", os.pread(self.device_fd, 2, at))
        os.pwrite(
            self.device_fd, struct.pack("<H", cmd | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER), at
        )
        self.eventfd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._set_msi(self.eventfd)

    # -- the floor ------------------------------------------------------------------------

    def _map_structs(
        self, vaddr: int, iova: int
    ) -> tuple[int, ctypes.Structure, int, ctypes.Structure]:
        """The map and unmap requests and their argument structs for one page."""
        if self.backend == "type1":
            dma_map = _sized(
                vfio_iommu_type1_dma_map,
                flags=VFIO_DMA_MAP_FLAG_READ_WRITE,
                vaddr=vaddr,
                iova=iova,
                size=PAGE,
            )
            dma_unmap = _sized(vfio_iommu_type1_dma_unmap, iova=iova, size=PAGE)
            return VFIO_IOMMU_MAP_DMA, dma_map, VFIO_IOMMU_UNMAP_DMA, dma_unmap
        ioas_map = _sized(
            iommu_ioas_map,
            "size",
            flags=IOMMU_IOAS_MAP_FIXED_READ_WRITE,
            ioas_id=self.ioas,
            user_va=vaddr,
            length=PAGE,
            iova=iova,
        )
        ioas_unmap = _sized(iommu_ioas_unmap, "size", ioas_id=self.ioas, iova=iova, length=PAGE)
        return IOMMU_IOAS_MAP, ioas_map, IOMMU_IOAS_UNMAP, ioas_unmap

    def map_fixed(self, vaddr: int, iova: int) -> None:
        """One page mapped and left in place (the live mappings)."""
        map_req, m, _, _ = self._map_structs(vaddr, iova)
        fcntl.ioctl(self.iommu_fd, map_req, m)

    def unmap_fixed(self, iova: int) -> None:
        _, _, unmap_req, u = self._map_structs(0, iova)
        fcntl.ioctl(self.iommu_fd, unmap_req, u)

    @contextlib.contextmanager
    def live_mappings(self, base: int, count: int) -> Iterator[None]:
        """``count`` pages from ``base`` mapped at IOVA_LIVE upwards while inside."""
        done = 0
        try:
            for i in range(count):
                self.map_fixed(base + i * PAGE, IOVA_LIVE + i * PAGE)
                done += 1
            yield
        finally:
            for i in range(done):
                self.unmap_fixed(IOVA_LIVE + i * PAGE)

    # -- the floor: only these loops are timed --------------------------------------------

    def ops(self, vaddr: int, *, stand_in: bool = False) -> dict[str, Op]:
        """One loop per primitive (``op(n)`` runs it n times); DMA maps the page at ``vaddr``.

        ``stand_in``: nothing raises the interrupt (bench/instructions.py's stub has no
        device), so the loop writes the eventfd itself after the raise, as pyvfio's
        side does there.
        """
        assert self.bar0 is not None
        whole = memoryview(self.bar0)
        words = whole.cast("I")
        self._views += [words, whole]
        ident, liveness = EDU_ID // 4, EDU_LIVENESS // 4
        raise_irq, ack_irq = EDU_IRQ_RAISE // 4, EDU_IRQ_ACK // 4
        pread, device, config = os.pread, self.device_fd, self.config_offset
        u32 = struct.Struct("<I").unpack
        efd = self.eventfd
        eventfd_read, eventfd_write = os.eventfd_read, os.eventfd_write
        poller = select.poll()
        poller.register(efd, select.POLLIN)

        def mmio_read32(n: int) -> None:
            for _ in range(n):
                words[ident]

        def mmio_write32(n: int) -> None:
            for i in range(n):
                words[liveness] = i

        def config_read32(n: int) -> None:
            for _ in range(n):
                u32(pread(device, 4, config))[0]

        def wait() -> None:
            # Only when the interrupt is not in yet: the fast path is the read alone.
            while True:
                if not poller.poll(5000):
                    raise TimeoutError(errno.ETIMEDOUT, "floor: MSI did not fire within 5 s")
                with contextlib.suppress(BlockingIOError):
                    eventfd_read(efd)
                    return

        def irq_round_trip(n: int) -> None:
            for _ in range(n):
                words[raise_irq] = 1
                try:
                    eventfd_read(efd)
                except BlockingIOError:
                    wait()
                words[ack_irq] = 1

        def irq_round_trip_stand_in(n: int) -> None:
            for _ in range(n):
                words[raise_irq] = 1
                eventfd_write(efd, 1)  # the device's MSI, which the stub cannot send
                try:
                    eventfd_read(efd)
                except BlockingIOError:
                    wait()
                words[ack_irq] = 1

        return {
            "mmio_read32": mmio_read32,
            "mmio_write32": mmio_write32,
            "config_read32": config_read32,
            "dma_map_unmap_4k": self.map_op(vaddr, IOVA_ONE),
            "irq_round_trip": irq_round_trip_stand_in if stand_in else irq_round_trip,
        }

    def map_op(self, vaddr: int, iova: int) -> Op:
        """map + unmap of one page at a fixed IOVA: two ioctls on preallocated structs."""
        ioctl, fd = fcntl.ioctl, self.iommu_fd
        map_req, m, unmap_req, u = self._map_structs(vaddr, iova)

        def map_unmap(n: int) -> None:
            for _ in range(n):
                ioctl(fd, map_req, m)
                ioctl(fd, unmap_req, u)

        return map_unmap

    def close(self) -> None:
        """MSI off, BAR unmapped, every fd closed in reverse order (idempotent)."""
        if self.eventfd >= 0:
            with contextlib.suppress(OSError):
                self._set_msi(None)
            os.close(self.eventfd)
            self.eventfd = -1
        for view in self._views:
            view.release()
        self._views.clear()
        if self.bar0 is not None:
            self.bar0.close()
            self.bar0 = None
        if self.backend == "iommufd" and self._fds and self.ioas:
            with contextlib.suppress(OSError):
                # The device's fd first: its attachment holds the IOAS.
                os.close(self._fds.pop())
                fcntl.ioctl(
                    self._fds[0], IOMMU_DESTROY, _sized(iommu_destroy, "size", id=self.ioas)
                )
        while self._fds:
            with contextlib.suppress(OSError):
                os.close(self._fds.pop())

    def __enter__(self) -> FloorDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
