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
offsets and bits are the kernel's names (`pyvfio._uapi.pci_regs`, a mirror of
``linux/pci_regs.h``). The header is decoded in `pyvfio.pci.header`; each capability's
dataclass sits beside its register table in `pyvfio.pci.capabilities` and
`pyvfio.pci.extended` (the tables the vfio-user server's config builder encodes with
too); this module walks the lists and holds the result. BAR sizes are not in the
configuration bytes (sizing needs writes), so they are not here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from pyvfio._uapi.pci_regs import (
    PCI_CAP_LIST_ID,
    PCI_CAP_LIST_NEXT,
    PCI_CFG_SPACE_EXP_SIZE,
    PCI_CFG_SPACE_SIZE,
    PCI_EXT_CAP_ID,
    PCI_EXT_CAP_VER,
    PCI_STATUS_CAP_LIST,
    PCI_STD_HEADER_SIZEOF,
    PCI_VENDOR_ID,
)
from pyvfio.pci.capabilities import (
    CAP_LAYOUTS,
    CAP_NAMES,
    AdvancedFeatures,
    BridgeSubsystem,
    Capability,
    CapId,
    Msi,
    MsiX,
    PciExpress,
    PortType,
    PowerManagement,
    VendorSpecific,
)
from pyvfio.pci.extended import (
    EXT_CAP_LAYOUTS,
    EXT_CAP_NAMES,
    AccessControlServices,
    AcsFlags,
    AddressTranslationService,
    AdvancedErrorReporting,
    AlternativeRoutingId,
    DesignatedVendorSpecific,
    DeviceSerialNumber,
    ExtCapId,
    ExtendedCapability,
    PageRequestInterface,
    ProcessAddressSpaceId,
    ResizableBar,
    ResizableBarEntry,
    SrIov,
    VendorSpecificExtended,
)
from pyvfio.pci.header import Bar, BarType, ExpansionRom, Header, HeaderType, decode_header
from pyvfio.pci.layout import TruncatedError, u8, u16, u32

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

HEADER_SIZE: Final = PCI_STD_HEADER_SIZEOF  # the standard header every function has
CONFIG_SPACE_SIZE: Final = PCI_CFG_SPACE_SIZE
EXT_CONFIG_SPACE_SIZE: Final = PCI_CFG_SPACE_EXP_SIZE

# drivers/pci/pci.c: PCI_FIND_CAP_TTL, and "minimum 8 bytes per capability" for the
# extended list. They bound a walk even where the loop check would not.
_CAP_TTL: Final = 48
_EXT_CAP_TTL: Final = (EXT_CONFIG_SPACE_SIZE - CONFIG_SPACE_SIZE) // 8

# The next pointer of an extended capability header: the kernel's PCI_EXT_CAP_NEXT()
# also masks the two reserved low bits, which the walk keeps to report them.
_EXT_CAP_NEXT_SHIFT: Final = 20


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


# --- Walking the lists -----------------------------------------------------------------------


def _known(enum_type: type[CapId] | type[ExtCapId], value: int) -> int:
    """The enum member for a known ID (so it prints by name), else the plain int."""
    return enum_type(value) if value in enum_type._value2member_map_ else value


def _walk_capabilities(data: bytes, header: Header, problems: list[str]) -> list[Capability]:
    caps: list[Capability] = []
    if not header.status & PCI_STATUS_CAP_LIST or header.capabilities_pointer is None:
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
        cap_id = u8(data, pos + PCI_CAP_LIST_ID)
        if cap_id == 0xFF:
            problems.append(f"capability list broken: ID 0xff at {pos:#04x} (reads all-ones)")
            return caps
        caps.append(_decode_capability(data, cap_id, pos, problems))
        where = f"the next pointer at {pos:#04x}"
        pos = u8(data, pos + PCI_CAP_LIST_NEXT)
    if pos & ~0x3 in seen:
        problems.append(f"capability list loops: {where} goes back to {pos & ~0x3:#04x}")
    elif pos:
        problems.append(f"capability list longer than {_CAP_TTL} entries; cut there")
    return caps


def _decode_capability(data: bytes, cap_id: int, pos: int, problems: list[str]) -> Capability:
    known_id = _known(CapId, cap_id)
    layout = CAP_LAYOUTS.get(cap_id)
    if layout is not None:
        try:
            cap: Capability = layout.cls(known_id, pos, **layout.decode(data, pos))
        except TruncatedError:
            problems.append(
                f"{CAP_NAMES[cap_id]} capability at {pos:#04x} runs past the end of the data;"
                " not decoded"
            )
        else:
            return cap
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
    first = u32(data, CONFIG_SPACE_SIZE)
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
        header = u32(data, pos)
        if header in (0, 0xFFFFFFFF):
            problems.append(f"{where} points at an empty header ({header:#010x}) at {pos:#05x}")
            return caps
        caps.append(_decode_extended(data, header, pos, problems))
        where = f"the next pointer at {pos:#05x}"
        pos = header >> _EXT_CAP_NEXT_SHIFT
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
    cap_id = (header & PCI_EXT_CAP_ID) >> PCI_EXT_CAP_ID.shift
    version = (header & PCI_EXT_CAP_VER) >> PCI_EXT_CAP_VER.shift
    known_id = _known(ExtCapId, cap_id)
    layout = EXT_CAP_LAYOUTS.get(cap_id)
    if layout is not None:
        try:
            cap: ExtendedCapability = layout.cls(known_id, version, pos, **layout.decode(data, pos))
        except TruncatedError:
            problems.append(
                f"{EXT_CAP_NAMES[cap_id]} capability at {pos:#05x} runs past the end of the"
                " data; not decoded"
            )
        else:
            return cap
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
    if u16(raw, PCI_VENDOR_ID) == 0xFFFF:
        # All-ones reads: nothing below is meaningful, so say only that.
        problems.append(
            "vendor ID reads 0xffff: the function did not answer (absent, powered off or in"
            " reset); capabilities not parsed"
        )
        return ConfigSpace(decode_header(raw, []), (), (), tuple(problems), raw)
    header = decode_header(raw, problems)
    capabilities = _walk_capabilities(raw, header, problems)
    extended = _walk_extended(raw, problems)
    return ConfigSpace(header, tuple(capabilities), tuple(extended), tuple(problems), raw)
