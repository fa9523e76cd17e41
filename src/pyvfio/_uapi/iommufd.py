"""ctypes mirror of ``<linux/iommufd.h>`` (Linux 6.12, x86_64), all of it.

Kernel names are kept as in `pyvfio._uapi.vfio`: structs named as in C, ioctl numbers as
module constants, each C ``enum`` of flags or ids as an ``IntFlag``/``IntEnum`` whose
members are the kernel enumerators.  A struct's docstring quotes its C definition.

Every iommufd struct starts with ``size`` (``sizeof`` the struct as the caller knows
it): the kernel rejects non-zero bytes past what it understands with E2BIG, and a
known field holding a value it does not support with EOPNOTSUPP.  Pointers to user
memory travel as ``__aligned_u64`` addresses.

``tests/unit/test_abi.py`` compiles every struct layout, ioctl number and value here
against the kernel's own headers.
"""

from __future__ import annotations

from ctypes import c_uint8, c_uint16, c_uint32, c_uint64
from enum import IntEnum, IntFlag
from typing import Final

from pyvfio._uapi._base import _IO, KernelStruct, collect_abi

IOMMUFD_TYPE: Final = ord(";")

# The anonymous enum of command numbers, each the ``nr`` of one ioctl below.
IOMMUFD_CMD_BASE: Final = 0x80
IOMMUFD_CMD_DESTROY: Final = IOMMUFD_CMD_BASE
IOMMUFD_CMD_IOAS_ALLOC: Final = 0x81
IOMMUFD_CMD_IOAS_ALLOW_IOVAS: Final = 0x82
IOMMUFD_CMD_IOAS_COPY: Final = 0x83
IOMMUFD_CMD_IOAS_IOVA_RANGES: Final = 0x84
IOMMUFD_CMD_IOAS_MAP: Final = 0x85
IOMMUFD_CMD_IOAS_UNMAP: Final = 0x86
IOMMUFD_CMD_OPTION: Final = 0x87
IOMMUFD_CMD_VFIO_IOAS: Final = 0x88
IOMMUFD_CMD_HWPT_ALLOC: Final = 0x89
IOMMUFD_CMD_GET_HW_INFO: Final = 0x8A
IOMMUFD_CMD_HWPT_SET_DIRTY_TRACKING: Final = 0x8B
IOMMUFD_CMD_HWPT_GET_DIRTY_BITMAP: Final = 0x8C
IOMMUFD_CMD_HWPT_INVALIDATE: Final = 0x8D
IOMMUFD_CMD_FAULT_QUEUE_ALLOC: Final = 0x8E


# ---- objects --------------------------------------------------------------------------


class iommu_destroy(KernelStruct):
    """``IOMMU_DESTROY``: destroy any destroyable object by id.

    ::

        struct iommu_destroy {
                __u32 size;
                __u32 id;
        };
    """

    _c_name_ = "struct iommu_destroy"
    _fields_ = (
        ("size", c_uint32),
        ("id", c_uint32),
    )
    size: int
    id: int


IOMMU_DESTROY: Final = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_DESTROY)


# ---- IO address spaces ----------------------------------------------------------------


class iommu_ioas_alloc(KernelStruct):
    """``IOMMU_IOAS_ALLOC``: a new, empty IO address space.

    ::

        struct iommu_ioas_alloc {
                __u32 size;
                __u32 flags;            /* Must be 0 */
                __u32 out_ioas_id;
        };
    """

    _c_name_ = "struct iommu_ioas_alloc"
    _fields_ = (
        ("size", c_uint32),
        ("flags", c_uint32),
        ("out_ioas_id", c_uint32),
    )
    size: int
    flags: int
    out_ioas_id: int


IOMMU_IOAS_ALLOC: Final = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_ALLOC)


class iommu_iova_range(KernelStruct):
    """An interval of IOVA space; ``last`` is inclusive.

    ::

        struct iommu_iova_range {
                __aligned_u64 start;
                __aligned_u64 last;
        };
    """

    _c_name_ = "struct iommu_iova_range"
    _fields_ = (
        ("start", c_uint64),
        ("last", c_uint64),
    )
    start: int
    last: int


class iommu_ioas_iova_ranges(KernelStruct):
    """``IOMMU_IOAS_IOVA_RANGES``: the IOVAs that may be mapped now.

    ``allowed_iovas`` points to ``num_iovas`` `iommu_iova_range`; when that is too few the
    ioctl fails with EMSGSIZE and sets ``num_iovas`` to the count needed.  The ranges
    narrow as devices attach, so ask again after each attach or detach.

    ::

        struct iommu_ioas_iova_ranges {
                __u32 size;
                __u32 ioas_id;
                __u32 num_iovas;
                __u32 __reserved;
                __aligned_u64 allowed_iovas;
                __aligned_u64 out_iova_alignment;
        };
    """

    _c_name_ = "struct iommu_ioas_iova_ranges"
    _fields_ = (
        ("size", c_uint32),
        ("ioas_id", c_uint32),
        ("num_iovas", c_uint32),
        ("__reserved", c_uint32),
        ("allowed_iovas", c_uint64),
        ("out_iova_alignment", c_uint64),
    )
    size: int
    ioas_id: int
    num_iovas: int
    allowed_iovas: int
    out_iova_alignment: int


IOMMU_IOAS_IOVA_RANGES: Final = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_IOVA_RANGES)


class iommu_ioas_allow_iovas(KernelStruct):
    """``IOMMU_IOAS_ALLOW_IOVAS``: keep these ranges mappable; replaces the previous list.

    Attaching a device that would narrow them then fails.

    ::

        struct iommu_ioas_allow_iovas {
                __u32 size;
                __u32 ioas_id;
                __u32 num_iovas;
                __u32 __reserved;
                __aligned_u64 allowed_iovas;
        };
    """

    _c_name_ = "struct iommu_ioas_allow_iovas"
    _fields_ = (
        ("size", c_uint32),
        ("ioas_id", c_uint32),
        ("num_iovas", c_uint32),
        ("__reserved", c_uint32),
        ("allowed_iovas", c_uint64),
    )
    size: int
    ioas_id: int
    num_iovas: int
    allowed_iovas: int


IOMMU_IOAS_ALLOW_IOVAS: Final = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_ALLOW_IOVAS)


class IommuIoasMapFlag(IntFlag):
    """``enum iommufd_ioas_map_flags``, for `iommu_ioas_map` and `iommu_ioas_copy`."""

    IOMMU_IOAS_MAP_FIXED_IOVA = 1 << 0
    """Map at the given iova (which must be unused); without it the kernel picks one."""
    IOMMU_IOAS_MAP_WRITEABLE = 1 << 1
    IOMMU_IOAS_MAP_READABLE = 1 << 2


class iommu_ioas_map(KernelStruct):
    """``IOMMU_IOAS_MAP``: map user memory; ``iova`` returns where.

    ::

        struct iommu_ioas_map {
                __u32 size;
                __u32 flags;            /* IommuIoasMapFlag */
                __u32 ioas_id;
                __u32 __reserved;
                __aligned_u64 user_va;
                __aligned_u64 length;
                __aligned_u64 iova;
        };
    """

    _c_name_ = "struct iommu_ioas_map"
    _fields_ = (
        ("size", c_uint32),
        ("flags", c_uint32),
        ("ioas_id", c_uint32),
        ("__reserved", c_uint32),
        ("user_va", c_uint64),
        ("length", c_uint64),
        ("iova", c_uint64),
    )
    size: int
    flags: int
    ioas_id: int
    user_va: int
    length: int
    iova: int


IOMMU_IOAS_MAP: Final = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_MAP)


class iommu_ioas_copy(KernelStruct):
    """``IOMMU_IOAS_COPY``: map into another IOAS what one ``IOMMU_IOAS_MAP`` mapped exactly,
    pinning the memory only once.

    ::

        struct iommu_ioas_copy {
                __u32 size;
                __u32 flags;            /* IommuIoasMapFlag */
                __u32 dst_ioas_id;
                __u32 src_ioas_id;
                __aligned_u64 length;
                __aligned_u64 dst_iova;
                __aligned_u64 src_iova;
        };
    """

    _c_name_ = "struct iommu_ioas_copy"
    _fields_ = (
        ("size", c_uint32),
        ("flags", c_uint32),
        ("dst_ioas_id", c_uint32),
        ("src_ioas_id", c_uint32),
        ("length", c_uint64),
        ("dst_iova", c_uint64),
        ("src_iova", c_uint64),
    )
    size: int
    flags: int
    dst_ioas_id: int
    src_ioas_id: int
    length: int
    dst_iova: int
    src_iova: int


IOMMU_IOAS_COPY: Final = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_COPY)


class iommu_ioas_unmap(KernelStruct):
    """``IOMMU_IOAS_UNMAP``: unmap whole mappings within the range; ``length`` returns the bytes
    unmapped.  0 .. U64_MAX unmaps everything; splitting a mapping is refused.

    ::

        struct iommu_ioas_unmap {
                __u32 size;
                __u32 ioas_id;
                __aligned_u64 iova;
                __aligned_u64 length;
        };
    """

    _c_name_ = "struct iommu_ioas_unmap"
    _fields_ = (
        ("size", c_uint32),
        ("ioas_id", c_uint32),
        ("iova", c_uint64),
        ("length", c_uint64),
    )
    size: int
    ioas_id: int
    iova: int
    length: int


IOMMU_IOAS_UNMAP: Final = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_UNMAP)


# ---- options --------------------------------------------------------------------------


class IommuOption(IntEnum):
    """``enum iommufd_option``: ``iommu_option.option_id``."""

    IOMMU_OPTION_RLIMIT_MODE = 0
    """Global (object_id 0), privileged: 0 accounts RLIMIT_MEMLOCK per user, 1 per process."""
    IOMMU_OPTION_HUGE_PAGES = 1
    """Per IOAS: 1 (default) maps contiguous pages as huge pages, 0 maps PAGE_SIZE only."""


class IommuOptionOp(IntEnum):
    """``enum iommufd_option_ops``: ``iommu_option.op``."""

    IOMMU_OPTION_OP_SET = 0
    IOMMU_OPTION_OP_GET = 1


class iommu_option(KernelStruct):
    """``IOMMU_OPTION``: set or get one option of an object (or of the iommufd).

    ::

        struct iommu_option {
                __u32 size;
                __u32 option_id;        /* IommuOption */
                __u16 op;               /* IommuOptionOp */
                __u16 __reserved;
                __u32 object_id;
                __aligned_u64 val64;
        };
    """

    _c_name_ = "struct iommu_option"
    _fields_ = (
        ("size", c_uint32),
        ("option_id", c_uint32),
        ("op", c_uint16),
        ("__reserved", c_uint16),
        ("object_id", c_uint32),
        ("val64", c_uint64),
    )
    size: int
    option_id: int
    op: int
    object_id: int
    val64: int


IOMMU_OPTION: Final = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_OPTION)


# ---- the VFIO container compatibility IOAS --------------------------------------------


class IommuVfioIoasOp(IntEnum):
    """``enum iommufd_vfio_ioas_op``: ``iommu_vfio_ioas.op``."""

    IOMMU_VFIO_IOAS_GET = 0
    IOMMU_VFIO_IOAS_SET = 1
    IOMMU_VFIO_IOAS_CLEAR = 2


class iommu_vfio_ioas(KernelStruct):
    """``IOMMU_VFIO_IOAS``: the IOAS that VFIO container ioctls on this iommufd use.

    ::

        struct iommu_vfio_ioas {
                __u32 size;
                __u32 ioas_id;
                __u16 op;               /* IommuVfioIoasOp */
                __u16 __reserved;
        };
    """

    _c_name_ = "struct iommu_vfio_ioas"
    _fields_ = (
        ("size", c_uint32),
        ("ioas_id", c_uint32),
        ("op", c_uint16),
        ("__reserved", c_uint16),
    )
    size: int
    ioas_id: int
    op: int


IOMMU_VFIO_IOAS: Final = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_VFIO_IOAS)


# ---- hardware page tables -------------------------------------------------------------


class IommuHwptAllocFlag(IntFlag):
    """``enum iommufd_hwpt_alloc_flags``: ``iommu_hwpt_alloc.flags``."""

    IOMMU_HWPT_ALLOC_NEST_PARENT = 1 << 0
    IOMMU_HWPT_ALLOC_DIRTY_TRACKING = 1 << 1
    IOMMU_HWPT_FAULT_ID_VALID = 1 << 2


class IommuHwptVtdS1Flag(IntFlag):
    """``enum iommu_hwpt_vtd_s1_flags``: ``iommu_hwpt_vtd_s1.flags``."""

    IOMMU_VTD_S1_SRE = 1 << 0
    IOMMU_VTD_S1_EAFE = 1 << 1
    IOMMU_VTD_S1_WPE = 1 << 2


class iommu_hwpt_vtd_s1(KernelStruct):
    """Intel VT-d stage-1 page table, the data of ``IOMMU_HWPT_DATA_VTD_S1``.

    ::

        struct iommu_hwpt_vtd_s1 {
                __aligned_u64 flags;    /* IommuHwptVtdS1Flag */
                __aligned_u64 pgtbl_addr;
                __u32 addr_width;
                __u32 __reserved;
        };
    """

    _c_name_ = "struct iommu_hwpt_vtd_s1"
    _fields_ = (
        ("flags", c_uint64),
        ("pgtbl_addr", c_uint64),
        ("addr_width", c_uint32),
        ("__reserved", c_uint32),
    )
    flags: int
    pgtbl_addr: int
    addr_width: int


class IommuHwptDataType(IntEnum):
    """``enum iommu_hwpt_data_type``: ``iommu_hwpt_alloc.data_type``."""

    IOMMU_HWPT_DATA_NONE = 0
    IOMMU_HWPT_DATA_VTD_S1 = 1


class iommu_hwpt_alloc(KernelStruct):
    """``IOMMU_HWPT_ALLOC``: a hardware page table for a device, over an IOAS (kernel managed,
    ``IOMMU_HWPT_DATA_NONE``) or over a parent HWPT (user managed, nested).

    ::

        struct iommu_hwpt_alloc {
                __u32 size;
                __u32 flags;            /* IommuHwptAllocFlag */
                __u32 dev_id;
                __u32 pt_id;
                __u32 out_hwpt_id;
                __u32 __reserved;
                __u32 data_type;        /* IommuHwptDataType */
                __u32 data_len;
                __aligned_u64 data_uptr;
                __u32 fault_id;
                __u32 __reserved2;
        };
    """

    _c_name_ = "struct iommu_hwpt_alloc"
    _fields_ = (
        ("size", c_uint32),
        ("flags", c_uint32),
        ("dev_id", c_uint32),
        ("pt_id", c_uint32),
        ("out_hwpt_id", c_uint32),
        ("__reserved", c_uint32),
        ("data_type", c_uint32),
        ("data_len", c_uint32),
        ("data_uptr", c_uint64),
        ("fault_id", c_uint32),
        ("__reserved2", c_uint32),
    )
    size: int
    flags: int
    dev_id: int
    pt_id: int
    out_hwpt_id: int
    data_type: int
    data_len: int
    data_uptr: int
    fault_id: int


IOMMU_HWPT_ALLOC: Final = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_HWPT_ALLOC)


# ---- hardware information -------------------------------------------------------------


class IommuHwInfoVtdFlag(IntFlag):
    """``enum iommu_hw_info_vtd_flags``: ``iommu_hw_info_vtd.flags``."""

    IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17 = 1 << 0
    """No read-only mappings on a nest-parent domain (Intel erratum 772415)."""


class iommu_hw_info_vtd(KernelStruct):
    """Intel VT-d hardware information, the data of ``IOMMU_HW_INFO_TYPE_INTEL_VTD``.

    ``cap_reg`` and ``ecap_reg`` are the VT-d Capability and Extended Capability
    registers (VT-d spec 11.4.2 and 11.4.3).

    ::

        struct iommu_hw_info_vtd {
                __u32 flags;            /* IommuHwInfoVtdFlag */
                __u32 __reserved;
                __aligned_u64 cap_reg;
                __aligned_u64 ecap_reg;
        };
    """

    _c_name_ = "struct iommu_hw_info_vtd"
    _fields_ = (
        ("flags", c_uint32),
        ("__reserved", c_uint32),
        ("cap_reg", c_uint64),
        ("ecap_reg", c_uint64),
    )
    flags: int
    cap_reg: int
    ecap_reg: int


class IommuHwInfoType(IntEnum):
    """``enum iommu_hw_info_type``: ``iommu_hw_info.out_data_type``."""

    IOMMU_HW_INFO_TYPE_NONE = 0
    IOMMU_HW_INFO_TYPE_INTEL_VTD = 1


class IommuHwCap(IntFlag):
    """``enum iommufd_hw_capabilities``: ``iommu_hw_info.out_capabilities``."""

    IOMMU_HW_CAP_DIRTY_TRACKING = 1 << 0
    """``IOMMU_HWPT_SET_DIRTY_TRACKING`` and ``IOMMU_HWPT_GET_DIRTY_BITMAP`` work."""
    IOMMU_HW_CAP_PCI_PASID_EXEC = 1 << 1
    """Meaningless while ``out_max_pasid_log2`` is 0."""
    IOMMU_HW_CAP_PCI_PASID_PRIV = 1 << 2
    """Meaningless while ``out_max_pasid_log2`` is 0."""


class iommu_hw_info(KernelStruct):
    """``IOMMU_GET_HW_INFO``: the IOMMU behind a bound device.

    The kernel fills up to ``data_len`` bytes at ``data_uptr`` with the type-specific
    data (zeroing the rest) and returns in ``data_len`` the length it has.

    ::

        struct iommu_hw_info {
                __u32 size;
                __u32 flags;            /* Must be 0 */
                __u32 dev_id;
                __u32 data_len;
                __aligned_u64 data_uptr;
                __u32 out_data_type;    /* IommuHwInfoType */
                __u8 out_max_pasid_log2;
                __u8 __reserved[3];
                __aligned_u64 out_capabilities; /* IommuHwCap */
        };
    """

    _c_name_ = "struct iommu_hw_info"
    _fields_ = (
        ("size", c_uint32),
        ("flags", c_uint32),
        ("dev_id", c_uint32),
        ("data_len", c_uint32),
        ("data_uptr", c_uint64),
        ("out_data_type", c_uint32),
        ("out_max_pasid_log2", c_uint8),
        ("__reserved", c_uint8 * 3),
        ("out_capabilities", c_uint64),
    )
    size: int
    flags: int
    dev_id: int
    data_len: int
    data_uptr: int
    out_data_type: int
    out_max_pasid_log2: int
    out_capabilities: int


IOMMU_GET_HW_INFO: Final = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_GET_HW_INFO)


# ---- dirty tracking -------------------------------------------------------------------


class IommuHwptSetDirtyTrackingFlag(IntFlag):
    """``enum iommufd_hwpt_set_dirty_tracking_flags``."""

    IOMMU_HWPT_DIRTY_TRACKING_ENABLE = 1


class iommu_hwpt_set_dirty_tracking(KernelStruct):
    """``IOMMU_HWPT_SET_DIRTY_TRACKING``: turn dirty tracking of a HWPT on or off.

    ::

        struct iommu_hwpt_set_dirty_tracking {
                __u32 size;
                __u32 flags;            /* IommuHwptSetDirtyTrackingFlag */
                __u32 hwpt_id;
                __u32 __reserved;
        };
    """

    _c_name_ = "struct iommu_hwpt_set_dirty_tracking"
    _fields_ = (
        ("size", c_uint32),
        ("flags", c_uint32),
        ("hwpt_id", c_uint32),
        ("__reserved", c_uint32),
    )
    size: int
    flags: int
    hwpt_id: int


IOMMU_HWPT_SET_DIRTY_TRACKING: Final = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_HWPT_SET_DIRTY_TRACKING)


class IommuHwptGetDirtyBitmapFlag(IntFlag):
    """``enum iommufd_hwpt_get_dirty_bitmap_flags``."""

    IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR = 1
    """Read the dirty bits without clearing them, e.g. just before unmapping the range."""


class iommu_hwpt_get_dirty_bitmap(KernelStruct):
    """``IOMMU_HWPT_GET_DIRTY_BITMAP``: one bit per ``page_size`` page from ``iova``, in the
    __u64 words at ``data``.

    ::

        struct iommu_hwpt_get_dirty_bitmap {
                __u32 size;
                __u32 hwpt_id;
                __u32 flags;            /* IommuHwptGetDirtyBitmapFlag */
                __u32 __reserved;
                __aligned_u64 iova;
                __aligned_u64 length;
                __aligned_u64 page_size;
                __aligned_u64 data;
        };
    """

    _c_name_ = "struct iommu_hwpt_get_dirty_bitmap"
    _fields_ = (
        ("size", c_uint32),
        ("hwpt_id", c_uint32),
        ("flags", c_uint32),
        ("__reserved", c_uint32),
        ("iova", c_uint64),
        ("length", c_uint64),
        ("page_size", c_uint64),
        ("data", c_uint64),
    )
    size: int
    hwpt_id: int
    flags: int
    iova: int
    length: int
    page_size: int
    data: int


IOMMU_HWPT_GET_DIRTY_BITMAP: Final = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_HWPT_GET_DIRTY_BITMAP)


# ---- cache invalidation of user-managed page tables -----------------------------------


class IommuHwptInvalidateDataType(IntEnum):
    """``enum iommu_hwpt_invalidate_data_type``: ``iommu_hwpt_invalidate.data_type``."""

    IOMMU_HWPT_INVALIDATE_DATA_VTD_S1 = 0


class IommuHwptVtdS1InvalidateFlag(IntFlag):
    """``enum iommu_hwpt_vtd_s1_invalidate_flags``."""

    IOMMU_VTD_INV_FLAGS_LEAF = 1 << 0
    """Invalidate the leaf PTE cache only, not every level of the page structure cache."""


class iommu_hwpt_vtd_s1_invalidate(KernelStruct):
    """One VT-d stage-1 invalidation request; addr 0 and npages U64_MAX mean everything.

    ::

        struct iommu_hwpt_vtd_s1_invalidate {
                __aligned_u64 addr;
                __aligned_u64 npages;
                __u32 flags;            /* IommuHwptVtdS1InvalidateFlag */
                __u32 __reserved;
        };
    """

    _c_name_ = "struct iommu_hwpt_vtd_s1_invalidate"
    _fields_ = (
        ("addr", c_uint64),
        ("npages", c_uint64),
        ("flags", c_uint32),
        ("__reserved", c_uint32),
    )
    addr: int
    npages: int
    flags: int


class iommu_hwpt_invalidate(KernelStruct):
    """``IOMMU_HWPT_INVALIDATE``: ``entry_num`` requests of ``entry_len`` bytes at ``data_uptr``;
    ``entry_num`` returns how many were handled.  ``entry_num`` 0 probes ``data_type``.

    ::

        struct iommu_hwpt_invalidate {
                __u32 size;
                __u32 hwpt_id;
                __aligned_u64 data_uptr;
                __u32 data_type;        /* IommuHwptInvalidateDataType */
                __u32 entry_len;
                __u32 entry_num;
                __u32 __reserved;
        };
    """

    _c_name_ = "struct iommu_hwpt_invalidate"
    _fields_ = (
        ("size", c_uint32),
        ("hwpt_id", c_uint32),
        ("data_uptr", c_uint64),
        ("data_type", c_uint32),
        ("entry_len", c_uint32),
        ("entry_num", c_uint32),
        ("__reserved", c_uint32),
    )
    size: int
    hwpt_id: int
    data_uptr: int
    data_type: int
    entry_len: int
    entry_num: int


IOMMU_HWPT_INVALIDATE: Final = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_HWPT_INVALIDATE)


# ---- I/O page faults ------------------------------------------------------------------


class IommuPgfaultFlag(IntFlag):
    """``enum iommu_hwpt_pgfault_flags``: ``iommu_hwpt_pgfault.flags``."""

    IOMMU_PGFAULT_FLAGS_PASID_VALID = 1 << 0
    IOMMU_PGFAULT_FLAGS_LAST_PAGE = 1 << 1
    """The last fault of its group: answer it with the group's cookie."""


class IommuPgfaultPerm(IntFlag):
    """``enum iommu_hwpt_pgfault_perm``: ``iommu_hwpt_pgfault.perm``."""

    IOMMU_PGFAULT_PERM_READ = 1 << 0
    IOMMU_PGFAULT_PERM_WRITE = 1 << 1
    IOMMU_PGFAULT_PERM_EXEC = 1 << 2
    IOMMU_PGFAULT_PERM_PRIV = 1 << 3


class iommu_hwpt_pgfault(KernelStruct):
    """One I/O page fault, as read from a fault queue fd.

    ::

        struct iommu_hwpt_pgfault {
                __u32 flags;            /* IommuPgfaultFlag */
                __u32 dev_id;
                __u32 pasid;
                __u32 grpid;
                __u32 perm;             /* IommuPgfaultPerm */
                __u32 __reserved;
                __aligned_u64 addr;
                __u32 length;
                __u32 cookie;
        };
    """

    _c_name_ = "struct iommu_hwpt_pgfault"
    _fields_ = (
        ("flags", c_uint32),
        ("dev_id", c_uint32),
        ("pasid", c_uint32),
        ("grpid", c_uint32),
        ("perm", c_uint32),
        ("__reserved", c_uint32),
        ("addr", c_uint64),
        ("length", c_uint32),
        ("cookie", c_uint32),
    )
    flags: int
    dev_id: int
    pasid: int
    grpid: int
    perm: int
    addr: int
    length: int
    cookie: int


class IommufdPageResponseCode(IntEnum):
    """``enum iommufd_page_response_code``: ``iommu_hwpt_page_response.code``."""

    IOMMUFD_PAGE_RESP_SUCCESS = 0
    """Handled, page tables populated: retry the access (PCIe "Success")."""
    IOMMUFD_PAGE_RESP_INVALID = 1
    """Not handled: do not retry (PCIe "Invalid Request")."""


class iommu_hwpt_page_response(KernelStruct):
    """The answer to a fault group, written to the fault queue fd.

    ::

        struct iommu_hwpt_page_response {
                __u32 cookie;
                __u32 code;             /* IommufdPageResponseCode */
        };
    """

    _c_name_ = "struct iommu_hwpt_page_response"
    _fields_ = (
        ("cookie", c_uint32),
        ("code", c_uint32),
    )
    cookie: int
    code: int


class iommu_fault_alloc(KernelStruct):
    """``IOMMU_FAULT_QUEUE_ALLOC``: a fault queue object and the fd to read it from.

    ::

        struct iommu_fault_alloc {
                __u32 size;
                __u32 flags;            /* Must be 0 */
                __u32 out_fault_id;
                __u32 out_fault_fd;
        };
    """

    _c_name_ = "struct iommu_fault_alloc"
    _fields_ = (
        ("size", c_uint32),
        ("flags", c_uint32),
        ("out_fault_id", c_uint32),
        ("out_fault_fd", c_uint32),
    )
    size: int
    flags: int
    out_fault_id: int
    out_fault_fd: int


IOMMU_FAULT_QUEUE_ALLOC: Final = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_FAULT_QUEUE_ALLOC)


ABI: Final = collect_abi(globals())
"""Every struct, ioctl, constant and enum above, for the ABI test."""
