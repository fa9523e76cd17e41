"""A PCI device opened through VFIO: config space, regions, interrupts, DMA, reset.

A `Device` is made by `pyvfio.Iommu.open` (or `pyvfio.open`), which hands it the
device's transport and two hooks of the Iommu's: what to call once it is closed, and
the group fds a bus reset names. It calls nothing else of the Iommu but its public
methods, and imports nothing of it: its regions and interrupts, in turn, see it only
through the small owner protocols of `pyvfio.region` and `pyvfio.interrupt`.
"""

from __future__ import annotations

import contextlib
import errno as E
import uuid
import weakref
from collections.abc import Callable, Iterable, Mapping
from functools import cached_property
from typing import TYPE_CHECKING

from pyvfio._transport import DeviceTransport, KernelTransport
from pyvfio._uapi import vfio as v
from pyvfio._uapi.pci_regs import PCI_COMMAND, PCI_COMMAND_MASTER, PCI_COMMAND_MEMORY
from pyvfio._uapi.pci_regs import PCI_COMMAND_INTX_DISABLE as PCI_COMMAND_INTX_DISABLE
from pyvfio.errors import (
    ClosedError,
    DeviceRemovedError,
    PyvfioError,
    UnsupportedError,
    VfioError,
)
from pyvfio.info import DependentDevice, DeviceInfo, IrqInfo, RegionInfo
from pyvfio.interrupt import IRQ_KINDS, Interrupt, check_kind
from pyvfio.pci.config import CONFIG_SPACE_SIZE, ConfigSpace, parse_config
from pyvfio.region import Region
from pyvfio.viability import bus_reset_blocker

if TYPE_CHECKING:
    from pyvfio.dma import DmaBuffer
    from pyvfio.iommu import Iommu

_SET = v.VfioIrqSetFlag
_TRIGGER_EVENTFD = _SET.VFIO_IRQ_SET_DATA_EVENTFD | _SET.VFIO_IRQ_SET_ACTION_TRIGGER
_DISABLE = _SET.VFIO_IRQ_SET_DATA_NONE | _SET.VFIO_IRQ_SET_ACTION_TRIGGER
_UNMASK = _SET.VFIO_IRQ_SET_DATA_NONE | _SET.VFIO_IRQ_SET_ACTION_UNMASK


def parse_vf_token(token: str | uuid.UUID) -> str:
    """A VF token as vfio-pci's ``uuid_parse`` takes it (the 36-character form);
    ValueError saying what a token looks like otherwise."""
    try:
        return str(token if isinstance(token, uuid.UUID) else uuid.UUID(token))
    except (ValueError, TypeError, AttributeError):
        raise ValueError(
            f"VF token {token!r} is not a UUID: give one like "
            "bd8d9d2b-5a5f-4f5a-a211-f591514ba1f3 (uuidgen makes one)"
        ) from None


def _close_transport(transport: DeviceTransport) -> None:
    with contextlib.suppress(OSError):
        transport.close()


def _no_group_fds() -> Mapping[int, int]:
    return {}


class RemovalRequest(Interrupt):
    """vfio-pci's request interrupt (``VFIO_PCI_REQ_IRQ_INDEX``): the host wants the
    device back. Seeing it fire (wait, poll, wait_async) marks the device's
    ``removal_requested``, whoever consumed the eventfd's count."""

    __slots__ = ()
    _device: Device  # this module's own: it marks the device's request itself

    def poll(self) -> int:
        count = super().poll()
        if count:
            self._device._removal_requested = True
        return count

    def wait(self, timeout: float | None = None) -> int:
        count = super().wait(timeout)
        self._device._removal_requested = True
        return count

    async def wait_async(self, timeout: float | None = None) -> int:
        count = await super().wait_async(timeout)
        self._device._removal_requested = True
        return count


class Config:
    """The device's configuration space (vfio-pci's config region), typed.

    ``read8``/``read16``/``read32``, ``write8``/``write16``/``write32`` and the
    32-bit block operations are the config `Region`'s own methods (bound here, not
    wrapped: a config access is one Python frame, a ``pread`` or ``pwrite`` on the
    device fd at the region's offset), with the Region's checks and errors.
    """

    __slots__ = (
        "_region",
        "read8",
        "read16",
        "read32",
        "read_block32",
        "write8",
        "write16",
        "write32",
        "write_block32",
    )

    read8: Callable[[int], int]
    read16: Callable[[int], int]
    read32: Callable[[int], int]
    write8: Callable[[int, int], None]
    write16: Callable[[int, int], None]
    write32: Callable[[int, int], None]
    read_block32: Callable[[int, int], list[int]]
    write_block32: Callable[[int, Iterable[int]], None]

    def __init__(self, region: Region) -> None:
        self._region = region
        self.read8, self.read16, self.read32 = region.read8, region.read16, region.read32
        self.write8, self.write16 = region.write8, region.write16
        self.write32 = region.write32
        self.read_block32, self.write_block32 = region.read_block32, region.write_block32

    @property
    def size(self) -> int:
        return self._region.size

    def read(self, offset: int = 0, length: int | None = None) -> bytes:
        return self._region.read(offset, self.size - offset if length is None else length)

    def parse(self) -> ConfigSpace:
        """The whole configuration space, parsed (header, capabilities, problems)."""
        return parse_config(self.read(0, min(self.size, 4096)))

    @property
    def capabilities(self) -> ConfigSpace:
        """Standard and extended capabilities, parsed fresh from the device.

        The result's ``.capabilities`` and ``.extended_capabilities`` list them;
        ``.find(CapId.MSI)`` looks one up; ``.problems`` reports a malformed chain.
        """
        return self.parse()


#: VFIO_DEVICE_GET_PCI_HOT_RESET_INFO's answers when no bus reset is possible:
#: ENODEV when neither pci_probe_reset_slot() nor pci_probe_reset_bus() succeeds (a
#: device on a root bus; a bridge or device quirked PCI_DEV_FLAGS_NO_BUS_RESET);
#: ENOTTY and EINVAL from vfio drivers without the ioctl.
_NO_BUS_RESET = (E.ENODEV, E.EINVAL, E.ENOTTY)


class Device:
    """A device opened through VFIO; close it, or use it as a context manager.

    ``pyvfio.open(BDF)`` gives a device with an IOMMU address space of its own;
    ``Iommu.open(BDF)`` one that shares the Iommu with other devices.
    ``pyvfio.open("vfio-user:PATH")`` is a device served over a vfio-user socket:
    the same API, no group (``group`` is None) and no kernel VFIO underneath.
    """

    def __init__(
        self,
        iommu: Iommu,
        bdf: str,
        fd: int | DeviceTransport,
        group: int | None,
        *,
        owns_iommu: bool = False,
        on_close: Callable[[Device], None] | None = None,
        group_fds: Callable[[], Mapping[int, int]] = _no_group_fds,
        numa_node: int | None = None,
    ) -> None:
        """``on_close(device)`` once the device is closed (the Iommu lets go of it);
        ``group_fds()``: the Iommu's open group fds by number, for ``hot_reset``;
        ``numa_node``: the device's NUMA node (sysfs ``numa_node``), None for none."""
        self.bdf = bdf
        #: The NUMA node the device is attached to, or None (no NUMA, or vfio-user):
        #: ``dma_alloc(size, numa_node=dev.numa_node)`` puts a buffer next to it.
        self.numa_node = numa_node
        self.iommu = iommu
        self.group = group
        transport = KernelTransport(fd, bdf) if isinstance(fd, int) else fd
        self._transport: DeviceTransport = transport
        self._fd = transport.fileno()
        self._owns_iommu = owns_iommu
        self._on_close = on_close
        self._group_fds = group_fds
        self._regions: dict[int, Region] = {}
        self._irqs: dict[str, list[Interrupt]] = {}
        self._removal_requested = False
        self._removed = False  # closed after the host asked for the device back
        self._finalizer = weakref.finalize(self, _close_transport, transport)
        try:
            self.info: DeviceInfo = transport.device_info()
        except BaseException:
            self._finalizer()
            raise

    def __repr__(self) -> str:
        state = "closed" if self._fd < 0 else f"fd {self._fd}"
        where = f"group {self.group}" if self.group is not None else "vfio-user"
        return f"<Device {self.bdf} {where} via {self.iommu.backend} ({state})>"

    def fileno(self) -> int:
        """The device fd (kernel VFIO) or the socket (vfio-user)."""
        return self._require_fd()

    def _require_fd(self) -> int:
        if self._fd < 0:
            if self._removed:
                raise DeviceRemovedError(
                    f"device {self.bdf} was closed for its removal from the host and is "
                    "gone: bring it back (echo 1 > /sys/bus/pci/rescan, or plug it in), "
                    f"bind it (pyvfio bind {self.bdf}) and open it again",
                    device=self.bdf,
                )
            raise ClosedError(f"device {self.bdf} is closed", device=self.bdf)
        return self._fd

    def _require_transport(self) -> DeviceTransport:
        self._require_fd()  # ClosedError, or DeviceRemovedError after a removal
        return self._transport

    @property
    def closed(self) -> bool:
        return self._fd < 0

    # -- regions ------------------------------------------------------------------------

    def region_info(self, index: int) -> RegionInfo:
        if not isinstance(index, int) or not 0 <= index < self.info.num_regions:
            raise ValueError(f"{self.bdf} has regions 0-{self.info.num_regions - 1}, not {index!r}")
        return self._require_transport().region_info(index)

    def region(self, index: int) -> Region:
        """Region ``index`` (0-5 BARs, 6 ROM, 7 config, 8 VGA, then device specific)."""
        self._require_fd()
        if index not in self._regions:
            info = self.region_info(index)  # checks the index first
            names = {6: "ROM", 7: "config", 8: "VGA"}
            name = f"BAR{index}" if index < 6 else names.get(index, f"region {index}")
            self._regions[index] = Region(self, info, name)
        return self._regions[index]

    def bar(self, index: int) -> Region:
        """BAR ``index`` (0-5); UnsupportedError for a BAR the device does not implement."""
        if not isinstance(index, int) or not 0 <= index <= 5:
            raise ValueError(f"BAR index must be 0-5, not {index!r}")
        region = self.region(index)
        if region.size == 0:
            raise UnsupportedError(f"{self.bdf} has no BAR{index}", device=self.bdf)
        return region

    @cached_property
    def config(self) -> Config:
        return Config(self.region(v.VfioPciRegionIndex.VFIO_PCI_CONFIG_REGION_INDEX))

    def enable_bus_master(self) -> None:
        """Set Bus Master Enable (and Memory Space) so the device may DMA."""
        cmd = self.config.read16(PCI_COMMAND)
        self.config.write16(PCI_COMMAND, cmd | PCI_COMMAND_MASTER | PCI_COMMAND_MEMORY)

    def disable_bus_master(self) -> None:
        cmd = self.config.read16(PCI_COMMAND)
        self.config.write16(PCI_COMMAND, cmd & ~PCI_COMMAND_MASTER & 0xFFFF)

    # -- DMA ------------------------------------------------------------------------------

    def dma_alloc(
        self,
        size: int,
        max_iova: int | None = None,
        *,
        hugepages: bool = False,
        numa_node: int | None = None,
    ) -> DmaBuffer:
        """Zeroed memory this device (and its Iommu's others) may DMA to, below max_iova,
        on NUMA node ``numa_node`` if given (``numa_node=dev.numa_node``: the device's)."""
        self._require_fd()
        return self.iommu.dma_alloc(size, max_iova, hugepages=hugepages, numa_node=numa_node)

    # -- interrupts -----------------------------------------------------------------------

    def irq_info(self, kind: str) -> IrqInfo:
        index = check_kind(kind)
        return self._require_transport().irq_info(index)

    def enable_irqs(self, kind: str, count: int = 1) -> list[Interrupt]:
        """Wire ``count`` vectors of ``kind`` ("intx", "msi", "msix") to eventfds."""
        transport = self._require_transport()
        info = self.irq_info(kind)
        if not isinstance(count, int) or count < 1:
            raise ValueError(f"count must be a positive int, not {count!r}")
        if count > info.count:
            raise UnsupportedError(
                f"{self.bdf} offers {info.count} {kind} vector(s), not {count}",
                errno=E.EINVAL,
                device=self.bdf,
            )
        if kind in self._irqs:
            self.disable_irqs(kind)
        make = RemovalRequest if kind == "req" else Interrupt
        irqs = [make(self, kind, i) for i in range(count)]
        try:
            transport.set_irqs(info.index, 0, _TRIGGER_EVENTFD, [irq.fileno() for irq in irqs])
        except BaseException:
            for irq in irqs:
                irq.close()
            raise
        self._irqs[kind] = irqs
        return irqs

    def disable_irqs(self, kind: str) -> None:
        """Turn ``kind`` off and close its eventfds (a no-op when it is not enabled)."""
        index = check_kind(kind)
        irqs = self._irqs.pop(kind, None)
        if irqs is None:
            return
        try:
            if self._fd >= 0:
                self._transport.set_irqs(index, 0, _DISABLE, count=0)
        finally:
            for irq in irqs:
                irq.close()

    def _unmask_irq(self, irq: Interrupt) -> None:
        self._require_transport().set_irqs(irq.index, irq.vector, _UNMASK, count=1)

    def watch_removal(self) -> Interrupt:
        """The request interrupt, enabled: it fires when the host wants the device back.

        vfio-pci holds a removal (``echo 1 > /sys/bus/pci/devices/BDF/remove``, a
        hot-unplug, an unbind from vfio-pci) until every user has closed the device,
        and fires this interrupt meanwhile (again every 10 s while it waits). The
        device keeps working until ``close()``, so a driver can quiesce it first
        (stop DMA, flush); ``close()`` lets the removal finish, and any later use
        raises ``DeviceRemovedError``. Without this the removal just waits.
        """
        irqs = self._irqs.get("req")
        return irqs[0] if irqs else self.enable_irqs("req")[0]

    @property
    def removal_requested(self) -> bool:
        """Whether the host asked for the device back (known once ``watch_removal()``
        is on: False until then)."""
        irqs = self._irqs.get("req")
        if not self._removal_requested and irqs and self._fd >= 0:
            irqs[0].poll()  # a RemovalRequest: a count marks the request
        return self._removal_requested

    @property
    def enabled_irqs(self) -> dict[str, list[Interrupt]]:
        return {kind: list(irqs) for kind, irqs in self._irqs.items()}

    # -- SR-IOV ---------------------------------------------------------------------------

    def set_vf_token(self, token: str | uuid.UUID) -> None:
        """Set the VF token of this SR-IOV PF (on vfio-pci): its VFs then open only with
        it, ``pyvfio.open(vf, vf_token=token)`` (vfio-pci's trust between the PF's user
        and the VFs' users). The kernel never shows a token back. UnsupportedError for a
        device that is not an SR-IOV PF or not on vfio-pci (a vfio-user device)."""
        text = parse_vf_token(token)
        transport = self._require_transport()
        if not isinstance(transport, KernelTransport):
            raise UnsupportedError(
                f"{self.bdf} takes no VF token: only an SR-IOV PF on vfio-pci does",
                device=self.bdf,
            )
        transport.set_vf_token(uuid.UUID(text).bytes)

    # -- reset ----------------------------------------------------------------------------

    def reset(self) -> None:
        """Function-level reset (FLR, PM or another method the kernel found)."""
        transport = self._require_transport()
        if not self.info.reset_works:
            why = self._bus_reset_blocker()
            other = (
                "try hot_reset() for a bus reset"
                if why is None
                else f"nor a bus reset (hot_reset()): {why}"
            )
            raise UnsupportedError(
                f"{self.bdf} has no function reset the kernel can use (no FLR, PM reset or "
                f"device-specific method); {other}",
                device=self.bdf,
            )
        transport.reset()

    def _bus_reset_blocker(self) -> str | None:
        """Why hot_reset() cannot work for this device (None: nothing known against it):
        the kernel's own probe first (VFIO_DEVICE_GET_PCI_HOT_RESET_INFO), then the
        port's link (`pyvfio.viability.bus_reset_blocker`)."""
        try:
            self._require_transport().hot_reset_info()
        except VfioError as err:
            if err.errno not in _NO_BUS_RESET:
                raise
            return self._no_bus_reset(err)
        return self._host_bus_reset_blocker(root_bus=False)

    def _no_bus_reset(self, err: VfioError) -> str:
        """Why the kernel's probe found no bus reset, as far as sysfs tells."""
        if not isinstance(self._transport, KernelTransport):
            return str(err)  # the transport's own reason (vfio-user has no PCI bus)
        return self._host_bus_reset_blocker(root_bus=True) or (
            "the kernel finds neither a slot nor a bus reset for it (no bridge above it, "
            "or a bridge or device the kernel must not reset)"
        )

    def _host_bus_reset_blocker(self, *, root_bus: bool) -> str | None:
        """`bus_reset_blocker` for a device of this host's kernel (None for one served
        over vfio-user, or where sysfs does not show it); ``root_bus``: also the rule
        the kernel's probe applies itself (asked only once the probe has failed)."""
        if not isinstance(self._transport, KernelTransport):
            return None
        try:
            return bus_reset_blocker(self.bdf, self.iommu.sysfs, after_probe=not root_bus)
        except (PyvfioError, OSError):
            return None

    def hot_reset_dependents(self) -> tuple[DependentDevice, ...]:
        """Every device a bus (hot) reset of this one would also reset."""
        try:
            return self._require_transport().hot_reset_info()
        except VfioError as err:
            if err.errno not in _NO_BUS_RESET:
                raise
            raise UnsupportedError(
                f"{self.bdf} cannot be bus-reset: {self._no_bus_reset(err)}",
                errno=err.errno,
                ioctl=err.ioctl,
                device=self.bdf,
            ) from err

    def hot_reset(self) -> None:
        """Secondary bus reset, when this Iommu holds every device it would reset.

        type1: the group fd of each affected device goes with the ioctl. iommufd:
        the kernel checks ownership through the iommufd itself, so no fds go with
        it (an empty array), and it refuses unless the devices are all bound to it.
        """
        transport = self._require_transport()
        dependents = self.hot_reset_dependents()
        if all(d.group_id is None for d in dependents):  # iommufd: ids, not groups
            if not all(d.owned for d in dependents):
                raise UnsupportedError(
                    f"a bus reset of {self.bdf} also resets "
                    f"{', '.join(d.address for d in dependents)}: open them all in the "
                    "same Iommu first",
                    device=self.bdf,
                )
            self._bus_reset(transport, [])
            return
        groups = self._group_fds()
        missing = [d for d in dependents if d.group_id not in groups]
        if missing:
            raise UnsupportedError(
                f"a bus reset of {self.bdf} also resets {', '.join(map(str, missing))}: open "
                "them in the same Iommu first",
                device=self.bdf,
            )
        fds = [groups[d.group_id] for d in dependents if d.group_id is not None]
        self._bus_reset(transport, fds)

    def _bus_reset(self, transport: DeviceTransport, group_fds: list[int]) -> None:
        """VFIO_DEVICE_PCI_HOT_RESET, its errnos said as the kernel's reasons."""
        try:
            transport.hot_reset(group_fds)
        except VfioError as err:
            if err.errno == E.ENOTTY:
                # pci_reset_bus() -> pci_bridge_wait_for_secondary_bus(): the bus was
                # reset, and the device behind it never answered again (the kernel
                # restores its config space regardless).
                why = self._host_bus_reset_blocker(root_bus=False) or (
                    "the device did not answer in time (dmesg says which: 'not ready' or "
                    "'Link Active not set')"
                )
                text = f"the kernel reset the bus of {self.bdf} but gave up on it after: {why}"
            elif err.errno == E.EINVAL:
                # vfio_pci_dev_set_hot_reset(): a device on the bus is outside the
                # caller's groups / iommufd, or not on vfio-pci at all.
                text = (
                    f"a bus reset of {self.bdf} also resets a device this Iommu does not "
                    "hold, or one on another driver than vfio-pci: bind every device "
                    "below the same bridge to vfio-pci and open it here"
                )
            elif err.errno == E.EBUSY:
                text = (
                    f"a device a bus reset of {self.bdf} resets is busy (its BARs locked "
                    "by another thread): try again"
                )
            else:
                raise
            raise UnsupportedError(text, errno=err.errno, ioctl=err.ioctl, device=self.bdf) from err

    # -- lifetime -------------------------------------------------------------------------

    def close(self) -> None:
        """IRQs off, regions unmapped, device fd closed (idempotent).

        A device with an Iommu of its own (``pyvfio.open``) closes that Iommu, which
        frees its DMA first, then closes this device, then the container.
        """
        if self._fd < 0:
            return
        if self._owns_iommu:
            self._owns_iommu = False
            try:
                self.iommu.close()  # comes back here for the device's own part
            finally:
                self.close()  # a no-op once the Iommu's close() has done it
            return
        removed = False
        try:
            removed = self.removal_requested
            for kind in list(self._irqs):
                with contextlib.suppress(VfioError):
                    self.disable_irqs(kind)
            for region in self._regions.values():
                with contextlib.suppress(OSError):
                    region._release()
        finally:
            self._fd, self._removed = -1, removed
            self._finalizer()
            if self._on_close is not None:
                self._on_close(self)

    def __enter__(self) -> Device:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["CONFIG_SPACE_SIZE", "IRQ_KINDS", "Config", "Device", "RemovalRequest"]
