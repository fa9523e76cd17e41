"""Standard capabilities (the list from ``PCI_CAPABILITY_LIST``): each dataclass and its table.

Each capability pyvfio decodes is a frozen dataclass followed by its `Layout`: the
registers it is read from and the bits of each field.  The parser decodes a capability
with the table (`CAP_LAYOUTS`, by ID) and the vfio-user server's config builder encodes
one with the same table, so a register is described once.  Offsets and bits are the
kernel's names (`pyvfio._uapi.pci_regs`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from pyvfio._uapi.pci_regs import (
    PCI_AF_CAP,
    PCI_AF_CAP_FLR,
    PCI_AF_CAP_TP,
    PCI_CAP_AF_SIZEOF,
    PCI_CAP_FLAGS,
    PCI_CAP_ID_AF,
    PCI_CAP_ID_AGP,
    PCI_CAP_ID_AGP3,
    PCI_CAP_ID_CCRC,
    PCI_CAP_ID_CHSWP,
    PCI_CAP_ID_DBG,
    PCI_CAP_ID_EA,
    PCI_CAP_ID_EXP,
    PCI_CAP_ID_HT,
    PCI_CAP_ID_MSI,
    PCI_CAP_ID_MSIX,
    PCI_CAP_ID_PCIX,
    PCI_CAP_ID_PM,
    PCI_CAP_ID_SATA,
    PCI_CAP_ID_SECDEV,
    PCI_CAP_ID_SHPC,
    PCI_CAP_ID_SLOTID,
    PCI_CAP_ID_SSVID,
    PCI_CAP_ID_VNDR,
    PCI_CAP_ID_VPD,
    PCI_CAP_MSIX_SIZEOF,
    PCI_EXP_DEVCAP,
    PCI_EXP_DEVCAP_FLR,
    PCI_EXP_DEVCAP_PAYLOAD,
    PCI_EXP_DEVCTL,
    PCI_EXP_DEVCTL_AUX_PME,
    PCI_EXP_DEVCTL_CERE,
    PCI_EXP_DEVCTL_FERE,
    PCI_EXP_DEVCTL_NFERE,
    PCI_EXP_DEVCTL_NOSNOOP_EN,
    PCI_EXP_DEVCTL_PAYLOAD,
    PCI_EXP_DEVCTL_READRQ,
    PCI_EXP_DEVCTL_RELAX_EN,
    PCI_EXP_DEVCTL_URRE,
    PCI_EXP_FLAGS,
    PCI_EXP_FLAGS_IRQ,
    PCI_EXP_FLAGS_SLOT,
    PCI_EXP_FLAGS_TYPE,
    PCI_EXP_FLAGS_VERS,
    PCI_EXP_LNKCAP,
    PCI_EXP_LNKCAP_DLLLARC,
    PCI_EXP_LNKCAP_MLW,
    PCI_EXP_LNKCAP_PN,
    PCI_EXP_LNKCAP_SLS,
    PCI_EXP_LNKSTA,
    PCI_EXP_LNKSTA_DLLLA,
    PCI_EXP_SLTSTA2,
    PCI_EXP_TYPE_DOWNSTREAM,
    PCI_EXP_TYPE_ENDPOINT,
    PCI_EXP_TYPE_LEG_END,
    PCI_EXP_TYPE_PCI_BRIDGE,
    PCI_EXP_TYPE_PCIE_BRIDGE,
    PCI_EXP_TYPE_RC_EC,
    PCI_EXP_TYPE_RC_END,
    PCI_EXP_TYPE_ROOT_PORT,
    PCI_EXP_TYPE_UPSTREAM,
    PCI_MSI_ADDRESS_HI,
    PCI_MSI_ADDRESS_LO,
    PCI_MSI_DATA_32,
    PCI_MSI_DATA_64,
    PCI_MSI_FLAGS,
    PCI_MSI_FLAGS_64BIT,
    PCI_MSI_FLAGS_ENABLE,
    PCI_MSI_FLAGS_MASKBIT,
    PCI_MSI_FLAGS_QMASK,
    PCI_MSI_FLAGS_QSIZE,
    PCI_MSI_MASK_32,
    PCI_MSI_MASK_64,
    PCI_MSI_PENDING_32,
    PCI_MSI_PENDING_64,
    PCI_MSIX_FLAGS,
    PCI_MSIX_FLAGS_ENABLE,
    PCI_MSIX_FLAGS_MASKALL,
    PCI_MSIX_FLAGS_QSIZE,
    PCI_MSIX_PBA,
    PCI_MSIX_PBA_BIR,
    PCI_MSIX_PBA_OFFSET,
    PCI_MSIX_TABLE,
    PCI_MSIX_TABLE_BIR,
    PCI_MSIX_TABLE_OFFSET,
    PCI_PM_CAP_D1,
    PCI_PM_CAP_D2,
    PCI_PM_CAP_PME_MASK,
    PCI_PM_CAP_VER_MASK,
    PCI_PM_CTRL,
    PCI_PM_CTRL_NO_SOFT_RESET,
    PCI_PM_CTRL_STATE_MASK,
    PCI_PM_PMC,
    PCI_PM_SIZEOF,
    PCI_SSVID_DEVICE_ID,
    PCI_SSVID_VENDOR_ID,
)
from pyvfio.pci.layout import (
    FLAG,
    PLUS_ONE,
    POWER_OF_TWO,
    Bits,
    Codec,
    Layout,
    Register,
    Values,
    enum_or_int,
    flag_text,
)

__all__ = [
    "AF_LAYOUT",
    "CAP_LAYOUTS",
    "EXP_LAYOUT",
    "MSIX_LAYOUT",
    "MSI_LAYOUT",
    "PM_LAYOUT",
    "SSVID_LAYOUT",
    "VNDR_LAYOUT",
    "AdvancedFeatures",
    "BridgeSubsystem",
    "CapId",
    "Capability",
    "Msi",
    "MsiX",
    "PciExpress",
    "PortType",
    "PowerManagement",
    "VendorSpecific",
]


class CapId(enum.IntEnum):
    """Standard capability IDs, named as the kernel's ``PCI_CAP_ID_*``."""

    NULL = 0x00  # not in pci_regs.h: the PCI spec's empty "Null Capability"
    PM = PCI_CAP_ID_PM
    AGP = PCI_CAP_ID_AGP
    VPD = PCI_CAP_ID_VPD
    SLOTID = PCI_CAP_ID_SLOTID
    MSI = PCI_CAP_ID_MSI
    CHSWP = PCI_CAP_ID_CHSWP
    PCIX = PCI_CAP_ID_PCIX
    HT = PCI_CAP_ID_HT
    VNDR = PCI_CAP_ID_VNDR
    DBG = PCI_CAP_ID_DBG
    CCRC = PCI_CAP_ID_CCRC
    SHPC = PCI_CAP_ID_SHPC
    SSVID = PCI_CAP_ID_SSVID
    AGP3 = PCI_CAP_ID_AGP3
    SECDEV = PCI_CAP_ID_SECDEV
    EXP = PCI_CAP_ID_EXP
    MSIX = PCI_CAP_ID_MSIX
    SATA = PCI_CAP_ID_SATA
    AF = PCI_CAP_ID_AF
    EA = PCI_CAP_ID_EA
    FPB = 0x15  # not in pci_regs.h: Flattening Portal Bridge


CAP_NAMES: Final[dict[int, str]] = {
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


class PortType(enum.IntEnum):
    """PCI Express Device/Port Type (``PCI_EXP_FLAGS_TYPE``, ``PCI_EXP_TYPE_*``)."""

    ENDPOINT = PCI_EXP_TYPE_ENDPOINT
    LEGACY_ENDPOINT = PCI_EXP_TYPE_LEG_END
    ROOT_PORT = PCI_EXP_TYPE_ROOT_PORT
    UPSTREAM_PORT = PCI_EXP_TYPE_UPSTREAM
    DOWNSTREAM_PORT = PCI_EXP_TYPE_DOWNSTREAM
    PCIE_PCI_BRIDGE = PCI_EXP_TYPE_PCI_BRIDGE  # PCI Express to PCI/PCI-X
    PCI_PCIE_BRIDGE = PCI_EXP_TYPE_PCIE_BRIDGE  # PCI/PCI-X to PCI Express
    RC_INTEGRATED_ENDPOINT = PCI_EXP_TYPE_RC_END
    RC_EVENT_COLLECTOR = PCI_EXP_TYPE_RC_EC


@dataclass(frozen=True, slots=True)
class Capability:
    """An entry of the standard capability list; subclasses decode known ones."""

    id: int
    offset: int

    @property
    def name(self) -> str:
        return CAP_NAMES.get(self.id, f"Capability ID {self.id:#04x}")

    def _details(self) -> str:
        return ""

    def __str__(self) -> str:
        details = self._details()
        return f"[{self.offset:02x}] {self.name}" + (f": {details}" if details else "")


# --- Power Management ----------------------------------------------------------------------


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
            f"version {self.version}, {flag_text('D1', self.d1_support)} "
            f"{flag_text('D2', self.d2_support)} {flag_text('NoSoftRst', self.no_soft_reset)}, "
            f"{state}"
        )


PM_LAYOUT: Final = Layout(
    PowerManagement,
    CapId.PM,
    Register(
        PCI_PM_PMC,
        2,
        Bits("version", PCI_PM_CAP_VER_MASK),
        Bits("d1_support", PCI_PM_CAP_D1, FLAG),
        Bits("d2_support", PCI_PM_CAP_D2, FLAG),
        Bits("pme_support", PCI_PM_CAP_PME_MASK),
    ),
    Register(
        PCI_PM_CTRL,
        2,
        Bits("no_soft_reset", PCI_PM_CTRL_NO_SOFT_RESET, FLAG),
        Bits("power_state", PCI_PM_CTRL_STATE_MASK),
        writable=PCI_PM_CTRL_STATE_MASK,
    ),
    size=PCI_PM_SIZEOF,
)


# --- MSI -----------------------------------------------------------------------------------


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
            f"{flag_text('Enable', self.enabled)} Count={self.vectors_enabled}/{self.vectors} "
            f"{flag_text('Maskable', self.per_vector_masking)} {flag_text('64bit', self.is_64bit)}"
        )


# Where the registers after the address sit depends on the address's width, and the
# mask and pending bits are there only with per-vector masking.
def _msi_32(values: Values) -> bool:
    return not values.get("is_64bit")


def _msi_64(values: Values) -> bool:
    return bool(values.get("is_64bit"))


def _msi_masked_32(values: Values) -> bool:
    return _msi_32(values) and bool(values.get("per_vector_masking"))


def _msi_masked_64(values: Values) -> bool:
    return _msi_64(values) and bool(values.get("per_vector_masking"))


def _msi_mask_bits(values: Values) -> int:
    """One mask bit per vector the function offers; the rest are reserved."""
    vectors = values.get("vectors")
    return (1 << vectors) - 1 if isinstance(vectors, int) else 0


MSI_LAYOUT: Final = Layout(
    Msi,
    CapId.MSI,
    Register(
        PCI_MSI_FLAGS,
        2,
        Bits("enabled", PCI_MSI_FLAGS_ENABLE, FLAG),
        Bits("vectors", PCI_MSI_FLAGS_QMASK, POWER_OF_TWO),
        Bits("vectors_enabled", PCI_MSI_FLAGS_QSIZE, POWER_OF_TWO),
        Bits("is_64bit", PCI_MSI_FLAGS_64BIT, FLAG),
        Bits("per_vector_masking", PCI_MSI_FLAGS_MASKBIT, FLAG),
        writable=PCI_MSI_FLAGS_ENABLE | PCI_MSI_FLAGS_QSIZE,
    ),
    Register(PCI_MSI_ADDRESS_LO, 4, Bits("address"), writable=0xFFFFFFFC),  # dword aligned
    Register(PCI_MSI_ADDRESS_HI, 4, Bits("address", at=32), writable=0xFFFFFFFF, when=_msi_64),
    Register(PCI_MSI_DATA_32, 2, Bits("data"), writable=0xFFFF, when=_msi_32),
    Register(PCI_MSI_DATA_64, 2, Bits("data"), writable=0xFFFF, when=_msi_64),
    Register(PCI_MSI_MASK_32, 4, Bits("mask"), writable=_msi_mask_bits, when=_msi_masked_32),
    Register(PCI_MSI_MASK_64, 4, Bits("mask"), writable=_msi_mask_bits, when=_msi_masked_64),
    Register(PCI_MSI_PENDING_32, 4, when=_msi_masked_32),
    Register(PCI_MSI_PENDING_64, 4, when=_msi_masked_64),
)


# --- MSI-X ---------------------------------------------------------------------------------


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
            f"{flag_text('Enable', self.enabled)} Count={self.table_size} "
            f"{flag_text('Masked', self.function_mask)}, table BAR {self.table_bir} "
            f"+{self.table_offset:#x}, PBA BAR {self.pba_bir} +{self.pba_offset:#x}"
        )


MSIX_LAYOUT: Final = Layout(
    MsiX,
    CapId.MSIX,
    Register(
        PCI_MSIX_FLAGS,
        2,
        Bits("enabled", PCI_MSIX_FLAGS_ENABLE, FLAG),
        Bits("function_mask", PCI_MSIX_FLAGS_MASKALL, FLAG),
        Bits("table_size", PCI_MSIX_FLAGS_QSIZE, PLUS_ONE),
        writable=PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL,
    ),
    Register(
        PCI_MSIX_TABLE,
        4,
        Bits("table_bir", PCI_MSIX_TABLE_BIR),
        Bits("table_offset", PCI_MSIX_TABLE_OFFSET, at=None),
    ),
    Register(
        PCI_MSIX_PBA,
        4,
        Bits("pba_bir", PCI_MSIX_PBA_BIR),
        Bits("pba_offset", PCI_MSIX_PBA_OFFSET, at=None),
    ),
    size=PCI_CAP_MSIX_SIZEOF,
)


# --- PCI Express ---------------------------------------------------------------------------

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
    link_active_reporting: bool  # LnkCap: the port reports Data Link Layer Link Active
    port_number: int
    link_active: bool  # LnkSta: Data Link Layer Link Active (where reported)

    @property
    def bus_reset_gives_up(self) -> bool:
        """Whether Linux gives up on the devices below this port after a bus reset.

        pci_bridge_wait_for_secondary_bus() waits for Link Active after the reset on a
        downstream or root port faster than 5 GT/s that reports it; a port that reports
        the link down while a device sits below it never gets there, and the reset
        fails with ENOTTY ("Data Link Layer Link Active not set in 1000 msec"). QEMU's
        pcie-root-port at its default 16 GT/s does this for devices plugged at start.
        """
        speed = self.max_link_speed_gts
        return (
            self.port_type in (PortType.ROOT_PORT, PortType.DOWNSTREAM_PORT)
            and self.link_active_reporting
            and not self.link_active
            and speed is not None
            and speed > 5
        )

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
        text += f", {flag_text('FLReset', self.flr)} MaxPayload {self.max_payload}"
        speed = self.max_link_speed_gts
        if self.max_link_width and speed is not None:
            text += f", link x{self.max_link_width} {speed:g}GT/s"
        return text


#: Max_Payload_Size: 128 bytes << the encoding.
_PAYLOAD_BYTES: Final = Codec(lambda raw: 128 << raw, lambda size: int(size).bit_length() - 8)

EXP_LAYOUT: Final = Layout(
    PciExpress,
    CapId.EXP,
    Register(
        PCI_EXP_FLAGS,
        2,
        Bits("version", PCI_EXP_FLAGS_VERS),
        Bits("port_type", PCI_EXP_FLAGS_TYPE, enum_or_int(PortType)),
        Bits("slot_implemented", PCI_EXP_FLAGS_SLOT, FLAG),
        Bits("interrupt_message", PCI_EXP_FLAGS_IRQ),
    ),
    Register(
        PCI_EXP_DEVCAP,
        4,
        Bits("max_payload", PCI_EXP_DEVCAP_PAYLOAD, _PAYLOAD_BYTES),
        Bits("flr", PCI_EXP_DEVCAP_FLR, FLAG),
    ),
    # What a driver sets: error reporting, relaxed ordering, payload and read request
    # sizes, aux power, no snoop (not the phantom functions, extended tags or FLR).
    Register(
        PCI_EXP_DEVCTL,
        2,
        writable=PCI_EXP_DEVCTL_CERE
        | PCI_EXP_DEVCTL_NFERE
        | PCI_EXP_DEVCTL_FERE
        | PCI_EXP_DEVCTL_URRE
        | PCI_EXP_DEVCTL_RELAX_EN
        | PCI_EXP_DEVCTL_PAYLOAD
        | PCI_EXP_DEVCTL_AUX_PME
        | PCI_EXP_DEVCTL_NOSNOOP_EN
        | PCI_EXP_DEVCTL_READRQ,
    ),
    Register(
        PCI_EXP_LNKCAP,
        4,
        Bits("max_link_speed", PCI_EXP_LNKCAP_SLS),
        Bits("max_link_width", PCI_EXP_LNKCAP_MLW),
        Bits("link_active_reporting", PCI_EXP_LNKCAP_DLLLARC, FLAG),
        Bits("port_number", PCI_EXP_LNKCAP_PN),
    ),
    Register(PCI_EXP_LNKSTA, 2, Bits("link_active", PCI_EXP_LNKSTA_DLLLA, FLAG)),
    size=PCI_EXP_SLTSTA2 + 2,  # a version 2 capability, through Slot Status 2
)


# --- Smaller ones --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AdvancedFeatures(Capability):
    """PCI Advanced Features: FLR for conventional PCI functions."""

    tp: bool  # Transactions Pending capable
    flr: bool  # Function Level Reset capable

    def _details(self) -> str:
        return f"{flag_text('TP', self.tp)} {flag_text('FLR', self.flr)}"


AF_LAYOUT: Final = Layout(
    AdvancedFeatures,
    CapId.AF,
    Register(PCI_AF_CAP, 1, Bits("tp", PCI_AF_CAP_TP, FLAG), Bits("flr", PCI_AF_CAP_FLR, FLAG)),
    size=PCI_CAP_AF_SIZEOF,
)


@dataclass(frozen=True, slots=True)
class VendorSpecific(Capability):
    """Vendor-specific capability; its length byte is the only common field."""

    length: int

    def _details(self) -> str:
        return f"length {self.length:#x}"


VNDR_LAYOUT: Final = Layout(VendorSpecific, CapId.VNDR, Register(PCI_CAP_FLAGS, 1, Bits("length")))


@dataclass(frozen=True, slots=True)
class BridgeSubsystem(Capability):
    """Bridge Subsystem Vendor ID capability: a bridge's subsystem IDs."""

    subsystem_vendor_id: int
    subsystem_id: int

    def _details(self) -> str:
        return f"{self.subsystem_vendor_id:04x}:{self.subsystem_id:04x}"


SSVID_LAYOUT: Final = Layout(
    BridgeSubsystem,
    CapId.SSVID,
    Register(PCI_SSVID_VENDOR_ID, 2, Bits("subsystem_vendor_id")),
    Register(PCI_SSVID_DEVICE_ID, 2, Bits("subsystem_id")),
)

#: The capabilities pyvfio decodes, by ID.
CAP_LAYOUTS: Final[dict[int, Layout]] = {
    layout.id: layout
    for layout in (
        PM_LAYOUT,
        MSI_LAYOUT,
        MSIX_LAYOUT,
        EXP_LAYOUT,
        AF_LAYOUT,
        VNDR_LAYOUT,
        SSVID_LAYOUT,
    )
}
