"""The configuration-space parser, checked against lspci on real and on broken dumps.

Every dump in tests/data/pciutils-dumps (pciutils' own test dumps: ``lspci -vvv`` text followed by
an ``lspci -xxxx`` hex dump, possibly several devices per file) is parsed here and
compared with what ``lspci -F FILE -vvvnn`` prints, run now: lspci is the oracle. Synthetic
config spaces (loops, bad pointers, Resizable BAR, DVSEC) are written out in the same
dump format so lspci can judge them too, where it has an opinion.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyvfio.pci import ids
from pyvfio.pci.config import (
    AccessControlServices,
    AcsFlags,
    AddressTranslationService,
    AdvancedErrorReporting,
    AdvancedFeatures,
    AlternativeRoutingId,
    Bar,
    BarType,
    BridgeSubsystem,
    Capability,
    CapId,
    ConfigSpace,
    DesignatedVendorSpecific,
    DeviceSerialNumber,
    ExtCapId,
    ExtendedCapability,
    HeaderType,
    Msi,
    MsiX,
    PageRequestInterface,
    PciExpress,
    PortType,
    PowerManagement,
    ProcessAddressSpaceId,
    ResizableBar,
    SrIov,
    VendorSpecific,
    VendorSpecificExtended,
    parse_config,
)

CORPUS = Path(__file__).parents[1] / "data/pciutils-dumps"
DUMPS = sorted(p for p in CORPUS.iterdir() if p.name != "README.md") if CORPUS.is_dir() else []

Address = tuple[int, int, int, int]  # domain, bus, device, function

_ADDRESS = re.compile(r"^(?:([0-9a-f]{4,8}):)?([0-9a-f]{2}):([0-9a-f]{2})\.([0-7])\s", re.I)
_HEX_LINE = re.compile(r"^([0-9a-f]{2,3}):((?: [0-9a-f]{2}){1,16})\s*$", re.I)
_IDS = re.compile(r"\[([0-9a-f]{4}):([0-9a-f]{4})\]")


def _address(line: str) -> Address | None:
    match = _ADDRESS.match(line)
    if match is None:
        return None
    domain, bus, device, function = match.groups()
    return int(domain or "0", 16), int(bus, 16), int(device, 16), int(function, 16)


# --- Reading the dumps ------------------------------------------------------------------------


def read_dump(path: Path) -> dict[Address, bytes]:
    """The hex part of a dump file: config bytes per device, in file order."""
    chunks_by_device: dict[Address, dict[int, bytes]] = {}
    chunks: dict[int, bytes] | None = None
    for line in path.read_text(errors="replace").splitlines():
        hex_match = _HEX_LINE.match(line)
        if hex_match and chunks is not None:
            chunks[int(hex_match[1], 16)] = bytes.fromhex(hex_match[2])
            continue
        address = _address(line)
        if address is not None:
            chunks = chunks_by_device.setdefault(address, {})
    devices = {}
    for address, device_chunks in chunks_by_device.items():
        if not device_chunks:
            continue  # the device's -vvv text without its hex dump
        offsets = sorted(device_chunks)
        expected = list(range(0, 16 * len(offsets), 16))
        assert offsets == expected, f"{path.name} {address}: hex dump has gaps"
        devices[address] = b"".join(device_chunks[offset] for offset in offsets)
    return devices


# --- Reading lspci's output -------------------------------------------------------------------


@dataclass
class LspciCap:
    """One "Capabilities:" entry of ``lspci -vvv``: the title and the lines below it."""

    offset: int | None  # None for "<access denied>"
    version: int | None  # only extended capabilities print one
    title: str
    body: list[tuple[int, str]] = field(default_factory=list)  # (tab depth, text)

    @property
    def extended(self) -> bool:
        return self.version is not None

    def register(self, name: str) -> str | None:
        """The text of the ``name:`` line and its continuation lines, joined."""
        text: list[str] = []
        for depth, line in self.body:
            if text and depth <= 2:
                break
            if not text and depth == 2 and line.startswith(f"{name}:"):
                text.append(line[len(name) + 1 :].strip())
            elif text:
                text.append(line)
        return " ".join(text) if text else None


@dataclass
class LspciDevice:
    address: Address
    first_line: str
    lines: list[str] = field(default_factory=list)  # header lines, one tab deep
    caps: list[LspciCap] = field(default_factory=list)

    def line(self, prefix: str) -> str | None:
        return next((line for line in self.lines if line.startswith(prefix)), None)


def parse_lspci(text: str) -> dict[Address, LspciDevice]:
    devices: dict[Address, LspciDevice] = {}
    device: LspciDevice | None = None
    cap: LspciCap | None = None
    for raw_line in text.splitlines():
        if not raw_line.strip():
            continue
        depth = len(raw_line) - len(raw_line.lstrip("\t"))
        line = " ".join(raw_line.split())
        if depth == 0:
            address = _address(raw_line)
            assert address is not None, f"unexpected lspci line: {raw_line!r}"
            device = devices[address] = LspciDevice(address, line)
            cap = None
            continue
        assert device is not None, f"lspci output starts with {raw_line!r}"
        if depth == 1 and line.startswith("Capabilities: "):
            title = line.removeprefix("Capabilities: ")
            match = re.match(r"\[([0-9a-f]+)(?: v(\d+))?\] ?(.*)", title)
            if match is None:
                cap = LspciCap(None, None, title)
            else:
                version = int(match[2]) if match[2] is not None else None
                cap = LspciCap(int(match[1], 16), version, match[3])
            device.caps.append(cap)
        elif depth >= 2 and cap is not None:
            cap.body.append((depth, line))
        else:
            cap = None
            if depth == 1:
                device.lines.append(line)
    return devices


@pytest.fixture(scope="session")
def lspci() -> str:
    path = shutil.which("lspci") or next(
        (p for p in ("/usr/bin/lspci", "/sbin/lspci", "/usr/sbin/lspci") if Path(p).exists()),
        None,
    )
    if path is None:
        pytest.fail(
            "lspci not found: it is the oracle for these tests. Install Debian's pciutils"
            " package: apt-get install -y pciutils pci.ids"
        )
    return path


@cache
def _run_lspci(lspci: str, dump: Path) -> str:
    # Names from the same pci.ids our ids module reads, not from udev's hwdb.
    command = [lspci, "-F", str(dump), "-vvvnn", "-O", "hwdb.disable=1"]
    system_ids = ids.system_ids()
    if system_ids is not None and system_ids.path is not None:
        command += ["-i", str(system_ids.path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, f"{' '.join(command)} failed: {result.stderr}"
    return result.stdout


def lspci_devices(lspci: str, dump: Path) -> dict[Address, LspciDevice]:
    return parse_lspci(_run_lspci(lspci, dump))


# --- What lspci's titles mean -----------------------------------------------------------------

_STANDARD_TITLES: dict[str, int] = {
    "Null": CapId.NULL,
    "Power Management version": CapId.PM,
    "AGP version": CapId.AGP,
    "Vital Product Data": CapId.VPD,
    "Slot ID": CapId.SLOTID,
    "MSI:": CapId.MSI,
    "CompactPCI hot-swap": CapId.CHSWP,
    "PCI-X": CapId.PCIX,
    "HyperTransport": CapId.HT,
    "Vendor Specific Information": CapId.VNDR,
    "Debug port": CapId.DBG,
    "CompactPCI central resource control": CapId.CCRC,
    "Hot-plug capable": CapId.SHPC,
    "Subsystem:": CapId.SSVID,
    "AGP3": CapId.AGP3,
    "Secure device": CapId.SECDEV,
    "Express": CapId.EXP,
    "MSI-X:": CapId.MSIX,
    "SATA HBA": CapId.SATA,
    "PCI Advanced Features": CapId.AF,
    "Enhanced Allocation": CapId.EA,
}

_EXTENDED_TITLES: dict[str, int] = {
    "Null": ExtCapId.NULL,
    "Advanced Error Reporting": ExtCapId.ERR,
    "Virtual Channel": ExtCapId.VC,
    "Device Serial Number": ExtCapId.DSN,
    "Power Budgeting": ExtCapId.PWR,
    "Root Complex Link": ExtCapId.RCLD,
    "Root Complex Internal Link Control": ExtCapId.RCILC,
    "Root Complex Event Collector Endpoint Association": ExtCapId.RCEC,
    "Multi-Function Virtual Channel": ExtCapId.MFVC,
    "Root Complex Register Block": ExtCapId.RCRB,
    "Vendor Specific Information": ExtCapId.VNDR,
    "Access Control Services": ExtCapId.ACS,
    "Alternative Routing-ID Interpretation": ExtCapId.ARI,
    "Address Translation Service": ExtCapId.ATS,
    "Single Root I/O Virtualization": ExtCapId.SRIOV,
    "Multi-Root I/O Virtualization": ExtCapId.MRIOV,
    "Multicast": ExtCapId.MCAST,
    "Page Request Interface": ExtCapId.PRI,
    "Physical Resizable BAR": ExtCapId.REBAR,
    "Dynamic Power Allocation": ExtCapId.DPA,
    "Transaction Processing Hints": ExtCapId.TPH,
    "Latency Tolerance Reporting": ExtCapId.LTR,
    "Secondary PCI Express": ExtCapId.SECPCI,
    "Protocol Multiplexing": ExtCapId.PMUX,
    "Process Address Space ID": ExtCapId.PASID,
    "LN Requester": ExtCapId.LNR,
    "Downstream Port Containment": ExtCapId.DPC,
    "L1 PM Substates": ExtCapId.L1SS,
    "Precision Time Measurement": ExtCapId.PTM,
    "Designated Vendor-Specific": ExtCapId.DVSEC,
    "VF Resizable BAR": ExtCapId.VF_REBAR,
    "Data Link Feature": ExtCapId.DLF,
    "Physical Layer 16.0 GT/s": ExtCapId.PL_16GT,
    "Lane Margining at the Receiver": ExtCapId.LMR,
    "Hierarchy ID": ExtCapId.HIER_ID,
    "Native PCIe Enclosure Management": ExtCapId.NPEM,
    "Physical Layer 32.0 GT/s": ExtCapId.PL_32GT,
    "Data Object Exchange": ExtCapId.DOE,
    "Integrity & Data Encryption": ExtCapId.IDE,
}

_PORT_TYPES: dict[str, PortType] = {
    "Endpoint": PortType.ENDPOINT,
    "Legacy Endpoint": PortType.LEGACY_ENDPOINT,
    "Root Port": PortType.ROOT_PORT,
    "Upstream Port": PortType.UPSTREAM_PORT,
    "Downstream Port": PortType.DOWNSTREAM_PORT,
    "PCI-Express to PCI/PCI-X Bridge": PortType.PCIE_PCI_BRIDGE,
    "PCI/PCI-X to PCI-Express Bridge": PortType.PCI_PCIE_BRIDGE,
    "Root Complex Integrated Endpoint": PortType.RC_INTEGRATED_ENDPOINT,
    "Root Complex Event Collector": PortType.RC_EVENT_COLLECTOR,
}

_ACS_NAMES: dict[str, AcsFlags] = {
    "SrcValid": AcsFlags.SV,
    "TransBlk": AcsFlags.TB,
    "ReqRedir": AcsFlags.RR,
    "CmpltRedir": AcsFlags.CR,
    "UpstreamFwd": AcsFlags.UF,
    "EgressCtrl": AcsFlags.EC,
    "DirectTrans": AcsFlags.DT,
}


def _title_id(cap: LspciCap) -> int | None:
    """The capability ID lspci's title names (longest matching prefix wins)."""
    if cap.extended:
        match = re.match(r"Extended Capability ID (0x[0-9a-f]+)", cap.title)
        if match:
            return int(match[1], 16)
    titles = _EXTENDED_TITLES if cap.extended else _STANDARD_TITLES
    matches = [prefix for prefix in titles if cap.title.startswith(prefix)]
    return titles[max(matches, key=len)] if matches else None


def _flag(text: str | None, name: str) -> bool | None:
    """lspci's ``Name+`` / ``Name-`` as a bool, None when not printed."""
    if text is None:
        return None
    match = re.search(rf"(?<![\w-]){re.escape(name)}([+-])", text)
    return None if match is None else match[1] == "+"


def _field(pattern: str, text: str | None, base: int = 10) -> int | None:
    match = re.search(pattern, text) if text is not None else None
    return None if match is None else int(match[1], base)


# --- The comparison ---------------------------------------------------------------------------


@dataclass
class Comparison:
    """Collects every disagreement, so one run shows them all."""

    where: str
    errors: list[str] = field(default_factory=list)
    checked: int = 0

    def expect(self, what: str, ours: object, lspci: object) -> None:
        """Record a mismatch, unless lspci did not print this value (None)."""
        if lspci is None:
            return
        self.checked += 1
        if ours != lspci:
            self.errors.append(f"{self.where}: {what}: parser says {ours!r}, lspci {lspci!r}")


def compare_header(space: ConfigSpace, device: LspciDevice, check: Comparison) -> None:
    header = space.header
    first = device.first_line
    id_matches = _IDS.findall(first)
    if id_matches:
        vendor, dev = id_matches[-1]
        check.expect(
            "vendor:device", (header.vendor_id, header.device_id), (int(vendor, 16), int(dev, 16))
        )
    check.expect("class", header.device_class, _field(r" \[([0-9a-f]{4})\]: ", first, 16))
    # lspci prints "(rev xx)" and "(prog-if xx" only when non-zero.
    check.expect("revision", header.revision, _field(r"\(rev ([0-9a-f]{2})\)", first, 16) or 0)
    check.expect("prog-if", header.prog_if, _field(r"\(prog-if ([0-9a-f]{2})", first, 16) or 0)

    subsystem = device.line("Subsystem:")
    if subsystem is not None and header.header_type == HeaderType.NORMAL:
        sub_vendor, sub_id = _IDS.findall(subsystem)[-1]
        check.expect(
            "subsystem",
            (header.subsystem_vendor_id, header.subsystem_id),
            (int(sub_vendor, 16), int(sub_id, 16)),
        )

    interrupt = device.line("Interrupt:")
    if interrupt is not None:
        pin = re.search(r"pin (\S)", interrupt)
        assert pin is not None
        if pin[1] != "?":
            check.expect("interrupt pin", header.interrupt_pin, "ABCD".index(pin[1]) + 1)
        check.expect("interrupt line", header.interrupt_line, _field(r"IRQ (\d+)", interrupt))

    bus = device.line("Bus:")
    if bus is not None:
        buses = re.findall(r"(?:primary|secondary|subordinate)=([0-9a-f]+)", bus)
        theirs = tuple(int(value, 16) for value in buses)
        ours = (header.primary_bus, header.secondary_bus, header.subordinate_bus)
        check.expect("bus numbers", ours, theirs)

    regions = [line for line in device.lines if line.startswith("Region ")]
    compare_bars(header.bars, regions, check, "BAR")

    rom = device.line("Expansion ROM at ") or device.line("[virtual] Expansion ROM at ")
    check.expect("expansion ROM present", header.expansion_rom is not None, rom is not None)
    if rom is not None and header.expansion_rom is not None:
        address = _field(r"ROM at ([0-9a-f]+)", rom, 16)
        check.expect("expansion ROM address", header.expansion_rom.address, address)
        check.expect("expansion ROM enabled", header.expansion_rom.enabled, "[disabled]" not in rom)


def compare_bars(bars: tuple[Bar, ...], regions: list[str], check: Comparison, what: str) -> None:
    ours = {bar.index: bar for bar in bars}
    upper_halves = {bar.index + 1 for bar in bars if bar.type is BarType.MEM64}
    theirs: dict[int, str] = {}
    for line in regions:
        index = _field(r"^Region (\d+):", line)
        assert index is not None
        if index in upper_halves and re.search(r"at <(unassigned|ignored)>", line):
            # lspci 3.9 reading a dump (no sysfs resource flags) lists the upper dword
            # of a 64-bit BAR as a BAR of its own when it is non-zero; it is not one.
            continue
        theirs[index] = line
    check.expect(f"{what} indexes", sorted(ours), sorted(theirs))
    for index in sorted(ours.keys() & theirs.keys()):
        bar, line = ours[index], theirs[index]
        if "I/O ports" in line:
            check.expect(f"{what} {index} type", bar.type, BarType.IO)
        else:
            width = re.search(r"\((\d+)-bit, (non-)?prefetchable\)", line)
            assert width is not None, line
            kind = BarType.MEM64 if width[1] == "64" else BarType.MEM32
            check.expect(f"{what} {index} type", bar.type, kind)
            check.expect(f"{what} {index} prefetchable", bar.prefetchable, width[2] is None)
        check.expect(f"{what} {index} address", bar.address, _field(r" at ([0-9a-f]+)", line, 16))


def compare_capability(cap: Capability, theirs: LspciCap, check: Comparison) -> None:
    title = theirs.title
    if isinstance(cap, PowerManagement):
        check.expect("PM version", cap.version, _field(r"version (\d+)", title))
        flags, status = theirs.register("Flags"), theirs.register("Status")
        check.expect("PM D1", cap.d1_support, _flag(flags, "D1"))
        check.expect("PM D2", cap.d2_support, _flag(flags, "D2"))
        check.expect("PM NoSoftRst", cap.no_soft_reset, _flag(status, "NoSoftRst"))
        state = re.match(r"(D[0-3](?:hot)?)", status or "")
        if state is not None:
            check.expect("PM state", cap.power_state, int(state[1][1]))
    elif isinstance(cap, Msi):
        check.expect("MSI enabled", cap.enabled, _flag(title, "Enable"))
        check.expect("MSI vectors", cap.vectors, _field(r"Count=\d+/(\d+)", title))
        check.expect("MSI vectors enabled", cap.vectors_enabled, _field(r"Count=(\d+)/", title))
        check.expect("MSI maskable", cap.per_vector_masking, _flag(title, "Maskable"))
        check.expect("MSI 64-bit", cap.is_64bit, _flag(title, "64bit"))
    elif isinstance(cap, MsiX):
        check.expect("MSI-X enabled", cap.enabled, _flag(title, "Enable"))
        check.expect("MSI-X masked", cap.function_mask, _flag(title, "Masked"))
        check.expect("MSI-X table size", cap.table_size, _field(r"Count=(\d+)", title))
        table, pba = theirs.register("Vector table"), theirs.register("PBA")
        check.expect("MSI-X table BIR", cap.table_bir, _field(r"BAR=(\d+)", table))
        check.expect(
            "MSI-X table offset", cap.table_offset, _field(r"offset=([0-9a-f]+)", table, 16)
        )
        check.expect("MSI-X PBA BIR", cap.pba_bir, _field(r"BAR=(\d+)", pba))
        check.expect("MSI-X PBA offset", cap.pba_offset, _field(r"offset=([0-9a-f]+)", pba, 16))
    elif isinstance(cap, PciExpress):
        compare_express(cap, theirs, check)
    elif isinstance(cap, AdvancedFeatures):
        af_cap = theirs.register("AFCap")
        check.expect("AF TP", cap.tp, _flag(af_cap, "TP"))
        check.expect("AF FLR", cap.flr, _flag(af_cap, "FLR"))
    elif isinstance(cap, VendorSpecific):
        check.expect("vendor-specific length", cap.length, _field(r"Len=([0-9a-f]+)", title, 16))
    elif isinstance(cap, BridgeSubsystem):
        ids_found = _IDS.findall(title)
        if ids_found:
            theirs_ids = tuple(int(value, 16) for value in ids_found[-1])
            check.expect(
                "bridge subsystem", (cap.subsystem_vendor_id, cap.subsystem_id), theirs_ids
            )


def compare_express(cap: PciExpress, theirs: LspciCap, check: Comparison) -> None:
    title = theirs.title
    match = re.match(r"Express \(v(\d+)\) (.+?)(?: \(Slot([+-])\))?, MSI ([0-9a-f]{2})", title)
    assert match is not None, f"unexpected Express title {title!r}"
    check.expect("PCIe version", cap.version, int(match[1]))
    check.expect("PCIe port type", cap.port_type, _PORT_TYPES.get(match[2], match[2]))
    if match[3] is not None:
        check.expect("PCIe slot implemented", cap.slot_implemented, match[3] == "+")
    check.expect("PCIe interrupt message", cap.interrupt_message, int(match[4], 16))
    devcap = theirs.register("DevCap")
    check.expect("PCIe max payload", cap.max_payload, _field(r"MaxPayload (\d+) bytes", devcap))
    check.expect("PCIe FLR", cap.flr, _flag(devcap, "FLReset"))
    lnkcap = theirs.register("LnkCap")
    if lnkcap is not None:
        check.expect("PCIe port number", cap.port_number, _field(r"Port #(\d+)", lnkcap))
        check.expect("PCIe link width", cap.max_link_width, _field(r"Width x(\d+)", lnkcap))
        speed = re.search(r"Speed ([\d.]+)GT/s", lnkcap)
        if speed is not None:
            check.expect("PCIe link speed", cap.max_link_speed_gts, float(speed[1]))
        elif "Speed unknown" in lnkcap:
            check.expect("PCIe link speed", cap.max_link_speed_gts, None)


def compare_extended(cap: ExtendedCapability, theirs: LspciCap, check: Comparison) -> None:
    title = theirs.title
    if isinstance(cap, AdvancedErrorReporting):
        aer_cap = theirs.register("AERCap")
        check.expect(
            "AER first error",
            cap.first_error_pointer,
            _field(r"First Error Pointer: ([0-9a-f]+)", aer_cap, 16),
        )
        check.expect("AER ECRCGenCap", cap.ecrc_generation_capable, _flag(aer_cap, "ECRCGenCap"))
        check.expect("AER ECRCGenEn", cap.ecrc_generation_enabled, _flag(aer_cap, "ECRCGenEn"))
        check.expect("AER ECRCChkCap", cap.ecrc_check_capable, _flag(aer_cap, "ECRCChkCap"))
        check.expect("AER ECRCChkEn", cap.ecrc_check_enabled, _flag(aer_cap, "ECRCChkEn"))
    elif isinstance(cap, AccessControlServices):
        for register, ours in (("ACSCap", cap.capability), ("ACSCtl", cap.control)):
            text = theirs.register(register)
            for name, bit in _ACS_NAMES.items():
                check.expect(f"{register} {name}", bool(ours & bit), _flag(text, name))
    elif isinstance(cap, SrIov):
        iov_ctl = theirs.register("IOVCtl")
        check.expect("SR-IOV enable", cap.vf_enable, _flag(iov_ctl, "Enable"))
        check.expect("SR-IOV MSE", cap.vf_memory_space_enable, _flag(iov_ctl, "MSE"))
        check.expect(
            "SR-IOV ARI hierarchy", cap.ari_capable_hierarchy, _flag(iov_ctl, "ARIHierarchy")
        )
        check.expect(
            "SR-IOV migration",
            cap.vf_migration_capable,
            _flag(theirs.register("IOVCap"), "Migration"),
        )
        counts = theirs.register("Initial VFs")
        counts = f"Initial VFs:{counts}" if counts is not None else None
        check.expect("SR-IOV initial VFs", cap.initial_vfs, _field(r"Initial VFs: (\d+)", counts))
        check.expect("SR-IOV total VFs", cap.total_vfs, _field(r"Total VFs: (\d+)", counts))
        check.expect("SR-IOV num VFs", cap.num_vfs, _field(r"Number of VFs: (\d+)", counts))
        check.expect(
            "SR-IOV dependency link",
            cap.function_dependency_link,
            _field(r"Function Dependency Link: ([0-9a-f]+)", counts, 16),
        )
        routing = theirs.register("VF offset")
        routing = f"VF offset:{routing}" if routing is not None else None
        check.expect("SR-IOV VF offset", cap.vf_offset, _field(r"VF offset: (\d+)", routing))
        check.expect("SR-IOV VF stride", cap.vf_stride, _field(r"stride: (\d+)", routing))
        check.expect(
            "SR-IOV VF device ID", cap.vf_device_id, _field(r"Device ID: ([0-9a-f]+)", routing, 16)
        )
        pages = theirs.register("Supported Page Size")
        pages = f"Supported Page Size:{pages}" if pages is not None else None
        check.expect(
            "SR-IOV supported pages",
            cap.supported_page_sizes,
            _field(r"Supported Page Size: ([0-9a-f]+)", pages, 16),
        )
        check.expect(
            "SR-IOV system page",
            cap.system_page_size,
            _field(r"System Page Size: ([0-9a-f]+)", pages, 16),
        )
        regions = [line for depth, line in theirs.body if line.startswith("Region ")]
        compare_bars(cap.vf_bars, regions, check, "VF BAR")
    elif isinstance(cap, AlternativeRoutingId):
        ari_cap, ari_ctl = theirs.register("ARICap"), theirs.register("ARICtl")
        check.expect("ARI MFVC", cap.mfvc_function_groups, _flag(ari_cap, "MFVC"))
        check.expect("ARI ACS", cap.acs_function_groups, _flag(ari_cap, "ACS"))
        check.expect(
            "ARI next function", cap.next_function, _field(r"Next Function: (\d+)", ari_cap)
        )
        check.expect(
            "ARI function group", cap.function_group, _field(r"Function Group: (\d+)", ari_ctl)
        )
    elif isinstance(cap, ProcessAddressSpaceId):
        pasid_cap, pasid_ctl = theirs.register("PASIDCap"), theirs.register("PASIDCtl")
        check.expect("PASID exec", cap.exec_supported, _flag(pasid_cap, "Exec"))
        check.expect("PASID priv", cap.privileged_supported, _flag(pasid_cap, "Priv"))
        check.expect(
            "PASID width",
            cap.max_pasid_width,
            _field(r"Max PASID Width: ([0-9a-f]+)", pasid_cap, 16),
        )
        check.expect("PASID enable", cap.enabled, _flag(pasid_ctl, "Enable"))
    elif isinstance(cap, PageRequestInterface):
        check.expect("PRI enable", cap.enabled, _flag(theirs.register("PRICtl"), "Enable"))
        check.expect("PRI stopped", cap.stopped, _flag(theirs.register("PRISta"), "Stopped"))
        sizes = theirs.register("Page Request Capacity")
        sizes = f"Page Request Capacity:{sizes}" if sizes is not None else None
        check.expect(
            "PRI capacity", cap.request_capacity, _field(r"Capacity: ([0-9a-f]+)", sizes, 16)
        )
        check.expect(
            "PRI allocation", cap.request_allocation, _field(r"Allocation: ([0-9a-f]+)", sizes, 16)
        )
    elif isinstance(cap, AddressTranslationService):
        ats_cap, ats_ctl = theirs.register("ATSCap"), theirs.register("ATSCtl")
        check.expect(
            "ATS queue depth",
            cap.invalidate_queue_depth,
            _field(r"Invalidate Queue Depth: ([0-9a-f]+)", ats_cap, 16),
        )
        check.expect("ATS enable", cap.enabled, _flag(ats_ctl, "Enable"))
        check.expect(
            "ATS STU",
            cap.smallest_translation_unit,
            _field(r"Smallest Translation Unit: ([0-9a-f]+)", ats_ctl, 16),
        )
    elif isinstance(cap, DeviceSerialNumber):
        serial = re.search(r"Device Serial Number ([0-9a-f-]+)", title)
        check.expect("DSN", cap.text, serial[1] if serial else None)
    elif isinstance(cap, VendorSpecificExtended):
        check.expect("VSEC ID", cap.vsec_id, _field(r"ID=([0-9a-f]+)", title, 16))
        check.expect("VSEC revision", cap.vsec_revision, _field(r"Rev=(\d+)", title))
        check.expect("VSEC length", cap.vsec_length, _field(r"Len=([0-9a-f]+)", title, 16))
    elif isinstance(cap, DesignatedVendorSpecific):
        check.expect("DVSEC vendor", cap.dvsec_vendor_id, _field(r"Vendor=([0-9a-f]+)", title, 16))
        check.expect("DVSEC ID", cap.dvsec_id, _field(r"ID=([0-9a-f]+)", title, 16))
        check.expect("DVSEC revision", cap.dvsec_revision, _field(r"Rev=(\d+)", title))
        check.expect("DVSEC length", cap.dvsec_length, _field(r"Len=(\d+)", title))
    elif isinstance(cap, ResizableBar):
        entries = [line for depth, line in theirs.body if line.startswith("BAR ")]
        check.expect("ReBAR entries", len(cap.bars), len(entries))
        for entry, line in zip(cap.bars, entries, strict=False):
            check.expect("ReBAR index", entry.bar, _field(r"BAR (\d+):", line))
            current = re.search(r"current size: (\S+),", line)
            supported = re.search(r"supported: (.*)$", line)
            check.expect(
                "ReBAR current", _lspci_size(entry.current_size), current[1] if current else None
            )
            if supported is not None:
                check.expect(
                    "ReBAR sizes", [_lspci_size(s) for s in entry.sizes], supported[1].split()
                )


def _lspci_size(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB", "EB"):
        if size < 1024:
            return f"{size}{unit}"
        size //= 1024
    return f"{size}ZB"


def compare_device(space: ConfigSpace, device: LspciDevice, check: Comparison) -> None:
    compare_header(space, device, check)
    ours_standard = {cap.offset: cap for cap in space.capabilities}
    ours_extended = {cap.offset: cap for cap in space.extended_capabilities}
    theirs_standard: dict[int, LspciCap] = {}
    theirs_extended: dict[int, LspciCap] = {}
    for theirs in device.caps:
        if theirs.title.startswith("<"):  # "<chain looped>", "<chain broken>", ...
            keyword = "loop" if "looped" in theirs.title else "broken"
            check.expect(
                f"problem for lspci's {theirs.title}",
                True,
                any(keyword in p for p in space.problems),
            )
            continue
        assert theirs.offset is not None
        (theirs_extended if theirs.extended else theirs_standard)[theirs.offset] = theirs
    check.expect("capability offsets", sorted(ours_standard), sorted(theirs_standard))
    check.expect("extended capability offsets", sorted(ours_extended), sorted(theirs_extended))
    for offset in sorted(ours_standard.keys() & theirs_standard.keys()):
        cap, theirs = ours_standard[offset], theirs_standard[offset]
        title_id = _title_id(theirs)
        assert title_id is not None, (
            f"{check.where}: add lspci's title {theirs.title!r} to the table"
        )
        check.expect(f"ID at {offset:#x}", cap.id, title_id)
        compare_capability(cap, theirs, check)
    for offset in sorted(ours_extended.keys() & theirs_extended.keys()):
        ext, theirs = ours_extended[offset], theirs_extended[offset]
        title_id = _title_id(theirs)
        assert title_id is not None, (
            f"{check.where}: add lspci's title {theirs.title!r} to the table"
        )
        check.expect(f"extended ID at {offset:#x}", ext.id, title_id)
        check.expect(f"version at {offset:#x}", ext.version, theirs.version)
        compare_extended(ext, theirs, check)


# --- Tests against the corpus -----------------------------------------------------------------


def test_corpus_is_present() -> None:
    assert DUMPS, (
        f"no dumps in {CORPUS}: the pciutils test dumps are missing"
        " (tests/data/pciutils-dumps/README.md)"
    )


@pytest.mark.parametrize("dump", DUMPS, ids=[path.name for path in DUMPS])
def test_dump_agrees_with_lspci(dump: Path, lspci: str) -> None:
    devices = read_dump(dump)
    theirs = lspci_devices(lspci, dump)
    assert devices, f"{dump.name}: no hex dump found"
    assert sorted(devices) == sorted(theirs), f"{dump.name}: devices differ from lspci's"
    errors: list[str] = []
    for address, data in devices.items():
        check = Comparison(f"{dump.name} {address}")
        compare_device(parse_config(data), theirs[address], check)
        errors += check.errors
        assert check.checked > 0
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("dump", DUMPS, ids=[path.name for path in DUMPS])
def test_dump_problems(dump: Path) -> None:
    """Well-formed dumps parse without a problem; broken ones say what is wrong."""
    for address, data in read_dump(dump).items():
        space = parse_config(data)
        if dump.name == "broken-ecaps":
            assert any("mirrors the first 256 bytes" in p for p in space.problems), space.problems
            assert space.extended_capabilities == ()
        else:
            assert space.problems == (), f"{dump.name} {address}: {space.problems}"
        assert str(space)


@pytest.mark.parametrize("dump", DUMPS, ids=[path.name for path in DUMPS])
def test_names_agree_with_lspci(dump: Path, lspci: str) -> None:
    system_ids = ids.system_ids()
    if system_ids is None:
        pytest.skip(f"no pci.ids at {', '.join(map(str, ids.PCI_IDS_PATHS))}")
    theirs = lspci_devices(lspci, dump)
    for address, data in read_dump(dump).items():
        header = parse_config(data).header
        first = theirs[address].first_line
        match = re.match(r"\S+ (.*?) \[[0-9a-f]{4}\]: (.*) \[[0-9a-f]{4}:[0-9a-f]{4}\]", first)
        assert match is not None, first
        class_text, device_text = match.groups()
        class_name = system_ids.class_name(header.base_class, header.subclass)
        if class_name is not None:
            assert class_text == " ".join(class_name.split())
        vendor = system_ids.vendor_name(header.vendor_id)
        device = system_ids.device_name(header.vendor_id, header.device_id)
        if vendor is not None and device is not None:
            # lspci squeezes the runs of spaces some pci.ids names contain
            assert device_text == " ".join(f"{vendor} {device}".split())


def test_ids_lookups_return_none_when_unknown() -> None:
    table = ids.PciIds.parse(
        [
            "# comment\n",
            "8086  Intel Corporation\n",
            "\t10c9  82576 Gigabit Network Connection\n",
            "\t\t8086 a03c  Gigabit ET Dual Port Server Adapter\n",
            "\tzzzz  a damaged line\n",
            "C 06  Bridge\n",
            "\t04  PCI bridge\n",
            "\t\t01  Subtractive decode\n",
        ]
    )
    assert table.vendor_name(0x8086) == "Intel Corporation"
    assert table.device_name(0x8086, 0x10C9) == "82576 Gigabit Network Connection"
    assert (
        table.subsystem_name(0x8086, 0x10C9, 0x8086, 0xA03C)
        == "Gigabit ET Dual Port Server Adapter"
    )
    assert table.class_name(0x06) == "Bridge"
    assert table.class_name(0x06, 0x04) == "PCI bridge"
    assert table.class_name(0x06, 0x04, 0x01) == "Subtractive decode"
    assert table.vendor_name(0x1234) is None
    assert table.device_name(0x8086, 0x0001) is None
    assert table.class_name(0x06, 0x80) is None


def test_system_ids_absent(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(ids, "PCI_IDS_PATHS", (tmp_path / "missing.ids",))
    ids.system_ids.cache_clear()
    try:
        assert ids.vendor_name(0x8086) is None
        assert ids.class_name(0x06, 0x04) is None
    finally:
        ids.system_ids.cache_clear()


# --- Synthetic config spaces ------------------------------------------------------------------


class ConfigBuilder:
    """A config space to poke registers into: a PCIe endpoint with no capabilities yet."""

    def __init__(self, size: int = 4096) -> None:
        self.data = bytearray(size)
        self.u16(0x00, 0x1AF4)  # vendor
        self.u16(0x02, 0x1041)  # device
        self.u8(0x0B, 0x02)  # class: network controller

    def u8(self, offset: int, value: int) -> ConfigBuilder:
        self.data[offset] = value
        return self

    def u16(self, offset: int, value: int) -> ConfigBuilder:
        self.data[offset : offset + 2] = value.to_bytes(2, "little")
        return self

    def u32(self, offset: int, value: int) -> ConfigBuilder:
        self.data[offset : offset + 4] = value.to_bytes(4, "little")
        return self

    def cap(self, offset: int, cap_id: int, next_offset: int) -> ConfigBuilder:
        """Put a standard capability header at ``offset``; the first one is linked at 0x34."""
        if not self.data[0x06] & 0x10:
            self.u8(0x06, self.data[0x06] | 0x10).u8(0x34, offset)
        return self.u8(offset, cap_id).u8(offset + 1, next_offset)

    def express(self, offset: int = 0x40, next_offset: int = 0) -> ConfigBuilder:
        """An endpoint PCIe v2 capability, so lspci shows extended capabilities."""
        self.cap(offset, CapId.EXP, next_offset).u16(offset + 2, 0x0002)
        return self.u32(offset + 4, 0x10008000)  # DevCap: FLR, RBER

    def ext(self, offset: int, ext_id: int, version: int, next_offset: int) -> ConfigBuilder:
        return self.u32(offset, next_offset << 20 | version << 16 | ext_id)

    def parse(self) -> ConfigSpace:
        return parse_config(bytes(self.data))


def write_dump(path: Path, data: bytes) -> Path:
    lines = ["00:01.0 Ethernet controller: synthetic"]
    for offset in range(0, len(data), 16):
        row = " ".join(f"{b:02x}" for b in data[offset : offset + 16])
        lines.append(f"{offset:02x}: {row}")
    path.write_text("\n".join(lines) + "\n")
    return path


def lspci_agrees(builder: ConfigBuilder, tmp_path: Path, lspci: str) -> LspciDevice:
    dump = write_dump(tmp_path / "dump", bytes(builder.data))
    (device,) = parse_lspci(_run_lspci(lspci, dump)).values()
    check = Comparison("synthetic")
    compare_device(builder.parse(), device, check)
    assert not check.errors, "\n".join(check.errors)
    return device


def test_too_short_raises() -> None:
    with pytest.raises(ValueError, match="at least 64 bytes"):
        parse_config(bytes(63))


def test_unprivileged_sysfs_read_of_64_bytes() -> None:
    space = parse_config(ConfigBuilder(256).cap(0x40, CapId.PM, 0).data[:64])
    assert space.capabilities == ()
    assert any("64 bytes" in p for p in space.problems)


def test_all_ones_is_a_function_that_did_not_answer() -> None:
    space = parse_config(b"\xff" * 256)
    assert space.capabilities == () and space.extended_capabilities == ()
    assert any("0xffff" in p for p in space.problems)


def test_standard_loop(tmp_path: Path, lspci: str) -> None:
    builder = ConfigBuilder(256)
    builder.cap(0x40, CapId.PM, 0x50).cap(0x50, CapId.MSI, 0x60).cap(0x60, CapId.VNDR, 0x50)
    space = builder.parse()
    assert [cap.offset for cap in space.capabilities] == [0x40, 0x50, 0x60]
    assert any("loops" in p for p in space.problems)
    device = lspci_agrees(builder, tmp_path, lspci)
    assert any(cap.title == "<chain looped>" for cap in device.caps)


def test_standard_self_loop_at_ttl() -> None:
    builder = ConfigBuilder(256)
    for offset in range(0x40, 0x100, 4):  # 48 entries, each linking to the next, then around
        builder.cap(offset, CapId.VNDR, offset + 4 if offset < 0xFC else 0x40)
    space = builder.parse()
    assert len(space.capabilities) == 48
    assert any("loops" in p for p in space.problems)


def test_chain_broken_by_id_ff(tmp_path: Path, lspci: str) -> None:
    builder = ConfigBuilder(256).cap(0x40, CapId.PM, 0x80).u8(0x80, 0xFF)
    space = builder.parse()
    assert [cap.offset for cap in space.capabilities] == [0x40]
    assert any("broken" in p for p in space.problems)
    device = lspci_agrees(builder, tmp_path, lspci)
    assert any(cap.title == "<chain broken>" for cap in device.caps)


@pytest.mark.parametrize("pointer", [0x04, 0x20, 0x3C])
def test_pointer_into_header_stops(pointer: int) -> None:
    space = ConfigBuilder(256).cap(0x40, CapId.PM, pointer).parse()
    assert [cap.offset for cap in space.capabilities] == [0x40]
    assert any("points into the header" in p for p in space.problems)


def test_first_pointer_into_header_stops() -> None:
    space = ConfigBuilder(256).u8(0x06, 0x10).u8(0x34, 0x10).parse()
    assert space.capabilities == ()
    assert any("capabilities pointer points into the header" in p for p in space.problems)


def test_misaligned_pointer_is_masked_like_the_kernel(tmp_path: Path, lspci: str) -> None:
    builder = ConfigBuilder(256).cap(0x40, CapId.PM, 0x52).cap(0x50, CapId.VNDR, 0)
    builder.u8(0x52, 0x08)  # the vendor-specific length, where the bad pointer lands
    space = builder.parse()
    assert [cap.offset for cap in space.capabilities] == [0x40, 0x50]
    assert any("not dword-aligned" in p for p in space.problems)
    lspci_agrees(builder, tmp_path, lspci)


def test_capability_running_past_the_end_is_not_decoded() -> None:
    builder = ConfigBuilder(256).cap(0xFC, CapId.MSIX, 0)
    space = builder.parse()
    (cap,) = space.capabilities
    assert type(cap) is Capability and cap.id == CapId.MSIX
    assert any("runs past the end" in p for p in space.problems)


def test_extended_loop(tmp_path: Path, lspci: str) -> None:
    builder = ConfigBuilder().express()
    builder.ext(0x100, ExtCapId.ERR, 2, 0x140).ext(0x140, ExtCapId.LTR, 1, 0x100)
    space = builder.parse()
    assert [(c.id, c.offset) for c in space.extended_capabilities] == [
        (ExtCapId.ERR, 0x100),
        (ExtCapId.LTR, 0x140),
    ]
    assert any("loops" in p for p in space.problems)
    device = lspci_agrees(builder, tmp_path, lspci)
    assert any(cap.title == "<chain looped>" for cap in device.caps)


def test_extended_pointer_below_0x100_stops() -> None:
    builder = ConfigBuilder().express().ext(0x100, ExtCapId.ERR, 2, 0x40)
    space = builder.parse()
    assert [c.offset for c in space.extended_capabilities] == [0x100]
    assert any("below 0x100" in p for p in space.problems)


def test_extended_pointer_to_an_empty_header() -> None:
    space = ConfigBuilder().express().ext(0x100, ExtCapId.ERR, 2, 0x200).parse()
    assert [c.offset for c in space.extended_capabilities] == [0x100]
    assert any("empty header" in p for p in space.problems)


def test_extended_misaligned_pointer_is_masked() -> None:
    builder = ConfigBuilder().express().ext(0x100, ExtCapId.ERR, 2, 0x142)
    space = builder.ext(0x140, ExtCapId.LTR, 1, 0).parse()
    assert [c.offset for c in space.extended_capabilities] == [0x100, 0x140]
    assert any("not dword-aligned" in p for p in space.problems)


def test_extended_chain_longer_than_ttl() -> None:
    builder = ConfigBuilder().express()
    for offset in range(0x100, 0x1000, 4):  # 960 distinct headers, each to the next
        builder.ext(offset, ExtCapId.VNDR, 1, offset + 4 if offset < 0xFFC else 0)
    space = builder.parse()
    assert len(space.extended_capabilities) == (4096 - 256) // 8
    assert any("longer than 480" in p for p in space.problems)


def test_extended_space_absent_or_empty() -> None:
    assert ConfigBuilder().express().parse().extended_capabilities == ()
    all_ones = ConfigBuilder().express().u32(0x100, 0xFFFFFFFF).parse()
    assert all_ones.extended_capabilities == () and all_ones.problems == ()
    short = ConfigBuilder(256).express().parse()
    assert short.extended_capabilities == () and short.problems == ()


def test_null_extended_capability_is_walked_through(tmp_path: Path, lspci: str) -> None:
    # vfio-pci hides the first extended capability by zeroing its ID and version.
    builder = ConfigBuilder().express().ext(0x100, 0, 0, 0x150).ext(0x150, ExtCapId.ACS, 1, 0)
    builder.u16(0x154, 0x001F).u16(0x156, 0x001D)
    space = builder.parse()
    assert [c.id for c in space.extended_capabilities] == [ExtCapId.NULL, ExtCapId.ACS]
    assert space.problems == ()
    lspci_agrees(builder, tmp_path, lspci)


def test_resizable_bar(tmp_path: Path, lspci: str) -> None:
    builder = ConfigBuilder().express().ext(0x100, ExtCapId.REBAR, 1, 0)
    builder.u32(0x10, 0x0000000C).u32(0x14, 0x00000040)  # 64-bit prefetchable BAR 0
    builder.u32(0x104, 0x0003_F000)  # 256 MiB ... 8 GiB
    builder.u32(0x108, 2 << 5 | 0 | 8 << 8)  # two entries; BAR 0 at 256 MiB
    builder.u32(0x10C, 0x0000_0010)  # 1 MiB only
    builder.u32(0x110, 0 << 5 | 2 | 0 << 8)  # BAR 2 at 1 MiB
    space = builder.parse()
    rebar = space.find_extended(ExtCapId.REBAR)
    assert isinstance(rebar, ResizableBar)
    first, second = rebar.bars
    assert first.bar == 0 and first.current_size == 256 << 20
    assert first.sizes == tuple(size << 20 for size in (256, 512, 1024, 2048, 4096, 8192))
    assert second.bar == 2 and second.sizes == (1 << 20,) and second.current_size == 1 << 20
    assert "current 256M" in str(rebar)
    lspci_agrees(builder, tmp_path, lspci)


def test_resizable_bar_extended_sizes() -> None:
    builder = ConfigBuilder().express().ext(0x100, ExtCapId.REBAR, 1, 0)
    builder.u32(0x104, 0x8000_0000).u32(0x108, 1 << 5 | 0x0001_0000 | 28 << 8)
    rebar = builder.parse().find_extended(ExtCapId.REBAR)
    assert isinstance(rebar, ResizableBar)
    assert rebar.bars[0].sizes == (1 << 47, 1 << 48)  # 128 TiB from CAP, 256 TiB from CTRL
    assert rebar.bars[0].current_size == 1 << 48


def test_dvsec(tmp_path: Path, lspci: str) -> None:
    builder = ConfigBuilder().express().ext(0x100, ExtCapId.DVSEC, 1, 0)
    builder.u32(0x104, 0x038 << 20 | 1 << 16 | 0x1E98).u16(0x108, 0x0003)
    dvsec = builder.parse().find_extended(ExtCapId.DVSEC)
    assert isinstance(dvsec, DesignatedVendorSpecific)
    assert (dvsec.dvsec_vendor_id, dvsec.dvsec_id, dvsec.dvsec_revision, dvsec.dvsec_length) == (
        0x1E98,
        3,
        1,
        0x38,
    )
    lspci_agrees(builder, tmp_path, lspci)


def test_msi_and_pm_decode(tmp_path: Path, lspci: str) -> None:
    builder = ConfigBuilder(256).cap(0x40, CapId.PM, 0x50).cap(0x50, CapId.MSI, 0x70)
    builder.u16(0x42, 0x0603).u16(0x44, 0x0008 | 0x3)  # v3, D1+ D2+; D3hot, NoSoftRst+
    builder.u16(0x52, 0x0100 | 0x0080 | 3 << 1 | 1 << 4 | 1)  # 8 vectors, 2 on, 64-bit
    builder.u32(0x54, 0xFEE00000).u32(0x58, 0x1).u16(0x5C, 0x4021).u32(0x60, 0x2)
    builder.express(0x70)
    space = builder.parse()
    pm, msi = space.power_management, space.msi
    assert pm is not None and (pm.version, pm.d1_support, pm.d2_support) == (3, True, True)
    assert pm.power_state == 3 and pm.no_soft_reset
    assert msi is not None and (msi.vectors, msi.vectors_enabled, msi.enabled) == (8, 2, True)
    assert msi.is_64bit and msi.per_vector_masking
    assert (msi.address, msi.data, msi.mask) == (0x1_FEE00000, 0x4021, 0x2)
    express = space.express
    assert express is not None and express.flr and express.port_type is PortType.ENDPOINT
    assert space.flr_capable
    lspci_agrees(builder, tmp_path, lspci)


def test_bridge_and_cardbus_headers() -> None:
    bridge = ConfigBuilder(256).u8(0x0E, 0x81).u8(0x18, 0).u8(0x19, 2).u8(0x1A, 5)
    bridge.u32(0x38, 0xF0100001)
    header = bridge.parse().header
    assert header.header_type is HeaderType.BRIDGE and header.multifunction
    assert (header.primary_bus, header.secondary_bus, header.subordinate_bus) == (0, 2, 5)
    assert header.subsystem_vendor_id is None
    assert header.expansion_rom is not None and header.expansion_rom.enabled
    assert header.expansion_rom.address == 0xF0100000
    cardbus = ConfigBuilder(256).u8(0x0E, 0x02).u16(0x40, 0x1234).u16(0x42, 0x5678)
    cardbus.u8(0x06, 0x10).u8(0x14, 0x80).u8(0x80, CapId.PM)
    space = cardbus.parse()
    assert space.header.header_type is HeaderType.CARDBUS
    assert (space.header.subsystem_vendor_id, space.header.subsystem_id) == (0x1234, 0x5678)
    assert [cap.offset for cap in space.capabilities] == [0x80]


def test_unknown_header_type() -> None:
    space = ConfigBuilder(256).u8(0x0E, 0x05).cap(0x40, CapId.PM, 0).parse()
    assert space.header.header_type == 5 and space.capabilities == ()
    assert any("unknown header type" in p for p in space.problems)


def test_bars() -> None:
    builder = ConfigBuilder(256).u32(0x10, 0xE000_0004).u32(0x14, 0x1).u32(0x18, 0xE001)
    builder.u32(0x1C, 0xF000_0008).u32(0x24, 0xF800_000C)  # BAR 5 claims 64 bits
    space = builder.parse()
    bars = {bar.index: bar for bar in space.header.bars}
    assert bars[0].type is BarType.MEM64 and bars[0].address == 0x1_E000_0000
    assert bars[2].type is BarType.IO and bars[2].address == 0xE000
    assert bars[3].type is BarType.MEM32 and bars[3].prefetchable
    assert 1 not in bars and 4 not in bars
    assert bars[5].type is BarType.MEM32
    assert any("BAR 5 is 64-bit" in p for p in space.problems)


def test_lookup_helpers() -> None:
    builder = ConfigBuilder().cap(0x40, CapId.VNDR, 0x50).cap(0x50, CapId.VNDR, 0x60)
    builder.express(0x60).ext(0x100, ExtCapId.VNDR, 1, 0x110).ext(0x110, ExtCapId.VNDR, 1, 0)
    space = builder.parse()
    assert space.find(CapId.MSI) is None and space.msix is None
    assert [cap.offset for cap in space.find_all(CapId.VNDR)] == [0x40, 0x50]
    assert space.find(CapId.EXP) is space.express
    assert len(space.find_all_extended(ExtCapId.VNDR)) == 2
    assert space.find_extended(ExtCapId.ERR) is None
    assert space.capabilities[0].name == "Vendor Specific"
    assert str(space.capabilities[0]) == "[40] Vendor Specific: length 0x0"
    assert str(space.extended_capabilities[0]).startswith("[100 v1] Vendor Specific")
    assert ExtendedCapability(0x7777, 1, 0x100).name == "Extended Capability ID 0x7777"
    assert isinstance(space.capabilities[0], VendorSpecific)


# --- Property tests: nothing raises, nothing hangs -------------------------------------------


@cache
def _corpus_spaces() -> list[bytes]:
    return [data for dump in DUMPS for data in read_dump(dump).values()]


def _check_invariants(data: bytes) -> None:
    space = parse_config(data)  # returns: the walks are bounded (the counts below)
    size = min(len(data), 4096)
    offsets = [cap.offset for cap in space.capabilities]
    assert len(offsets) == len(set(offsets)) <= 48
    assert all(0x40 <= offset < min(size, 256) and offset % 4 == 0 for offset in offsets)
    ext_offsets = [cap.offset for cap in space.extended_capabilities]
    assert len(ext_offsets) == len(set(ext_offsets)) <= 480
    assert all(0x100 <= offset < size and offset % 4 == 0 for offset in ext_offsets)
    assert str(space)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(min_size=64, max_size=4096))
def test_random_bytes_never_raise(data: bytes) -> None:
    _check_invariants(data)


@st.composite
def _mutated_corpus(draw: st.DrawFn) -> bytes:
    """A corpus device with a few bytes overwritten, sometimes cut short."""
    data = bytearray(draw(st.sampled_from(_corpus_spaces())))
    offsets_and_values = st.tuples(st.integers(0, len(data) - 1), st.integers(0, 255))
    for offset, value in draw(st.lists(offsets_and_values, max_size=24)):
        data[offset] = value
    cut = draw(st.sampled_from([len(data), 64, 128, 256, 0x104]))
    return bytes(data[: max(64, min(cut, len(data)))])


@pytest.mark.skipif(not DUMPS, reason="the shared corpus is missing (see test_corpus_is_present)")
@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutated_corpus())
def test_mutated_corpus_never_raises(data: bytes) -> None:
    _check_invariants(data)


def test_pointer_mutations_never_hang() -> None:
    """Every value of every pointer byte of a rich corpus device: exhaustive, not sampled."""
    spaces = [data for data in _corpus_spaces() if len(data) == 4096]
    base = max(spaces, key=lambda data: len(parse_config(data).extended_capabilities))
    space = parse_config(base)
    pointers = [0x34] + [cap.offset + 1 for cap in space.capabilities]
    for pointer in pointers:
        for value in range(256):
            data = bytearray(base)
            data[pointer] = value
            _check_invariants(bytes(data))
    for ext in space.extended_capabilities:
        for value in range(0, 0x1000, 4):
            data = bytearray(base)
            header = int.from_bytes(data[ext.offset : ext.offset + 4], "little")
            header = (header & 0x000FFFFF) | value << 20
            data[ext.offset : ext.offset + 4] = header.to_bytes(4, "little")
            _check_invariants(bytes(data))
