"""Region's register accesses over a memfd: the mapped path, the pread path, sparse areas.

A memfd stands in for the device fd (`KernelTransport` preads, pwrites and maps it as
it would vfio-pci's), so the hot paths of issue 16 run whole without a device: the
per-width views of a mapped window, the cached pread target of a never-mapped region
(the config space), and the 32-bit block operations. The errors must be the checked
path's, word for word, whichever path an access would have taken.
"""

from __future__ import annotations

import os
import re
from array import array
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import pyvfio
from pyvfio import region as region_mod
from pyvfio._transport import KernelTransport
from pyvfio._uapi.vfio import VfioRegionInfoFlag as F
from pyvfio.device import Config
from pyvfio.errors import ClosedError, UnsupportedError
from pyvfio.info import RegionInfo, SparseArea
from pyvfio.region import Region
from pyvfio.server import MmapArea, PciDevice, running

BDF = "0000:00:10.0"
SIZE = 0x4000
#: Where each test region lives in the memfd (its "file offset" on the device fd).
AT = {"mapped": 0, "pread": 0x10000, "sparse": 0x20000}
RW = F.VFIO_REGION_INFO_FLAG_READ | F.VFIO_REGION_INFO_FLAG_WRITE
MMAP = F.VFIO_REGION_INFO_FLAG_MMAP
#: The sparse region's mappable areas: the first page, and the third.
AREAS = (SparseArea(0, 0x1000), SparseArea(0x2000, 0x1000))


class CountingTransport(KernelTransport):
    """The memfd as a device fd, counting what Region asks of it."""

    __slots__ = ("asked_fd", "region_reads")

    def __init__(self, fd: int) -> None:
        super().__init__(fd, BDF)
        self.asked_fd = 0
        self.region_reads = 0

    def region_fd(self, info: RegionInfo) -> int:
        self.asked_fd += 1
        return super().region_fd(info)

    def region_read(self, info: RegionInfo, offset: int, length: int) -> bytes:
        self.region_reads += 1
        return super().region_read(info, offset, length)


class Owner:
    """A device as Region sees it: a name, and a transport until it is closed."""

    bdf = BDF

    def __init__(self, fd: int) -> None:
        self.transport = CountingTransport(fd)
        self.closed = False

    def _require_transport(self) -> KernelTransport:
        if self.closed:
            raise ClosedError(f"device {self.bdf} is closed", device=self.bdf)
        return self.transport


@pytest.fixture
def memfd() -> Iterator[int]:
    fd = os.memfd_create("pyvfio-test-region", os.MFD_CLOEXEC)
    os.ftruncate(fd, 0x30000)
    yield fd
    os.close(fd)


def make(fd: int, kind: str, flags: F = RW) -> tuple[Region, Owner]:
    owner = Owner(fd)
    mmap_flag = MMAP if kind != "pread" else F(0)
    sparse = AREAS if kind == "sparse" else None
    info = RegionInfo(
        index=0, flags=flags | mmap_flag, size=SIZE, offset=AT[kind], sparse_areas=sparse
    )
    return Region(owner, info, "BAR0"), owner


@pytest.fixture(params=["mapped", "pread", "sparse"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def put(fd: int, kind: str, offset: int, data: bytes) -> None:
    os.pwrite(fd, data, AT[kind] + offset)


def got(fd: int, kind: str, offset: int, length: int) -> bytes:
    return os.pread(fd, length, AT[kind] + offset)


def test_single_accesses_reach_the_registers(memfd: int, kind: str) -> None:
    region, _ = make(memfd, kind)
    put(memfd, kind, 0x100, bytes(range(1, 17)))
    assert region.read8(0x101) == 0x02
    assert region.read16(0x102) == 0x0403
    assert region.read32(0x104) == 0x08070605
    assert region.read64(0x108) == 0x100F0E0D0C0B0A09
    region.write8(0x201, 0xAB)
    region.write16(0x202, 0xCDEF)
    region.write32(0x204, 0x12345678)
    region.write64(0x208, 0x1122334455667788)
    assert got(memfd, kind, 0x200, 16) == bytes.fromhex("00abefcd78563412 8877665544332211")
    # The last register of the region, and (sparse) one past the first area's window.
    region.write32(SIZE - 4, 0xCAFEF00D)
    assert region.read32(SIZE - 4) == 0xCAFEF00D
    region.write64(0x1000, 0xFFFFFFFFFFFFFFFF)  # sparse: the hole, by pwrite
    assert got(memfd, kind, 0x1000, 8) == b"\xff" * 8
    assert region.mapped == (kind != "pread")


def outside(width: int, offset: int) -> str:
    return f"BAR0 of {BDF}: access of {width} bytes at {offset:#x} is outside its {SIZE:#x} bytes"


#: (what, the call, the error, its message): the checked path's words, on every path.
#: The calls take Any: most of them pass what the signatures forbid, on purpose.
BAD: list[tuple[str, Callable[[Any], object], type[Exception], str]] = [
    ("read32 at the size", lambda r: r.read32(SIZE), ValueError, outside(4, SIZE)),
    ("read32 at -4", lambda r: r.read32(-4), ValueError, outside(4, -4)),
    ("read8 at -1", lambda r: r.read8(-1), ValueError, outside(1, -1)),
    ("read64 straddling the end", lambda r: r.read64(SIZE - 4), ValueError, outside(8, SIZE - 4)),
    ("read16 at the size", lambda r: r.read16(SIZE), ValueError, outside(2, SIZE)),
    ("read32 unaligned", lambda r: r.read32(2), ValueError,
     "BAR0: 4-byte access at 0x2 is not 4-byte aligned"),
    ("read64 unaligned", lambda r: r.read64(4), ValueError,
     "BAR0: 8-byte access at 0x4 is not 8-byte aligned"),
    ("write16 unaligned", lambda r: r.write16(1, 0), ValueError,
     "BAR0: 2-byte access at 0x1 is not 2-byte aligned"),
    ("read32 of a str", lambda r: r.read32("0"), TypeError, "offset must be an int, not str"),
    ("read32 of a float", lambda r: r.read32(4.0), TypeError, "offset must be an int, not float"),
    ("read32 of a bool", lambda r: r.read32(False), TypeError, "offset must be an int, not bool"),
    ("write32 of 2**32", lambda r: r.write32(4, 1 << 32), ValueError,
     "value 4294967296 does not fit in 4 bytes"),
    ("write32 of -1", lambda r: r.write32(4, -1), ValueError, "value -1 does not fit in 4 bytes"),
    ("write8 of 256", lambda r: r.write8(4, 256), ValueError, "value 256 does not fit in 1 bytes"),
    ("write8 of a str", lambda r: r.write8(4, "x"), ValueError,
     "value 'x' does not fit in 1 bytes"),
    ("write64 of 2**64", lambda r: r.write64(8, 1 << 64), ValueError,
     "value 18446744073709551616 does not fit in 8 bytes"),
    ("write16 of a float", lambda r: r.write16(4, 1.0), ValueError,
     "value 1.0 does not fit in 2 bytes"),
    ("write32 past the end", lambda r: r.write32(SIZE, 0), ValueError, outside(4, SIZE)),
    ("read_block32 past the end", lambda r: r.read_block32(SIZE - 8, 3), ValueError,
     outside(12, SIZE - 8)),
    ("read_block32 unaligned", lambda r: r.read_block32(6, 2), ValueError,
     "BAR0: 8-byte access at 0x6 is not 4-byte aligned"),
    ("read_block32 of -1 registers", lambda r: r.read_block32(0, -1), ValueError,
     "count must be 0 or more registers, not -1"),
    ("read_block32 of a float count", lambda r: r.read_block32(0, 2.0), TypeError,
     "count must be an int, not float"),
    ("write_block32 past the end", lambda r: r.write_block32(SIZE - 4, [1, 2]), ValueError,
     outside(8, SIZE - 4)),
    ("write_block32 of a bad value", lambda r: r.write_block32(0, [1, 2, -3]), ValueError,
     "value -3 does not fit in 4 bytes"),
    ("write_block32 of bytes", lambda r: r.write_block32(0, b"abcd"), TypeError,
     "values must be ints, one per register, not bytes"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("call", "error", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD]
)
def test_bad_accesses_are_refused_alike_on_every_path(
    memfd: int, kind: str, call: Callable[[Region], object], error: type[Exception], message: str
) -> None:
    region, _ = make(memfd, kind)
    region.read32(0)  # the first access: mapped, or the pread target learnt
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        call(region)
    assert got(memfd, kind, 0, SIZE) == bytes(SIZE), "a refused access wrote something"


@pytest.mark.parametrize("kind", ["mapped", "pread"])
def test_read_only_and_write_only_regions_are_refused(memfd: int, kind: str) -> None:
    rom, _ = make(memfd, kind, F.VFIO_REGION_INFO_FLAG_READ)
    assert rom.read32(0) == 0
    writes: list[Callable[[], object]] = [
        lambda: rom.write32(0, 1),
        lambda: rom.write8(1, 1),
        lambda: rom.write_block32(0, [1]),
    ]
    for write in writes:
        with pytest.raises(UnsupportedError, match=f"^BAR0 of {BDF} is read-only$"):
            write()
    sink, _ = make(memfd, kind, F.VFIO_REGION_INFO_FLAG_WRITE)
    sink.write32(0, 1)
    reads: list[Callable[[], object]] = [
        lambda: sink.read32(0),
        lambda: sink.read64(0),
        lambda: sink.read_block32(0, 1),
    ]
    for read in reads:
        with pytest.raises(UnsupportedError, match=f"^BAR0 of {BDF} is not readable$"):
            read()


def test_block_operations_one_value_per_register(memfd: int, kind: str) -> None:
    region, _ = make(memfd, kind)
    words = [(0xA5000000 + i * 0x01010101) & 0xFFFFFFFF for i in range(SIZE // 4)]
    put(memfd, kind, 0, array("I", words).tobytes())
    assert region.read_block32(0, SIZE // 4) == words  # sparse: both areas and the hole
    assert region.read_block32(0x0FF8, 4) == words[0x3FE:0x402]  # across an area's end
    assert region.read_block32(SIZE, 0) == []
    region.write_block32(0x10, [1, 2, 0xFFFFFFFF])
    region.write_block32(0x1FFC, (x for x in (7, 8)))  # any iterable; across the hole's end
    region.write_block32(0x3000, array("I", [9, 10]))
    region.write_block32(SIZE, [])
    assert got(memfd, kind, 0x10, 12) == array("I", [1, 2, 0xFFFFFFFF]).tobytes()
    assert got(memfd, kind, 0x1FFC, 8) == array("I", [7, 8]).tobytes()
    assert got(memfd, kind, 0x3000, 8) == array("I", [9, 10]).tobytes()
    assert got(memfd, kind, 0x1C, 4) == array("I", [words[7]]).tobytes()  # untouched


def test_block_operations_do_one_4_byte_pread_or_pwrite_per_register(
    memfd: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Never one pread of the whole run: the kernel could serve it with wider accesses."""
    region, _ = make(memfd, "pread")
    region.read32(0)
    sizes: list[tuple[int, int]] = []
    real_pread, real_pwrite = os.pread, os.pwrite

    def pread(fd: int, length: int, offset: int) -> bytes:
        sizes.append((offset - AT["pread"], length))
        return real_pread(fd, length, offset)

    def pwrite(fd: int, data: bytes, offset: int) -> int:
        sizes.append((offset - AT["pread"], len(data)))
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(region_mod, "_pread", pread)
    monkeypatch.setattr(region_mod, "_pwrite", pwrite)
    region.write_block32(0x20, [5, 6, 7])
    assert region.read_block32(0x20, 3) == [5, 6, 7]
    assert sizes == [(0x20, 4), (0x24, 4), (0x28, 4)] * 2


def test_a_never_mapped_region_asks_its_transport_once(memfd: int) -> None:
    """The config space's fast path: pread on the fd the transport named at the first
    access, not a transport call (and its checks) per access."""
    region, owner = make(memfd, "pread")
    config = Config(region)
    put(memfd, "pread", 0, bytes.fromhex("3412e811"))
    for _ in range(5):
        assert (config.read16(0), config.read16(2), config.read32(0)) == (
            0x1234,
            0x11E8,
            0x11E81234,
        )
        config.write8(4, 7)
    assert config.read_block32(0, 2) == [0x11E81234, 7]
    assert owner.transport.asked_fd == 1
    assert owner.transport.region_reads <= 1  # the first access, by the checked path


@pytest.mark.parametrize("kind", ["mapped", "pread", "sparse"])
def test_a_closed_device_refuses_every_path(memfd: int, kind: str) -> None:
    """Once the device closes (Device.close calls _release), nothing uses the old fd or
    mapping: the fd's number may already be another file's."""
    region, owner = make(memfd, kind)
    region.read32(0)
    region.write32(4, 1)
    owner.closed = True
    region._release()
    assert not region.mapped
    calls: list[Callable[[], object]] = [
        lambda: region.read32(0),
        lambda: region.read8(1),
        lambda: region.write32(4, 2),
        lambda: region.write64(8, 2),
        lambda: region.read_block32(0, 2),
        lambda: region.write_block32(0, [1]),
    ]
    for call in calls:
        with pytest.raises(ClosedError, match="is closed"):
            call()
    assert got(memfd, kind, 0, 16) == bytes.fromhex("00000000 01000000 00000000 00000000")


class Recorder(PciDevice):
    """BAR0: 4 KiB of registers served by messages, each access recorded."""

    def __init__(self) -> None:
        super().__init__(vendor_id=0x1234, device_id=0x0003, name="recorder")
        self.accesses: list[tuple[str, int, int]] = []
        self.add_bar(0, 0x1000, read=self._read, write=self._write)
        self.add_bar(2, 0x2000, mmap_areas=[MmapArea(0, 0x2000)])

    def _read(self, offset: int, size: int) -> bytes:
        self.accesses.append(("read", offset, size))
        return (offset | 0xA0000000).to_bytes(8, "little")[:size]

    def _write(self, offset: int, data: bytes) -> None:
        self.accesses.append(("write", offset, len(data)))


def test_over_vfio_user_each_register_is_one_message_of_its_width(tmp_path: Path) -> None:
    device = Recorder()
    with (
        running(device, tmp_path / "recorder.sock") as server,
        pyvfio.open(f"vfio-user:{server.path}") as dev,
    ):
        bar0 = dev.bar(0)
        assert bar0.read_block32(0x10, 3) == [0xA0000010, 0xA0000014, 0xA0000018]
        bar0.write_block32(0x40, [1, 2])
        assert bar0.read32(0x80) == 0xA0000080
        assert device.accesses == [
            ("read", 0x10, 4),
            ("read", 0x14, 4),
            ("read", 0x18, 4),
            ("write", 0x40, 4),
            ("write", 0x44, 4),
            ("read", 0x80, 4),
        ]
        with pytest.raises(ValueError, match="is outside its 0x1000 bytes"):
            bar0.read_block32(0xFFC, 2)
        with pytest.raises(ValueError, match="is not 4-byte aligned"):
            bar0.write_block32(0x2, [1])
        assert len(device.accesses) == 6  # refused before any message
        # A BAR the server shares is mapped: its block operations are loads and stores.
        bar2 = dev.bar(2)
        bar2.write_block32(0x1FF8, [3, 4])
        assert bar2.mapped and bar2.read_block32(0x1FF8, 2) == [3, 4]
        assert len(device.accesses) == 6
        # The config space over vfio-user: messages too, with the same checks.
        assert dev.config.read_block32(0, 1) == [0x00031234]
        with pytest.raises(ValueError, match="is outside its"):
            dev.config.read_block32(dev.config.size, 1)
