"""The NVMe base specification as data: registers, commands, status codes, structures.

Nothing here touches a device, so all of it is unit tested. Section numbers are those
of the NVM Express Base Specification 2.0 (registers in 3.1, the queue entries in 4.2
and 4.6, status codes in 4.6.1.2, Identify in 5.17, Get Log Page in 5.16) and of the
NVM Command Set Specification 1.0 (Read, Write, Write Zeroes, Identify Namespace).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from pyvfio.errors import PyvfioError

# -- Controller registers (BAR0, 3.1.3) ----------------------------------------------------

REG_CAP = 0x00  # 64-bit capabilities
REG_VS = 0x08  # version
REG_INTMS = 0x0C  # interrupt mask set (INTx/MSI only)
REG_INTMC = 0x10  # interrupt mask clear
REG_CC = 0x14  # controller configuration
REG_CSTS = 0x1C  # controller status
REG_AQA = 0x24  # admin queue attributes
REG_ASQ = 0x28  # admin SQ base (64-bit)
REG_ACQ = 0x30  # admin CQ base (64-bit)
DOORBELL_BASE = 0x1000

CC_EN = 1 << 0
CC_CSS_NVM = 0 << 4
CC_SHN_NORMAL = 1 << 14
CC_SHN_MASK = 3 << 14
CSTS_RDY = 1 << 0
CSTS_CFS = 1 << 1
CSTS_SHST_MASK = 3 << 2
CSTS_SHST_COMPLETE = 2 << 2

#: The sizes of a submission and a completion queue entry (log2 in CC.IOSQES/IOCQES).
SQE_SIZE, CQE_SIZE = 64, 16


@dataclass(frozen=True)
class Capabilities:
    """CAP (3.1.3.1), decoded."""

    mqes: int  # maximum queue entries (1-based here)
    contiguous_required: bool
    timeout_ms: int  # worst case for CSTS.RDY to change after CC.EN does
    doorbell_stride: int  # bytes between doorbells (4 << DSTRD)
    nssr_supported: bool
    css: int
    mps_min: int  # bytes
    mps_max: int  # bytes

    @classmethod
    def decode(cls, cap: int) -> Capabilities:
        return cls(
            mqes=(cap & 0xFFFF) + 1,
            contiguous_required=bool(cap >> 16 & 1),
            timeout_ms=((cap >> 24) & 0xFF) * 500,
            doorbell_stride=4 << ((cap >> 32) & 0xF),
            nssr_supported=bool(cap >> 36 & 1),
            css=(cap >> 37) & 0xFF,
            mps_min=1 << (12 + ((cap >> 48) & 0xF)),
            mps_max=1 << (12 + ((cap >> 52) & 0xF)),
        )

    def __str__(self) -> str:
        return (
            f"MQES {self.mqes}, TO {self.timeout_ms} ms, doorbell stride {self.doorbell_stride}, "
            f"pages {self.mps_min}-{self.mps_max}"
        )


def controller_config(page_size: int) -> int:
    """CC for the NVM command set, round-robin arbitration, 64/16-byte entries, enabled."""
    mps = page_size.bit_length() - 1 - 12
    if page_size & (page_size - 1) or mps < 0:
        raise ValueError(f"page size {page_size} is not a power of two >= 4096")
    return CC_EN | CC_CSS_NVM | mps << 7 | 6 << 16 | 4 << 20


def version_string(vs: int) -> str:
    tertiary = vs & 0xFF
    text = f"{vs >> 16}.{(vs >> 8) & 0xFF}"
    return f"{text}.{tertiary}" if tertiary else text


def doorbell_offsets(qid: int, stride: int) -> tuple[int, int]:
    """(SQ tail doorbell, CQ head doorbell) of queue ``qid`` (3.1.3.27, 3.1.3.28)."""
    return DOORBELL_BASE + (2 * qid) * stride, DOORBELL_BASE + (2 * qid + 1) * stride


# -- Commands ------------------------------------------------------------------------------


class AdminOpcode(enum.IntEnum):
    DELETE_IO_SQ = 0x00
    CREATE_IO_SQ = 0x01
    GET_LOG_PAGE = 0x02
    DELETE_IO_CQ = 0x04
    CREATE_IO_CQ = 0x05
    IDENTIFY = 0x06
    ABORT = 0x08
    SET_FEATURES = 0x09
    GET_FEATURES = 0x0A


class IoOpcode(enum.IntEnum):
    FLUSH = 0x00
    WRITE = 0x01
    READ = 0x02
    WRITE_ZEROES = 0x08


class Cns(enum.IntEnum):
    """Identify's Controller or Namespace Structure (CDW10 bits 7:0)."""

    NAMESPACE = 0x00
    CONTROLLER = 0x01
    ACTIVE_NAMESPACES = 0x02


class Feature(enum.IntEnum):
    ARBITRATION = 0x01
    POWER_MANAGEMENT = 0x02
    TEMPERATURE_THRESHOLD = 0x04
    VOLATILE_WRITE_CACHE = 0x06
    NUMBER_OF_QUEUES = 0x07
    INTERRUPT_COALESCING = 0x08


class LogPage(enum.IntEnum):
    ERROR = 0x01
    SMART = 0x02
    FIRMWARE_SLOT = 0x03


#: NSID meaning "every namespace" / "the controller".
NSID_ALL = 0xFFFFFFFF

#: A submission queue entry (4.2): CDW0 (opcode, flags, CID), NSID, CDW2-3, MPTR,
#: PRP1, PRP2, CDW10-15.
SQE = struct.Struct("<BBHIIIQQQIIIIII")
assert SQE.size == SQE_SIZE


@dataclass(frozen=True)
class Command:
    """One command before it has a CID: what goes into a submission queue entry."""

    opcode: int
    nsid: int = 0
    prp1: int = 0
    prp2: int = 0
    cdw10: int = 0
    cdw11: int = 0
    cdw12: int = 0
    cdw13: int = 0
    cdw14: int = 0
    cdw15: int = 0

    def encode(self, cid: int) -> bytes:
        return SQE.pack(
            self.opcode,
            0,
            cid,
            self.nsid,
            0,
            0,
            0,
            self.prp1,
            self.prp2,
            self.cdw10,
            self.cdw11,
            self.cdw12,
            self.cdw13,
            self.cdw14,
            self.cdw15,
        )


def identify(cns: Cns, nsid: int = 0) -> Command:
    return Command(AdminOpcode.IDENTIFY, nsid=nsid, cdw10=int(cns))


def get_log_page(log: int, dwords: int, nsid: int = NSID_ALL, offset: int = 0) -> Command:
    """Get Log Page of ``dwords`` double words (NUMDL/NUMDU are zero-based)."""
    numd = dwords - 1
    return Command(
        AdminOpcode.GET_LOG_PAGE,
        nsid=nsid,
        cdw10=log | (numd & 0xFFFF) << 16,
        cdw11=numd >> 16,
        cdw12=offset & 0xFFFFFFFF,
        cdw13=offset >> 32,
    )


def set_number_of_queues(sq: int, cq: int) -> Command:
    """Set Features, Number of Queues: counts are 1-based here, zero-based on the wire."""
    return Command(
        AdminOpcode.SET_FEATURES,
        cdw10=Feature.NUMBER_OF_QUEUES,
        cdw11=(sq - 1) | (cq - 1) << 16,
    )


def get_features(fid: int, nsid: int = 0) -> Command:
    return Command(AdminOpcode.GET_FEATURES, nsid=nsid, cdw10=fid)


def create_io_cq(qid: int, size: int, iova: int, vector: int | None) -> Command:
    """Physically contiguous CQ of ``size`` entries; ``vector`` None: interrupts off."""
    ien = 0 if vector is None else 1 << 1
    return Command(
        AdminOpcode.CREATE_IO_CQ,
        prp1=iova,
        cdw10=qid | (size - 1) << 16,
        cdw11=1 | ien | (vector or 0) << 16,
    )


def create_io_sq(qid: int, size: int, iova: int, cqid: int) -> Command:
    return Command(
        AdminOpcode.CREATE_IO_SQ,
        prp1=iova,
        cdw10=qid | (size - 1) << 16,
        cdw11=1 | cqid << 16,
    )


def delete_io_sq(qid: int) -> Command:
    return Command(AdminOpcode.DELETE_IO_SQ, cdw10=qid)


def delete_io_cq(qid: int) -> Command:
    return Command(AdminOpcode.DELETE_IO_CQ, cdw10=qid)


def rw(opcode: int, nsid: int, lba: int, blocks: int, prp1: int, prp2: int) -> Command:
    """Read or Write of ``blocks`` logical blocks (NLB is zero-based) from ``lba``."""
    check_blocks(lba, blocks)
    return Command(
        opcode,
        nsid=nsid,
        prp1=prp1,
        prp2=prp2,
        cdw10=lba & 0xFFFFFFFF,
        cdw11=lba >> 32,
        cdw12=blocks - 1,
    )


def write_zeroes(nsid: int, lba: int, blocks: int, *, deallocate: bool = False) -> Command:
    check_blocks(lba, blocks)
    return Command(
        IoOpcode.WRITE_ZEROES,
        nsid=nsid,
        cdw10=lba & 0xFFFFFFFF,
        cdw11=lba >> 32,
        cdw12=(blocks - 1) | (1 << 25 if deallocate else 0),
    )


def flush(nsid: int) -> Command:
    return Command(IoOpcode.FLUSH, nsid=nsid)


def check_blocks(lba: int, blocks: int) -> None:
    if not 1 <= blocks <= 0x10000:
        raise ValueError(f"a command moves 1-65536 blocks, not {blocks}")
    if not 0 <= lba < 1 << 64:
        raise ValueError(f"LBA {lba} is not a 64-bit block address")


# -- PRPs (4.3.1) --------------------------------------------------------------------------


def prp_pages(iova: int, length: int, page_size: int) -> tuple[int, list[int]]:
    """PRP1, and the page addresses after the first one that a transfer touches.

    PRP1 may start inside a page (dword aligned); every later entry is page aligned.
    With no later page PRP2 is unused; with one, PRP2 is that page; with more, PRP2
    points to a PRP list holding them (:func:`prp_list`).
    """
    if length <= 0:
        raise ValueError(f"a transfer has a positive length, not {length}")
    if iova & 3:
        raise ValueError(f"IOVA {iova:#x} is not dword aligned (PRP1 must be)")
    first_page = iova & ~(page_size - 1)
    last_page = (iova + length - 1) & ~(page_size - 1)
    return iova, list(range(first_page + page_size, last_page + 1, page_size))


def prp_list(pages: list[int], list_iovas: list[int], page_size: int) -> list[list[int]]:
    """The PRP list pages for ``pages``: each holds page_size/8 entries, and when more
    pages follow, its last entry points to the next list page (at ``list_iovas[i+1]``).
    """
    per_page = page_size // 8
    out: list[list[int]] = []
    rest = pages
    for i, _ in enumerate(list_iovas):
        if len(rest) <= per_page:
            out.append(list(rest))
            return out
        out.append([*rest[: per_page - 1], list_iovas[i + 1] if i + 1 < len(list_iovas) else 0])
        rest = rest[per_page - 1 :]
        if i + 1 >= len(list_iovas):
            break
    raise ValueError(
        f"{len(pages)} PRP entries need more than the {len(list_iovas)} list page(s) given"
    )


def prp_list_pages_needed(entries: int, page_size: int) -> int:
    per_page = page_size // 8
    if entries <= per_page:
        return 1
    return 1 + -(-(entries - per_page) // (per_page - 1))


# -- Completions and status (4.6.1) --------------------------------------------------------

CQE = struct.Struct("<IIHHHH")
assert CQE.size == CQE_SIZE


class StatusCodeType(enum.IntEnum):
    GENERIC = 0
    COMMAND_SPECIFIC = 1
    MEDIA = 2
    PATH = 3
    VENDOR = 7


_GENERIC = {
    0x00: "Successful Completion",
    0x01: "Invalid Command Opcode",
    0x02: "Invalid Field in Command",
    0x03: "Command ID Conflict",
    0x04: "Data Transfer Error",
    0x05: "Commands Aborted due to Power Loss Notification",
    0x06: "Internal Error",
    0x07: "Command Abort Requested",
    0x08: "Command Aborted due to SQ Deletion",
    0x09: "Command Aborted due to Failed Fused Command",
    0x0A: "Command Aborted due to Missing Fused Command",
    0x0B: "Invalid Namespace or Format",
    0x0C: "Command Sequence Error",
    0x0D: "Invalid SGL Segment Descriptor",
    0x0E: "Invalid Number of SGL Descriptors",
    0x0F: "Data SGL Length Invalid",
    0x10: "Metadata SGL Length Invalid",
    0x11: "SGL Descriptor Type Invalid",
    0x12: "Invalid Use of Controller Memory Buffer",
    0x13: "PRP Offset Invalid",
    0x14: "Atomic Write Unit Exceeded",
    0x15: "Operation Denied",
    0x16: "SGL Offset Invalid",
    0x18: "Host Identifier Inconsistent Format",
    0x19: "Keep Alive Timer Expired",
    0x1A: "Keep Alive Timeout Invalid",
    0x1B: "Command Aborted due to Preempt and Abort",
    0x1C: "Sanitize Failed",
    0x1D: "Sanitize In Progress",
    0x1E: "SGL Data Block Granularity Invalid",
    0x1F: "Command Not Supported for Queue in CMB",
    0x20: "Namespace is Write Protected",
    0x21: "Command Interrupted",
    0x22: "Transient Transport Error",
    0x80: "LBA Out of Range",
    0x81: "Capacity Exceeded",
    0x82: "Namespace Not Ready",
    0x83: "Reservation Conflict",
    0x84: "Format In Progress",
}
_COMMAND_SPECIFIC = {
    0x00: "Completion Queue Invalid",
    0x01: "Invalid Queue Identifier",
    0x02: "Invalid Queue Size",
    0x03: "Abort Command Limit Exceeded",
    0x05: "Asynchronous Event Request Limit Exceeded",
    0x06: "Invalid Firmware Slot",
    0x07: "Invalid Firmware Image",
    0x08: "Invalid Interrupt Vector",
    0x09: "Invalid Log Page",
    0x0A: "Invalid Format",
    0x0B: "Firmware Activation Requires Conventional Reset",
    0x0C: "Invalid Queue Deletion",
    0x0D: "Feature Identifier Not Saveable",
    0x0E: "Feature Not Changeable",
    0x0F: "Feature Not Namespace Specific",
    0x10: "Firmware Activation Requires NVM Subsystem Reset",
    0x11: "Firmware Activation Requires Controller Level Reset",
    0x12: "Firmware Activation Requires Maximum Time Violation",
    0x13: "Firmware Activation Prohibited",
    0x14: "Overlapping Range",
    0x15: "Namespace Insufficient Capacity",
    0x16: "Namespace Identifier Unavailable",
    0x18: "Namespace Already Attached",
    0x19: "Namespace Is Private",
    0x1A: "Namespace Not Attached",
    0x1B: "Thin Provisioning Not Supported",
    0x1C: "Controller List Invalid",
    0x80: "Conflicting Attributes",
    0x81: "Invalid Protection Information",
    0x82: "Attempted Write to Read Only Range",
}
_MEDIA = {
    0x80: "Write Fault",
    0x81: "Unrecovered Read Error",
    0x82: "End-to-end Guard Check Error",
    0x83: "End-to-end Application Tag Check Error",
    0x84: "End-to-end Reference Tag Check Error",
    0x85: "Compare Failure",
    0x86: "Access Denied",
    0x87: "Deallocated or Unwritten Logical Block",
}
_PATH = {
    0x00: "Internal Path Error",
    0x01: "Asymmetric Access Persistent Loss",
    0x02: "Asymmetric Access Inaccessible",
    0x03: "Asymmetric Access Transition",
    0x60: "Controller Pathing Error",
    0x70: "Host Pathing Error",
    0x71: "Command Aborted By Host",
}
_NAMES: dict[int, dict[int, str]] = {0: _GENERIC, 1: _COMMAND_SPECIFIC, 2: _MEDIA, 3: _PATH}
_SCT_NAMES = {
    0: "Generic Command Status",
    1: "Command Specific Status",
    2: "Media and Data Integrity Errors",
    3: "Path Related Status",
    7: "Vendor Specific",
}


@dataclass(frozen=True)
class Status:
    """A completion's status field (CQE DW3 bits 31:17), without the phase tag."""

    sct: int
    sc: int
    crd: int = 0
    more: bool = False
    dnr: bool = False

    @classmethod
    def from_word(cls, word: int) -> Status:
        """Decode the CQE's upper 16 bits of DW3 (bit 0 is the phase tag)."""
        return cls(
            sct=(word >> 9) & 0x7,
            sc=(word >> 1) & 0xFF,
            crd=(word >> 12) & 0x3,
            more=bool(word >> 14 & 1),
            dnr=bool(word >> 15 & 1),
        )

    @property
    def ok(self) -> bool:
        return self.sct == 0 and self.sc == 0

    @property
    def sct_name(self) -> str:
        return _SCT_NAMES.get(self.sct, "Reserved")

    @property
    def name(self) -> str:
        if self.sct == StatusCodeType.VENDOR:
            return f"Vendor Specific {self.sc:#04x}"
        return _NAMES.get(self.sct, {}).get(self.sc, f"Unknown status {self.sc:#04x}")

    def __str__(self) -> str:
        dnr = ", do not retry" if self.dnr else ""
        return f"{self.name} (SCT {self.sct:#x} {self.sct_name}, SC {self.sc:#04x}{dnr})"


@dataclass(frozen=True)
class Completion:
    """A completion queue entry (4.6), decoded."""

    dw0: int
    dw1: int
    sq_head: int
    sq_id: int
    cid: int
    phase: int
    status: Status

    @classmethod
    def decode(cls, raw: bytes) -> Completion:
        dw0, dw1, sqhd, sqid, cid, word = CQE.unpack(raw)
        return cls(dw0, dw1, sqhd, sqid, cid, word & 1, Status.from_word(word))


class NvmeError(PyvfioError):
    """Anything the NVMe driver raises on purpose."""


class NvmeStatusError(NvmeError):
    """A command completed with an error status: ``.status`` (SCT, SC, names), the
    command's ``.opcode``, ``.qid`` and ``.cid``."""

    def __init__(self, status: Status, *, opcode: int, qid: int, cid: int, what: str) -> None:
        self.status = status
        self.opcode = opcode
        self.qid = qid
        self.cid = cid
        self.what = what
        super().__init__(f"{what} failed: {status}")

    @property
    def sct(self) -> int:
        return self.status.sct

    @property
    def sc(self) -> int:
        return self.status.sc


class ControllerFatalError(NvmeError):
    """CSTS.CFS: the controller hit a fatal error; it needs a reset (reopen it)."""


class NvmeTimeoutError(NvmeError, TimeoutError):
    """The controller did not answer in time."""


# -- Identify and log page structures ------------------------------------------------------


def _ascii(raw: bytes) -> str:
    return raw.decode("ascii", "replace").rstrip(" \x00")


def _u(raw: bytes, start: int, size: int) -> int:
    return int.from_bytes(raw[start : start + size], "little")


@dataclass(frozen=True)
class ControllerInfo:
    """Identify Controller (CNS 01h), the fields a driver and a user look at."""

    vid: int
    ssvid: int
    serial: str
    model: str
    firmware: str
    mdts: int  # log2 of the max transfer in minimum pages; 0: no limit
    cntlid: int
    version: int
    rtd3e_us: int  # worst-case shutdown time, microseconds (0: not reported)
    oacs: int
    elpe: int  # error log page entries (1-based here)
    sqes: int
    cqes: int
    nn: int  # number of namespaces
    oncs: int
    vwc: int
    subnqn: str

    @classmethod
    def parse(cls, raw: bytes) -> ControllerInfo:
        if len(raw) < 4096:
            raise ValueError(f"Identify Controller data is 4096 bytes, not {len(raw)}")
        return cls(
            vid=_u(raw, 0, 2),
            ssvid=_u(raw, 2, 2),
            serial=_ascii(raw[4:24]),
            model=_ascii(raw[24:64]),
            firmware=_ascii(raw[64:72]),
            mdts=raw[77],
            cntlid=_u(raw, 78, 2),
            version=_u(raw, 80, 4),
            rtd3e_us=_u(raw, 88, 4),
            oacs=_u(raw, 256, 2),
            elpe=raw[262] + 1,
            sqes=raw[512],
            cqes=raw[513],
            nn=_u(raw, 516, 4),
            oncs=_u(raw, 520, 2),
            vwc=raw[525],
            subnqn=_ascii(raw[768:1024]),
        )

    @property
    def supports_write_zeroes(self) -> bool:
        return bool(self.oncs >> 3 & 1)

    @property
    def volatile_write_cache(self) -> bool:
        return bool(self.vwc & 1)

    def max_transfer(self, min_page_size: int) -> int | None:
        """Bytes one command may move (MDTS), None for no limit."""
        return min_page_size << self.mdts if self.mdts else None

    def __str__(self) -> str:
        return f"{self.model} (serial {self.serial}, firmware {self.firmware})"


@dataclass(frozen=True)
class LbaFormat:
    metadata_size: int
    block_size: int
    relative_performance: int


@dataclass(frozen=True)
class NamespaceInfo:
    """Identify Namespace (CNS 00h, NVM command set)."""

    nsid: int
    size: int  # NSZE, in blocks
    capacity: int  # NCAP
    utilization: int  # NUSE
    formats: tuple[LbaFormat, ...]
    format_index: int
    nguid: bytes
    eui64: bytes

    @classmethod
    def parse(cls, nsid: int, raw: bytes) -> NamespaceInfo:
        if len(raw) < 4096:
            raise ValueError(f"Identify Namespace data is 4096 bytes, not {len(raw)}")
        nlbaf = raw[25] + 1
        flbas = raw[26]
        formats = []
        for i in range(min(nlbaf, 64)):
            word = _u(raw, 128 + 4 * i, 4)
            formats.append(LbaFormat(word & 0xFFFF, 1 << ((word >> 16) & 0xFF), (word >> 24) & 3))
        return cls(
            nsid=nsid,
            size=_u(raw, 0, 8),
            capacity=_u(raw, 8, 8),
            utilization=_u(raw, 16, 8),
            formats=tuple(formats),
            format_index=(flbas & 0xF) | ((flbas >> 5) & 0x3) << 4,
            nguid=bytes(raw[104:120]),
            eui64=bytes(raw[120:128]),
        )

    @property
    def block_size(self) -> int:
        return self.formats[self.format_index].block_size

    @property
    def size_bytes(self) -> int:
        return self.size * self.block_size

    def __str__(self) -> str:
        return f"namespace {self.nsid}: {self.size} blocks of {self.block_size} bytes"


def parse_namespace_list(raw: bytes) -> list[int]:
    """An active namespace ID list (CNS 02h): ascending IDs, ended by a zero."""
    out = []
    for i in range(0, min(len(raw), 4096), 4):
        nsid = _u(raw, i, 4)
        if nsid == 0:
            break
        out.append(nsid)
    return out


@dataclass(frozen=True)
class SmartLog:
    """SMART / Health Information (log page 02h)."""

    critical_warning: int
    temperature_kelvin: int
    available_spare: int
    available_spare_threshold: int
    percentage_used: int
    data_units_read: int  # thousands of 512-byte units
    data_units_written: int
    host_read_commands: int
    host_write_commands: int
    controller_busy_time: int  # minutes
    power_cycles: int
    power_on_hours: int
    unsafe_shutdowns: int
    media_errors: int
    error_log_entries: int

    SIZE = 512

    @classmethod
    def parse(cls, raw: bytes) -> SmartLog:
        if len(raw) < cls.SIZE:
            raise ValueError(f"the SMART log is 512 bytes, not {len(raw)}")
        return cls(
            critical_warning=raw[0],
            temperature_kelvin=_u(raw, 1, 2),
            available_spare=raw[3],
            available_spare_threshold=raw[4],
            percentage_used=raw[5],
            data_units_read=_u(raw, 32, 16),
            data_units_written=_u(raw, 48, 16),
            host_read_commands=_u(raw, 64, 16),
            host_write_commands=_u(raw, 80, 16),
            controller_busy_time=_u(raw, 96, 16),
            power_cycles=_u(raw, 112, 16),
            power_on_hours=_u(raw, 128, 16),
            unsafe_shutdowns=_u(raw, 144, 16),
            media_errors=_u(raw, 160, 16),
            error_log_entries=_u(raw, 176, 16),
        )

    @property
    def temperature_celsius(self) -> int:
        return self.temperature_kelvin - 273


@dataclass(frozen=True)
class ErrorLogEntry:
    """One Error Information log entry (log page 01h, 64 bytes)."""

    error_count: int
    sq_id: int
    cid: int
    status: Status
    parameter_location: int
    lba: int
    nsid: int

    SIZE = 64

    @classmethod
    def parse(cls, raw: bytes) -> ErrorLogEntry:
        return cls(
            error_count=_u(raw, 0, 8),
            sq_id=_u(raw, 8, 2),
            cid=_u(raw, 10, 2),
            # The status field here is the CQE's bits 31:17 shifted down with the
            # phase tag in bit 0, like the CQE's upper half word.
            status=Status.from_word(_u(raw, 12, 2)),
            parameter_location=_u(raw, 14, 2),
            lba=_u(raw, 16, 8),
            nsid=_u(raw, 24, 4),
        )


def parse_error_log(raw: bytes) -> list[ErrorLogEntry]:
    """The entries with a non-zero error count, newest first as the controller keeps them."""
    entries = []
    for off in range(0, len(raw) - ErrorLogEntry.SIZE + 1, ErrorLogEntry.SIZE):
        entry = ErrorLogEntry.parse(raw[off : off + ErrorLogEntry.SIZE])
        if entry.error_count:
            entries.append(entry)
    return entries
