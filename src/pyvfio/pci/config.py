"""Parse PCI configuration space: the header, capabilities and extended capabilities.

A pure parser over raw configuration-space bytes, as read from a VFIO device's config
region or from ``/sys/bus/pci/devices/*/config``: 64 bytes (an unprivileged sysfs read),
256 (conventional PCI) or 4096 (PCI Express). It does no I/O::

    space = parse_config(Path("/sys/bus/pci/devices/0000:00:1f.3/config").read_bytes())
    msix = space.msix  # or space.find(CapId.MSIX)
    acs = space.find_extended(ExtCapId.ACS)
    print(space)

Malformed capability chains never raise and never hang: walking stops and the reason
lands in ``ConfigSpace.problems``. The walks mirror the kernel's (``drivers/pci/pci.c``,
``__pci_find_next_cap_ttl`` and ``pci_find_next_ext_capability``): a standard pointer
below 0x40 or an extended one below 0x100 ends the list, the reserved low two bits of
every pointer are masked off (and noted), and a time-to-live of 48 (standard) or
(4096 - 256) / 8 (extended) entries bounds the walk on top of loop detection. Extended
space that mirrors the first 256 bytes is ignored, as ``pci_cfg_space_size`` does.

Register layouts follow the PCI Local Bus 3.0 and PCI Express Base 6.0 specifications;
field and constant names follow ``linux/pci_regs.h`` so they can be looked up there.
BAR sizes are not in the configuration bytes (sizing needs writes), so they are not here.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "CONFIG_SPACE_SIZE",
    "EXT_CONFIG_SPACE_SIZE",
    "HEADER_SIZE",
    "AccessControlServices",
    "AcsFlags",
    "AddressTranslationService",
    "AdvancedErrorReporting",
    "AdvancedFeatures",
    "AlternativeRoutingId",
    "Bar",
    "BarType",
    "BridgeSubsystem",
    "CapId",
    "Capability",
    "ConfigSpace",
    "DesignatedVendorSpecific",
    "DeviceSerialNumber",
    "ExpansionRom",
    "ExtCapId",
    "ExtendedCapability",
    "Header",
    "HeaderType",
    "Msi",
    "MsiX",
    "PageRequestInterface",
    "PciExpress",
    "PortType",
    "PowerManagement",
    "ProcessAddressSpaceId",
    "ResizableBar",
    "ResizableBarEntry",
    "SrIov",
    "VendorSpecific",
    "VendorSpecificExtended",
    "parse_config",
]

HEADER_SIZE: Final = 64  # the standard header every function has
CONFIG_SPACE_SIZE: Final = 256  # PCI_CFG_SPACE_SIZE
EXT_CONFIG_SPACE_SIZE: Final = 4096  # PCI_CFG_SPACE_EXP_SIZE

# drivers/pci/pci.c: PCI_FIND_CAP_TTL, and "minimum 8 bytes per capability" for the
# extended list. They bound a walk even where the loop check would not.
_CAP_TTL: Final = 48
_EXT_CAP_TTL: Final = (EXT_CONFIG_SPACE_SIZE - CONFIG_SPACE_SIZE) // 8

_PCI_STATUS_CAP_LIST: Final = 0x10
_PCI_CAPABILITY_LIST: Final = 0x34  # header types 0 and 1
_PCI_CB_CAPABILITY_LIST: Final = 0x14  # header type 2


class CapId(enum.IntEnum):
    """Standard capability IDs, named as the kernel's ``PCI_CAP_ID_*``."""

    NULL = 0x00  # not in pci_regs.h: the PCI spec's empty "Null Capability"
    PM = 0x01
    AGP = 0x02
    VPD = 0x03
    SLOTID = 0x04
    MSI = 0x05
    CHSWP = 0x06
    PCIX = 0x07
    HT = 0x08
    VNDR = 0x09
    DBG = 0x0A
    CCRC = 0x0B
    SHPC = 0x0C
    SSVID = 0x0D
    AGP3 = 0x0E
    SECDEV = 0x0F
    EXP = 0x10
    MSIX = 0x11
    SATA = 0x12
    AF = 0x13
    EA = 0x14
    FPB = 0x15  # not in pci_regs.h: Flattening Portal Bridge


class ExtCapId(enum.IntEnum):
    """Extended capability IDs, named as the kernel's ``PCI_EXT_CAP_ID_*``.

    IDs the kernel does not define (yet) carry short names after the PCIe spec.
    """

    NULL = 0x00  # vfio-pci hides an extended capability by zeroing its ID
    ERR = 0x01
    VC = 0x02
    DSN = 0x03
    PWR = 0x04
    RCLD = 0x05
    RCILC = 0x06
    RCEC = 0x07
    MFVC = 0x08
    VC9 = 0x09
    RCRB = 0x0A
    VNDR = 0x0B
    CAC = 0x0C
    ACS = 0x0D
    ARI = 0x0E
    ATS = 0x0F
    SRIOV = 0x10
    MRIOV = 0x11
    MCAST = 0x12
    PRI = 0x13
    AMD_XXX = 0x14
    REBAR = 0x15
    DPA = 0x16
    TPH = 0x17
    LTR = 0x18
    SECPCI = 0x19
    PMUX = 0x1A
    PASID = 0x1B
    LNR = 0x1C  # not in pci_regs.h
    DPC = 0x1D
    L1SS = 0x1E
    PTM = 0x1F
    MPCIE = 0x20  # not in pci_regs.h
    FRS = 0x21  # not in pci_regs.h
    RTR = 0x22  # not in pci_regs.h
    DVSEC = 0x23
    VF_REBAR = 0x24
    DLF = 0x25
    PL_16GT = 0x26
    LMR = 0x27  # not in pci_regs.h
    HIER_ID = 0x28  # not in pci_regs.h
    NPEM = 0x29
    PL_32GT = 0x2A
    ALT_PROTOCOL = 0x2B  # not in pci_regs.h
    SFI = 0x2C  # not in pci_regs.h
    SHADOW_FUNC = 0x2D  # not in pci_regs.h
    DOE = 0x2E
    DEV3 = 0x2F
    IDE = 0x30
    PL_64GT = 0x31


_CAP_NAMES: Final[dict[int, str]] = {
    CapId.NULL: "Null",
    CapId.PM: "Power Management",
    CapId.AGP: "AGP",
    CapId.VPD: "Vital Product Data",
    CapId.SLOTID: "Slot Identification",
    CapId.MSI: "MSI",
    CapId.CHSWP: "CompactPCI Hot Swap",
    CapId.PCIX: "PCI-X",
    CapId.HT: "HyperTransport",
    CapId.VNDR: "Vendor Specific",
    CapId.DBG: "Debug Port",
    CapId.CCRC: "CompactPCI Central Resource Control",
    CapId.SHPC: "Standard Hot-Plug Controller",
    CapId.SSVID: "Bridge Subsystem ID",
    CapId.AGP3: "AGP 8x",
    CapId.SECDEV: "Secure Device",
    CapId.EXP: "PCI Express",
    CapId.MSIX: "MSI-X",
    CapId.SATA: "SATA Data/Index Configuration",
    CapId.AF: "PCI Advanced Features",
    CapId.EA: "Enhanced Allocation",
    CapId.FPB: "Flattening Portal Bridge",
}

_EXT_CAP_NAMES: Final[dict[int, str]] = {
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


class HeaderType(enum.IntEnum):
    """Header layout, bits 6:0 of the Header Type register (``PCI_HEADER_TYPE_*``)."""

    NORMAL = 0
    BRIDGE = 1
    CARDBUS = 2


class PortType(enum.IntEnum):
    """PCI Express Device/Port Type (``PCI_EXP_FLAGS_TYPE``, ``PCI_EXP_TYPE_*``)."""

    ENDPOINT = 0x0  # PCI_EXP_TYPE_ENDPOINT
    LEGACY_ENDPOINT = 0x1  # PCI_EXP_TYPE_LEG_END
    ROOT_PORT = 0x4  # PCI_EXP_TYPE_ROOT_PORT
    UPSTREAM_PORT = 0x5  # PCI_EXP_TYPE_UPSTREAM
    DOWNSTREAM_PORT = 0x6  # PCI_EXP_TYPE_DOWNSTREAM
    PCIE_PCI_BRIDGE = 0x7  # PCI_EXP_TYPE_PCI_BRIDGE: PCI Express to PCI/PCI-X
    PCI_PCIE_BRIDGE = 0x8  # PCI_EXP_TYPE_PCIE_BRIDGE: PCI/PCI-X to PCI Express
    RC_INTEGRATED_ENDPOINT = 0x9  # PCI_EXP_TYPE_RC_END
    RC_EVENT_COLLECTOR = 0xA  # PCI_EXP_TYPE_RC_EC


class AcsFlags(enum.IntFlag):
    """ACS Capability and Control register bits (``PCI_ACS_*``)."""

    SV = 0x0001  # Source Validation
    TB = 0x0002  # Translation Blocking
    RR = 0x0004  # P2P Request Redirect
    CR = 0x0008  # P2P Completion Redirect
    UF = 0x0010  # Upstream Forwarding
    EC = 0x0020  # P2P Egress Control
    DT = 0x0040  # Direct Translated P2P


class BarType(enum.Enum):
    """What a Base Address Register decodes."""

    IO = "io"
    MEM32 = "mem32"
    MEM1M = "mem1m"  # legacy "below 1 MiB" memory type (PCI 2.x)
    MEM64 = "mem64"


# --- Reading little-endian registers ---------------------------------------------------


class _TruncatedError(Exception):
    """A register read fell past the end of the data."""


def _read(data: bytes, offset: int, size: int) -> int:
    if offset + size > len(data):
        raise _TruncatedError(offset)
    return int.from_bytes(data[offset : offset + size], "little")


def _u8(data: bytes, offset: int) -> int:
    return _read(data, offset, 1)


def _u16(data: bytes, offset: int) -> int:
    return _read(data, offset, 2)


def _u32(data: bytes, offset: int) -> int:
    return _read(data, offset, 4)


def _flag(name: str, value: bool) -> str:
    """lspci's ``Name+`` / ``Name-`` notation."""
    return f"{name}{'+' if value else '-'}"


def _size_text(size: int) -> str:
    for unit in ("", "K", "M", "G", "T", "P"):
        if size < 1024 or size % 1024:
            return f"{size}{unit}"
        size //= 1024
    return f"{size}E"


# --- The header ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Bar:
    """A Base Address Register as programmed: where it decodes, not how large it is.

    ``raw`` is the register value; for a 64-bit BAR it joins both registers.
    """

    index: int
    type: BarType
    prefetchable: bool
    address: int
    raw: int

    def __str__(self) -> str:
        if self.type is BarType.IO:
            return f"BAR {self.index}: I/O ports at {self.address:#x}"
        width = {BarType.MEM32: "32-bit", BarType.MEM1M: "low-1M", BarType.MEM64: "64-bit"}
        prefetch = "prefetchable" if self.prefetchable else "non-prefetchable"
        return f"BAR {self.index}: memory at {self.address:#x} ({width[self.type]}, {prefetch})"


@dataclass(frozen=True, slots=True)
class ExpansionRom:
    """The Expansion ROM Base Address register."""

    address: int
    enabled: bool
    raw: int

    def __str__(self) -> str:
        return f"expansion ROM at {self.address:#x} [{'enabled' if self.enabled else 'disabled'}]"


@dataclass(frozen=True, slots=True)
class Header:
    """The first 64 bytes: identity, command/status, BARs, bus numbers of a bridge.

    ``subsystem_*`` are None for bridges (their subsystem IDs live in a Bridge Subsystem
    ID capability), ``expansion_rom`` for CardBus bridges or an unprogrammed register,
    and the bus numbers for endpoints.
    """

    vendor_id: int
    device_id: int
    command: int
    status: int
    revision: int
    prog_if: int
    subclass: int
    base_class: int
    cache_line_size: int
    latency_timer: int
    header_type: HeaderType | int
    multifunction: bool
    bist: int
    bars: tuple[Bar, ...]
    expansion_rom: ExpansionRom | None
    subsystem_vendor_id: int | None
    subsystem_id: int | None
    capabilities_pointer: int | None
    interrupt_line: int
    interrupt_pin: int
    primary_bus: int | None
    secondary_bus: int | None
    subordinate_bus: int | None

    @property
    def class_code(self) -> int:
        """The 24-bit class code: base class, subclass, programming interface."""
        return self.base_class << 16 | self.subclass << 8 | self.prog_if

    @property
    def device_class(self) -> int:
        """Base class and subclass, as lspci shows them (``0604`` for a PCI bridge)."""
        return self.base_class << 8 | self.subclass

    @property
    def is_bridge(self) -> bool:
        return self.header_type == HeaderType.BRIDGE

    def __str__(self) -> str:
        parts = [
            f"{self.vendor_id:04x}:{self.device_id:04x}",
            f"class {self.class_code:06x}",
            f"rev {self.revision:02x}",
        ]
        if self.subsystem_vendor_id is not None and self.subsystem_id is not None:
            parts.append(f"subsystem {self.subsystem_vendor_id:04x}:{self.subsystem_id:04x}")
        kind = (
            self.header_type.name.lower()
            if isinstance(self.header_type, HeaderType)
            else f"header type {self.header_type:#04x}"
        )
        parts.append(kind + (", multi-function" if self.multifunction else ""))
        if self.secondary_bus is not None:
            parts.append(f"buses {self.secondary_bus:02x}-{self.subordinate_bus or 0:02x}")
        return " ".join(parts)


# --- Standard capabilities -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Capability:
    """An entry of the standard capability list; subclasses decode known ones."""

    id: int
    offset: int

    @property
    def name(self) -> str:
        return _CAP_NAMES.get(self.id, f"Capability ID {self.id:#04x}")

    def _details(self) -> str:
        return ""

    def __str__(self) -> str:
        details = self._details()
        return f"[{self.offset:02x}] {self.name}" + (f": {details}" if details else "")


@dataclass(frozen=True, slots=True)
class PowerManagement(Capability):
    """Power Management (PMC and PMCSR registers)."""

    version: int
    d1_support: bool
    d2_support: bool
    pme_support: int  # PMC bits 15:11, one per state D0, D1, D2, D3hot, D3cold
    no_soft_reset: bool  # PMCSR NoSoftRst: state survives D3hot -> D0
    power_state: int  # PMCSR bits 1:0, 0 = D0 ... 3 = D3hot

    def _details(self) -> str:
        state = f"D{self.power_state}" if self.power_state < 3 else "D3hot"
        return (
            f"version {self.version}, {_flag('D1', self.d1_support)} "
            f"{_flag('D2', self.d2_support)} {_flag('NoSoftRst', self.no_soft_reset)}, {state}"
        )


@dataclass(frozen=True, slots=True)
class Msi(Capability):
    """Message Signalled Interrupts."""

    enabled: bool
    is_64bit: bool
    per_vector_masking: bool
    vectors: int  # Multiple Message Capable, as a count
    vectors_enabled: int  # Multiple Message Enable, as a count
    address: int
    data: int
    mask: int | None  # mask bits, present only with per-vector masking

    def _details(self) -> str:
        return (
            f"{_flag('Enable', self.enabled)} Count={self.vectors_enabled}/{self.vectors} "
            f"{_flag('Maskable', self.per_vector_masking)} {_flag('64bit', self.is_64bit)}"
        )


@dataclass(frozen=True, slots=True)
class MsiX(Capability):
    """MSI-X: where the vector table and pending-bit array live."""

    enabled: bool
    function_mask: bool
    table_size: int
    table_bir: int
    table_offset: int
    pba_bir: int
    pba_offset: int

    def _details(self) -> str:
        return (
            f"{_flag('Enable', self.enabled)} Count={self.table_size} "
            f"{_flag('Masked', self.function_mask)}, table BAR {self.table_bir} "
            f"+{self.table_offset:#x}, PBA BAR {self.pba_bir} +{self.pba_offset:#x}"
        )


_LINK_SPEEDS_GTS: Final[dict[int, float]] = {1: 2.5, 2: 5.0, 3: 8.0, 4: 16.0, 5: 32.0, 6: 64.0}


@dataclass(frozen=True, slots=True)
class PciExpress(Capability):
    """The PCI Express capability: port type, FLR, payload, link capabilities."""

    version: int
    port_type: PortType | int
    slot_implemented: bool
    interrupt_message: int
    max_payload: int  # DevCap Max_Payload_Size supported, in bytes
    flr: bool  # DevCap bit 28, Function Level Reset capability
    max_link_speed: int  # LnkCap Max Link Speed encoding (1 = 2.5 GT/s ...)
    max_link_width: int  # LnkCap Maximum Link Width (lanes)
    port_number: int

    @property
    def max_link_speed_gts(self) -> float | None:
        """Max link speed in GT/s, None for an encoding the spec does not define."""
        return _LINK_SPEEDS_GTS.get(self.max_link_speed)

    def _details(self) -> str:
        kind = (
            self.port_type.name
            if isinstance(self.port_type, PortType)
            else f"type {self.port_type:#x}"
        )
        text = f"v{self.version} {kind}"
        if self.slot_implemented:
            text += " (slot)"
        text += f", {_flag('FLReset', self.flr)} MaxPayload {self.max_payload}"
        speed = self.max_link_speed_gts
        if self.max_link_width and speed is not None:
            text += f", link x{self.max_link_width} {speed:g}GT/s"
        return text


@dataclass(frozen=True, slots=True)
class AdvancedFeatures(Capability):
    """PCI Advanced Features: FLR for conventional PCI functions."""

    tp: bool  # Transactions Pending capable
    flr: bool  # Function Level Reset capable

    def _details(self) -> str:
        return f"{_flag('TP', self.tp)} {_flag('FLR', self.flr)}"


@dataclass(frozen=True, slots=True)
class VendorSpecific(Capability):
    """Vendor-specific capability; its length byte is the only common field."""

    length: int

    def _details(self) -> str:
        return f"length {self.length:#x}"


@dataclass(frozen=True, slots=True)
class BridgeSubsystem(Capability):
    """Bridge Subsystem Vendor ID capability: a bridge's subsystem IDs."""

    subsystem_vendor_id: int
    subsystem_id: int

    def _details(self) -> str:
        return f"{self.subsystem_vendor_id:04x}:{self.subsystem_id:04x}"


# --- Extended capabilities -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExtendedCapability:
    """An entry of the PCI Express extended capability list (0x100 and up)."""

    id: int
    version: int
    offset: int

    @property
    def name(self) -> str:
        return _EXT_CAP_NAMES.get(self.id, f"Extended Capability ID {self.id:#06x}")

    def _details(self) -> str:
        return ""

    def __str__(self) -> str:
        details = self._details()
        head = f"[{self.offset:03x} v{self.version}] {self.name}"
        return head + (f": {details}" if details else "")


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
            f"{_flag('ECRCGenCap', self.ecrc_generation_capable)} "
            f"{_flag('ECRCChkCap', self.ecrc_check_capable)}"
        )


@dataclass(frozen=True, slots=True)
class AccessControlServices(ExtendedCapability):
    """Access Control Services: what the port can isolate, and what it does."""

    capability: AcsFlags
    control: AcsFlags
    egress_control_vector_size: int

    def _details(self) -> str:
        names = [flag.name or "" for flag in AcsFlags]
        cap = " ".join(_flag(n, bool(self.capability & AcsFlags[n])) for n in names)
        ctl = " ".join(_flag(n, bool(self.control & AcsFlags[n])) for n in names)
        return f"cap {cap}; ctl {ctl}"


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
            f"{_flag('Enable', self.vf_enable)}, offset {self.vf_offset} "
            f"stride {self.vf_stride}, VF device {self.vf_device_id:04x}"
        )


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


@dataclass(frozen=True, slots=True)
class ResizableBarEntry:
    """One resizable BAR: the sizes it supports and the size it has now, in bytes."""

    bar: int
    sizes: tuple[int, ...]
    current_size: int

    def __str__(self) -> str:
        sizes = " ".join(_size_text(s) for s in self.sizes)
        return f"BAR {self.bar}: current {_size_text(self.current_size)}, supported {sizes}"


@dataclass(frozen=True, slots=True)
class ResizableBar(ExtendedCapability):
    """Resizable BAR, or VF Resizable BAR (same layout, ``ExtCapId.VF_REBAR``)."""

    bars: tuple[ResizableBarEntry, ...]

    def _details(self) -> str:
        return "; ".join(str(entry) for entry in self.bars)


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
        return f"width {self.max_pasid_width}, {_flag('Enable', self.enabled)}"


@dataclass(frozen=True, slots=True)
class PageRequestInterface(ExtendedCapability):
    """Page Request Interface."""

    enabled: bool
    stopped: bool
    request_capacity: int
    request_allocation: int

    def _details(self) -> str:
        return f"{_flag('Enable', self.enabled)}, capacity {self.request_capacity}"


@dataclass(frozen=True, slots=True)
class AddressTranslationService(ExtendedCapability):
    """Address Translation Service."""

    invalidate_queue_depth: int  # as encoded: 0 means 32
    page_aligned_request: bool
    enabled: bool
    smallest_translation_unit: int

    def _details(self) -> str:
        return f"{_flag('Enable', self.enabled)}, STU {self.smallest_translation_unit}"


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


@dataclass(frozen=True, slots=True)
class VendorSpecificExtended(ExtendedCapability):
    """Vendor-Specific Extended Capability (VSEC)."""

    vsec_id: int
    vsec_revision: int
    vsec_length: int

    def _details(self) -> str:
        return f"ID {self.vsec_id:#06x} rev {self.vsec_revision} length {self.vsec_length:#x}"


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


# --- The whole configuration space ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConfigSpace:
    """A parsed configuration space. ``problems`` says what was malformed, if anything."""

    header: Header
    capabilities: tuple[Capability, ...]
    extended_capabilities: tuple[ExtendedCapability, ...]
    problems: tuple[str, ...]
    data: bytes = field(repr=False)

    def find(self, cap_id: int) -> Capability | None:
        """The first standard capability with this ID, or None."""
        return next((cap for cap in self.capabilities if cap.id == cap_id), None)

    def find_all(self, cap_id: int) -> tuple[Capability, ...]:
        """Every standard capability with this ID (vendor-specific ones repeat)."""
        return tuple(cap for cap in self.capabilities if cap.id == cap_id)

    def find_extended(self, ext_id: int) -> ExtendedCapability | None:
        """The first extended capability with this ID, or None."""
        return next((cap for cap in self.extended_capabilities if cap.id == ext_id), None)

    def find_all_extended(self, ext_id: int) -> tuple[ExtendedCapability, ...]:
        """Every extended capability with this ID (VSEC and DVSEC repeat)."""
        return tuple(cap for cap in self.extended_capabilities if cap.id == ext_id)

    @property
    def express(self) -> PciExpress | None:
        """The PCI Express capability, or None for a conventional PCI function."""
        cap = self.find(CapId.EXP)
        return cap if isinstance(cap, PciExpress) else None

    @property
    def msi(self) -> Msi | None:
        cap = self.find(CapId.MSI)
        return cap if isinstance(cap, Msi) else None

    @property
    def msix(self) -> MsiX | None:
        cap = self.find(CapId.MSIX)
        return cap if isinstance(cap, MsiX) else None

    @property
    def power_management(self) -> PowerManagement | None:
        cap = self.find(CapId.PM)
        return cap if isinstance(cap, PowerManagement) else None

    @property
    def flr_capable(self) -> bool:
        """Whether the function can do a Function Level Reset (PCIe DevCap or AF)."""
        return any(
            isinstance(cap, PciExpress | AdvancedFeatures) and cap.flr for cap in self.capabilities
        )

    def __str__(self) -> str:
        lines = [str(self.header)]
        lines += [f"  {bar}" for bar in self.header.bars]
        if self.header.expansion_rom is not None:
            lines.append(f"  {self.header.expansion_rom}")
        lines += [f"  {cap}" for cap in self.capabilities]
        lines += [f"  {cap}" for cap in self.extended_capabilities]
        lines += [f"  problem: {problem}" for problem in self.problems]
        return "\n".join(lines)


# --- Decoding ------------------------------------------------------------------------------


def _decode_bars(
    data: bytes, base: int, count: int, problems: list[str], what: str = "BAR"
) -> tuple[Bar, ...]:
    bars = []
    index = 0
    while index < count:
        offset = base + 4 * index
        raw = _u32(data, offset)
        # A register reading 0 is either unimplemented or an unassigned 32-bit memory BAR;
        # without sizing the two look the same. All-ones means nobody answered.
        if raw in (0, 0xFFFFFFFF):
            index += 1
            continue
        if raw & 0x1:
            bars.append(Bar(index, BarType.IO, False, raw & 0xFFFFFFFC, raw))
            index += 1
            continue
        prefetchable = bool(raw & 0x8)
        mem_type = (raw >> 1) & 0x3
        if mem_type == 0x2:
            if index + 1 >= count:
                problems.append(f"{what} {index} is 64-bit but is the last BAR; read as 32-bit")
                bars.append(Bar(index, BarType.MEM32, prefetchable, raw & 0xFFFFFFF0, raw))
                index += 1
                continue
            raw64 = _u32(data, offset + 4) << 32 | raw
            bars.append(Bar(index, BarType.MEM64, prefetchable, raw64 & ~0xF, raw64))
            index += 2
            continue
        if mem_type == 0x3:
            problems.append(f"{what} {index} has the reserved memory type 3; skipped")
        else:
            kind = BarType.MEM1M if mem_type == 0x1 else BarType.MEM32
            bars.append(Bar(index, kind, prefetchable, raw & 0xFFFFFFF0, raw))
        index += 1
    return tuple(bars)


def _decode_header(data: bytes, problems: list[str]) -> Header:
    raw_type = _u8(data, 0x0E)
    layout = raw_type & 0x7F
    header_type: HeaderType | int = (
        HeaderType(layout) if layout in HeaderType._value2member_map_ else layout
    )
    subsystem_vendor_id: int | None = None
    subsystem_id: int | None = None
    rom_register: int | None = None
    capabilities_pointer: int | None = None
    primary = secondary = subordinate = None
    if header_type == HeaderType.NORMAL:
        bars = _decode_bars(data, 0x10, 6, problems)
        subsystem_vendor_id, subsystem_id = _u16(data, 0x2C), _u16(data, 0x2E)
        rom_register = _u32(data, 0x30)
        capabilities_pointer = _u8(data, _PCI_CAPABILITY_LIST)
    elif header_type in (HeaderType.BRIDGE, HeaderType.CARDBUS):
        if header_type == HeaderType.BRIDGE:
            bars = _decode_bars(data, 0x10, 2, problems)
            rom_register = _u32(data, 0x38)
            capabilities_pointer = _u8(data, _PCI_CAPABILITY_LIST)
        else:
            bars = _decode_bars(data, 0x10, 1, problems)
            capabilities_pointer = _u8(data, _PCI_CB_CAPABILITY_LIST)
            if len(data) >= 0x44:  # subsystem IDs sit just past the 64-byte header
                subsystem_vendor_id, subsystem_id = _u16(data, 0x40), _u16(data, 0x42)
        primary, secondary, subordinate = _u8(data, 0x18), _u8(data, 0x19), _u8(data, 0x1A)
    else:
        bars = ()
        problems.append(f"unknown header type {layout:#04x}: only the common fields decoded")
    rom = None
    if rom_register is not None and rom_register not in (0, 0xFFFFFFFF):
        rom = ExpansionRom(rom_register & 0xFFFFF800, bool(rom_register & 0x1), rom_register)
    return Header(
        vendor_id=_u16(data, 0x00),
        device_id=_u16(data, 0x02),
        command=_u16(data, 0x04),
        status=_u16(data, 0x06),
        revision=_u8(data, 0x08),
        prog_if=_u8(data, 0x09),
        subclass=_u8(data, 0x0A),
        base_class=_u8(data, 0x0B),
        cache_line_size=_u8(data, 0x0C),
        latency_timer=_u8(data, 0x0D),
        header_type=header_type,
        multifunction=bool(raw_type & 0x80),
        bist=_u8(data, 0x0F),
        bars=bars,
        expansion_rom=rom,
        subsystem_vendor_id=subsystem_vendor_id,
        subsystem_id=subsystem_id,
        capabilities_pointer=capabilities_pointer,
        interrupt_line=_u8(data, 0x3C),
        interrupt_pin=_u8(data, 0x3D),
        primary_bus=primary,
        secondary_bus=secondary,
        subordinate_bus=subordinate,
    )


def _decode_pm(data: bytes, cap_id: int, pos: int) -> Capability:
    pmc, pmcsr = _u16(data, pos + 2), _u16(data, pos + 4)
    return PowerManagement(
        cap_id,
        pos,
        version=pmc & 0x7,
        d1_support=bool(pmc & 0x0200),
        d2_support=bool(pmc & 0x0400),
        pme_support=pmc >> 11,
        no_soft_reset=bool(pmcsr & 0x0008),
        power_state=pmcsr & 0x3,
    )


def _decode_msi(data: bytes, cap_id: int, pos: int) -> Capability:
    flags = _u16(data, pos + 2)
    is_64bit = bool(flags & 0x0080)
    masking = bool(flags & 0x0100)
    address = _u32(data, pos + 4)
    if is_64bit:
        address |= _u32(data, pos + 8) << 32
    data_offset = pos + (0x0C if is_64bit else 0x08)
    return Msi(
        cap_id,
        pos,
        enabled=bool(flags & 0x0001),
        is_64bit=is_64bit,
        per_vector_masking=masking,
        vectors=1 << ((flags >> 1) & 0x7),
        vectors_enabled=1 << ((flags >> 4) & 0x7),
        address=address,
        data=_u16(data, data_offset),
        mask=_u32(data, data_offset + 4) if masking else None,
    )


def _decode_msix(data: bytes, cap_id: int, pos: int) -> Capability:
    flags, table, pba = _u16(data, pos + 2), _u32(data, pos + 4), _u32(data, pos + 8)
    return MsiX(
        cap_id,
        pos,
        enabled=bool(flags & 0x8000),
        function_mask=bool(flags & 0x4000),
        table_size=(flags & 0x07FF) + 1,
        table_bir=table & 0x7,
        table_offset=table & ~0x7,
        pba_bir=pba & 0x7,
        pba_offset=pba & ~0x7,
    )


def _decode_exp(data: bytes, cap_id: int, pos: int) -> Capability:
    flags, devcap, lnkcap = _u16(data, pos + 2), _u32(data, pos + 4), _u32(data, pos + 0x0C)
    raw_type = (flags >> 4) & 0xF
    port_type: PortType | int = (
        PortType(raw_type) if raw_type in PortType._value2member_map_ else raw_type
    )
    return PciExpress(
        cap_id,
        pos,
        version=flags & 0xF,
        port_type=port_type,
        slot_implemented=bool(flags & 0x0100),
        interrupt_message=(flags >> 9) & 0x1F,
        max_payload=128 << (devcap & 0x7),
        flr=bool(devcap & 0x10000000),
        max_link_speed=lnkcap & 0xF,
        max_link_width=(lnkcap >> 4) & 0x3F,
        port_number=lnkcap >> 24,
    )


def _decode_af(data: bytes, cap_id: int, pos: int) -> Capability:
    af_cap = _u8(data, pos + 3)
    return AdvancedFeatures(cap_id, pos, tp=bool(af_cap & 0x01), flr=bool(af_cap & 0x02))


def _decode_vndr(data: bytes, cap_id: int, pos: int) -> Capability:
    return VendorSpecific(cap_id, pos, length=_u8(data, pos + 2))


def _decode_ssvid(data: bytes, cap_id: int, pos: int) -> Capability:
    return BridgeSubsystem(
        cap_id, pos, subsystem_vendor_id=_u16(data, pos + 4), subsystem_id=_u16(data, pos + 6)
    )


_CAP_DECODERS: Final[dict[int, Callable[[bytes, int, int], Capability]]] = {
    CapId.PM: _decode_pm,
    CapId.MSI: _decode_msi,
    CapId.MSIX: _decode_msix,
    CapId.EXP: _decode_exp,
    CapId.AF: _decode_af,
    CapId.VNDR: _decode_vndr,
    CapId.SSVID: _decode_ssvid,
}


def _decode_aer(data: bytes, cap_id: int, version: int, pos: int) -> ExtendedCapability:
    capctl = _u32(data, pos + 0x18)
    return AdvancedErrorReporting(
        cap_id,
        version,
        pos,
        uncorrectable_status=_u32(data, pos + 0x04),
        uncorrectable_mask=_u32(data, pos + 0x08),
        uncorrectable_severity=_u32(data, pos + 0x0C),
        correctable_status=_u32(data, pos + 0x10),
        correctable_mask=_u32(data, pos + 0x14),
        first_error_pointer=capctl & 0x1F,
        ecrc_generation_capable=bool(capctl & 0x20),
        ecrc_generation_enabled=bool(capctl & 0x40),
        ecrc_check_capable=bool(capctl & 0x80),
        ecrc_check_enabled=bool(capctl & 0x100),
    )


def _decode_acs(data: bytes, cap_id: int, version: int, pos: int) -> ExtendedCapability:
    acs_cap, acs_ctl = _u16(data, pos + 4), _u16(data, pos + 6)
    return AccessControlServices(
        cap_id,
        version,
        pos,
        capability=AcsFlags(acs_cap & 0xFF),
        control=AcsFlags(acs_ctl & 0xFF),
        egress_control_vector_size=acs_cap >> 8,
    )


def _decode_sriov(data: bytes, cap_id: int, version: int, pos: int) -> ExtendedCapability:
    iov_cap, iov_ctl = _u32(data, pos + 0x04), _u16(data, pos + 0x08)
    # The decoder has no channel for problems; a malformed VF BAR just decodes as it can.
    problems: list[str] = []
    return SrIov(
        cap_id,
        version,
        pos,
        vf_migration_capable=bool(iov_cap & 0x1),
        vf_enable=bool(iov_ctl & 0x1),
        vf_memory_space_enable=bool(iov_ctl & 0x8),
        ari_capable_hierarchy=bool(iov_ctl & 0x10),
        initial_vfs=_u16(data, pos + 0x0C),
        total_vfs=_u16(data, pos + 0x0E),
        num_vfs=_u16(data, pos + 0x10),
        function_dependency_link=_u8(data, pos + 0x12),
        vf_offset=_u16(data, pos + 0x14),
        vf_stride=_u16(data, pos + 0x16),
        vf_device_id=_u16(data, pos + 0x1A),
        supported_page_sizes=_u32(data, pos + 0x1C),
        system_page_size=_u32(data, pos + 0x20),
        vf_bars=_decode_bars(data, pos + 0x24, 6, problems, "VF BAR"),
    )


def _decode_ari(data: bytes, cap_id: int, version: int, pos: int) -> ExtendedCapability:
    ari_cap, ari_ctl = _u16(data, pos + 4), _u16(data, pos + 6)
    return AlternativeRoutingId(
        cap_id,
        version,
        pos,
        mfvc_function_groups=bool(ari_cap & 0x1),
        acs_function_groups=bool(ari_cap & 0x2),
        next_function=(ari_cap >> 8) & 0xFF,
        mfvc_function_groups_enabled=bool(ari_ctl & 0x1),
        acs_function_groups_enabled=bool(ari_ctl & 0x2),
        function_group=(ari_ctl >> 4) & 0x7,
    )


def _decode_rebar(data: bytes, cap_id: int, version: int, pos: int) -> ExtendedCapability:
    # Each entry is a capability and a control register. Capability bits 31:4 offer
    # 1 MiB ... 128 TiB; control bits 31:16 extend that to 256 TiB ... 8 EiB; control
    # bits 13:8 hold the current size as log2(size) - 20. The first control register
    # says how many entries follow (1 to 6).
    count = min((_u32(data, pos + 8) >> 5) & 0x7, 6)
    entries = []
    for index in range(count):
        rebar_cap = _u32(data, pos + 4 + 8 * index)
        rebar_ctl = _u32(data, pos + 8 + 8 * index)
        sizes = [1 << (bit + 16) for bit in range(4, 32) if rebar_cap >> bit & 1]
        sizes += [1 << (bit + 32) for bit in range(16, 32) if rebar_ctl >> bit & 1]
        current = 1 << (((rebar_ctl >> 8) & 0x3F) + 20)
        entries.append(ResizableBarEntry(rebar_ctl & 0x7, tuple(sizes), current))
    return ResizableBar(cap_id, version, pos, bars=tuple(entries))


def _decode_pasid(data: bytes, cap_id: int, version: int, pos: int) -> ExtendedCapability:
    pasid_cap, pasid_ctl = _u16(data, pos + 4), _u16(data, pos + 6)
    return ProcessAddressSpaceId(
        cap_id,
        version,
        pos,
        exec_supported=bool(pasid_cap & 0x2),
        privileged_supported=bool(pasid_cap & 0x4),
        max_pasid_width=(pasid_cap >> 8) & 0x1F,
        enabled=bool(pasid_ctl & 0x1),
        exec_enabled=bool(pasid_ctl & 0x2),
        privileged_enabled=bool(pasid_ctl & 0x4),
    )


def _decode_pri(data: bytes, cap_id: int, version: int, pos: int) -> ExtendedCapability:
    pri_ctl, pri_sta = _u16(data, pos + 4), _u16(data, pos + 6)
    return PageRequestInterface(
        cap_id,
        version,
        pos,
        enabled=bool(pri_ctl & 0x1),
        stopped=bool(pri_sta & 0x100),
        request_capacity=_u32(data, pos + 8),
        request_allocation=_u32(data, pos + 0x0C),
    )


def _decode_ats(data: bytes, cap_id: int, version: int, pos: int) -> ExtendedCapability:
    ats_cap, ats_ctl = _u16(data, pos + 4), _u16(data, pos + 6)
    return AddressTranslationService(
        cap_id,
        version,
        pos,
        invalidate_queue_depth=ats_cap & 0x1F,
        page_aligned_request=bool(ats_cap & 0x20),
        enabled=bool(ats_ctl & 0x8000),
        smallest_translation_unit=ats_ctl & 0x1F,
    )


def _decode_dvsec(data: bytes, cap_id: int, version: int, pos: int) -> ExtendedCapability:
    header1 = _u32(data, pos + 4)
    return DesignatedVendorSpecific(
        cap_id,
        version,
        pos,
        dvsec_vendor_id=header1 & 0xFFFF,
        dvsec_revision=(header1 >> 16) & 0xF,
        dvsec_length=header1 >> 20,
        dvsec_id=_u16(data, pos + 8),
    )


def _decode_vsec(data: bytes, cap_id: int, version: int, pos: int) -> ExtendedCapability:
    vsec_header = _u32(data, pos + 4)
    return VendorSpecificExtended(
        cap_id,
        version,
        pos,
        vsec_id=vsec_header & 0xFFFF,
        vsec_revision=(vsec_header >> 16) & 0xF,
        vsec_length=vsec_header >> 20,
    )


def _decode_dsn(data: bytes, cap_id: int, version: int, pos: int) -> ExtendedCapability:
    serial = _u32(data, pos + 8) << 32 | _u32(data, pos + 4)
    return DeviceSerialNumber(cap_id, version, pos, serial_number=serial)


_EXT_CAP_DECODERS: Final[dict[int, Callable[[bytes, int, int, int], ExtendedCapability]]] = {
    ExtCapId.ERR: _decode_aer,
    ExtCapId.ACS: _decode_acs,
    ExtCapId.SRIOV: _decode_sriov,
    ExtCapId.ARI: _decode_ari,
    ExtCapId.REBAR: _decode_rebar,
    ExtCapId.VF_REBAR: _decode_rebar,
    ExtCapId.PASID: _decode_pasid,
    ExtCapId.PRI: _decode_pri,
    ExtCapId.ATS: _decode_ats,
    ExtCapId.DVSEC: _decode_dvsec,
    ExtCapId.VNDR: _decode_vsec,
    ExtCapId.DSN: _decode_dsn,
}


def _known(enum_type: type[CapId] | type[ExtCapId], value: int) -> int:
    """The enum member for a known ID (so it prints by name), else the plain int."""
    return enum_type(value) if value in enum_type._value2member_map_ else value


def _walk_capabilities(data: bytes, header: Header, problems: list[str]) -> list[Capability]:
    caps: list[Capability] = []
    if not header.status & _PCI_STATUS_CAP_LIST or header.capabilities_pointer is None:
        return caps
    seen: set[int] = set()
    pos = header.capabilities_pointer
    where = "the capabilities pointer"
    for _ in range(_CAP_TTL):
        if pos == 0:
            return caps
        if pos < HEADER_SIZE:
            problems.append(f"{where} points into the header ({pos:#04x}); list cut there")
            return caps
        if pos & 0x3:
            # The low two bits are reserved; software must mask them (PCI 3.0, 6.7).
            problems.append(f"{where} is not dword-aligned ({pos:#04x}); low bits ignored")
            pos &= ~0x3
        if pos in seen:
            problems.append(f"capability list loops: {where} goes back to {pos:#04x}")
            return caps
        seen.add(pos)
        if pos + 2 > len(data):
            hint = " (an unprivileged sysfs read gets only 64 bytes)" if len(data) == 64 else ""
            problems.append(
                f"{where} ({pos:#04x}) is past the end of the {len(data)} bytes of data{hint}"
            )
            return caps
        cap_id = _u8(data, pos)
        if cap_id == 0xFF:
            problems.append(f"capability list broken: ID 0xff at {pos:#04x} (reads all-ones)")
            return caps
        caps.append(_decode_capability(data, cap_id, pos, problems))
        where = f"the next pointer at {pos:#04x}"
        pos = _u8(data, pos + 1)
    if pos & ~0x3 in seen:
        problems.append(f"capability list loops: {where} goes back to {pos & ~0x3:#04x}")
    elif pos:
        problems.append(f"capability list longer than {_CAP_TTL} entries; cut there")
    return caps


def _decode_capability(data: bytes, cap_id: int, pos: int, problems: list[str]) -> Capability:
    known_id = _known(CapId, cap_id)
    decoder = _CAP_DECODERS.get(cap_id)
    if decoder is not None:
        try:
            return decoder(data, known_id, pos)
        except _TruncatedError:
            problems.append(
                f"{_CAP_NAMES[cap_id]} capability at {pos:#04x} runs past the end of the data;"
                " not decoded"
            )
    return Capability(known_id, pos)


def _ext_space_is_aliased(data: bytes) -> bool:
    """Whether offsets 0x100, 0x200, ... repeat the first dword, as the kernel checks.

    Some devices do not decode the extended space and mirror the first 256 bytes there;
    the kernel then treats the device as having 256 bytes (``pci_ext_cfg_is_aliased``).
    """
    first = data[0:4]
    return all(
        data[pos : pos + 4] == first for pos in range(CONFIG_SPACE_SIZE, len(data) - 3, 0x100)
    )


def _walk_extended(data: bytes, problems: list[str]) -> list[ExtendedCapability]:
    caps: list[ExtendedCapability] = []
    if len(data) < CONFIG_SPACE_SIZE + 4:
        return caps
    first = _u32(data, CONFIG_SPACE_SIZE)
    # An empty header is "no extended capabilities"; all-ones is "no extended space".
    if first in (0, 0xFFFFFFFF):
        return caps
    if _ext_space_is_aliased(data):
        problems.append(
            "extended configuration space mirrors the first 256 bytes (the device does not"
            " decode it); ignored, as the kernel does"
        )
        return caps
    seen: set[int] = set()
    pos = CONFIG_SPACE_SIZE
    where = "the first extended capability"
    for _ in range(_EXT_CAP_TTL):
        if pos in seen:
            problems.append(f"extended capability list loops: {where} goes back to {pos:#05x}")
            return caps
        seen.add(pos)
        if pos + 4 > len(data):
            problems.append(
                f"{where} ({pos:#05x}) is past the end of the {len(data)} bytes of data"
            )
            return caps
        header = _u32(data, pos)
        if header in (0, 0xFFFFFFFF):
            problems.append(f"{where} points at an empty header ({header:#010x}) at {pos:#05x}")
            return caps
        caps.append(_decode_extended(data, header, pos, problems))
        where = f"the next pointer at {pos:#05x}"
        pos = header >> 20
        if pos == 0:
            return caps
        if pos & 0x3:
            # Reserved bits; the kernel masks them too (PCI_EXT_CAP_NEXT).
            problems.append(f"{where} is not dword-aligned ({pos:#05x}); low bits ignored")
            pos &= ~0x3
        if pos < CONFIG_SPACE_SIZE:
            problems.append(f"{where} points below 0x100 ({pos:#05x}); list cut there")
            return caps
    problems.append(f"extended capability list longer than {_EXT_CAP_TTL} entries; cut there")
    return caps


def _decode_extended(data: bytes, header: int, pos: int, problems: list[str]) -> ExtendedCapability:
    cap_id, version = header & 0xFFFF, (header >> 16) & 0xF
    known_id = _known(ExtCapId, cap_id)
    decoder = _EXT_CAP_DECODERS.get(cap_id)
    if decoder is not None:
        try:
            return decoder(data, known_id, version, pos)
        except _TruncatedError:
            problems.append(
                f"{_EXT_CAP_NAMES[cap_id]} capability at {pos:#05x} runs past the end of the"
                " data; not decoded"
            )
    return ExtendedCapability(known_id, version, pos)


def parse_config(data: bytes | bytearray | memoryview) -> ConfigSpace:
    """Parse raw configuration-space bytes (64 to 4096 of them, from offset 0).

    Raises ValueError only when the data cannot hold the 64-byte header. Anything
    malformed past that is reported in ``ConfigSpace.problems`` instead.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"configuration space is bytes, not {type(data).__name__}")
    raw = bytes(data)
    if len(raw) < HEADER_SIZE:
        raise ValueError(
            f"PCI configuration space needs at least {HEADER_SIZE} bytes (the header),"
            f" got {len(raw)}; read it from offset 0 of the config file or region"
        )
    problems: list[str] = []
    if len(raw) > EXT_CONFIG_SPACE_SIZE:
        problems.append(
            f"{len(raw)} bytes of data: only the first {EXT_CONFIG_SPACE_SIZE} are configuration"
            " space; the rest is ignored"
        )
        raw = raw[:EXT_CONFIG_SPACE_SIZE]
    if _u16(raw, 0) == 0xFFFF:
        # All-ones reads: nothing below is meaningful, so say only that.
        problems.append(
            "vendor ID reads 0xffff: the function did not answer (absent, powered off or in"
            " reset); capabilities not parsed"
        )
        return ConfigSpace(_decode_header(raw, []), (), (), tuple(problems), raw)
    header = _decode_header(raw, problems)
    capabilities = _walk_capabilities(raw, header, problems)
    extended = _walk_extended(raw, problems)
    return ConfigSpace(header, tuple(capabilities), tuple(extended), tuple(problems), raw)
