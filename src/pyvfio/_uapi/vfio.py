"""ctypes mirror of ``<linux/vfio.h>`` (Linux 6.12, x86_64).

Kernel names are kept so a reader can look each one up in ``vfio.h``: structs are
``ctypes.Structure`` classes named as the C struct (``vfio_region_info``), ioctl numbers
and plain macros are module constants (``VFIO_DEVICE_GET_REGION_INFO``), and each
family of flag bits or ids is an ``IntFlag``/``IntEnum`` whose members are the kernel
macros (``VfioRegionInfoFlag.VFIO_REGION_INFO_FLAG_MMAP``).  A struct's docstring quotes
its C definition; the ``#define`` lines inside it live in the family named in the quote.

The sections follow the header: extensions, the container, group and device fds,
regions, interrupts, PCI hot reset, mediated-device display, device features and their
payloads, the iommufd-bound device cdev, and the type1 IOMMU.

Left out: the sPAPR TCE and EEH interfaces (POWER only), the vfio-ccw and vfio-ap index
enums (s390 only), and what the header marks deprecated and the kernel no longer
provides (v1 migration region, NVLink2 region capabilities).

``tests/unit/test_abi.py`` compiles every struct layout, ioctl number and value here
against the kernel's own headers.
"""

from __future__ import annotations

from ctypes import (
    POINTER,
    Array,
    Structure,
    _Pointer,
    c_int32,
    c_uint8,
    c_uint16,
    c_uint32,
    c_uint64,
)
from enum import IntEnum, IntFlag
from typing import Final

from pyvfio._uapi._base import _IO, KernelStruct, KernelUnion, collect_abi

VFIO_API_VERSION: Final = 0

VFIO_TYPE: Final = ord(";")
VFIO_BASE: Final = 100


class VfioExtension(IntEnum):
    """Extension ids for ``VFIO_CHECK_EXTENSION``; the IOMMU ones also go to ``VFIO_SET_IOMMU``."""

    VFIO_TYPE1_IOMMU = 1
    VFIO_SPAPR_TCE_IOMMU = 2
    VFIO_TYPE1v2_IOMMU = 3
    VFIO_DMA_CC_IOMMU = 4
    """IOMMU enforces DMA cache coherence; may change as groups come and go."""
    VFIO_EEH = 5
    VFIO_TYPE1_NESTING_IOMMU = 6
    VFIO_SPAPR_TCE_v2_IOMMU = 7
    VFIO_NOIOMMU_IOMMU = 8
    """No translation, no isolation, no ioctls but CHECK_EXTENSION; taints the kernel."""
    VFIO_UNMAP_ALL = 9
    """Supports ``VFIO_DMA_UNMAP_FLAG_ALL``."""
    VFIO_UPDATE_VADDR = 10
    """Supports ``VFIO_DMA_MAP_FLAG_VADDR``/``VFIO_DMA_UNMAP_FLAG_VADDR``."""


class vfio_info_cap_header(KernelStruct):
    """Header of each capability in an INFO ioctl's chain; ``next`` is an offset from the start
    of the INFO buffer, 0 ending the chain.

    ::

        struct vfio_info_cap_header {
                __u16   id;             /* Identifies capability */
                __u16   version;        /* Version specific to the capability ID */
                __u32   next;           /* Offset of next capability */
        };
    """

    _c_name_ = "struct vfio_info_cap_header"
    _fields_ = (
        ("id", c_uint16),
        ("version", c_uint16),
        ("next", c_uint32),
    )
    id: int
    version: int
    next: int


# ---- the container: /dev/vfio/vfio ----------------------------------------------------

VFIO_GET_API_VERSION: Final = _IO(VFIO_TYPE, VFIO_BASE + 0)
"""Returns ``VFIO_API_VERSION``."""
VFIO_CHECK_EXTENSION: Final = _IO(VFIO_TYPE, VFIO_BASE + 1)
"""Argument: a `VfioExtension` by value.  Returns 0 if unsupported, > 0 if supported."""
VFIO_SET_IOMMU: Final = _IO(VFIO_TYPE, VFIO_BASE + 2)
"""Argument: an IOMMU `VfioExtension` by value.  Needs a group set to the container first."""


# ---- groups: /dev/vfio/$GROUP ---------------------------------------------------------


class VfioGroupFlag(IntFlag):
    """``vfio_group_status.flags``."""

    VFIO_GROUP_FLAGS_VIABLE = 1 << 0
    VFIO_GROUP_FLAGS_CONTAINER_SET = 1 << 1


class vfio_group_status(KernelStruct):
    """``VFIO_GROUP_GET_STATUS``.

    ::

        struct vfio_group_status {
                __u32   argsz;
                __u32   flags;          /* VfioGroupFlag */
        };
    """

    _c_name_ = "struct vfio_group_status"
    _fields_ = (
        ("argsz", c_uint32),
        ("flags", c_uint32),
    )
    argsz: int
    flags: int


VFIO_GROUP_GET_STATUS: Final = _IO(VFIO_TYPE, VFIO_BASE + 3)
"""Argument: `vfio_group_status`, argsz set by the caller."""
VFIO_GROUP_SET_CONTAINER: Final = _IO(VFIO_TYPE, VFIO_BASE + 4)
"""Argument: pointer to the container fd (``__s32``)."""
VFIO_GROUP_UNSET_CONTAINER: Final = _IO(VFIO_TYPE, VFIO_BASE + 5)
"""No argument.  Every device fd of the group must be closed first."""
VFIO_GROUP_GET_DEVICE_FD: Final = _IO(VFIO_TYPE, VFIO_BASE + 6)
"""Argument: the device name as a NUL-terminated string.  Returns a new device fd."""


# ---- devices --------------------------------------------------------------------------


class VfioDeviceFlag(IntFlag):
    """``vfio_device_info.flags``."""

    VFIO_DEVICE_FLAGS_RESET = 1 << 0
    VFIO_DEVICE_FLAGS_PCI = 1 << 1
    VFIO_DEVICE_FLAGS_PLATFORM = 1 << 2
    VFIO_DEVICE_FLAGS_AMBA = 1 << 3
    VFIO_DEVICE_FLAGS_CCW = 1 << 4
    VFIO_DEVICE_FLAGS_AP = 1 << 5
    VFIO_DEVICE_FLAGS_FSL_MC = 1 << 6
    VFIO_DEVICE_FLAGS_CAPS = 1 << 7
    VFIO_DEVICE_FLAGS_CDX = 1 << 8


class vfio_device_info(KernelStruct):
    """``VFIO_DEVICE_GET_INFO``.

    ::

        struct vfio_device_info {
                __u32   argsz;
                __u32   flags;          /* VfioDeviceFlag */
                __u32   num_regions;    /* Max region index + 1 */
                __u32   num_irqs;       /* Max IRQ index + 1 */
                __u32   cap_offset;     /* Offset within info struct of first cap */
                __u32   pad;
        };
    """

    _c_name_ = "struct vfio_device_info"
    _fields_ = (
        ("argsz", c_uint32),
        ("flags", c_uint32),
        ("num_regions", c_uint32),
        ("num_irqs", c_uint32),
        ("cap_offset", c_uint32),
        ("pad", c_uint32),
    )
    argsz: int
    flags: int
    num_regions: int
    num_irqs: int
    cap_offset: int
    pad: int


VFIO_DEVICE_GET_INFO: Final = _IO(VFIO_TYPE, VFIO_BASE + 7)
"""Argument: `vfio_device_info`, argsz set by the caller."""

# The ``device_api`` attribute of a mediated device type names its vfio bus.
VFIO_DEVICE_API_PCI_STRING: Final = "vfio-pci"
VFIO_DEVICE_API_PLATFORM_STRING: Final = "vfio-platform"
VFIO_DEVICE_API_AMBA_STRING: Final = "vfio-amba"
VFIO_DEVICE_API_CCW_STRING: Final = "vfio-ccw"
VFIO_DEVICE_API_AP_STRING: Final = "vfio-ap"


class VfioDeviceInfoCap(IntEnum):
    """Capability ids in the ``VFIO_DEVICE_GET_INFO`` chain (the ZPCI ones are s390's)."""

    VFIO_DEVICE_INFO_CAP_ZPCI_BASE = 1
    VFIO_DEVICE_INFO_CAP_ZPCI_GROUP = 2
    VFIO_DEVICE_INFO_CAP_ZPCI_UTIL = 3
    VFIO_DEVICE_INFO_CAP_ZPCI_PFIP = 4
    VFIO_DEVICE_INFO_CAP_PCI_ATOMIC_COMP = 5


class VfioPciAtomicComp(IntFlag):
    """``vfio_device_info_cap_pci_atomic_comp.flags``: AtomicOp completer widths."""

    VFIO_PCI_ATOMIC_COMP32 = 1 << 0
    VFIO_PCI_ATOMIC_COMP64 = 1 << 1
    VFIO_PCI_ATOMIC_COMP128 = 1 << 2


class vfio_device_info_cap_pci_atomic_comp(KernelStruct):
    """``VFIO_DEVICE_INFO_CAP_PCI_ATOMIC_COMP``: PCIe AtomicOp completion to the root bus.

    ::

        struct vfio_device_info_cap_pci_atomic_comp {
                struct vfio_info_cap_header header;
                __u32 flags;            /* VfioPciAtomicComp */
                __u32 reserved;
        };
    """

    _c_name_ = "struct vfio_device_info_cap_pci_atomic_comp"
    _fields_ = (
        ("header", vfio_info_cap_header),
        ("flags", c_uint32),
        ("reserved", c_uint32),
    )
    header: vfio_info_cap_header
    flags: int
    reserved: int


# ---- regions --------------------------------------------------------------------------


class VfioRegionInfoFlag(IntFlag):
    """``vfio_region_info.flags``."""

    VFIO_REGION_INFO_FLAG_READ = 1 << 0
    VFIO_REGION_INFO_FLAG_WRITE = 1 << 1
    VFIO_REGION_INFO_FLAG_MMAP = 1 << 2
    VFIO_REGION_INFO_FLAG_CAPS = 1 << 3


class vfio_region_info(KernelStruct):
    """``VFIO_DEVICE_GET_REGION_INFO``; the caller sets ``argsz`` and ``index``.

    ::

        struct vfio_region_info {
                __u32   argsz;
                __u32   flags;          /* VfioRegionInfoFlag */
                __u32   index;          /* Region index */
                __u32   cap_offset;     /* Offset within info struct of first cap */
                __aligned_u64   size;   /* Region size (bytes) */
                __aligned_u64   offset; /* Region offset from start of device fd */
        };
    """

    _c_name_ = "struct vfio_region_info"
    _fields_ = (
        ("argsz", c_uint32),
        ("flags", c_uint32),
        ("index", c_uint32),
        ("cap_offset", c_uint32),
        ("size", c_uint64),
        ("offset", c_uint64),
    )
    argsz: int
    flags: int
    index: int
    cap_offset: int
    size: int
    offset: int


VFIO_DEVICE_GET_REGION_INFO: Final = _IO(VFIO_TYPE, VFIO_BASE + 8)
"""Argument: `vfio_region_info`, followed by room for its capability chain."""


class VfioRegionInfoCap(IntEnum):
    """Capability ids in the ``VFIO_DEVICE_GET_REGION_INFO`` chain."""

    VFIO_REGION_INFO_CAP_SPARSE_MMAP = 1
    VFIO_REGION_INFO_CAP_TYPE = 2
    VFIO_REGION_INFO_CAP_MSIX_MAPPABLE = 3
    """No payload: the MSI-X table's BAR may be mmapped whole (IRQs still go via SET_IRQS)."""
    VFIO_REGION_INFO_CAP_NVLINK2_SSATGT = 4
    """Deprecated, no longer provided."""
    VFIO_REGION_INFO_CAP_NVLINK2_LNKSPD = 5
    """Deprecated, no longer provided."""


class vfio_region_sparse_mmap_area(KernelStruct):
    """One mmap-able area of a region.

    ::

        struct vfio_region_sparse_mmap_area {
                __aligned_u64   offset; /* Offset of mmap'able area within region */
                __aligned_u64   size;   /* Size of mmap'able area */
        };
    """

    _c_name_ = "struct vfio_region_sparse_mmap_area"
    _fields_ = (
        ("offset", c_uint64),
        ("size", c_uint64),
    )
    offset: int
    size: int


class vfio_region_info_cap_sparse_mmap(KernelStruct):
    """``VFIO_REGION_INFO_CAP_SPARSE_MMAP`` (version 1): only these areas may be mmapped.

    ::

        struct vfio_region_info_cap_sparse_mmap {
                struct vfio_info_cap_header header;
                __u32   nr_areas;
                __u32   reserved;
                struct vfio_region_sparse_mmap_area areas[];
        };
    """

    _c_name_ = "struct vfio_region_info_cap_sparse_mmap"
    _fields_ = (
        ("header", vfio_info_cap_header),
        ("nr_areas", c_uint32),
        ("reserved", c_uint32),
        ("areas", vfio_region_sparse_mmap_area * 0),
    )
    header: vfio_info_cap_header
    nr_areas: int
    reserved: int
    areas: Array[vfio_region_sparse_mmap_area]


class vfio_region_info_cap_type(KernelStruct):
    """``VFIO_REGION_INFO_CAP_TYPE`` (version 1): what a device-specific region holds.

    ::

        struct vfio_region_info_cap_type {
                struct vfio_info_cap_header header;
                __u32 type;     /* global per bus driver */
                __u32 subtype;  /* type specific */
        };
    """

    _c_name_ = "struct vfio_region_info_cap_type"
    _fields_ = (
        ("header", vfio_info_cap_header),
        ("type", c_uint32),
        ("subtype", c_uint32),
    )
    header: vfio_info_cap_header
    type: int
    subtype: int


# Region types of vfio_region_info_cap_type.  A PCI vendor type is the vendor id ORed
# with VFIO_REGION_TYPE_PCI_VENDOR_TYPE; subtypes are numbered per type, so they overlap.
VFIO_REGION_TYPE_PCI_VENDOR_TYPE: Final = 1 << 31
VFIO_REGION_TYPE_PCI_VENDOR_MASK: Final = 0xFFFF
VFIO_REGION_TYPE_GFX: Final = 1
VFIO_REGION_TYPE_CCW: Final = 2
VFIO_REGION_TYPE_MIGRATION_DEPRECATED: Final = 3

# Subtypes of the 8086 (Intel) vendor type.
VFIO_REGION_SUBTYPE_INTEL_IGD_OPREGION: Final = 1
VFIO_REGION_SUBTYPE_INTEL_IGD_HOST_CFG: Final = 2
VFIO_REGION_SUBTYPE_INTEL_IGD_LPC_CFG: Final = 3
# Subtypes of the 10de (NVIDIA) and 1014 (IBM) vendor types; deprecated, no longer provided.
VFIO_REGION_SUBTYPE_NVIDIA_NVLINK2_RAM: Final = 1
VFIO_REGION_SUBTYPE_IBM_NVLINK2_ATSD: Final = 1
# Subtypes of VFIO_REGION_TYPE_GFX.
VFIO_REGION_SUBTYPE_GFX_EDID: Final = 1
# Subtypes of VFIO_REGION_TYPE_CCW.
VFIO_REGION_SUBTYPE_CCW_ASYNC_CMD: Final = 1
VFIO_REGION_SUBTYPE_CCW_SCHIB: Final = 2
VFIO_REGION_SUBTYPE_CCW_CRW: Final = 3
# Subtype of VFIO_REGION_TYPE_MIGRATION_DEPRECATED.
VFIO_REGION_SUBTYPE_MIGRATION_DEPRECATED: Final = 1


class vfio_region_gfx_edid(KernelStruct):
    """Layout of the ``VFIO_REGION_SUBTYPE_GFX_EDID`` region: a virtual monitor's EDID.

    To update: set ``link_state`` down, write the blob and ``edid_size``, set it up.

    ::

        struct vfio_region_gfx_edid {
                __u32 edid_offset;      /* readonly */
                __u32 edid_max_size;    /* readonly */
                __u32 edid_size;        /* read/write */
                __u32 max_xres;         /* 0 == no limitation, readonly */
                __u32 max_yres;         /* 0 == no limitation, readonly */
                __u32 link_state;       /* VFIO_DEVICE_GFX_LINK_STATE_* */
        };
    """

    _c_name_ = "struct vfio_region_gfx_edid"
    _fields_ = (
        ("edid_offset", c_uint32),
        ("edid_max_size", c_uint32),
        ("edid_size", c_uint32),
        ("max_xres", c_uint32),
        ("max_yres", c_uint32),
        ("link_state", c_uint32),
    )
    edid_offset: int
    edid_max_size: int
    edid_size: int
    max_xres: int
    max_yres: int
    link_state: int


VFIO_DEVICE_GFX_LINK_STATE_UP: Final = 1
VFIO_DEVICE_GFX_LINK_STATE_DOWN: Final = 2


# ---- interrupts -----------------------------------------------------------------------


class VfioIrqInfoFlag(IntFlag):
    """``vfio_irq_info.flags``."""

    VFIO_IRQ_INFO_EVENTFD = 1 << 0
    VFIO_IRQ_INFO_MASKABLE = 1 << 1
    VFIO_IRQ_INFO_AUTOMASKED = 1 << 2
    """Level-triggered: masked after each signal until the user unmasks it."""
    VFIO_IRQ_INFO_NORESIZE = 1 << 3
    """Vectors are set up as a set: enabling more needs the whole index disabled first."""


class vfio_irq_info(KernelStruct):
    """``VFIO_DEVICE_GET_IRQ_INFO``; the caller sets ``argsz`` and ``index``.

    ::

        struct vfio_irq_info {
                __u32   argsz;
                __u32   flags;          /* VfioIrqInfoFlag */
                __u32   index;          /* IRQ index */
                __u32   count;          /* Number of IRQs within this index */
        };
    """

    _c_name_ = "struct vfio_irq_info"
    _fields_ = (
        ("argsz", c_uint32),
        ("flags", c_uint32),
        ("index", c_uint32),
        ("count", c_uint32),
    )
    argsz: int
    flags: int
    index: int
    count: int


VFIO_DEVICE_GET_IRQ_INFO: Final = _IO(VFIO_TYPE, VFIO_BASE + 9)
"""Argument: `vfio_irq_info`."""


class VfioIrqSetFlag(IntFlag):
    """``vfio_irq_set.flags``: one DATA_* type ORed with one ACTION_*."""

    VFIO_IRQ_SET_DATA_NONE = 1 << 0
    VFIO_IRQ_SET_DATA_BOOL = 1 << 1
    """``data`` is ``count`` bytes, one __u8 per interrupt."""
    VFIO_IRQ_SET_DATA_EVENTFD = 1 << 2
    """``data`` is ``count`` __s32 eventfds; -1 de-assigns (or skips an unassigned one)."""
    VFIO_IRQ_SET_ACTION_MASK = 1 << 3
    VFIO_IRQ_SET_ACTION_UNMASK = 1 << 4
    VFIO_IRQ_SET_ACTION_TRIGGER = 1 << 5
    VFIO_IRQ_SET_DATA_TYPE_MASK = (
        VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_DATA_BOOL | VFIO_IRQ_SET_DATA_EVENTFD
    )
    VFIO_IRQ_SET_ACTION_TYPE_MASK = (
        VFIO_IRQ_SET_ACTION_MASK | VFIO_IRQ_SET_ACTION_UNMASK | VFIO_IRQ_SET_ACTION_TRIGGER
    )


class vfio_irq_set(KernelStruct):
    """``VFIO_DEVICE_SET_IRQS``: act on interrupts ``start`` .. ``start + count - 1`` of ``index``.

    ``DATA_NONE | ACTION_TRIGGER`` with ``count`` 0 disables the whole index.

    ::

        struct vfio_irq_set {
                __u32   argsz;
                __u32   flags;          /* VfioIrqSetFlag */
                __u32   index;
                __u32   start;
                __u32   count;
                __u8    data[];
        };
    """

    _c_name_ = "struct vfio_irq_set"
    _fields_ = (
        ("argsz", c_uint32),
        ("flags", c_uint32),
        ("index", c_uint32),
        ("start", c_uint32),
        ("count", c_uint32),
        ("data", c_uint8 * 0),
    )
    argsz: int
    flags: int
    index: int
    start: int
    count: int
    data: Array[c_uint8]


VFIO_DEVICE_SET_IRQS: Final = _IO(VFIO_TYPE, VFIO_BASE + 10)
"""Argument: `vfio_irq_set` followed by its data."""
VFIO_DEVICE_RESET: Final = _IO(VFIO_TYPE, VFIO_BASE + 11)
"""No argument."""


class VfioPciRegionIndex(IntEnum):
    """vfio-pci's fixed region indexes; indexes from ``VFIO_PCI_NUM_REGIONS`` on are
    device specific, described by a `vfio_region_info_cap_type`."""

    VFIO_PCI_BAR0_REGION_INDEX = 0
    VFIO_PCI_BAR1_REGION_INDEX = 1
    VFIO_PCI_BAR2_REGION_INDEX = 2
    VFIO_PCI_BAR3_REGION_INDEX = 3
    VFIO_PCI_BAR4_REGION_INDEX = 4
    VFIO_PCI_BAR5_REGION_INDEX = 5
    VFIO_PCI_ROM_REGION_INDEX = 6
    VFIO_PCI_CONFIG_REGION_INDEX = 7
    VFIO_PCI_VGA_REGION_INDEX = 8
    """VGA I/O ports 0x3b0-0x3bb, 0x3c0-0x3df and MMIO 0xa0000-0xbffff, each at its own
    address from the region's offset."""


class VfioPciIrqIndex(IntEnum):
    """vfio-pci's fixed interrupt indexes."""

    VFIO_PCI_INTX_IRQ_INDEX = 0
    VFIO_PCI_MSI_IRQ_INDEX = 1
    VFIO_PCI_MSIX_IRQ_INDEX = 2
    VFIO_PCI_ERR_IRQ_INDEX = 3
    VFIO_PCI_REQ_IRQ_INDEX = 4


# The counts close the kernel's index enums; they are kept out of the IntEnums above so
# that iterating one yields only real indexes.
VFIO_PCI_NUM_REGIONS: Final = 9
VFIO_PCI_NUM_IRQS: Final = 5


# ---- PCI hot reset --------------------------------------------------------------------


class VfioPciHotResetFlag(IntFlag):
    """``vfio_pci_hot_reset_info.flags``; both are set only for a device opened as a cdev."""

    VFIO_PCI_HOT_RESET_FLAG_DEV_ID = 1 << 0
    """The ``devid`` member of each `vfio_pci_dependent_device` is filled, not ``group_id``."""
    VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED = 1 << 1
    """The caller owns every affected device: reset with an empty ``group_fds``."""


# vfio_pci_dependent_device.devid for a device owned implicitly (same IOMMU group as an
# owned one) and for one not owned.  NOT_OWNED is -1 in C: it reads as 0xffffffff from
# the __u32 member.
VFIO_PCI_DEVID_OWNED: Final = 0
VFIO_PCI_DEVID_NOT_OWNED: Final = -1


class _vfio_pci_dependent_device_id(KernelUnion):
    _fields_ = (
        ("group_id", c_uint32),
        ("devid", c_uint32),
    )


class vfio_pci_dependent_device(KernelStruct):
    """One device a hot reset would affect.

    ::

        struct vfio_pci_dependent_device {
                union {
                        __u32   group_id;
                        __u32   devid;  /* VFIO_PCI_DEVID_* or a devid */
                };
                __u16   segment;
                __u8    bus;
                __u8    devfn; /* Use PCI_SLOT/PCI_FUNC */
        };
    """

    _c_name_ = "struct vfio_pci_dependent_device"
    _anonymous_ = ("_id",)
    _fields_ = (
        ("_id", _vfio_pci_dependent_device_id),
        ("segment", c_uint16),
        ("bus", c_uint8),
        ("devfn", c_uint8),
    )
    group_id: int
    devid: int
    segment: int
    bus: int
    devfn: int


class vfio_pci_hot_reset_info(KernelStruct):
    """``VFIO_DEVICE_GET_PCI_HOT_RESET_INFO``: fails with ENOSPC while ``count`` is too small.

    ::

        struct vfio_pci_hot_reset_info {
                __u32   argsz;
                __u32   flags;          /* VfioPciHotResetFlag */
                __u32   count;
                struct vfio_pci_dependent_device        devices[];
        };
    """

    _c_name_ = "struct vfio_pci_hot_reset_info"
    _fields_ = (
        ("argsz", c_uint32),
        ("flags", c_uint32),
        ("count", c_uint32),
        ("devices", vfio_pci_dependent_device * 0),
    )
    argsz: int
    flags: int
    count: int
    devices: Array[vfio_pci_dependent_device]


VFIO_DEVICE_GET_PCI_HOT_RESET_INFO: Final = _IO(VFIO_TYPE, VFIO_BASE + 12)
"""Argument: `vfio_pci_hot_reset_info` followed by room for ``count`` devices."""


class vfio_pci_hot_reset(KernelStruct):
    """``VFIO_DEVICE_PCI_HOT_RESET``: group fds proving ownership of every affected device
    (none for a cdev whose info reported ``VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED``).

    ::

        struct vfio_pci_hot_reset {
                __u32   argsz;
                __u32   flags;
                __u32   count;
                __s32   group_fds[];
        };
    """

    _c_name_ = "struct vfio_pci_hot_reset"
    _fields_ = (
        ("argsz", c_uint32),
        ("flags", c_uint32),
        ("count", c_uint32),
        ("group_fds", c_int32 * 0),
    )
    argsz: int
    flags: int
    count: int
    group_fds: Array[c_int32]


VFIO_DEVICE_PCI_HOT_RESET: Final = _IO(VFIO_TYPE, VFIO_BASE + 13)
"""Argument: `vfio_pci_hot_reset` followed by ``count`` group fds."""


# ---- mediated device display ----------------------------------------------------------


class VfioGfxPlaneType(IntFlag):
    """``vfio_device_gfx_plane_info.flags``."""

    VFIO_GFX_PLANE_TYPE_PROBE = 1 << 0
    VFIO_GFX_PLANE_TYPE_DMABUF = 1 << 1
    VFIO_GFX_PLANE_TYPE_REGION = 1 << 2


class _vfio_device_gfx_plane_info_id(KernelUnion):
    _fields_ = (
        ("region_index", c_uint32),
        ("dmabuf_id", c_uint32),
    )


class vfio_device_gfx_plane_info(KernelStruct):
    """``VFIO_DEVICE_QUERY_GFX_PLANE``: a vGPU's display plane.

    ::

        struct vfio_device_gfx_plane_info {
                __u32 argsz;
                __u32 flags;            /* VfioGfxPlaneType */
                /* in */
                __u32 drm_plane_type;   /* type of plane: DRM_PLANE_TYPE_* */
                /* out */
                __u32 drm_format;       /* drm format of plane */
                __aligned_u64 drm_format_mod;   /* tiled mode */
                __u32 width;    /* width of plane */
                __u32 height;   /* height of plane */
                __u32 stride;   /* stride of plane */
                __u32 size;     /* size of plane in bytes, align on page*/
                __u32 x_pos;    /* horizontal position of cursor plane */
                __u32 y_pos;    /* vertical position of cursor plane*/
                __u32 x_hot;    /* horizontal position of cursor hotspot */
                __u32 y_hot;    /* vertical position of cursor hotspot */
                union {
                        __u32 region_index;     /* region index */
                        __u32 dmabuf_id;        /* dma-buf id */
                };
                __u32 reserved;
        };
    """

    _c_name_ = "struct vfio_device_gfx_plane_info"
    _anonymous_ = ("_id",)
    _fields_ = (
        ("argsz", c_uint32),
        ("flags", c_uint32),
        ("drm_plane_type", c_uint32),
        ("drm_format", c_uint32),
        ("drm_format_mod", c_uint64),
        ("width", c_uint32),
        ("height", c_uint32),
        ("stride", c_uint32),
        ("size", c_uint32),
        ("x_pos", c_uint32),
        ("y_pos", c_uint32),
        ("x_hot", c_uint32),
        ("y_hot", c_uint32),
        ("_id", _vfio_device_gfx_plane_info_id),
        ("reserved", c_uint32),
    )
    argsz: int
    flags: int
    drm_plane_type: int
    drm_format: int
    drm_format_mod: int
    width: int
    height: int
    stride: int
    size: int
    x_pos: int
    y_pos: int
    x_hot: int
    y_hot: int
    region_index: int
    dmabuf_id: int
    reserved: int


VFIO_DEVICE_QUERY_GFX_PLANE: Final = _IO(VFIO_TYPE, VFIO_BASE + 14)
"""Argument: `vfio_device_gfx_plane_info`."""
VFIO_DEVICE_GET_GFX_DMABUF: Final = _IO(VFIO_TYPE, VFIO_BASE + 15)
"""Argument: pointer to a __u32 dmabuf_id.  Returns a new dma-buf fd."""


# ---- ioeventfd ------------------------------------------------------------------------


class VfioDeviceIoeventfdFlag(IntFlag):
    """``vfio_device_ioeventfd.flags``: the width of the write."""

    VFIO_DEVICE_IOEVENTFD_8 = 1 << 0
    VFIO_DEVICE_IOEVENTFD_16 = 1 << 1
    VFIO_DEVICE_IOEVENTFD_32 = 1 << 2
    VFIO_DEVICE_IOEVENTFD_64 = 1 << 3
    VFIO_DEVICE_IOEVENTFD_SIZE_MASK = 0xF


class vfio_device_ioeventfd(KernelStruct):
    """``VFIO_DEVICE_IOEVENTFD``: the kernel writes ``data`` at ``offset`` each time ``fd`` fires.

    ::

        struct vfio_device_ioeventfd {
                __u32   argsz;
                __u32   flags;          /* VfioDeviceIoeventfdFlag */
                __aligned_u64   offset;         /* device fd offset of write */
                __aligned_u64   data;           /* data to be written */
                __s32   fd;                     /* -1 for de-assignment */
                __u32   reserved;
        };
    """

    _c_name_ = "struct vfio_device_ioeventfd"
    _fields_ = (
        ("argsz", c_uint32),
        ("flags", c_uint32),
        ("offset", c_uint64),
        ("data", c_uint64),
        ("fd", c_int32),
        ("reserved", c_uint32),
    )
    argsz: int
    flags: int
    offset: int
    data: int
    fd: int
    reserved: int


VFIO_DEVICE_IOEVENTFD: Final = _IO(VFIO_TYPE, VFIO_BASE + 16)
"""Argument: `vfio_device_ioeventfd`."""


# ---- device features ------------------------------------------------------------------


class VfioDeviceFeatureFlag(IntFlag):
    """``vfio_device_feature.flags``: a `VfioDeviceFeature` in the low 16 bits, ORed with
    GET, SET or PROBE (PROBE may add GET and/or SET to ask about either)."""

    VFIO_DEVICE_FEATURE_MASK = 0xFFFF
    VFIO_DEVICE_FEATURE_GET = 1 << 16
    VFIO_DEVICE_FEATURE_SET = 1 << 17
    VFIO_DEVICE_FEATURE_PROBE = 1 << 18


class vfio_device_feature(KernelStruct):
    """``VFIO_DEVICE_FEATURE``: get, set or probe one feature; the payload follows in ``data``.

    ::

        struct vfio_device_feature {
                __u32   argsz;
                __u32   flags;          /* VfioDeviceFeatureFlag | VfioDeviceFeature */
                __u8    data[];
        };
    """

    _c_name_ = "struct vfio_device_feature"
    _fields_ = (
        ("argsz", c_uint32),
        ("flags", c_uint32),
        ("data", c_uint8 * 0),
    )
    argsz: int
    flags: int
    data: Array[c_uint8]


VFIO_DEVICE_FEATURE: Final = _IO(VFIO_TYPE, VFIO_BASE + 17)
"""Argument: `vfio_device_feature` followed by the feature's payload."""


class VfioDeviceFeature(IntEnum):
    """Feature indexes for ``vfio_device_feature.flags``, with the payload each takes."""

    VFIO_DEVICE_FEATURE_PCI_VF_TOKEN = 0
    """SET only, on an SR-IOV PF: a 16-byte UUID shared with the VF drivers."""
    VFIO_DEVICE_FEATURE_MIGRATION = 1
    """GET: `vfio_device_feature_migration`."""
    VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE = 2
    """GET/SET: `vfio_device_feature_mig_state`."""
    VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY = 3
    """SET, no payload."""
    VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP = 4
    """SET: `vfio_device_low_power_entry_with_wakeup`."""
    VFIO_DEVICE_FEATURE_LOW_POWER_EXIT = 5
    """SET, no payload."""
    VFIO_DEVICE_FEATURE_DMA_LOGGING_START = 6
    """SET: `vfio_device_feature_dma_logging_control`."""
    VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP = 7
    """SET, no payload."""
    VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT = 8
    """GET: `vfio_device_feature_dma_logging_report`."""
    VFIO_DEVICE_FEATURE_MIG_DATA_SIZE = 9
    """GET: `vfio_device_feature_mig_data_size`."""
    VFIO_DEVICE_FEATURE_BUS_MASTER = 10
    """SET: `vfio_device_feature_bus_master` (CDX devices only)."""


class VfioMigrationFlag(IntFlag):
    """``vfio_device_feature_migration.flags``: which optional migration states exist."""

    VFIO_MIGRATION_STOP_COPY = 1 << 0
    VFIO_MIGRATION_P2P = 1 << 1
    VFIO_MIGRATION_PRE_COPY = 1 << 2


class vfio_device_feature_migration(KernelStruct):
    """Payload of ``VFIO_DEVICE_FEATURE_MIGRATION``.

    ::

        struct vfio_device_feature_migration {
                __aligned_u64 flags;    /* VfioMigrationFlag */
        };
    """

    _c_name_ = "struct vfio_device_feature_migration"
    _fields_ = (("flags", c_uint64),)
    flags: int


class VfioDeviceMigState(IntEnum):
    """``enum vfio_device_mig_state``: the states of the migration state machine."""

    VFIO_DEVICE_STATE_ERROR = 0
    VFIO_DEVICE_STATE_STOP = 1
    VFIO_DEVICE_STATE_RUNNING = 2
    VFIO_DEVICE_STATE_STOP_COPY = 3
    VFIO_DEVICE_STATE_RESUMING = 4
    VFIO_DEVICE_STATE_RUNNING_P2P = 5
    VFIO_DEVICE_STATE_PRE_COPY = 6
    VFIO_DEVICE_STATE_PRE_COPY_P2P = 7


# Closes enum vfio_device_mig_state; kept out of VfioDeviceMigState, which holds states.
VFIO_DEVICE_STATE_NR: Final = 8


class vfio_device_feature_mig_state(KernelStruct):
    """Payload of ``VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE``; a SET that starts a data
    transfer returns its fd in ``data_fd`` (-1 otherwise, and on GET).

    ::

        struct vfio_device_feature_mig_state {
                __u32 device_state; /* From enum vfio_device_mig_state */
                __s32 data_fd;
        };
    """

    _c_name_ = "struct vfio_device_feature_mig_state"
    _fields_ = (
        ("device_state", c_uint32),
        ("data_fd", c_int32),
    )
    device_state: int
    data_fd: int


class vfio_precopy_info(KernelStruct):
    """``VFIO_MIG_GET_PRECOPY_INFO``, on the migration data fd in a PRE_COPY state.

    ::

        struct vfio_precopy_info {
                __u32 argsz;
                __u32 flags;
                __aligned_u64 initial_bytes;
                __aligned_u64 dirty_bytes;
        };
    """

    _c_name_ = "struct vfio_precopy_info"
    _fields_ = (
        ("argsz", c_uint32),
        ("flags", c_uint32),
        ("initial_bytes", c_uint64),
        ("dirty_bytes", c_uint64),
    )
    argsz: int
    flags: int
    initial_bytes: int
    dirty_bytes: int


VFIO_MIG_GET_PRECOPY_INFO: Final = _IO(VFIO_TYPE, VFIO_BASE + 21)
"""Argument: `vfio_precopy_info`; issued on the migration data fd, not the device fd."""


class vfio_device_low_power_entry_with_wakeup(KernelStruct):
    """Payload of ``VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP``.

    ::

        struct vfio_device_low_power_entry_with_wakeup {
                __s32 wakeup_eventfd;
                __u32 reserved;
        };
    """

    _c_name_ = "struct vfio_device_low_power_entry_with_wakeup"
    _fields_ = (
        ("wakeup_eventfd", c_int32),
        ("reserved", c_uint32),
    )
    wakeup_eventfd: int
    reserved: int


class vfio_device_feature_dma_logging_control(KernelStruct):
    """Payload of ``VFIO_DEVICE_FEATURE_DMA_LOGGING_START``; ``ranges`` points to
    ``num_ranges`` `vfio_device_feature_dma_logging_range`.

    ::

        struct vfio_device_feature_dma_logging_control {
                __aligned_u64 page_size;
                __u32 num_ranges;
                __u32 __reserved;
                __aligned_u64 ranges;
        };
    """

    _c_name_ = "struct vfio_device_feature_dma_logging_control"
    _fields_ = (
        ("page_size", c_uint64),
        ("num_ranges", c_uint32),
        ("__reserved", c_uint32),
        ("ranges", c_uint64),
    )
    page_size: int
    num_ranges: int
    ranges: int


class vfio_device_feature_dma_logging_range(KernelStruct):
    """One IOVA range to track in `vfio_device_feature_dma_logging_control`.

    ::

        struct vfio_device_feature_dma_logging_range {
                __aligned_u64 iova;
                __aligned_u64 length;
        };
    """

    _c_name_ = "struct vfio_device_feature_dma_logging_range"
    _fields_ = (
        ("iova", c_uint64),
        ("length", c_uint64),
    )
    iova: int
    length: int


class vfio_device_feature_dma_logging_report(KernelStruct):
    """Payload of ``VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT``; ``bitmap`` points to one bit
    per ``page_size`` page of the range, set for a dirty page.

    ::

        struct vfio_device_feature_dma_logging_report {
                __aligned_u64 iova;
                __aligned_u64 length;
                __aligned_u64 page_size;
                __aligned_u64 bitmap;
        };
    """

    _c_name_ = "struct vfio_device_feature_dma_logging_report"
    _fields_ = (
        ("iova", c_uint64),
        ("length", c_uint64),
        ("page_size", c_uint64),
        ("bitmap", c_uint64),
    )
    iova: int
    length: int
    page_size: int
    bitmap: int


class vfio_device_feature_mig_data_size(KernelStruct):
    """Payload of ``VFIO_DEVICE_FEATURE_MIG_DATA_SIZE``: estimated bytes to finish STOP_COPY.

    ::

        struct vfio_device_feature_mig_data_size {
                __aligned_u64 stop_copy_length;
        };
    """

    _c_name_ = "struct vfio_device_feature_mig_data_size"
    _fields_ = (("stop_copy_length", c_uint64),)
    stop_copy_length: int


class VfioDeviceFeatureBusMasterOp(IntEnum):
    """``vfio_device_feature_bus_master.op``."""

    VFIO_DEVICE_FEATURE_CLEAR_MASTER = 0
    VFIO_DEVICE_FEATURE_SET_MASTER = 1


class vfio_device_feature_bus_master(KernelStruct):
    """Payload of ``VFIO_DEVICE_FEATURE_BUS_MASTER``.

    ::

        struct vfio_device_feature_bus_master {
                __u32 op;               /* VfioDeviceFeatureBusMasterOp */
        };
    """

    _c_name_ = "struct vfio_device_feature_bus_master"
    _fields_ = (("op", c_uint32),)
    op: int


# ---- the device cdev bound to an iommufd: /dev/vfio/devices/vfioN ---------------------


class vfio_device_bind_iommufd(KernelStruct):
    """``VFIO_DEVICE_BIND_IOMMUFD``: the device is unusable until bound; closing its fd unbinds.

    ::

        struct vfio_device_bind_iommufd {
                __u32           argsz;
                __u32           flags;          /* Must be 0 */
                __s32           iommufd;
                __u32           out_devid;
        };
    """

    _c_name_ = "struct vfio_device_bind_iommufd"
    _fields_ = (
        ("argsz", c_uint32),
        ("flags", c_uint32),
        ("iommufd", c_int32),
        ("out_devid", c_uint32),
    )
    argsz: int
    flags: int
    iommufd: int
    out_devid: int


VFIO_DEVICE_BIND_IOMMUFD: Final = _IO(VFIO_TYPE, VFIO_BASE + 18)
"""Argument: `vfio_device_bind_iommufd`."""

#: ``VFIO_DEVICE_BIND_FLAG_TOKEN`` (Linux 6.17+): ``token_uuid_ptr`` points to a VF token.
#: Not spelled as the kernel's macro: the headers the ABI test reads (6.12) lack it.
BIND_FLAG_TOKEN: Final = 1 << 0
#: The first kernel release whose VFIO_DEVICE_BIND_IOMMUFD takes a VF token (before it the
#: cdev path had no way to pass one, and checked none: kernel commit "vfio/pci: Do
#: vf_token checks for VFIO_DEVICE_BIND_IOMMUFD").
BIND_TOKEN_SINCE: Final = (6, 17)


class vfio_device_bind_iommufd_token(Structure):
    """`vfio_device_bind_iommufd` as Linux 6.17 extends it (a plain ctypes Structure, not
    a `KernelStruct`: the 6.12 headers the ABI test reads have only the first four members).

    ::

        struct vfio_device_bind_iommufd {
                __u32           argsz;
                __u32           flags;          /* VFIO_DEVICE_BIND_FLAG_TOKEN */
                __s32           iommufd;
                __u32           out_devid;
                __aligned_u64   token_uuid_ptr; /* 16 bytes, the VF token */
        };
    """

    _fields_ = (
        ("argsz", c_uint32),
        ("flags", c_uint32),
        ("iommufd", c_int32),
        ("out_devid", c_uint32),
        ("token_uuid_ptr", c_uint64),
    )
    argsz: int
    flags: int
    iommufd: int
    out_devid: int
    token_uuid_ptr: int


class vfio_device_attach_iommufd_pt(KernelStruct):
    """``VFIO_DEVICE_ATTACH_IOMMUFD_PT``: attach to an IOAS or HWPT; attaching again replaces.

    ``pt_id`` returns the HWPT actually attached (one the kernel made for an IOAS).

    ::

        struct vfio_device_attach_iommufd_pt {
                __u32   argsz;
                __u32   flags;          /* Must be 0 */
                __u32   pt_id;
        };
    """

    _c_name_ = "struct vfio_device_attach_iommufd_pt"
    _fields_ = (
        ("argsz", c_uint32),
        ("flags", c_uint32),
        ("pt_id", c_uint32),
    )
    argsz: int
    flags: int
    pt_id: int


VFIO_DEVICE_ATTACH_IOMMUFD_PT: Final = _IO(VFIO_TYPE, VFIO_BASE + 19)
"""Argument: `vfio_device_attach_iommufd_pt`."""


class vfio_device_detach_iommufd_pt(KernelStruct):
    """``VFIO_DEVICE_DETACH_IOMMUFD_PT``: the device is left blocking DMA.

    ::

        struct vfio_device_detach_iommufd_pt {
                __u32   argsz;
                __u32   flags;          /* Must be 0 */
        };
    """

    _c_name_ = "struct vfio_device_detach_iommufd_pt"
    _fields_ = (
        ("argsz", c_uint32),
        ("flags", c_uint32),
    )
    argsz: int
    flags: int


VFIO_DEVICE_DETACH_IOMMUFD_PT: Final = _IO(VFIO_TYPE, VFIO_BASE + 20)
"""Argument: `vfio_device_detach_iommufd_pt`."""


# ---- the type1 IOMMU, on the container ------------------------------------------------
# Its ioctl numbers reuse those of device ioctls: the fd tells them apart.


class VfioIommuInfoFlag(IntFlag):
    """``vfio_iommu_type1_info.flags``."""

    VFIO_IOMMU_INFO_PGSIZES = 1 << 0
    VFIO_IOMMU_INFO_CAPS = 1 << 1


class vfio_iommu_type1_info(KernelStruct):
    """``VFIO_IOMMU_GET_INFO``.

    ::

        struct vfio_iommu_type1_info {
                __u32   argsz;
                __u32   flags;          /* VfioIommuInfoFlag */
                __aligned_u64   iova_pgsizes;   /* Bitmap of supported page sizes */
                __u32   cap_offset;     /* Offset within info struct of first cap */
                __u32   pad;
        };
    """

    _c_name_ = "struct vfio_iommu_type1_info"
    _fields_ = (
        ("argsz", c_uint32),
        ("flags", c_uint32),
        ("iova_pgsizes", c_uint64),
        ("cap_offset", c_uint32),
        ("pad", c_uint32),
    )
    argsz: int
    flags: int
    iova_pgsizes: int
    cap_offset: int
    pad: int


class VfioIommuType1InfoCap(IntEnum):
    """Capability ids in the ``VFIO_IOMMU_GET_INFO`` chain."""

    VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE = 1
    VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION = 2
    VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL = 3


class vfio_iova_range(KernelStruct):
    """An IOVA range, both ends inclusive.

    ::

        struct vfio_iova_range {
                __u64   start;
                __u64   end;
        };
    """

    _c_name_ = "struct vfio_iova_range"
    _fields_ = (
        ("start", c_uint64),
        ("end", c_uint64),
    )
    start: int
    end: int


class vfio_iommu_type1_info_cap_iova_range(KernelStruct):
    """``VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE`` (version 1): where DMA may be mapped.

    ::

        struct vfio_iommu_type1_info_cap_iova_range {
                struct  vfio_info_cap_header header;
                __u32   nr_iovas;
                __u32   reserved;
                struct  vfio_iova_range iova_ranges[];
        };
    """

    _c_name_ = "struct vfio_iommu_type1_info_cap_iova_range"
    _fields_ = (
        ("header", vfio_info_cap_header),
        ("nr_iovas", c_uint32),
        ("reserved", c_uint32),
        ("iova_ranges", vfio_iova_range * 0),
    )
    header: vfio_info_cap_header
    nr_iovas: int
    reserved: int
    iova_ranges: Array[vfio_iova_range]


class vfio_iommu_type1_info_cap_migration(KernelStruct):
    """``VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION`` (version 1): dirty page logging is supported.

    ::

        struct vfio_iommu_type1_info_cap_migration {
                struct  vfio_info_cap_header header;
                __u32   flags;
                __u64   pgsize_bitmap;
                __u64   max_dirty_bitmap_size;          /* in bytes */
        };
    """

    _c_name_ = "struct vfio_iommu_type1_info_cap_migration"
    _fields_ = (
        ("header", vfio_info_cap_header),
        ("flags", c_uint32),
        ("pgsize_bitmap", c_uint64),
        ("max_dirty_bitmap_size", c_uint64),
    )
    header: vfio_info_cap_header
    flags: int
    pgsize_bitmap: int
    max_dirty_bitmap_size: int


class vfio_iommu_type1_info_dma_avail(KernelStruct):
    """``VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL`` (version 1): how many more DMA mappings are allowed.

    ::

        struct vfio_iommu_type1_info_dma_avail {
                struct  vfio_info_cap_header header;
                __u32   avail;
        };
    """

    _c_name_ = "struct vfio_iommu_type1_info_dma_avail"
    _fields_ = (
        ("header", vfio_info_cap_header),
        ("avail", c_uint32),
    )
    header: vfio_info_cap_header
    avail: int


VFIO_IOMMU_GET_INFO: Final = _IO(VFIO_TYPE, VFIO_BASE + 12)
"""Argument: `vfio_iommu_type1_info`, followed by room for its capability chain."""


class VfioDmaMapFlag(IntFlag):
    """``vfio_iommu_type1_dma_map.flags``."""

    VFIO_DMA_MAP_FLAG_READ = 1 << 0
    """Readable from the device."""
    VFIO_DMA_MAP_FLAG_WRITE = 1 << 1
    """Writable from the device."""
    VFIO_DMA_MAP_FLAG_VADDR = 1 << 2
    """Give a mapping invalidated by ``VFIO_DMA_UNMAP_FLAG_VADDR`` its new vaddr; the same
    iova and size as mapped, READ and WRITE clear."""


class vfio_iommu_type1_dma_map(KernelStruct):
    """``VFIO_IOMMU_MAP_DMA``.

    ::

        struct vfio_iommu_type1_dma_map {
                __u32   argsz;
                __u32   flags;          /* VfioDmaMapFlag */
                __u64   vaddr;                          /* Process virtual address */
                __u64   iova;                           /* IO virtual address */
                __u64   size;                           /* Size of mapping (bytes) */
        };
    """

    _c_name_ = "struct vfio_iommu_type1_dma_map"
    _fields_ = (
        ("argsz", c_uint32),
        ("flags", c_uint32),
        ("vaddr", c_uint64),
        ("iova", c_uint64),
        ("size", c_uint64),
    )
    argsz: int
    flags: int
    vaddr: int
    iova: int
    size: int


VFIO_IOMMU_MAP_DMA: Final = _IO(VFIO_TYPE, VFIO_BASE + 13)
"""Argument: `vfio_iommu_type1_dma_map`."""


class vfio_bitmap(KernelStruct):
    """A dirty bitmap: one bit per ``pgsize`` page, in zeroed memory the user provides.

    ::

        struct vfio_bitmap {
                __u64        pgsize;    /* page size for bitmap in bytes */
                __u64        size;      /* in bytes */
                __u64 *data;    /* one bit per page */
        };
    """

    _c_name_ = "struct vfio_bitmap"
    _fields_ = (
        ("pgsize", c_uint64),
        ("size", c_uint64),
        ("data", POINTER(c_uint64)),
    )
    pgsize: int
    size: int
    data: _Pointer[c_uint64]


class VfioDmaUnmapFlag(IntFlag):
    """``vfio_iommu_type1_dma_unmap.flags``."""

    VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP = 1 << 0
    """Fill the `vfio_bitmap` given in ``data`` before unmapping."""
    VFIO_DMA_UNMAP_FLAG_ALL = 1 << 1
    """Unmap everything; iova and size must be 0.  Not with GET_DIRTY_BITMAP."""
    VFIO_DMA_UNMAP_FLAG_VADDR = 1 << 2
    """Do not unmap: invalidate the vaddrs (DMA goes on) until ``VFIO_DMA_MAP_FLAG_VADDR``."""


class vfio_iommu_type1_dma_unmap(KernelStruct):
    """``VFIO_IOMMU_UNMAP_DMA``; ``size`` returns the bytes actually unmapped.

    ::

        struct vfio_iommu_type1_dma_unmap {
                __u32   argsz;
                __u32   flags;          /* VfioDmaUnmapFlag */
                __u64   iova;                           /* IO virtual address */
                __u64   size;                           /* Size of mapping (bytes) */
                __u8    data[];
        };
    """

    _c_name_ = "struct vfio_iommu_type1_dma_unmap"
    _fields_ = (
        ("argsz", c_uint32),
        ("flags", c_uint32),
        ("iova", c_uint64),
        ("size", c_uint64),
        ("data", c_uint8 * 0),
    )
    argsz: int
    flags: int
    iova: int
    size: int
    data: Array[c_uint8]


VFIO_IOMMU_UNMAP_DMA: Final = _IO(VFIO_TYPE, VFIO_BASE + 14)
"""Argument: `vfio_iommu_type1_dma_unmap`, followed by a `vfio_bitmap` for GET_DIRTY_BITMAP."""
VFIO_IOMMU_ENABLE: Final = _IO(VFIO_TYPE, VFIO_BASE + 15)
"""No argument (sPAPR TCE only; type1 answers ENOTTY)."""
VFIO_IOMMU_DISABLE: Final = _IO(VFIO_TYPE, VFIO_BASE + 16)
"""No argument (sPAPR TCE only; type1 answers ENOTTY)."""


class VfioIommuDirtyPagesFlag(IntFlag):
    """``vfio_iommu_type1_dirty_bitmap.flags``: exactly one of them."""

    VFIO_IOMMU_DIRTY_PAGES_FLAG_START = 1 << 0
    VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP = 1 << 1
    VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP = 1 << 2
    """``data`` holds a `vfio_iommu_type1_dirty_bitmap_get`; argsz counts it, not the bitmap."""


class vfio_iommu_type1_dirty_bitmap(KernelStruct):
    """``VFIO_IOMMU_DIRTY_PAGES``: start, stop or read dirty page logging.

    ::

        struct vfio_iommu_type1_dirty_bitmap {
                __u32        argsz;
                __u32        flags;     /* VfioIommuDirtyPagesFlag */
                __u8         data[];
        };
    """

    _c_name_ = "struct vfio_iommu_type1_dirty_bitmap"
    _fields_ = (
        ("argsz", c_uint32),
        ("flags", c_uint32),
        ("data", c_uint8 * 0),
    )
    argsz: int
    flags: int
    data: Array[c_uint8]


class vfio_iommu_type1_dirty_bitmap_get(KernelStruct):
    """The ``data`` of a ``VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP`` request.

    ::

        struct vfio_iommu_type1_dirty_bitmap_get {
                __u64              iova;        /* IO virtual address */
                __u64              size;        /* Size of iova range */
                struct vfio_bitmap bitmap;
        };
    """

    _c_name_ = "struct vfio_iommu_type1_dirty_bitmap_get"
    _fields_ = (
        ("iova", c_uint64),
        ("size", c_uint64),
        ("bitmap", vfio_bitmap),
    )
    iova: int
    size: int
    bitmap: vfio_bitmap


VFIO_IOMMU_DIRTY_PAGES: Final = _IO(VFIO_TYPE, VFIO_BASE + 17)
"""Argument: `vfio_iommu_type1_dirty_bitmap` and its data."""


ABI: Final = collect_abi(globals())
"""Every struct, ioctl, constant and flag family above, for the ABI test."""
