"""The NVMe driver's pure parts: entries, PRPs, status codes, Identify and log parsing."""

from __future__ import annotations

import struct

import pytest

from pyvfio.drivers import nvme_spec as spec
from pyvfio.drivers.nvme_spec import (
    Capabilities,
    Completion,
    ControllerInfo,
    NamespaceInfo,
    NvmeStatusError,
    SmartLog,
    Status,
)

PAGE = 4096


# -- registers -------------------------------------------------------------------------------


def test_capabilities_decode() -> None:
    # QEMU's nvme: MQES 2047, CQR, TO 15 (7.5 s), DSTRD 0, CSS NVM, MPSMIN 0, MPSMAX 4.
    cap = 0x7FF | 1 << 16 | 0xF << 24 | 1 << 37 | 0 << 48 | 4 << 52
    c = Capabilities.decode(cap)
    assert c.mqes == 2048
    assert c.contiguous_required
    assert c.timeout_ms == 7500
    assert c.doorbell_stride == 4
    assert (c.mps_min, c.mps_max) == (4096, 65536)
    assert Capabilities.decode(2 << 32).doorbell_stride == 16


def test_controller_config() -> None:
    cc = spec.controller_config(4096)
    assert cc & 1  # EN
    assert (cc >> 7) & 0xF == 0  # MPS: 4 KiB
    assert (cc >> 16) & 0xF == 6  # IOSQES: 64 bytes
    assert (cc >> 20) & 0xF == 4  # IOCQES: 16 bytes
    assert (spec.controller_config(8192) >> 7) & 0xF == 1
    with pytest.raises(ValueError):
        spec.controller_config(3000)


def test_doorbells_follow_the_stride() -> None:
    assert spec.doorbell_offsets(0, 4) == (0x1000, 0x1004)
    assert spec.doorbell_offsets(3, 4) == (0x1018, 0x101C)
    assert spec.doorbell_offsets(1, 16) == (0x1020, 0x1030)


def test_version_string() -> None:
    assert spec.version_string(0x00010400) == "1.4"
    assert spec.version_string(0x00020001) == "2.0.1"


# -- submission entries ----------------------------------------------------------------------


def test_sqe_encoding_of_a_read() -> None:
    cmd = spec.rw(spec.IoOpcode.READ, 1, 0x1_2345_6789, 8, 0x10000, 0x20000)
    raw = cmd.encode(cid=7)
    assert len(raw) == 64
    opcode, flags, cid, nsid = struct.unpack_from("<BBHI", raw)
    assert (opcode, flags, cid, nsid) == (0x02, 0, 7, 1)
    prp1, prp2 = struct.unpack_from("<QQ", raw, 24)
    assert (prp1, prp2) == (0x10000, 0x20000)
    cdw10, cdw11, cdw12 = struct.unpack_from("<III", raw, 40)
    assert (cdw10, cdw11, cdw12) == (0x23456789, 0x1, 7)  # NLB is zero-based


def test_admin_command_fields() -> None:
    cq = spec.create_io_cq(3, 64, 0xABC000, vector=2)
    assert cq.opcode == 0x05 and cq.prp1 == 0xABC000
    assert cq.cdw10 == 3 | 63 << 16
    assert cq.cdw11 == 1 | 2 | 2 << 16  # PC, IEN, IV
    assert spec.create_io_cq(1, 2, 0, vector=None).cdw11 == 1
    sq = spec.create_io_sq(3, 64, 0xDEF000, cqid=3)
    assert (sq.opcode, sq.cdw10, sq.cdw11) == (0x01, 3 | 63 << 16, 1 | 3 << 16)
    assert spec.set_number_of_queues(16, 8).cdw11 == 15 | 7 << 16
    log = spec.get_log_page(spec.LogPage.SMART, 128)
    assert log.cdw10 == 0x02 | 127 << 16 and log.nsid == spec.NSID_ALL
    assert spec.identify(spec.Cns.CONTROLLER).cdw10 == 1
    wz = spec.write_zeroes(1, 10, 16, deallocate=True)
    assert wz.cdw12 == 15 | 1 << 25


def test_block_counts_are_checked() -> None:
    with pytest.raises(ValueError):
        spec.rw(spec.IoOpcode.READ, 1, 0, 0, 0, 0)
    with pytest.raises(ValueError):
        spec.rw(spec.IoOpcode.READ, 1, 0, 0x10001, 0, 0)
    with pytest.raises(ValueError):
        spec.rw(spec.IoOpcode.READ, 1, -1, 1, 0, 0)


# -- PRPs ------------------------------------------------------------------------------------


def test_prp_one_page() -> None:
    assert spec.prp_pages(0x10000, 4096, PAGE) == (0x10000, [])
    assert spec.prp_pages(0x10200, 512, PAGE) == (0x10200, [])


def test_prp_two_pages_and_an_offset() -> None:
    assert spec.prp_pages(0x10000, 8192, PAGE) == (0x10000, [0x11000])
    # 4 KiB starting mid-page touches two pages.
    assert spec.prp_pages(0x10800, 4096, PAGE) == (0x10800, [0x11000])


def test_prp_list_for_64k() -> None:
    prp1, rest = spec.prp_pages(0x100000, 64 * 1024, PAGE)
    assert prp1 == 0x100000
    assert rest == [0x100000 + i * PAGE for i in range(1, 16)]
    assert spec.prp_list(rest, [0x5000], PAGE) == [rest]


def test_prp_list_chains_pages() -> None:
    pages = [i * PAGE for i in range(1, 1200)]
    lists = spec.prp_list(pages, [0xA000, 0xB000, 0xC000], PAGE)
    assert len(lists) == 3
    assert lists[0][-1] == 0xB000 and lists[1][-1] == 0xC000
    assert lists[0][:-1] + lists[1][:-1] + lists[2] == pages
    assert all(len(page) <= 512 for page in lists)
    assert spec.prp_list_pages_needed(len(pages), PAGE) == 3
    assert spec.prp_list_pages_needed(512, PAGE) == 1
    assert spec.prp_list_pages_needed(513, PAGE) == 2
    with pytest.raises(ValueError, match="list page"):
        spec.prp_list(pages, [0xA000], PAGE)


def test_prp_rejects_bad_transfers() -> None:
    with pytest.raises(ValueError):
        spec.prp_pages(0x1001, 512, PAGE)
    with pytest.raises(ValueError):
        spec.prp_pages(0x1000, 0, PAGE)


# -- completions and status ------------------------------------------------------------------


def cqe(status: int, phase: int, cid: int = 5, dw0: int = 0) -> bytes:
    return spec.CQE.pack(dw0, 0, 3, 1, cid, (status << 1) | phase)


def test_completion_decode() -> None:
    c = Completion.decode(cqe(0, 1, cid=9, dw0=0x00070007))
    assert (c.cid, c.phase, c.sq_head, c.sq_id, c.dw0) == (9, 1, 3, 1, 0x00070007)
    assert c.status.ok


def test_lba_out_of_range_is_named() -> None:
    # SCT 0, SC 0x80, DNR: how QEMU answers a read past the namespace.
    word = (1 << 15) | (0 << 9) | (0x80 << 1) | 1
    status = Status.from_word(word)
    assert (status.sct, status.sc, status.dnr) == (0, 0x80, True)
    assert status.name == "LBA Out of Range"
    assert "Generic Command Status" in str(status) and "do not retry" in str(status)


@pytest.mark.parametrize(
    ("sct", "sc", "name"),
    [
        (0, 0x01, "Invalid Command Opcode"),
        (0, 0x0B, "Invalid Namespace or Format"),
        (1, 0x01, "Invalid Queue Identifier"),
        (1, 0x02, "Invalid Queue Size"),
        (1, 0x08, "Invalid Interrupt Vector"),
        (2, 0x81, "Unrecovered Read Error"),
        (0, 0x7F, "Unknown status 0x7f"),
        (7, 0x12, "Vendor Specific 0x12"),
    ],
)
def test_status_names(sct: int, sc: int, name: str) -> None:
    assert Status(sct, sc).name == name


def test_status_error_carries_the_fields() -> None:
    err = NvmeStatusError(Status(0, 0x80), opcode=2, qid=1, cid=4, what="read on queue 1")
    assert (err.sct, err.sc, err.qid, err.cid) == (0, 0x80, 1, 4)
    assert str(err).startswith("read on queue 1 failed: LBA Out of Range")


# -- Identify and logs -----------------------------------------------------------------------


def identify_controller_data() -> bytes:
    raw = bytearray(4096)
    struct.pack_into("<HH", raw, 0, 0x1B36, 0x1AF4)
    raw[4:24] = b"pyvfio-lab-0".ljust(20)
    raw[24:64] = b"QEMU NVMe Ctrl".ljust(40)
    raw[64:72] = b"8.2.0".ljust(8)
    raw[77] = 7
    struct.pack_into("<HI", raw, 78, 0, 0x00010400)
    raw[262] = 63
    raw[512], raw[513] = 0x66, 0x44
    struct.pack_into("<IH", raw, 516, 256, 0x5F)
    raw[525] = 1
    raw[768:790] = b"nqn.2019-08.org.qemu:x"
    return bytes(raw)


def test_identify_controller_parse() -> None:
    info = ControllerInfo.parse(identify_controller_data())
    assert info.serial == "pyvfio-lab-0"
    assert info.model == "QEMU NVMe Ctrl"
    assert info.firmware == "8.2.0"
    assert info.vid == 0x1B36
    assert info.max_transfer(4096) == 512 * 1024
    assert spec.version_string(info.version) == "1.4"
    assert info.elpe == 64 and info.nn == 256
    assert info.supports_write_zeroes and info.volatile_write_cache
    assert info.subnqn == "nqn.2019-08.org.qemu:x"
    assert str(info) == "QEMU NVMe Ctrl (serial pyvfio-lab-0, firmware 8.2.0)"
    with pytest.raises(ValueError):
        ControllerInfo.parse(b"short")


def test_identify_namespace_parse() -> None:
    raw = bytearray(4096)
    blocks = (64 << 20) // 512
    struct.pack_into("<QQQ", raw, 0, blocks, blocks, 100)
    raw[25] = 1  # two formats
    raw[26] = 1  # the second is in use
    struct.pack_into("<I", raw, 128, 9 << 16)
    struct.pack_into("<I", raw, 132, 12 << 16 | 8)
    ns = NamespaceInfo.parse(1, bytes(raw))
    assert ns.size == blocks and ns.utilization == 100
    assert ns.block_size == 4096 and ns.formats[0].block_size == 512
    assert ns.formats[1].metadata_size == 8
    assert ns.size_bytes == blocks * 4096


def test_namespace_list() -> None:
    raw = struct.pack("<4I", 1, 2, 7, 0) + bytes(4080)
    assert spec.parse_namespace_list(raw) == [1, 2, 7]
    assert spec.parse_namespace_list(bytes(4096)) == []


def test_smart_log_parse() -> None:
    raw = bytearray(512)
    raw[0] = 0
    struct.pack_into("<H", raw, 1, 323)
    raw[3], raw[4] = 100, 10
    raw[48:64] = (12).to_bytes(16, "little")
    raw[80:96] = (34).to_bytes(16, "little")
    raw[144:160] = (2).to_bytes(16, "little")
    smart = SmartLog.parse(bytes(raw))
    assert smart.temperature_celsius == 50
    assert smart.available_spare == 100
    assert smart.data_units_written == 12 and smart.host_write_commands == 34
    assert smart.unsafe_shutdowns == 2


def test_error_log_parse() -> None:
    raw = bytearray(64 * 3)
    struct.pack_into("<QHHHHQI", raw, 0, 2, 1, 5, (0x80 << 1) | (1 << 15), 0, 131072, 1)
    struct.pack_into("<Q", raw, 64, 1)
    entries = spec.parse_error_log(bytes(raw))
    assert [e.error_count for e in entries] == [2, 1]
    first = entries[0]
    assert (first.sq_id, first.cid, first.lba, first.nsid) == (1, 5, 131072, 1)
    assert first.status.name == "LBA Out of Range" and first.status.dnr
