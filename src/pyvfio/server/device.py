"""The device end of vfio-user: what a served PCI device is made of.

A device is a `PciDevice` subclass.  Its ``__init__`` declares the identity (given to
``super().__init__``), the BARs with their read/write callbacks and optional
mmap-able areas, and the capabilities; it overrides `PciDevice.reset`.  Its callbacks
raise interrupts (`PciDevice.raise_irq`, `Interrupts.set_intx`) and do DMA
(`PciDevice.dma_read`/`dma_write`) while a client is connected::

    class Counter(PciDevice):
        def __init__(self) -> None:
            super().__init__(vendor_id=0x1234, device_id=0x0001, revision=1)
            self.add_bar(0, 4096, read=self.mmio_read, write=self.mmio_write)
            self.add_msi(1)
            self.count = 0

        def mmio_read(self, offset: int, size: int) -> bytes:
            return self.count.to_bytes(4, "little")[:size]

        def mmio_write(self, offset: int, data: bytes) -> None:
            self.count += 1
            self.raise_irq()

Callbacks get whole accesses as the client made them (``size`` of 1, 2, 4, 8 bytes
for MMIO, more for block transfers), never crossing into an mmap-able area or the
MSI-X table.  A callback that raises ``OSError`` fails the access with its errno,
``ValueError`` with EINVAL; the server answers the client either way and goes on.
"""

from __future__ import annotations

import errno
import logging
import mmap
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from pyvfio import _mem
from pyvfio._uapi.vfio import (
    VFIO_PCI_NUM_IRQS,
    VFIO_PCI_NUM_REGIONS,
    VfioIrqInfoFlag,
    VfioIrqSetFlag,
    VfioPciIrqIndex,
    VfioPciRegionIndex,
    VfioRegionInfoFlag,
)
from pyvfio.errors import VfioUserError
from pyvfio.server.config import BarKind, BarSpec, ConfigSpaceBuilder, EmulatedConfig

__all__ = [
    "DmaAccess",
    "Interrupts",
    "MmapArea",
    "PciDevice",
    "ReadCallback",
    "Region",
    "WriteCallback",
]

log = logging.getLogger("pyvfio.server")

#: ``read(offset, size) -> bytes`` of exactly ``size`` bytes.
ReadCallback = Callable[[int, int], bytes]
#: ``write(offset, data)``.
WriteCallback = Callable[[int, bytes], None]

PAGE_SIZE: Final = mmap.PAGESIZE
INTX: Final = VfioPciIrqIndex.VFIO_PCI_INTX_IRQ_INDEX
MSI: Final = VfioPciIrqIndex.VFIO_PCI_MSI_IRQ_INDEX
MSIX: Final = VfioPciIrqIndex.VFIO_PCI_MSIX_IRQ_INDEX
_EVENTFD_ONE: Final = (1).to_bytes(8, "little")


def _fail(message: str, err: int = errno.EINVAL) -> VfioUserError:
    return VfioUserError(message, errno=err)


@dataclass(frozen=True, slots=True)
class MmapArea:
    """A page-aligned part of a region the client may mmap (shared memory)."""

    offset: int
    size: int


class Region:
    """One region as the client sees it: size, access, callbacks, shared memory.

    With mmap-able areas the whole region is backed by a memfd (``fd``, sealed to its
    size), which the server passes to the client with the region info; ``memory`` is
    the device's own view of it.  Accesses the server receives for those areas (and for the MSI-X
    table and PBA, kept in ``memory`` too) read and write that memory.
    """

    def __init__(
        self,
        index: int,
        size: int,
        *,
        read: ReadCallback | None = None,
        write: WriteCallback | None = None,
        mmap_areas: Sequence[MmapArea] = (),
        name: str = "",
    ) -> None:
        self.index = index
        self.size = size
        self.name = name or f"region{index}"
        self._read = read
        self._write = write
        self.mmap_areas = tuple(mmap_areas)
        self._memory_ranges: list[tuple[int, int]] = [(a.offset, a.size) for a in self.mmap_areas]
        self.fd = -1
        self._map: mmap.mmap | None = None
        for area in self.mmap_areas:
            if area.offset % PAGE_SIZE or area.size % PAGE_SIZE or area.size <= 0:
                raise ValueError(
                    f"{self.name}: mmap area {area.offset:#x}+{area.size:#x} is not whole pages"
                )
            if area.offset + area.size > size:
                raise ValueError(f"{self.name}: mmap area {area.offset:#x} leaves the region")

    @property
    def flags(self) -> int:
        flags = 0
        if self._read is not None or self._memory_ranges:
            flags |= VfioRegionInfoFlag.VFIO_REGION_INFO_FLAG_READ
        if self._write is not None or self._memory_ranges:
            flags |= VfioRegionInfoFlag.VFIO_REGION_INFO_FLAG_WRITE
        if self.mmap_areas:
            flags |= VfioRegionInfoFlag.VFIO_REGION_INFO_FLAG_MMAP
        return flags

    @property
    def readable(self) -> bool:
        return bool(self.flags & VfioRegionInfoFlag.VFIO_REGION_INFO_FLAG_READ)

    @property
    def writable(self) -> bool:
        return bool(self.flags & VfioRegionInfoFlag.VFIO_REGION_INFO_FLAG_WRITE)

    @property
    def mappable(self) -> bool:
        return bool(self.mmap_areas)

    @property
    def memory(self) -> memoryview:
        """The region's backing memory (mmap areas, MSI-X table): the device's view."""
        if self._map is None:
            self._allocate()
        assert self._map is not None
        return memoryview(self._map)

    def add_memory_range(self, offset: int, size: int) -> None:
        """Serve ``offset``..``offset+size`` from ``memory`` rather than the callbacks."""
        self._memory_ranges.append((offset, size))

    def _allocate(self) -> None:
        length = _mem.round_up(self.size, PAGE_SIZE)
        # Sealed to its size: the client maps it too, and could otherwise truncate it
        # and kill this process (and every later session) with SIGBUS on the next access.
        fd = _mem.sealed_memfd(f"pyvfio-{self.name}", length)
        try:
            self._map = mmap.mmap(fd, length, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd

    def shared_fd(self) -> int:
        """The memfd to pass to the client (created on first use); -1 if not mappable."""
        if not self.mmap_areas:
            return -1
        if self.fd < 0:
            self._allocate()
        return self.fd

    def _pieces(self, offset: int, count: int) -> list[tuple[int, int, bool]]:
        """Split an access into (offset, length, from_memory) pieces."""
        pieces: list[tuple[int, int, bool]] = []
        end = offset + count
        cursor = offset
        ranges = sorted(self._memory_ranges)
        while cursor < end:
            inside = next((r for r in ranges if r[0] <= cursor < r[0] + r[1]), None)
            if inside is not None:
                stop = min(end, inside[0] + inside[1])
                pieces.append((cursor, stop - cursor, True))
            else:
                following = [r[0] for r in ranges if r[0] > cursor]
                stop = min([end, *following])
                pieces.append((cursor, stop - cursor, False))
            cursor = stop
        return pieces

    def read(self, offset: int, count: int) -> bytes:
        """Read ``count`` bytes at ``offset`` (the caller has checked the range)."""
        if not self.readable:
            raise _fail(f"{self.name} is not readable", errno.EACCES)
        out = bytearray()
        for start, length, from_memory in self._pieces(offset, count):
            if from_memory:
                out += self.memory[start : start + length]
                continue
            if self._read is None:
                out += b"\xff" * length
                continue
            data = bytes(self._read(start, length))
            if len(data) != length:
                raise _fail(
                    f"{self.name} read callback returned {len(data)} bytes for a "
                    f"{length}-byte access at {start:#x}",
                    errno.EIO,
                )
            out += data
        return bytes(out)

    def write(self, offset: int, data: bytes) -> None:
        """Write ``data`` at ``offset`` (the caller has checked the range)."""
        if not self.writable:
            raise _fail(f"{self.name} is not writable", errno.EACCES)
        for start, length, from_memory in self._pieces(offset, len(data)):
            chunk = data[start - offset : start - offset + length]
            if from_memory:
                self.memory[start : start + length] = chunk
            elif self._write is not None:
                self._write(start, chunk)

    def close(self) -> None:
        try:
            if self._map is not None:
                self._map.close()
        except BufferError:
            log.warning("%s: memory still exported, left mapped", self.name)
        finally:
            self._map = None
            if self.fd >= 0:
                fd, self.fd = self.fd, -1
                os.close(fd)


def _require_eventfd(fd: int) -> None:
    """Refuse (EINVAL) an "eventfd" that is something else, and make a real one
    non-blocking: the device signals it from the server's thread, and a pipe (which
    fills after 8192 signals) or a full eventfd must never block that thread.

    O_NONBLOCK is a flag of the open file, which the client shares; eventfd users
    poll before they read (QEMU's and pyvfio's eventfds are non-blocking already).
    """
    try:
        kind = os.readlink(f"/proc/self/fd/{fd}")
    except OSError as err:
        raise _fail(f"SET_IRQS fd {fd} cannot be inspected: {err.strerror}") from err
    if kind != "anon_inode:[eventfd]":
        raise _fail(f"SET_IRQS takes eventfds; it got {kind!r}")
    os.set_blocking(fd, False)


class _Index:
    """The eventfds of one interrupt index."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.triggers: list[int] = [-1] * count
        self.unmask_fd = -1

    @property
    def active(self) -> bool:
        return any(fd >= 0 for fd in self.triggers)

    def release(self) -> None:
        for i, fd in enumerate(self.triggers):
            if fd >= 0:
                os.close(fd)
                self.triggers[i] = -1
        if self.unmask_fd >= 0:
            os.close(self.unmask_fd)
            self.unmask_fd = -1


class Interrupts:
    """INTx, MSI and MSI-X as the client wired them with SET_IRQS.

    The rules are vfio-pci's: INTx is level triggered and automasked (signalled once,
    then masked until the client unmasks it, signalled again then if still asserted);
    MSI and MSI-X are edge triggered; wiring one of the three releases the others.
    """

    def __init__(self, counts: dict[int, int]) -> None:
        self._indexes = {index: _Index(counts.get(index, 0)) for index in range(VFIO_PCI_NUM_IRQS)}
        self.intx_level = False
        self.intx_masked = False
        self.signals = 0  # how many interrupts were delivered, for tests and logs
        self.dropped = 0  # how many found their eventfd full (already signalled)
        # Device code may raise interrupts from a thread of its own while the server
        # thread applies SET_IRQS: the INTx state and the eventfd table change together.
        self._lock = threading.RLock()

    def count(self, index: int) -> int:
        return self._indexes[index].count

    def info_flags(self, index: int) -> int:
        flags = VfioIrqInfoFlag.VFIO_IRQ_INFO_EVENTFD
        if index == INTX:
            flags |= VfioIrqInfoFlag.VFIO_IRQ_INFO_MASKABLE
            flags |= VfioIrqInfoFlag.VFIO_IRQ_INFO_AUTOMASKED
        else:
            flags |= VfioIrqInfoFlag.VFIO_IRQ_INFO_NORESIZE
        return flags

    def active(self, index: int) -> bool:
        """Whether the client wired at least one eventfd of ``index``."""
        return self._indexes[index].active

    @property
    def mode(self) -> int | None:
        """The index the client wired (MSI-X, MSI or INTx), None when none is."""
        for index in (MSIX, MSI, INTX):
            if self._indexes[index].active:
                return index
        return None

    # -- the device side ----------------------------------------------------------------

    def _signal(self, fd: int) -> None:
        try:
            os.write(fd, _EVENTFD_ONE)  # non-blocking (set_irqs made it so)
            self.signals += 1
        except BlockingIOError:
            # The count is at its maximum, so the eventfd is readable already: the
            # client has an interrupt pending and loses nothing but the tally.
            self.dropped += 1
            if self.dropped & (self.dropped - 1) == 0:  # 1, 2, 4, ...: a bounded log
                log.info("interrupt eventfd %d is full: %d signal(s) dropped", fd, self.dropped)
        except OSError as err:
            log.warning("interrupt eventfd %d not signalled: %s", fd, err)

    def notify(self, index: int, vector: int = 0) -> bool:
        """Signal an edge interrupt (MSI, MSI-X); False when that vector is not wired."""
        with self._lock:
            entry = self._indexes[index]
            if not 0 <= vector < entry.count:
                raise ValueError(f"vector {vector} is outside the {entry.count} of index {index}")
            fd = entry.triggers[vector]
            if fd < 0:
                return False
            self._signal(fd)
            return True

    def set_intx(self, level: bool) -> None:
        """Assert or deassert INTx; an unmasked assertion signals the eventfd and masks."""
        with self._lock:
            self.intx_level = level
            self._deliver_intx()

    def _deliver_intx(self) -> None:
        fd = self._indexes[INTX].triggers[0] if self._indexes[INTX].count else -1
        if self.intx_level and not self.intx_masked and fd >= 0:
            self.intx_masked = True
            self._signal(fd)

    def unmask_intx(self) -> None:
        with self._lock:
            self.intx_masked = False
            self._deliver_intx()

    # -- the client side: VFIO_USER_DEVICE_SET_IRQS --------------------------------------

    def set_irqs(
        self, flags: int, index: int, start: int, count: int, data: bytes, fds: Sequence[int]
    ) -> list[int]:
        """Apply one SET_IRQS; the fds it keeps are its own (the rest the caller closes).

        VfioUserError(EINVAL) for anything vfio-pci would refuse.
        """
        with self._lock:
            data_type = int(flags & VfioIrqSetFlag.VFIO_IRQ_SET_DATA_TYPE_MASK)
            action = int(flags & VfioIrqSetFlag.VFIO_IRQ_SET_ACTION_TYPE_MASK)
            # int(): the complement of an IntFlag stays inside its members, hiding unknown bits.
            known = int(
                VfioIrqSetFlag.VFIO_IRQ_SET_DATA_TYPE_MASK
                | VfioIrqSetFlag.VFIO_IRQ_SET_ACTION_TYPE_MASK
            )
            if flags & ~known:
                raise _fail(f"SET_IRQS flags {flags:#x} has unknown bits")
            if data_type.bit_count() != 1 or action.bit_count() != 1:
                raise _fail(f"SET_IRQS flags {flags:#x} need exactly one DATA_ and one ACTION_ bit")
            if index not in self._indexes:
                raise _fail(f"SET_IRQS index {index} does not exist")
            entry = self._indexes[index]
            none = data_type == VfioIrqSetFlag.VFIO_IRQ_SET_DATA_NONE
            eventfd = data_type == VfioIrqSetFlag.VFIO_IRQ_SET_DATA_EVENTFD
            trigger = action == VfioIrqSetFlag.VFIO_IRQ_SET_ACTION_TRIGGER
            if fds and not eventfd:
                raise _fail("SET_IRQS sent file descriptors without DATA_EVENTFD")
            if none and trigger and count == 0:
                if start != 0:
                    raise _fail("SET_IRQS disabling an index needs start 0")
                self._disable(index)
                return []
            if count == 0 or start + count > entry.count:
                raise _fail(
                    f"SET_IRQS vectors {start}..{start + count - 1} outside the {entry.count} "
                    f"of index {index}"
                )
            if eventfd:
                if fds and len(fds) != count:
                    raise _fail(f"SET_IRQS for {count} vectors came with {len(fds)} eventfds")
                for fd in fds:
                    _require_eventfd(fd)
                return self._wire(index, action, start, count, fds)
            chosen = list(range(start, start + count))
            if not none:  # DATA_BOOL: one byte per vector
                if len(data) < count:
                    raise _fail(f"SET_IRQS DATA_BOOL wants {count} bytes, got {len(data)}")
                chosen = [v for v, flag in zip(chosen, data[:count], strict=True) if flag]
            for vector in chosen:
                self._act(index, action, vector)
            return []

    def _disable(self, index: int) -> None:
        self._indexes[index].release()
        if index == INTX:
            self.intx_masked = False

    def _wire(
        self, index: int, action: int, start: int, count: int, fds: Sequence[int]
    ) -> list[int]:
        entry = self._indexes[index]
        if action == VfioIrqSetFlag.VFIO_IRQ_SET_ACTION_TRIGGER:
            if fds and index in (INTX, MSI, MSIX):
                for other in (INTX, MSI, MSIX):
                    if other != index:
                        self._disable(other)
            for i in range(count):
                old = entry.triggers[start + i]
                if old >= 0:
                    os.close(old)
                entry.triggers[start + i] = fds[i] if fds else -1
            if index == INTX and fds:
                self.intx_masked = False
                self._deliver_intx()
            return list(fds)
        if action == VfioIrqSetFlag.VFIO_IRQ_SET_ACTION_UNMASK and index == INTX:
            if entry.unmask_fd >= 0:
                os.close(entry.unmask_fd)
                entry.unmask_fd = -1
            if fds:
                entry.unmask_fd = fds[0]
            return list(fds)
        raise _fail(f"SET_IRQS action {action:#x} with eventfds is not supported on index {index}")

    def _act(self, index: int, action: int, vector: int) -> None:
        if action == VfioIrqSetFlag.VFIO_IRQ_SET_ACTION_TRIGGER:
            entry = self._indexes[index]
            if index == INTX:
                if entry.triggers[0] >= 0 and not self.intx_masked:
                    self.intx_masked = True
                    self._signal(entry.triggers[0])
            elif entry.triggers[vector] >= 0:
                self._signal(entry.triggers[vector])
        elif index != INTX:
            raise _fail(f"index {index} cannot be masked or unmasked (only INTx is maskable)")
        elif action == VfioIrqSetFlag.VFIO_IRQ_SET_ACTION_MASK:
            self.intx_masked = True
        else:
            self.unmask_intx()

    # -- the server loop ----------------------------------------------------------------

    def watched_fds(self) -> list[int]:
        """Eventfds the server should poll: the INTx unmask eventfd, when wired."""
        fd = self._indexes[INTX].unmask_fd
        return [fd] if fd >= 0 else []

    def fd_ready(self, fd: int) -> None:
        if fd == self._indexes[INTX].unmask_fd:
            try:
                os.read(fd, 8)
            except BlockingIOError:
                return
            self.unmask_intx()

    def release_all(self) -> None:
        """Close every eventfd (the client went away); the device's state stays."""
        with self._lock:
            for index in self._indexes:
                self._disable(index)


class DmaAccess:
    """What the server lends a device for DMA while a client is connected."""

    def read(self, addr: int, count: int) -> bytes:  # pragma: no cover - interface
        raise NotImplementedError

    def write(self, addr: int, data: bytes) -> None:  # pragma: no cover - interface
        raise NotImplementedError


class _NoClient(DmaAccess):
    def read(self, addr: int, count: int) -> bytes:
        raise VfioUserError(
            "no vfio-user client is connected: no memory to DMA to", errno=errno.EFAULT
        )

    def write(self, addr: int, data: bytes) -> None:
        raise VfioUserError(
            "no vfio-user client is connected: no memory to DMA to", errno=errno.EFAULT
        )


class PciDevice:
    """Base of a PCI device served over vfio-user (see the module's docstring).

    Declarations (``add_bar``, ``add_msi``, ...) are allowed until the configuration
    space is first used; then it is built and frozen.
    """

    def __init__(
        self,
        *,
        vendor_id: int,
        device_id: int,
        class_code: int = 0xFF0000,
        revision: int = 0,
        subsystem_vendor_id: int = 0,
        subsystem_id: int = 0,
        interrupt_pin: int = 1,
        name: str = "",
    ) -> None:
        self.name = name or type(self).__name__
        self._builder: ConfigSpaceBuilder | None = ConfigSpaceBuilder(
            vendor_id,
            device_id,
            class_code=class_code,
            revision=revision,
            subsystem_vendor_id=subsystem_vendor_id,
            subsystem_id=subsystem_id,
            interrupt_pin=interrupt_pin,
        )
        self._config: EmulatedConfig | None = None
        self.regions: dict[int, Region] = {}
        self._interrupts: Interrupts | None = None
        self.dma: DmaAccess = _NoClient()
        self._deferred: list[Callable[[], None]] = []
        self.supports_reset = True

    # -- declarations -------------------------------------------------------------------

    def _require_builder(self) -> ConfigSpaceBuilder:
        if self._builder is None:
            raise RuntimeError(f"{self.name}: declarations come before the device is served")
        return self._builder

    def add_bar(
        self,
        index: int,
        size: int,
        *,
        read: ReadCallback | None = None,
        write: WriteCallback | None = None,
        mmap_areas: Sequence[MmapArea] = (),
        kind: BarKind = BarKind.MEM32,
        prefetchable: bool = False,
    ) -> Region:
        """Declare BAR ``index`` of ``size`` bytes (a power of two) and its region."""
        builder = self._require_builder()
        builder.add_bar(BarSpec(index, size, kind, prefetchable))
        region = Region(
            index,
            size,
            read=read,
            write=write,
            mmap_areas=mmap_areas,
            name=f"{self.name} BAR{index}",
        )
        self.regions[index] = region
        return region

    def add_pm(self, **options: bool) -> int:
        return self._require_builder().add_pm(**options)

    def add_msi(
        self, vectors: int = 1, *, is_64bit: bool = True, per_vector_masking: bool = False
    ) -> int:
        return self._require_builder().add_msi(
            vectors, is_64bit=is_64bit, per_vector_masking=per_vector_masking
        )

    def add_msix(
        self,
        vectors: int,
        *,
        table_bar: int,
        table_offset: int = 0,
        pba_bar: int | None = None,
        pba_offset: int | None = None,
    ) -> int:
        """MSI-X; its table and PBA are kept in the BARs' memory, not the callbacks."""
        offset = self._require_builder().add_msix(
            vectors,
            table_bar=table_bar,
            table_offset=table_offset,
            pba_bar=pba_bar,
            pba_offset=pba_offset,
        )
        return offset

    def add_express(self, *, max_payload: int = 128, flr: bool = False) -> int:
        return self._require_builder().add_express(max_payload=max_payload, flr=flr)

    # -- built state --------------------------------------------------------------------

    @property
    def config(self) -> EmulatedConfig:
        """The emulated configuration space (built, and declarations closed, on first use)."""
        if self._config is None:
            self._config = self._require_builder().build()
            self._builder = None
            msix = self._config.msix
            if msix is not None:
                self.regions[msix.table_bar].add_memory_range(msix.table_offset, msix.table_size)
                self.regions[msix.pba_bar].add_memory_range(msix.pba_offset, msix.pba_size)
            self.regions[VfioPciRegionIndex.VFIO_PCI_CONFIG_REGION_INDEX] = Region(
                VfioPciRegionIndex.VFIO_PCI_CONFIG_REGION_INDEX,
                self._config.size,
                read=self._config_read,
                write=self._config_write,
                name=f"{self.name} config",
            )
        return self._config

    @property
    def interrupts(self) -> Interrupts:
        if self._interrupts is None:
            config = self.config
            counts: dict[int, int] = {
                INTX: 1 if config.interrupt_pin else 0,
                MSI: config.msi.vectors if config.msi else 0,
                MSIX: config.msix.vectors if config.msix else 0,
            }
            self._interrupts = Interrupts(counts)
        return self._interrupts

    @property
    def num_regions(self) -> int:
        self.config  # noqa: B018 - builds the config region
        return max(VFIO_PCI_NUM_REGIONS, max(self.regions) + 1)

    @property
    def num_irqs(self) -> int:
        return VFIO_PCI_NUM_IRQS

    def _config_read(self, offset: int, size: int) -> bytes:
        return self.config.read(offset, size)

    def _config_write(self, offset: int, data: bytes) -> None:
        self.config.write(offset, data)
        self.config_written(offset, data)

    def config_written(self, offset: int, data: bytes) -> None:
        """Hook: the client wrote config space (after the write mask was applied)."""

    # -- what device code calls ---------------------------------------------------------

    def raise_irq(self, vector: int = 0) -> None:
        """Interrupt the client the way it asked: MSI-X, MSI, else assert INTx."""
        interrupts = self.interrupts
        mode = interrupts.mode
        if mode in (MSIX, MSI):
            interrupts.notify(mode, vector)
        elif not self.config.intx_disabled:
            interrupts.set_intx(True)

    def lower_intx(self) -> None:
        """Deassert INTx (a no-op for MSI)."""
        self.interrupts.set_intx(False)

    def dma_read(self, addr: int, count: int) -> bytes:
        """``count`` bytes of client memory at DMA address ``addr``.

        Through the client's shared memory when it gave an fd for that range, else by
        ``VFIO_USER_DMA_READ`` messages.  VfioUserError(EFAULT) for an address the
        client did not map, VfioUserRemoteError when the client refuses,
        VfioUserError(EPERM) while the client has Bus Master Enable off (a PCI function
        may not master the bus then; QEMU would refuse it too).
        """
        self._check_bus_master("read", addr)
        return self.dma.read(addr, count)

    def dma_write(self, addr: int, data: bytes) -> None:
        """Write ``data`` to client memory at DMA address ``addr`` (see `dma_read`)."""
        self._check_bus_master("write", addr)
        self.dma.write(addr, data)

    def _check_bus_master(self, what: str, addr: int) -> None:
        if not self.config.bus_master:
            raise VfioUserError(
                f"{self.name}: DMA {what} at {addr:#x} with Bus Master Enable off in the "
                "command register; the driver must set it (Device.enable_bus_master())",
                errno=errno.EPERM,
            )

    def defer(self, work: Callable[[], None]) -> None:
        """Run ``work`` after the reply to the current message is sent (like a timer
        firing at once): what QEMU devices do from a timer or bottom half."""
        self._deferred.append(work)

    def run_deferred(self) -> None:
        while self._deferred:
            work = self._deferred.pop(0)
            work()

    # -- what the server calls ----------------------------------------------------------

    def reset(self) -> None:
        """Device reset (VFIO_USER_DEVICE_RESET): the config space goes back as built.
        Subclasses reset their own state and call this."""
        self.config.reset()
        self.interrupts.set_intx(False)
        self._deferred.clear()

    def client_connected(self) -> None:
        """Hook: a client finished version negotiation."""

    def client_disconnected(self) -> None:
        """Hook: the client went away (its DMA mappings and eventfds are already gone)."""

    def close(self) -> None:
        """Release shared memory (memfds); idempotent."""
        for region in self.regions.values():
            region.close()
        if self._interrupts is not None:
            self._interrupts.release_all()
