"""Mirror of ``<linux/pci_regs.h>`` (Linux 6.12): the PCI registers pyvfio reads or builds.

The header is a list of ``#define`` lines, so this module is too: each name is the
kernel's, each value is checked against the header by ``tests/unit/test_abi.py``.  A
register's offset comes first and its bits follow, indented in the header and listed
after it here.  Only the registers pyvfio uses are mirrored (the parser in
`pyvfio.pci.config`, the capability tables beside it, the vfio-user server's config
builder and `pyvfio.device`), not the whole header.

The families of values (capability IDs, port types, ACS bits) are named by the public
enums of `pyvfio.pci.config` (``CapId.MSI == PCI_CAP_ID_MSI``), which take their values
from here.

Where the header extracts a field with a function-like macro (``PCI_ARI_CAP_NFN(x)``,
``(((x) >> 8) & 0xff)``), the name here is that field's mask, a `FieldMask`: the ABI
test checks that masking and shifting by it extracts what the C macro does.

Some registers and IDs the parser knows are not in the 6.12 header (the TLP Prefix Log
of AER, the newer extended capability IDs, the 64-bit halves of the Device Serial
Number); they are named where they are used, after the PCIe specification.
"""

from __future__ import annotations

from typing import Final

from pyvfio._uapi._base import FieldMask, collect_abi

PCI_CFG_SPACE_SIZE: Final = 256
PCI_CFG_SPACE_EXP_SIZE: Final = 4096

# ---- the standard header (64 bytes) -----------------------------------------------------

PCI_STD_HEADER_SIZEOF: Final = 64
PCI_STD_NUM_BARS: Final = 6
PCI_VENDOR_ID: Final = 0x00  # 16 bits
PCI_DEVICE_ID: Final = 0x02  # 16 bits
PCI_COMMAND: Final = 0x04  # 16 bits
PCI_COMMAND_IO: Final = 0x1  # Enable response in I/O space
PCI_COMMAND_MEMORY: Final = 0x2  # Enable response in Memory space
PCI_COMMAND_MASTER: Final = 0x4  # Enable bus mastering
PCI_COMMAND_PARITY: Final = 0x40  # Enable parity checking
PCI_COMMAND_SERR: Final = 0x100  # Enable SERR
PCI_COMMAND_INTX_DISABLE: Final = 0x400  # INTx Emulation Disable
PCI_STATUS: Final = 0x06  # 16 bits
PCI_STATUS_CAP_LIST: Final = 0x10  # Support Capability List
PCI_CLASS_REVISION: Final = 0x08  # High 24 bits are class, low 8 revision
PCI_REVISION_ID: Final = 0x08
PCI_CLASS_PROG: Final = 0x09  # Reg. Level Programming Interface
PCI_CLASS_DEVICE: Final = 0x0A  # Device class (16 bits: base class, subclass)
PCI_CACHE_LINE_SIZE: Final = 0x0C  # 8 bits
PCI_LATENCY_TIMER: Final = 0x0D  # 8 bits
PCI_HEADER_TYPE: Final = 0x0E  # 8 bits
PCI_HEADER_TYPE_MASK: Final = 0x7F
PCI_HEADER_TYPE_NORMAL: Final = 0
PCI_HEADER_TYPE_BRIDGE: Final = 1
PCI_HEADER_TYPE_CARDBUS: Final = 2
PCI_HEADER_TYPE_MFD: Final = 0x80  # Multi-Function Device (possible)
PCI_BIST: Final = 0x0F  # 8 bits

PCI_BASE_ADDRESS_0: Final = 0x10  # 32 bits; BAR n is at PCI_BASE_ADDRESS_0 + 4 * n
PCI_BASE_ADDRESS_SPACE: Final = 0x01  # 0 = memory, 1 = I/O
PCI_BASE_ADDRESS_SPACE_IO: Final = 0x01
PCI_BASE_ADDRESS_MEM_TYPE_MASK: Final = 0x06
PCI_BASE_ADDRESS_MEM_TYPE_32: Final = 0x00  # 32 bit address
PCI_BASE_ADDRESS_MEM_TYPE_1M: Final = 0x02  # Below 1M [obsolete]
PCI_BASE_ADDRESS_MEM_TYPE_64: Final = 0x04  # 64 bit address
PCI_BASE_ADDRESS_MEM_PREFETCH: Final = 0x08  # prefetchable?
PCI_BASE_ADDRESS_MEM_MASK: Final = ~0x0F  # (~0x0fUL)
PCI_BASE_ADDRESS_IO_MASK: Final = ~0x03  # (~0x03UL)

# Header type 0 (normal devices)
PCI_SUBSYSTEM_VENDOR_ID: Final = 0x2C
PCI_SUBSYSTEM_ID: Final = 0x2E
PCI_ROM_ADDRESS: Final = 0x30  # Bits 31..11 are address, 10..1 reserved
PCI_ROM_ADDRESS_ENABLE: Final = 0x01
PCI_ROM_ADDRESS_MASK: Final = ~0x7FF  # (~0x7ffU)
PCI_CAPABILITY_LIST: Final = 0x34  # Offset of first capability list entry
PCI_INTERRUPT_LINE: Final = 0x3C  # 8 bits
PCI_INTERRUPT_PIN: Final = 0x3D  # 8 bits

# Header type 1 (PCI-to-PCI bridges)
PCI_PRIMARY_BUS: Final = 0x18  # Primary bus number
PCI_SECONDARY_BUS: Final = 0x19  # Secondary bus number
PCI_SUBORDINATE_BUS: Final = 0x1A  # Highest bus number behind the bridge
PCI_SEC_LATENCY_TIMER: Final = 0x1B  # Latency timer for secondary interface
PCI_ROM_ADDRESS1: Final = 0x38  # Same as PCI_ROM_ADDRESS, but for htype 1

# Header type 2 (CardBus bridges)
PCI_CB_CAPABILITY_LIST: Final = 0x14
PCI_CB_PRIMARY_BUS: Final = 0x18  # PCI bus number
PCI_CB_CARD_BUS: Final = 0x19  # CardBus bus number
PCI_CB_SUBORDINATE_BUS: Final = 0x1A  # Subordinate bus number
PCI_CB_SUBSYSTEM_VENDOR_ID: Final = 0x40
PCI_CB_SUBSYSTEM_ID: Final = 0x42

# ---- capability lists ---------------------------------------------------------------------

PCI_CAP_LIST_ID: Final = 0  # Capability ID
PCI_CAP_ID_PM: Final = 0x01  # Power Management
PCI_CAP_ID_AGP: Final = 0x02  # Accelerated Graphics Port
PCI_CAP_ID_VPD: Final = 0x03  # Vital Product Data
PCI_CAP_ID_SLOTID: Final = 0x04  # Slot Identification
PCI_CAP_ID_MSI: Final = 0x05  # Message Signalled Interrupts
PCI_CAP_ID_CHSWP: Final = 0x06  # CompactPCI HotSwap
PCI_CAP_ID_PCIX: Final = 0x07  # PCI-X
PCI_CAP_ID_HT: Final = 0x08  # HyperTransport
PCI_CAP_ID_VNDR: Final = 0x09  # Vendor-Specific
PCI_CAP_ID_DBG: Final = 0x0A  # Debug port
PCI_CAP_ID_CCRC: Final = 0x0B  # CompactPCI Central Resource Control
PCI_CAP_ID_SHPC: Final = 0x0C  # PCI Standard Hot-Plug Controller
PCI_CAP_ID_SSVID: Final = 0x0D  # Bridge subsystem vendor/device ID
PCI_CAP_ID_AGP3: Final = 0x0E  # AGP Target PCI-PCI bridge
PCI_CAP_ID_SECDEV: Final = 0x0F  # Secure Device
PCI_CAP_ID_EXP: Final = 0x10  # PCI Express
PCI_CAP_ID_MSIX: Final = 0x11  # MSI-X
PCI_CAP_ID_SATA: Final = 0x12  # SATA Data/Index Conf.
PCI_CAP_ID_AF: Final = 0x13  # PCI Advanced Features
PCI_CAP_ID_EA: Final = 0x14  # PCI Enhanced Allocation
PCI_CAP_LIST_NEXT: Final = 1  # Next capability in the list
PCI_CAP_FLAGS: Final = 2  # Capability defined flags (16 bits); a vendor capability's length

# Power Management
PCI_PM_PMC: Final = 2  # PM Capabilities Register
PCI_PM_CAP_VER_MASK: Final = 0x0007  # Version
PCI_PM_CAP_D1: Final = 0x0200  # D1 power state support
PCI_PM_CAP_D2: Final = 0x0400  # D2 power state support
PCI_PM_CAP_PME_MASK: Final = 0xF800  # PME Mask of all supported states
PCI_PM_CTRL: Final = 4  # PM control and status register
PCI_PM_CTRL_STATE_MASK: Final = 0x0003  # Current power state (D0 to D3)
PCI_PM_CTRL_NO_SOFT_RESET: Final = 0x0008  # No reset for D3hot->D0
PCI_PM_SIZEOF: Final = 8

# Message Signalled Interrupts
PCI_MSI_FLAGS: Final = 0x02  # Message Control
PCI_MSI_FLAGS_ENABLE: Final = 0x0001  # MSI feature enabled
PCI_MSI_FLAGS_QMASK: Final = 0x000E  # Maximum queue size available
PCI_MSI_FLAGS_QSIZE: Final = 0x0070  # Message queue size configured
PCI_MSI_FLAGS_64BIT: Final = 0x0080  # 64-bit addresses allowed
PCI_MSI_FLAGS_MASKBIT: Final = 0x0100  # Per-vector masking capable
PCI_MSI_ADDRESS_LO: Final = 0x04  # Lower 32 bits
PCI_MSI_ADDRESS_HI: Final = 0x08  # Upper 32 bits (if PCI_MSI_FLAGS_64BIT set)
PCI_MSI_DATA_32: Final = 0x08  # 16 bits of data for 32-bit devices
PCI_MSI_MASK_32: Final = 0x0C  # Mask bits register for 32-bit devices
PCI_MSI_PENDING_32: Final = 0x10  # Pending intrs for 32-bit devices
PCI_MSI_DATA_64: Final = 0x0C  # 16 bits of data for 64-bit devices
PCI_MSI_MASK_64: Final = 0x10  # Mask bits register for 64-bit devices
PCI_MSI_PENDING_64: Final = 0x14  # Pending intrs for 64-bit devices

# MSI-X
PCI_MSIX_FLAGS: Final = 2  # Message Control
PCI_MSIX_FLAGS_QSIZE: Final = 0x07FF  # Table size
PCI_MSIX_FLAGS_MASKALL: Final = 0x4000  # Mask all vectors for this function
PCI_MSIX_FLAGS_ENABLE: Final = 0x8000  # MSI-X enable
PCI_MSIX_TABLE: Final = 4  # Table offset
PCI_MSIX_TABLE_BIR: Final = 0x00000007  # BAR index
PCI_MSIX_TABLE_OFFSET: Final = 0xFFFFFFF8  # Offset into specified BAR
PCI_MSIX_PBA: Final = 8  # Pending Bit Array offset
PCI_MSIX_PBA_BIR: Final = 0x00000007  # BAR index
PCI_MSIX_PBA_OFFSET: Final = 0xFFFFFFF8  # Offset into specified BAR
PCI_CAP_MSIX_SIZEOF: Final = 12  # size of MSIX registers
PCI_MSIX_ENTRY_SIZE: Final = 16  # one vector of the table

# PCI Advanced Features
PCI_AF_CAP: Final = 3
PCI_AF_CAP_TP: Final = 0x01
PCI_AF_CAP_FLR: Final = 0x02
PCI_CAP_AF_SIZEOF: Final = 6  # size of AF registers

# PCI Bridge Subsystem ID
PCI_SSVID_VENDOR_ID: Final = 4  # PCI Bridge subsystem vendor ID
PCI_SSVID_DEVICE_ID: Final = 6  # PCI Bridge subsystem device ID

# PCI Express
PCI_EXP_FLAGS: Final = 0x02  # Capabilities register
PCI_EXP_FLAGS_VERS: Final = 0x000F  # Capability version
PCI_EXP_FLAGS_TYPE: Final = 0x00F0  # Device/Port type
PCI_EXP_TYPE_ENDPOINT: Final = 0x0  # Express Endpoint
PCI_EXP_TYPE_LEG_END: Final = 0x1  # Legacy Endpoint
PCI_EXP_TYPE_ROOT_PORT: Final = 0x4  # Root Port
PCI_EXP_TYPE_UPSTREAM: Final = 0x5  # Upstream Port
PCI_EXP_TYPE_DOWNSTREAM: Final = 0x6  # Downstream Port
PCI_EXP_TYPE_PCI_BRIDGE: Final = 0x7  # PCIe to PCI/PCI-X Bridge
PCI_EXP_TYPE_PCIE_BRIDGE: Final = 0x8  # PCI/PCI-X to PCIe Bridge
PCI_EXP_TYPE_RC_END: Final = 0x9  # Root Complex Integrated Endpoint
PCI_EXP_TYPE_RC_EC: Final = 0xA  # Root Complex Event Collector
PCI_EXP_FLAGS_SLOT: Final = 0x0100  # Slot implemented
PCI_EXP_FLAGS_IRQ: Final = 0x3E00  # Interrupt message number
PCI_EXP_DEVCAP: Final = 0x04  # Device capabilities
PCI_EXP_DEVCAP_PAYLOAD: Final = 0x00000007  # Max_Payload_Size
PCI_EXP_DEVCAP_FLR: Final = 0x10000000  # Function Level Reset
PCI_EXP_DEVCTL: Final = 0x08  # Device Control
PCI_EXP_DEVCTL_CERE: Final = 0x0001  # Correctable Error Reporting En.
PCI_EXP_DEVCTL_NFERE: Final = 0x0002  # Non-Fatal Error Reporting Enable
PCI_EXP_DEVCTL_FERE: Final = 0x0004  # Fatal Error Reporting Enable
PCI_EXP_DEVCTL_URRE: Final = 0x0008  # Unsupported Request Reporting En.
PCI_EXP_DEVCTL_RELAX_EN: Final = 0x0010  # Enable relaxed ordering
PCI_EXP_DEVCTL_PAYLOAD: Final = 0x00E0  # Max_Payload_Size
PCI_EXP_DEVCTL_AUX_PME: Final = 0x0400  # Auxiliary Power PM Enable
PCI_EXP_DEVCTL_NOSNOOP_EN: Final = 0x0800  # Enable No Snoop
PCI_EXP_DEVCTL_READRQ: Final = 0x7000  # Max_Read_Request_Size
PCI_EXP_LNKCAP: Final = 0x0C  # Link Capabilities
PCI_EXP_LNKCAP_SLS: Final = 0x0000000F  # Supported Link Speeds
PCI_EXP_LNKCAP_SLS_2_5GB: Final = 0x00000001  # LNKCAP2 SLS Vector bit 0
PCI_EXP_LNKCAP_MLW: Final = 0x000003F0  # Maximum Link Width
PCI_EXP_LNKCAP_DLLLARC: Final = 0x00100000  # Data Link Layer Link Active Reporting Capable
PCI_EXP_LNKCAP_PN: Final = 0xFF000000  # Port Number
PCI_EXP_LNKSTA: Final = 0x12  # Link Status
PCI_EXP_LNKSTA_CLS_2_5GB: Final = 0x0001  # Current Link Speed 2.5GT/s
PCI_EXP_LNKSTA_NLW_X1: Final = 0x0010  # Current Link Width x1
PCI_EXP_LNKSTA_DLLLA: Final = 0x2000  # Data Link Layer Link Active
PCI_EXP_SLTSTA2: Final = 0x3A  # Slot Status 2, the last register of a v2 capability

# ---- extended capabilities (PCI Express, from 0x100) -------------------------------------

PCI_EXT_CAP_ID: Final = FieldMask(0x0000FFFF)  # PCI_EXT_CAP_ID(header)
PCI_EXT_CAP_VER: Final = FieldMask(0x000F0000)  # PCI_EXT_CAP_VER(header)

PCI_EXT_CAP_ID_ERR: Final = 0x01  # Advanced Error Reporting
PCI_EXT_CAP_ID_VC: Final = 0x02  # Virtual Channel Capability
PCI_EXT_CAP_ID_DSN: Final = 0x03  # Device Serial Number
PCI_EXT_CAP_ID_PWR: Final = 0x04  # Power Budgeting
PCI_EXT_CAP_ID_RCLD: Final = 0x05  # Root Complex Link Declaration
PCI_EXT_CAP_ID_RCILC: Final = 0x06  # Root Complex Internal Link Control
PCI_EXT_CAP_ID_RCEC: Final = 0x07  # Root Complex Event Collector
PCI_EXT_CAP_ID_MFVC: Final = 0x08  # Multi-Function VC Capability
PCI_EXT_CAP_ID_VC9: Final = 0x09  # same as _VC
PCI_EXT_CAP_ID_RCRB: Final = 0x0A  # Root Complex RB?
PCI_EXT_CAP_ID_VNDR: Final = 0x0B  # Vendor-Specific
PCI_EXT_CAP_ID_CAC: Final = 0x0C  # Config Access - obsolete
PCI_EXT_CAP_ID_ACS: Final = 0x0D  # Access Control Services
PCI_EXT_CAP_ID_ARI: Final = 0x0E  # Alternate Routing ID
PCI_EXT_CAP_ID_ATS: Final = 0x0F  # Address Translation Services
PCI_EXT_CAP_ID_SRIOV: Final = 0x10  # Single Root I/O Virtualization
PCI_EXT_CAP_ID_MRIOV: Final = 0x11  # Multi Root I/O Virtualization
PCI_EXT_CAP_ID_MCAST: Final = 0x12  # Multicast
PCI_EXT_CAP_ID_PRI: Final = 0x13  # Page Request Interface
PCI_EXT_CAP_ID_AMD_XXX: Final = 0x14  # Reserved for AMD
PCI_EXT_CAP_ID_REBAR: Final = 0x15  # Resizable BAR
PCI_EXT_CAP_ID_DPA: Final = 0x16  # Dynamic Power Allocation
PCI_EXT_CAP_ID_TPH: Final = 0x17  # TPH Requester
PCI_EXT_CAP_ID_LTR: Final = 0x18  # Latency Tolerance Reporting
PCI_EXT_CAP_ID_SECPCI: Final = 0x19  # Secondary PCIe Capability
PCI_EXT_CAP_ID_PMUX: Final = 0x1A  # Protocol Multiplexing
PCI_EXT_CAP_ID_PASID: Final = 0x1B  # Process Address Space ID
PCI_EXT_CAP_ID_DPC: Final = 0x1D  # Downstream Port Containment
PCI_EXT_CAP_ID_L1SS: Final = 0x1E  # L1 PM Substates
PCI_EXT_CAP_ID_PTM: Final = 0x1F  # Precision Time Measurement
PCI_EXT_CAP_ID_DVSEC: Final = 0x23  # Designated Vendor-Specific
PCI_EXT_CAP_ID_DLF: Final = 0x25  # Data Link Feature
PCI_EXT_CAP_ID_PL_16GT: Final = 0x26  # Physical Layer 16.0 GT/s
PCI_EXT_CAP_ID_NPEM: Final = 0x29  # Native PCIe Enclosure Management
PCI_EXT_CAP_ID_PL_32GT: Final = 0x2A  # Physical Layer 32.0 GT/s
PCI_EXT_CAP_ID_DOE: Final = 0x2E  # Data Object Exchange

PCI_EXT_CAP_DSN_SIZEOF: Final = 12

# Advanced Error Reporting
PCI_ERR_UNCOR_STATUS: Final = 0x04  # Uncorrectable Error Status
PCI_ERR_UNCOR_MASK: Final = 0x08  # Uncorrectable Error Mask
PCI_ERR_UNCOR_SEVER: Final = 0x0C  # Uncorrectable Error Severity
PCI_ERR_COR_STATUS: Final = 0x10  # Correctable Error Status
PCI_ERR_COR_MASK: Final = 0x14  # Correctable Error Mask
PCI_ERR_CAP: Final = 0x18  # Advanced Error Capabilities & Ctrl
PCI_ERR_CAP_FEP: Final = FieldMask(0x0000001F)  # First Error Pointer
PCI_ERR_CAP_ECRC_GENC: Final = 0x00000020  # ECRC Generation Capable
PCI_ERR_CAP_ECRC_GENE: Final = 0x00000040  # ECRC Generation Enable
PCI_ERR_CAP_ECRC_CHKC: Final = 0x00000080  # ECRC Check Capable
PCI_ERR_CAP_ECRC_CHKE: Final = 0x00000100  # ECRC Check Enable
PCI_ERR_ROOT_ERR_SRC: Final = 0x34  # Error Source Identification

# Vendor-Specific (VSEC, PCI_EXT_CAP_ID_VNDR)
PCI_VNDR_HEADER: Final = 4  # Vendor-Specific Header
PCI_VNDR_HEADER_ID: Final = FieldMask(0x0000FFFF)
PCI_VNDR_HEADER_REV: Final = FieldMask(0x000F0000)
PCI_VNDR_HEADER_LEN: Final = FieldMask(0xFFF00000)

# Alternative Routing-ID Interpretation
PCI_ARI_CAP: Final = 0x04  # ARI Capability Register
PCI_ARI_CAP_MFVC: Final = 0x0001  # MFVC Function Groups Capability
PCI_ARI_CAP_ACS: Final = 0x0002  # ACS Function Groups Capability
PCI_ARI_CAP_NFN: Final = FieldMask(0xFF00)  # Next Function Number
PCI_ARI_CTRL: Final = 0x06  # ARI Control Register
PCI_ARI_CTRL_MFVC: Final = 0x0001  # MFVC Function Groups Enable
PCI_ARI_CTRL_ACS: Final = 0x0002  # ACS Function Groups Enable
PCI_ARI_CTRL_FG: Final = FieldMask(0x0070)  # Function Group
PCI_EXT_CAP_ARI_SIZEOF: Final = 8

# Address Translation Service
PCI_ATS_CAP: Final = 0x04  # ATS Capability Register
PCI_ATS_CAP_QDEP: Final = FieldMask(0x001F)  # Invalidate Queue Depth
PCI_ATS_CAP_PAGE_ALIGNED: Final = 0x0020  # Page Aligned Request
PCI_ATS_CTRL: Final = 0x06  # ATS Control Register
PCI_ATS_CTRL_ENABLE: Final = 0x8000  # ATS Enable
PCI_ATS_CTRL_STU: Final = FieldMask(0x001F)  # Smallest Translation Unit
PCI_EXT_CAP_ATS_SIZEOF: Final = 8

# Page Request Interface
PCI_PRI_CTRL: Final = 0x04  # PRI control register
PCI_PRI_CTRL_ENABLE: Final = 0x0001  # Enable
PCI_PRI_STATUS: Final = 0x06  # PRI status register
PCI_PRI_STATUS_STOPPED: Final = 0x0100  # PRI Stopped
PCI_PRI_MAX_REQ: Final = 0x08  # PRI max reqs supported
PCI_PRI_ALLOC_REQ: Final = 0x0C  # PRI max reqs allowed
PCI_EXT_CAP_PRI_SIZEOF: Final = 16

# Process Address Space ID
PCI_PASID_CAP: Final = 0x04  # PASID feature register
PCI_PASID_CAP_EXEC: Final = 0x0002  # Exec permissions Supported
PCI_PASID_CAP_PRIV: Final = 0x0004  # Privilege Mode Supported
PCI_PASID_CAP_WIDTH: Final = 0x1F00
PCI_PASID_CTRL: Final = 0x06  # PASID control register
PCI_PASID_CTRL_ENABLE: Final = 0x0001  # Enable bit
PCI_PASID_CTRL_EXEC: Final = 0x0002  # Exec permissions Enable
PCI_PASID_CTRL_PRIV: Final = 0x0004  # Privilege Mode Enable
PCI_EXT_CAP_PASID_SIZEOF: Final = 8

# Single Root I/O Virtualization
PCI_SRIOV_CAP: Final = 0x04  # SR-IOV Capabilities
PCI_SRIOV_CAP_VFM: Final = 0x00000001  # VF Migration Capable
PCI_SRIOV_CTRL: Final = 0x08  # SR-IOV Control
PCI_SRIOV_CTRL_VFE: Final = 0x0001  # VF Enable
PCI_SRIOV_CTRL_MSE: Final = 0x0008  # VF Memory Space Enable
PCI_SRIOV_CTRL_ARI: Final = 0x0010  # ARI Capable Hierarchy
PCI_SRIOV_INITIAL_VF: Final = 0x0C  # Initial VFs
PCI_SRIOV_TOTAL_VF: Final = 0x0E  # Total VFs
PCI_SRIOV_NUM_VF: Final = 0x10  # Number of VFs
PCI_SRIOV_FUNC_LINK: Final = 0x12  # Function Dependency Link
PCI_SRIOV_VF_OFFSET: Final = 0x14  # First VF Offset
PCI_SRIOV_VF_STRIDE: Final = 0x16  # Following VF Stride
PCI_SRIOV_VF_DID: Final = 0x1A  # VF Device ID
PCI_SRIOV_SUP_PGSIZE: Final = 0x1C  # Supported Page Sizes
PCI_SRIOV_SYS_PGSIZE: Final = 0x20  # System Page Size
PCI_SRIOV_BAR: Final = 0x24  # VF BAR0
PCI_SRIOV_NUM_BARS: Final = 6  # Number of VF BARs
PCI_EXT_CAP_SRIOV_SIZEOF: Final = 0x40

# Access Control Services
PCI_ACS_CAP: Final = 0x04  # ACS Capability Register
PCI_ACS_SV: Final = 0x0001  # Source Validation
PCI_ACS_TB: Final = 0x0002  # Translation Blocking
PCI_ACS_RR: Final = 0x0004  # P2P Request Redirect
PCI_ACS_CR: Final = 0x0008  # P2P Completion Redirect
PCI_ACS_UF: Final = 0x0010  # Upstream Forwarding
PCI_ACS_EC: Final = 0x0020  # P2P Egress Control
PCI_ACS_DT: Final = 0x0040  # Direct Translated P2P
PCI_ACS_EGRESS_BITS: Final = 0x05  # ACS Egress Control Vector Size (the capability's high byte)
PCI_ACS_CTRL: Final = 0x06  # ACS Control Register
PCI_ACS_EGRESS_CTL_V: Final = 0x08  # ACS Egress Control Vector

# Resizable BARs
PCI_REBAR_CAP: Final = 4  # capability register
PCI_REBAR_CTRL: Final = 8  # control register
PCI_REBAR_CTRL_BAR_IDX: Final = 0x00000007  # BAR index
PCI_REBAR_CTRL_NBAR_MASK: Final = 0x000000E0  # # of resizable BARs
PCI_REBAR_CTRL_NBAR_SHIFT: Final = 5  # shift for # of BARs
PCI_REBAR_CTRL_BAR_SHIFT: Final = 8  # shift for BAR size

# Designated Vendor-Specific (DVSEC, PCI_EXT_CAP_ID_DVSEC)
PCI_DVSEC_HEADER1: Final = 0x4  # Designated Vendor-Specific Header1
PCI_DVSEC_HEADER1_VID: Final = FieldMask(0x0000FFFF)
PCI_DVSEC_HEADER1_REV: Final = FieldMask(0x000F0000)
PCI_DVSEC_HEADER1_LEN: Final = FieldMask(0xFFF00000)
PCI_DVSEC_HEADER2: Final = 0x8  # Designated Vendor-Specific Header2
PCI_DVSEC_HEADER2_ID: Final = FieldMask(0x0000FFFF)

ABI: Final = collect_abi(globals())
