"""Value objects the VFIO ioctls return: frozen, typed, readable."""

from __future__ import annotations

from dataclasses import dataclass, field

from pyvfio._uapi.vfio import VfioDeviceFlag, VfioIrqInfoFlag, VfioRegionInfoFlag


@dataclass(frozen=True)
class InfoCapability:
    """One entry of an INFO ioctl's capability chain, undecoded."""

    id: int
    version: int
    offset: int
    data: bytes = field(repr=False)

    def __str__(self) -> str:
        return f"cap {self.id} v{self.version} @{self.offset:#x} ({len(self.data)} bytes)"


@dataclass(frozen=True)
class DeviceInfo:
    """``VFIO_DEVICE_GET_INFO``."""

    flags: VfioDeviceFlag
    num_regions: int
    num_irqs: int
    capabilities: tuple[InfoCapability, ...] = ()

    @property
    def reset_works(self) -> bool:
        return bool(self.flags & VfioDeviceFlag.VFIO_DEVICE_FLAGS_RESET)

    def __str__(self) -> str:
        return (
            f"device: {self.num_regions} regions, {self.num_irqs} irq indexes, "
            f"reset {'yes' if self.reset_works else 'no'}"
        )


@dataclass(frozen=True)
class SparseArea:
    """A part of a region that may be mmap'd (``vfio_region_sparse_mmap_area``)."""

    offset: int
    size: int

    def __str__(self) -> str:
        return f"[{self.offset:#x}, +{self.size:#x})"


@dataclass(frozen=True)
class RegionInfo:
    """``VFIO_DEVICE_GET_REGION_INFO``, with the capability chain decoded.

    ``sparse_areas`` is None when the whole region may be mapped (no sparse-mmap
    capability); an empty tuple when nothing may be.
    """

    index: int
    flags: VfioRegionInfoFlag
    size: int
    offset: int
    sparse_areas: tuple[SparseArea, ...] | None = None
    #: (type, subtype) from VFIO_REGION_INFO_CAP_TYPE, for device-specific regions.
    type: tuple[int, int] | None = None
    #: VFIO_REGION_INFO_CAP_MSIX_MAPPABLE: the MSI-X table may be mmap'd.
    msix_mappable: bool = False
    capabilities: tuple[InfoCapability, ...] = ()
    #: Why a region the device offered to share is not mapped here (a vfio-user
    #: server's fd that is not safe to map); the MMAP flag is cleared then.
    no_mmap_reason: str = ""

    @property
    def readable(self) -> bool:
        return bool(self.flags & VfioRegionInfoFlag.VFIO_REGION_INFO_FLAG_READ)

    @property
    def writable(self) -> bool:
        return bool(self.flags & VfioRegionInfoFlag.VFIO_REGION_INFO_FLAG_WRITE)

    @property
    def mmap_allowed(self) -> bool:
        return bool(self.flags & VfioRegionInfoFlag.VFIO_REGION_INFO_FLAG_MMAP)

    def mmap_areas(self) -> tuple[SparseArea, ...]:
        """The parts that may be mmap'd: the sparse areas, or all of it, or none."""
        if not self.mmap_allowed or self.size == 0:
            return ()
        if self.sparse_areas is None:
            return (SparseArea(0, self.size),)
        return self.sparse_areas

    def __str__(self) -> str:
        rw = ("r" if self.readable else "-") + ("w" if self.writable else "-")
        mm = "mmap" if self.mmap_allowed else "no-mmap"
        sparse = (
            "" if self.sparse_areas is None else f" sparse {' '.join(map(str, self.sparse_areas))}"
        )
        return f"region {self.index}: {self.size:#x} bytes {rw} {mm}{sparse}"


@dataclass(frozen=True)
class IrqInfo:
    """``VFIO_DEVICE_GET_IRQ_INFO``."""

    index: int
    flags: VfioIrqInfoFlag
    count: int

    @property
    def eventfd(self) -> bool:
        return bool(self.flags & VfioIrqInfoFlag.VFIO_IRQ_INFO_EVENTFD)

    @property
    def automasked(self) -> bool:
        return bool(self.flags & VfioIrqInfoFlag.VFIO_IRQ_INFO_AUTOMASKED)

    def __str__(self) -> str:
        return f"irq index {self.index}: {self.count} vector(s) flags {self.flags!s}"


@dataclass(frozen=True)
class IovaRange:
    """A usable IOVA range, both ends inclusive (as the kernel reports them)."""

    start: int
    last: int

    @property
    def size(self) -> int:
        return self.last - self.start + 1

    def __str__(self) -> str:
        return f"[{self.start:#x}, {self.last:#x}]"


@dataclass(frozen=True)
class IommuInfo:
    """``VFIO_IOMMU_GET_INFO`` (type1) or the IOAS's ranges (iommufd)."""

    page_sizes: int
    iova_ranges: tuple[IovaRange, ...]
    #: Mappings still available before the kernel's dma_entry_limit (None: unknown).
    dma_avail: int | None = None

    @property
    def min_page_size(self) -> int:
        return self.page_sizes & -self.page_sizes if self.page_sizes else 4096

    def __str__(self) -> str:
        ranges = ", ".join(map(str, self.iova_ranges))
        avail = "" if self.dma_avail is None else f", {self.dma_avail} mappings available"
        return f"iommu: page sizes {self.page_sizes:#x}, iova {ranges}{avail}"


@dataclass(frozen=True)
class DependentDevice:
    """One device a hot reset would also reset (``vfio_pci_dependent_device``).

    A device opened through a type1 group reports each dependent's IOMMU
    ``group_id``; one opened through its cdev (iommufd) reports the dependent's
    iommufd ``devid`` instead (``VFIO_PCI_HOT_RESET_FLAG_DEV_ID``), and ``owned`` says
    whether this iommufd holds every one of them (``..._DEV_ID_OWNED``).
    """

    segment: int
    bus: int
    devfn: int
    group_id: int | None = None
    devid: int | None = None
    owned: bool = False

    @property
    def address(self) -> str:
        return f"{self.segment:04x}:{self.bus:02x}:{self.devfn >> 3:02x}.{self.devfn & 7:x}"

    def __str__(self) -> str:
        which = f"group {self.group_id}" if self.group_id is not None else f"devid {self.devid}"
        return f"{self.address} ({which})"
