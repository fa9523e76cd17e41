"""PCI Express extended capabilities (the list from 0x100): each dataclass and its table.

As in `pyvfio.pci.capabilities`: each capability pyvfio decodes is a frozen dataclass
followed by the `Layout` it is read (and built) with, registered by ID in
`EXT_CAP_LAYOUTS`.  Offsets and bits are the kernel's names (`pyvfio._uapi.pci_regs`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from pyvfio._uapi.pci_regs import (
    PCI_ACS_CAP,
    PCI_ACS_CR,
    PCI_ACS_CTRL,
    PCI_ACS_DT,
    PCI_ACS_EC,
    PCI_ACS_EGRESS_BITS,
    PCI_ACS_EGRESS_CTL_V,
    PCI_ACS_RR,
    PCI_ACS_SV,
    PCI_ACS_TB,
    PCI_ACS_UF,
    PCI_ARI_CAP,
    PCI_ARI_CAP_ACS,
    PCI_ARI_CAP_MFVC,
    PCI_ARI_CAP_NFN,
    PCI_ARI_CTRL,
    PCI_ARI_CTRL_ACS,
    PCI_ARI_CTRL_FG,
    PCI_ARI_CTRL_MFVC,
    PCI_ATS_CAP,
    PCI_ATS_CAP_PAGE_ALIGNED,
    PCI_ATS_CAP_QDEP,
    PCI_ATS_CTRL,
    PCI_ATS_CTRL_ENABLE,
    PCI_ATS_CTRL_STU,
    PCI_DVSEC_HEADER1,
    PCI_DVSEC_HEADER1_LEN,
    PCI_DVSEC_HEADER1_REV,
    PCI_DVSEC_HEADER1_VID,
    PCI_DVSEC_HEADER2,
    PCI_DVSEC_HEADER2_ID,
    PCI_ERR_CAP,
    PCI_ERR_CAP_ECRC_CHKC,
    PCI_ERR_CAP_ECRC_CHKE,
    PCI_ERR_CAP_ECRC_GENC,
    PCI_ERR_CAP_ECRC_GENE,
    PCI_ERR_CAP_FEP,
    PCI_ERR_COR_MASK,
    PCI_ERR_COR_STATUS,
    PCI_ERR_ROOT_ERR_SRC,
    PCI_ERR_UNCOR_MASK,
    PCI_ERR_UNCOR_SEVER,
    PCI_ERR_UNCOR_STATUS,
    PCI_EXT_CAP_ARI_SIZEOF,
    PCI_EXT_CAP_ATS_SIZEOF,
    PCI_EXT_CAP_DSN_SIZEOF,
    PCI_EXT_CAP_ID_ACS,
    PCI_EXT_CAP_ID_AMD_XXX,
    PCI_EXT_CAP_ID_ARI,
    PCI_EXT_CAP_ID_ATS,
    PCI_EXT_CAP_ID_CAC,
    PCI_EXT_CAP_ID_DLF,
    PCI_EXT_CAP_ID_DOE,
    PCI_EXT_CAP_ID_DPA,
    PCI_EXT_CAP_ID_DPC,
    PCI_EXT_CAP_ID_DSN,
    PCI_EXT_CAP_ID_DVSEC,
    PCI_EXT_CAP_ID_ERR,
    PCI_EXT_CAP_ID_L1SS,
    PCI_EXT_CAP_ID_LTR,
    PCI_EXT_CAP_ID_MCAST,
    PCI_EXT_CAP_ID_MFVC,
    PCI_EXT_CAP_ID_MRIOV,
    PCI_EXT_CAP_ID_NPEM,
    PCI_EXT_CAP_ID_PASID,
    PCI_EXT_CAP_ID_PL_16GT,
    PCI_EXT_CAP_ID_PL_32GT,
    PCI_EXT_CAP_ID_PMUX,
    PCI_EXT_CAP_ID_PRI,
    PCI_EXT_CAP_ID_PTM,
    PCI_EXT_CAP_ID_PWR,
    PCI_EXT_CAP_ID_RCEC,
    PCI_EXT_CAP_ID_RCILC,
    PCI_EXT_CAP_ID_RCLD,
    PCI_EXT_CAP_ID_RCRB,
    PCI_EXT_CAP_ID_REBAR,
    PCI_EXT_CAP_ID_SECPCI,
    PCI_EXT_CAP_ID_SRIOV,
    PCI_EXT_CAP_ID_TPH,
    PCI_EXT_CAP_ID_VC,
    PCI_EXT_CAP_ID_VC9,
    PCI_EXT_CAP_ID_VNDR,
    PCI_EXT_CAP_PASID_SIZEOF,
    PCI_EXT_CAP_PRI_SIZEOF,
    PCI_EXT_CAP_SRIOV_SIZEOF,
    PCI_PASID_CAP,
    PCI_PASID_CAP_EXEC,
    PCI_PASID_CAP_PRIV,
    PCI_PASID_CAP_WIDTH,
    PCI_PASID_CTRL,
    PCI_PASID_CTRL_ENABLE,
    PCI_PASID_CTRL_EXEC,
    PCI_PASID_CTRL_PRIV,
    PCI_PRI_ALLOC_REQ,
    PCI_PRI_CTRL,
    PCI_PRI_CTRL_ENABLE,
    PCI_PRI_MAX_REQ,
    PCI_PRI_STATUS,
    PCI_PRI_STATUS_STOPPED,
    PCI_REBAR_CAP,
    PCI_REBAR_CTRL,
    PCI_REBAR_CTRL_BAR_IDX,
    PCI_REBAR_CTRL_BAR_SHIFT,
    PCI_REBAR_CTRL_NBAR_MASK,
    PCI_REBAR_CTRL_NBAR_SHIFT,
    PCI_SRIOV_BAR,
    PCI_SRIOV_CAP,
    PCI_SRIOV_CAP_VFM,
    PCI_SRIOV_CTRL,
    PCI_SRIOV_CTRL_ARI,
    PCI_SRIOV_CTRL_MSE,
    PCI_SRIOV_CTRL_VFE,
    PCI_SRIOV_FUNC_LINK,
    PCI_SRIOV_INITIAL_VF,
    PCI_SRIOV_NUM_BARS,
    PCI_SRIOV_NUM_VF,
    PCI_SRIOV_SUP_PGSIZE,
    PCI_SRIOV_SYS_PGSIZE,
    PCI_SRIOV_TOTAL_VF,
    PCI_SRIOV_VF_DID,
    PCI_SRIOV_VF_OFFSET,
    PCI_SRIOV_VF_STRIDE,
    PCI_VNDR_HEADER,
    PCI_VNDR_HEADER_ID,
    PCI_VNDR_HEADER_LEN,
    PCI_VNDR_HEADER_REV,
)
from pyvfio.pci.header import Bar, decode_bars
from pyvfio.pci.layout import FLAG, Bits, Layout, Register, enum_or_int, flag_text, size_text, u32

__all__ = [
    "ACS_LAYOUT",
    "AER_LAYOUT",
    "ARI_LAYOUT",
    "ATS_LAYOUT",
    "DSN_LAYOUT",
    "DVSEC_LAYOUT",
    "EXT_CAP_LAYOUTS",
    "PASID_LAYOUT",
    "PRI_LAYOUT",
    "REBAR_LAYOUT",
    "SRIOV_LAYOUT",
    "VF_REBAR_LAYOUT",
    "VSEC_LAYOUT",
    "AccessControlServices",
    "AcsFlags",
    "AddressTranslationService",
    "AdvancedErrorReporting",
    "AlternativeRoutingId",
    "DesignatedVendorSpecific",
    "DeviceSerialNumber",
    "ExtCapId",
    "ExtendedCapability",
    "PageRequestInterface",
    "ProcessAddressSpaceId",
    "ResizableBar",
    "ResizableBarEntry",
    "SrIov",
    "VendorSpecificExtended",
]


class ExtCapId(enum.IntEnum):
    """Extended capability IDs, named as the kernel's ``PCI_EXT_CAP_ID_*``.

    IDs the kernel's (6.12) header does not define carry short names after the PCIe spec.
    """

    NULL = 0x00  # vfio-pci hides an extended capability by zeroing its ID
    ERR = PCI_EXT_CAP_ID_ERR
    VC = PCI_EXT_CAP_ID_VC
    DSN = PCI_EXT_CAP_ID_DSN
    PWR = PCI_EXT_CAP_ID_PWR
    RCLD = PCI_EXT_CAP_ID_RCLD
    RCILC = PCI_EXT_CAP_ID_RCILC
    RCEC = PCI_EXT_CAP_ID_RCEC
    MFVC = PCI_EXT_CAP_ID_MFVC
    VC9 = PCI_EXT_CAP_ID_VC9
    RCRB = PCI_EXT_CAP_ID_RCRB
    VNDR = PCI_EXT_CAP_ID_VNDR
    CAC = PCI_EXT_CAP_ID_CAC
    ACS = PCI_EXT_CAP_ID_ACS
    ARI = PCI_EXT_CAP_ID_ARI
    ATS = PCI_EXT_CAP_ID_ATS
    SRIOV = PCI_EXT_CAP_ID_SRIOV
    MRIOV = PCI_EXT_CAP_ID_MRIOV
    MCAST = PCI_EXT_CAP_ID_MCAST
    PRI = PCI_EXT_CAP_ID_PRI
    AMD_XXX = PCI_EXT_CAP_ID_AMD_XXX
    REBAR = PCI_EXT_CAP_ID_REBAR
    DPA = PCI_EXT_CAP_ID_DPA
    TPH = PCI_EXT_CAP_ID_TPH
    LTR = PCI_EXT_CAP_ID_LTR
    SECPCI = PCI_EXT_CAP_ID_SECPCI
    PMUX = PCI_EXT_CAP_ID_PMUX
    PASID = PCI_EXT_CAP_ID_PASID
    LNR = 0x1C  # not in pci_regs.h
    DPC = PCI_EXT_CAP_ID_DPC
    L1SS = PCI_EXT_CAP_ID_L1SS
    PTM = PCI_EXT_CAP_ID_PTM
    MPCIE = 0x20  # not in pci_regs.h
    FRS = 0x21  # not in pci_regs.h
    RTR = 0x22  # not in pci_regs.h
    DVSEC = PCI_EXT_CAP_ID_DVSEC
    VF_REBAR = 0x24  # not in pci_regs.h (6.12)
    DLF = PCI_EXT_CAP_ID_DLF
    PL_16GT = PCI_EXT_CAP_ID_PL_16GT
    LMR = 0x27  # not in pci_regs.h
    HIER_ID = 0x28  # not in pci_regs.h
    NPEM = PCI_EXT_CAP_ID_NPEM
    PL_32GT = PCI_EXT_CAP_ID_PL_32GT
    ALT_PROTOCOL = 0x2B  # not in pci_regs.h
    SFI = 0x2C  # not in pci_regs.h
    SHADOW_FUNC = 0x2D  # not in pci_regs.h
    DOE = PCI_EXT_CAP_ID_DOE
    DEV3 = 0x2F  # not in pci_regs.h (6.12)
    IDE = 0x30  # not in pci_regs.h (6.12)
    PL_64GT = 0x31  # not in pci_regs.h (6.12)


EXT_CAP_NAMES: Final[dict[int, str]] = {
    ExtCapId.NULL: "Null",
    ExtCapId.ERR: "Advanced Error Reporting",
    ExtCapId.VC: "Virtual Channel",
    ExtCapId.DSN: "Device Serial Number",
    ExtCapId.PWR: "Power Budgeting",
    ExtCapId.RCLD: "Root Complex Link Declaration",
    ExtCapId.RCILC: "Root Complex Internal Link Control",
    ExtCapId.RCEC: "Root Complex Event Collector Endpoint Association",
    ExtCapId.MFVC: "Multi-Function Virtual Channel",
    ExtCapId.VC9: "Virtual Channel",
    ExtCapId.RCRB: "Root Complex Register Block",
    ExtCapId.VNDR: "Vendor Specific",
    ExtCapId.CAC: "Configuration Access Correlation",
    ExtCapId.ACS: "Access Control Services",
    ExtCapId.ARI: "Alternative Routing-ID Interpretation",
    ExtCapId.ATS: "Address Translation Service",
    ExtCapId.SRIOV: "Single Root I/O Virtualization",
    ExtCapId.MRIOV: "Multi-Root I/O Virtualization",
    ExtCapId.MCAST: "Multicast",
    ExtCapId.PRI: "Page Request Interface",
    ExtCapId.AMD_XXX: "Reserved for AMD",
    ExtCapId.REBAR: "Resizable BAR",
    ExtCapId.DPA: "Dynamic Power Allocation",
    ExtCapId.TPH: "TPH Requester",
    ExtCapId.LTR: "Latency Tolerance Reporting",
    ExtCapId.SECPCI: "Secondary PCI Express",
    ExtCapId.PMUX: "Protocol Multiplexing",
    ExtCapId.PASID: "Process Address Space ID",
    ExtCapId.LNR: "LN Requester",
    ExtCapId.DPC: "Downstream Port Containment",
    ExtCapId.L1SS: "L1 PM Substates",
    ExtCapId.PTM: "Precision Time Measurement",
    ExtCapId.MPCIE: "PCI Express over M-PHY",
    ExtCapId.FRS: "FRS Queueing",
    ExtCapId.RTR: "Readiness Time Reporting",
    ExtCapId.DVSEC: "Designated Vendor-Specific",
    ExtCapId.VF_REBAR: "VF Resizable BAR",
    ExtCapId.DLF: "Data Link Feature",
    ExtCapId.PL_16GT: "Physical Layer 16.0 GT/s",
    ExtCapId.LMR: "Lane Margining at the Receiver",
    ExtCapId.HIER_ID: "Hierarchy ID",
    ExtCapId.NPEM: "Native PCIe Enclosure Management",
    ExtCapId.PL_32GT: "Physical Layer 32.0 GT/s",
    ExtCapId.ALT_PROTOCOL: "Alternate Protocol",
    ExtCapId.SFI: "System Firmware Intermediary",
    ExtCapId.SHADOW_FUNC: "Shadow Functions",
    ExtCapId.DOE: "Data Object Exchange",
    ExtCapId.DEV3: "Device 3",
    ExtCapId.IDE: "Integrity and Data Encryption",
    ExtCapId.PL_64GT: "Physical Layer 64.0 GT/s",
}


@dataclass(frozen=True, slots=True)
class ExtendedCapability:
    """An entry of the PCI Express extended capability list (0x100 and up)."""

    id: int
    version: int
    offset: int

    @property
    def name(self) -> str:
        return EXT_CAP_NAMES.get(self.id, f"Extended Capability ID {self.id:#06x}")

    def _details(self) -> str:
        return ""

    def __str__(self) -> str:
        details = self._details()
        head = f"[{self.offset:03x} v{self.version}] {self.name}"
        return head + (f": {details}" if details else "")


# --- Advanced Error Reporting --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AdvancedErrorReporting(ExtendedCapability):
    """Advanced Error Reporting: status and masks, ECRC abilities."""

    uncorrectable_status: int
    uncorrectable_mask: int
    uncorrectable_severity: int
    correctable_status: int
    correctable_mask: int
    first_error_pointer: int
    ecrc_generation_capable: bool
    ecrc_generation_enabled: bool
    ecrc_check_capable: bool
    ecrc_check_enabled: bool

    def _details(self) -> str:
        return (
            f"UESta {self.uncorrectable_status:08x} CESta {self.correctable_status:08x}, "
            f"{flag_text('ECRCGenCap', self.ecrc_generation_capable)} "
            f"{flag_text('ECRCChkCap', self.ecrc_check_capable)}"
        )


AER_LAYOUT: Final = Layout(
    AdvancedErrorReporting,
    ExtCapId.ERR,
    Register(PCI_ERR_UNCOR_STATUS, 4, Bits("uncorrectable_status")),
    Register(PCI_ERR_UNCOR_MASK, 4, Bits("uncorrectable_mask")),
    Register(PCI_ERR_UNCOR_SEVER, 4, Bits("uncorrectable_severity")),
    Register(PCI_ERR_COR_STATUS, 4, Bits("correctable_status")),
    Register(PCI_ERR_COR_MASK, 4, Bits("correctable_mask")),
    Register(
        PCI_ERR_CAP,
        4,
        Bits("first_error_pointer", PCI_ERR_CAP_FEP),
        Bits("ecrc_generation_capable", PCI_ERR_CAP_ECRC_GENC, FLAG),
        Bits("ecrc_generation_enabled", PCI_ERR_CAP_ECRC_GENE, FLAG),
        Bits("ecrc_check_capable", PCI_ERR_CAP_ECRC_CHKC, FLAG),
        Bits("ecrc_check_enabled", PCI_ERR_CAP_ECRC_CHKE, FLAG),
    ),
    # Through the 16-byte TLP Prefix Log after the Error Source ID (PCIe 6.0, 7.8.4.12),
    # which pci_regs.h does not name.
    size=PCI_ERR_ROOT_ERR_SRC + 4 + 16,
)


# --- Access Control Services ---------------------------------------------------------------


class AcsFlags(enum.IntFlag):
    """ACS Capability and Control register bits (``PCI_ACS_*``)."""

    SV = PCI_ACS_SV  # Source Validation
    TB = PCI_ACS_TB  # Translation Blocking
    RR = PCI_ACS_RR  # P2P Request Redirect
    CR = PCI_ACS_CR  # P2P Completion Redirect
    UF = PCI_ACS_UF  # Upstream Forwarding
    EC = PCI_ACS_EC  # P2P Egress Control
    DT = PCI_ACS_DT  # Direct Translated P2P


@dataclass(frozen=True, slots=True)
class AccessControlServices(ExtendedCapability):
    """Access Control Services: what the port can isolate, and what it does."""

    capability: AcsFlags
    control: AcsFlags
    egress_control_vector_size: int

    def _details(self) -> str:
        names = [flag.name or "" for flag in AcsFlags]
        cap = " ".join(flag_text(n, bool(self.capability & AcsFlags[n])) for n in names)
        ctl = " ".join(flag_text(n, bool(self.control & AcsFlags[n])) for n in names)
        return f"cap {cap}; ctl {ctl}"


# The flags are the registers' low byte (bit 7 too, which later specs define); the
# capability register's high byte is the Egress Control Vector Size (PCI_ACS_EGRESS_BITS).
_ACS_FLAGS: Final = 0x00FF
_ACS_EGRESS_SIZE: Final = 0xFF << 8 * (PCI_ACS_EGRESS_BITS - PCI_ACS_CAP)

ACS_LAYOUT: Final = Layout(
    AccessControlServices,
    ExtCapId.ACS,
    Register(
        PCI_ACS_CAP,
        2,
        Bits("capability", _ACS_FLAGS, enum_or_int(AcsFlags)),
        Bits("egress_control_vector_size", _ACS_EGRESS_SIZE),
    ),
    Register(PCI_ACS_CTRL, 2, Bits("control", _ACS_FLAGS, enum_or_int(AcsFlags))),
    size=PCI_ACS_EGRESS_CTL_V,  # the egress control vector follows, as long as its size says
)


# --- SR-IOV --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SrIov(ExtendedCapability):
    """Single Root I/O Virtualization: VF counts, routing IDs, VF BARs."""

    vf_migration_capable: bool
    vf_enable: bool
    vf_memory_space_enable: bool
    ari_capable_hierarchy: bool
    initial_vfs: int
    total_vfs: int
    num_vfs: int
    function_dependency_link: int
    vf_offset: int
    vf_stride: int
    vf_device_id: int
    supported_page_sizes: int
    system_page_size: int
    vf_bars: tuple[Bar, ...]

    def _details(self) -> str:
        return (
            f"VFs {self.num_vfs}/{self.total_vfs} (initial {self.initial_vfs}), "
            f"{flag_text('Enable', self.vf_enable)}, offset {self.vf_offset} "
            f"stride {self.vf_stride}, VF device {self.vf_device_id:04x}"
        )


def _vf_bars(data: bytes, pos: int) -> dict[str, object]:
    # The decoder has no channel for problems; a malformed VF BAR just decodes as it can.
    problems: list[str] = []
    bars = decode_bars(data, pos + PCI_SRIOV_BAR, PCI_SRIOV_NUM_BARS, problems, "VF BAR")
    return {"vf_bars": bars}


SRIOV_LAYOUT: Final = Layout(
    SrIov,
    ExtCapId.SRIOV,
    Register(PCI_SRIOV_CAP, 4, Bits("vf_migration_capable", PCI_SRIOV_CAP_VFM, FLAG)),
    Register(
        PCI_SRIOV_CTRL,
        2,
        Bits("vf_enable", PCI_SRIOV_CTRL_VFE, FLAG),
        Bits("vf_memory_space_enable", PCI_SRIOV_CTRL_MSE, FLAG),
        Bits("ari_capable_hierarchy", PCI_SRIOV_CTRL_ARI, FLAG),
    ),
    Register(PCI_SRIOV_INITIAL_VF, 2, Bits("initial_vfs")),
    Register(PCI_SRIOV_TOTAL_VF, 2, Bits("total_vfs")),
    Register(PCI_SRIOV_NUM_VF, 2, Bits("num_vfs")),
    Register(PCI_SRIOV_FUNC_LINK, 1, Bits("function_dependency_link")),
    Register(PCI_SRIOV_VF_OFFSET, 2, Bits("vf_offset")),
    Register(PCI_SRIOV_VF_STRIDE, 2, Bits("vf_stride")),
    Register(PCI_SRIOV_VF_DID, 2, Bits("vf_device_id")),
    Register(PCI_SRIOV_SUP_PGSIZE, 4, Bits("supported_page_sizes")),
    Register(PCI_SRIOV_SYS_PGSIZE, 4, Bits("system_page_size")),
    size=PCI_EXT_CAP_SRIOV_SIZEOF,
    more=_vf_bars,
)


# --- Alternative Routing-ID Interpretation -------------------------------------------------


@dataclass(frozen=True, slots=True)
class AlternativeRoutingId(ExtendedCapability):
    """Alternative Routing-ID Interpretation."""

    mfvc_function_groups: bool
    acs_function_groups: bool
    next_function: int
    mfvc_function_groups_enabled: bool
    acs_function_groups_enabled: bool
    function_group: int

    def _details(self) -> str:
        return f"next function {self.next_function}"


ARI_LAYOUT: Final = Layout(
    AlternativeRoutingId,
    ExtCapId.ARI,
    Register(
        PCI_ARI_CAP,
        2,
        Bits("mfvc_function_groups", PCI_ARI_CAP_MFVC, FLAG),
        Bits("acs_function_groups", PCI_ARI_CAP_ACS, FLAG),
        Bits("next_function", PCI_ARI_CAP_NFN),
    ),
    Register(
        PCI_ARI_CTRL,
        2,
        Bits("mfvc_function_groups_enabled", PCI_ARI_CTRL_MFVC, FLAG),
        Bits("acs_function_groups_enabled", PCI_ARI_CTRL_ACS, FLAG),
        Bits("function_group", PCI_ARI_CTRL_FG),
    ),
    size=PCI_EXT_CAP_ARI_SIZEOF,
)


# --- Resizable BAR -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResizableBarEntry:
    """One resizable BAR: the sizes it supports and the size it has now, in bytes."""

    bar: int
    sizes: tuple[int, ...]
    current_size: int

    def __str__(self) -> str:
        sizes = " ".join(size_text(s) for s in self.sizes)
        return f"BAR {self.bar}: current {size_text(self.current_size)}, supported {sizes}"


@dataclass(frozen=True, slots=True)
class ResizableBar(ExtendedCapability):
    """Resizable BAR, or VF Resizable BAR (same layout, ``ExtCapId.VF_REBAR``)."""

    bars: tuple[ResizableBarEntry, ...]

    def _details(self) -> str:
        return "; ".join(str(entry) for entry in self.bars)


# Up to six entries, each a capability and a control register. Capability bits 31:4
# offer 1 MiB ... 128 TiB; control bits 31:16 extend that to 256 TiB ... 8 EiB; control
# bits 13:8 hold the current size as log2(size) - 20 (pci_regs.h's
# PCI_REBAR_CTRL_BAR_SIZE has five of those six bits). The first control register says
# how many entries follow.
_REBAR_ENTRY: Final = 8
_REBAR_MAX_ENTRIES: Final = 6
_REBAR_CTRL_BAR_SIZE: Final = 0x3F << PCI_REBAR_CTRL_BAR_SHIFT


def _rebar_entries(data: bytes, pos: int) -> dict[str, object]:
    first_control = u32(data, pos + PCI_REBAR_CTRL)
    count = (first_control & PCI_REBAR_CTRL_NBAR_MASK) >> PCI_REBAR_CTRL_NBAR_SHIFT
    entries = []
    for index in range(min(count, _REBAR_MAX_ENTRIES)):
        rebar_cap = u32(data, pos + PCI_REBAR_CAP + _REBAR_ENTRY * index)
        rebar_ctl = u32(data, pos + PCI_REBAR_CTRL + _REBAR_ENTRY * index)
        sizes = [1 << (bit + 16) for bit in range(4, 32) if rebar_cap >> bit & 1]
        sizes += [1 << (bit + 32) for bit in range(16, 32) if rebar_ctl >> bit & 1]
        current = 1 << (((rebar_ctl & _REBAR_CTRL_BAR_SIZE) >> PCI_REBAR_CTRL_BAR_SHIFT) + 20)
        entries.append(ResizableBarEntry(rebar_ctl & PCI_REBAR_CTRL_BAR_IDX, tuple(sizes), current))
    return {"bars": tuple(entries)}


_REBAR_SIZE: Final = PCI_REBAR_CAP + _REBAR_ENTRY * _REBAR_MAX_ENTRIES
REBAR_LAYOUT: Final = Layout(ResizableBar, ExtCapId.REBAR, size=_REBAR_SIZE, more=_rebar_entries)
VF_REBAR_LAYOUT: Final = Layout(
    ResizableBar, ExtCapId.VF_REBAR, size=_REBAR_SIZE, more=_rebar_entries
)


# --- PASID, PRI, ATS -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProcessAddressSpaceId(ExtendedCapability):
    """Process Address Space ID."""

    exec_supported: bool
    privileged_supported: bool
    max_pasid_width: int
    enabled: bool
    exec_enabled: bool
    privileged_enabled: bool

    def _details(self) -> str:
        return f"width {self.max_pasid_width}, {flag_text('Enable', self.enabled)}"


PASID_LAYOUT: Final = Layout(
    ProcessAddressSpaceId,
    ExtCapId.PASID,
    Register(
        PCI_PASID_CAP,
        2,
        Bits("exec_supported", PCI_PASID_CAP_EXEC, FLAG),
        Bits("privileged_supported", PCI_PASID_CAP_PRIV, FLAG),
        Bits("max_pasid_width", PCI_PASID_CAP_WIDTH),
    ),
    Register(
        PCI_PASID_CTRL,
        2,
        Bits("enabled", PCI_PASID_CTRL_ENABLE, FLAG),
        Bits("exec_enabled", PCI_PASID_CTRL_EXEC, FLAG),
        Bits("privileged_enabled", PCI_PASID_CTRL_PRIV, FLAG),
    ),
    size=PCI_EXT_CAP_PASID_SIZEOF,
)


@dataclass(frozen=True, slots=True)
class PageRequestInterface(ExtendedCapability):
    """Page Request Interface."""

    enabled: bool
    stopped: bool
    request_capacity: int
    request_allocation: int

    def _details(self) -> str:
        return f"{flag_text('Enable', self.enabled)}, capacity {self.request_capacity}"


PRI_LAYOUT: Final = Layout(
    PageRequestInterface,
    ExtCapId.PRI,
    Register(PCI_PRI_CTRL, 2, Bits("enabled", PCI_PRI_CTRL_ENABLE, FLAG)),
    Register(PCI_PRI_STATUS, 2, Bits("stopped", PCI_PRI_STATUS_STOPPED, FLAG)),
    Register(PCI_PRI_MAX_REQ, 4, Bits("request_capacity")),
    Register(PCI_PRI_ALLOC_REQ, 4, Bits("request_allocation")),
    size=PCI_EXT_CAP_PRI_SIZEOF,
)


@dataclass(frozen=True, slots=True)
class AddressTranslationService(ExtendedCapability):
    """Address Translation Service."""

    invalidate_queue_depth: int  # as encoded: 0 means 32
    page_aligned_request: bool
    enabled: bool
    smallest_translation_unit: int

    def _details(self) -> str:
        return f"{flag_text('Enable', self.enabled)}, STU {self.smallest_translation_unit}"


ATS_LAYOUT: Final = Layout(
    AddressTranslationService,
    ExtCapId.ATS,
    Register(
        PCI_ATS_CAP,
        2,
        Bits("invalidate_queue_depth", PCI_ATS_CAP_QDEP),
        Bits("page_aligned_request", PCI_ATS_CAP_PAGE_ALIGNED, FLAG),
    ),
    Register(
        PCI_ATS_CTRL,
        2,
        Bits("enabled", PCI_ATS_CTRL_ENABLE, FLAG),
        Bits("smallest_translation_unit", PCI_ATS_CTRL_STU),
    ),
    size=PCI_EXT_CAP_ATS_SIZEOF,
)


# --- Vendor-specific ones, and the serial number -------------------------------------------


@dataclass(frozen=True, slots=True)
class DesignatedVendorSpecific(ExtendedCapability):
    """Designated Vendor-Specific (DVSEC): whose structure it is, and which."""

    dvsec_vendor_id: int
    dvsec_revision: int
    dvsec_length: int
    dvsec_id: int

    def _details(self) -> str:
        return (
            f"vendor {self.dvsec_vendor_id:04x} ID {self.dvsec_id:#06x} "
            f"rev {self.dvsec_revision} length {self.dvsec_length:#x}"
        )


DVSEC_LAYOUT: Final = Layout(
    DesignatedVendorSpecific,
    ExtCapId.DVSEC,
    Register(
        PCI_DVSEC_HEADER1,
        4,
        Bits("dvsec_vendor_id", PCI_DVSEC_HEADER1_VID),
        Bits("dvsec_revision", PCI_DVSEC_HEADER1_REV),
        Bits("dvsec_length", PCI_DVSEC_HEADER1_LEN),
    ),
    Register(PCI_DVSEC_HEADER2, 2, Bits("dvsec_id", PCI_DVSEC_HEADER2_ID)),
)


@dataclass(frozen=True, slots=True)
class VendorSpecificExtended(ExtendedCapability):
    """Vendor-Specific Extended Capability (VSEC)."""

    vsec_id: int
    vsec_revision: int
    vsec_length: int

    def _details(self) -> str:
        return f"ID {self.vsec_id:#06x} rev {self.vsec_revision} length {self.vsec_length:#x}"


VSEC_LAYOUT: Final = Layout(
    VendorSpecificExtended,
    ExtCapId.VNDR,
    Register(
        PCI_VNDR_HEADER,
        4,
        Bits("vsec_id", PCI_VNDR_HEADER_ID),
        Bits("vsec_revision", PCI_VNDR_HEADER_REV),
        Bits("vsec_length", PCI_VNDR_HEADER_LEN),
    ),
)


@dataclass(frozen=True, slots=True)
class DeviceSerialNumber(ExtendedCapability):
    """Device Serial Number, a 64-bit EUI."""

    serial_number: int

    @property
    def text(self) -> str:
        """The serial number as lspci prints it: bytes high to low, dash separated."""
        return "-".join(f"{b:02x}" for b in self.serial_number.to_bytes(8, "big"))

    def _details(self) -> str:
        return self.text


# The serial number's two dwords, lower first (PCIe 6.0, 7.9.3); pci_regs.h names only
# the capability's size.
_DSN_LOWER: Final = 0x04
_DSN_UPPER: Final = 0x08

DSN_LAYOUT: Final = Layout(
    DeviceSerialNumber,
    ExtCapId.DSN,
    Register(_DSN_LOWER, 4, Bits("serial_number")),
    Register(_DSN_UPPER, 4, Bits("serial_number", at=32)),
    size=PCI_EXT_CAP_DSN_SIZEOF,
)

#: The extended capabilities pyvfio decodes, by ID.
EXT_CAP_LAYOUTS: Final[dict[int, Layout]] = {
    layout.id: layout
    for layout in (
        AER_LAYOUT,
        ACS_LAYOUT,
        SRIOV_LAYOUT,
        ARI_LAYOUT,
        REBAR_LAYOUT,
        VF_REBAR_LAYOUT,
        PASID_LAYOUT,
        PRI_LAYOUT,
        ATS_LAYOUT,
        DVSEC_LAYOUT,
        VSEC_LAYOUT,
        DSN_LAYOUT,
    )
}
