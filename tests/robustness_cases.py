"""Bad input, tried and counted: each case here is one row of docs/robustness.md.

A case names what it tries (the target, the argument, the bad value) and what must come
back: an exception of the documented type whose message holds a fragment (``None``: the
call must return quietly, e.g. a second ``close()``), or for the command line an exit
status and a fragment of the one line on stderr. Where it runs is its tier:

* ``unit``: needs no device (tests/unit/test_bad_input.py);
* ``lab``: an edu device opened through VFIO in the lab guest, the call made on the
  context :class:`tests/lab/test_robustness.py <EduContext>` hands it;
* ``nvme``: the NVMe controller in the lab guest, brought up by the userspace driver;
* ``cli``: the ``pyvfio`` command, run in-process (tests/unit/test_bad_input.py).

After every case the test checks that the device and the host are as they were.
``scripts/robustness_table.py`` renders these lists into the table.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pyvfio
from pyvfio._uapi.vfio import VfioRegionInfoFlag
from pyvfio.errors import (
    ClosedError,
    DeviceNotFoundError,
    InvalidAddressError,
    IovaExhaustedError,
    UnsupportedError,
    VfioError,
)
from pyvfio.host.journal import Journal, JournalError
from pyvfio.info import RegionInfo
from pyvfio.interrupt import check_kind
from pyvfio.iova import IovaAllocator
from pyvfio.pci.address import normalize
from pyvfio.pci.config import parse_config
from pyvfio.region import Region
from pyvfio.vm.qemu import option_value, parse_size

GiB = 1 << 30
PAGE = 0x1000
NO_DEVICE = "ffff:ff:1f.7"  # a well-formed address no host has


@dataclass(frozen=True)
class Case:
    """One bad call: ``call(context)`` must raise ``error`` with ``match`` in its text."""

    target: str
    argument: str
    bad: str
    call: Callable[[Any], object]
    error: type[BaseException] | None
    match: str = ""
    tier: str = "unit"
    #: What the case closes before its call (lab): the check afterwards then opens the
    #: device afresh instead of comparing the open objects.
    closes: bool = False

    @property
    def id(self) -> str:
        return f"{self.target}.{self.argument}:{self.bad}".replace(" ", "_")

    @property
    def expected(self) -> str:
        return "returns quietly" if self.error is None else self.error.__name__


@dataclass(frozen=True)
class CliCase:
    """``pyvfio ARGS`` must exit ``code`` with one line on stderr holding ``match``.

    ``{snap}`` in the arguments is the recorded lab snapshot, ``{tmp}`` an empty folder.
    """

    args: tuple[str, ...]
    argument: str
    bad: str
    code: int
    match: str
    tier: str = "cli"

    @property
    def target(self) -> str:
        if self.argument == "command":
            return "pyvfio"
        words = [a for a in self.args[:2] if not a.startswith("-") and "{" not in a]
        if words and words[0] in ("nvme", "vm", "lab", "export"):
            return "pyvfio " + " ".join(words[:2])
        return "pyvfio " + self.args[0]

    @property
    def id(self) -> str:
        return f"{self.target}.{self.argument}:{self.bad}".replace(" ", "_")

    @property
    def expected(self) -> str:
        return f"exit {self.code}"


def _alloc() -> IovaAllocator:
    return IovaAllocator([(0, GiB - 1)])


def _allocated() -> tuple[IovaAllocator, int]:
    a = _alloc()
    return a, a.allocate(2 * PAGE)


def _freed_twice(_: object) -> object:
    a, iova = _allocated()
    a.free(iova)
    return a.free(iova)


def _reserve_overlap(_: object) -> None:
    a, iova = _allocated()
    a.reserve(iova + PAGE, PAGE)


def _free_inside(_: object) -> object:
    a, iova = _allocated()
    return a.free(iova + PAGE)


def _closed_iommu() -> pyvfio.Iommu:
    iommu = pyvfio.Iommu()
    iommu.close()
    iommu.close()  # twice is fine
    return iommu


def _rom(flags: str = "READ") -> Region:
    """A Region as vfio-pci describes a 64 KiB expansion ROM: readable, not writable.

    Only its checks run (they come before any system call), so the device is a name."""
    flag = VfioRegionInfoFlag[f"VFIO_REGION_INFO_FLAG_{flags}"]
    info = RegionInfo(index=6, flags=flag, size=0x10000, offset=6 << 40)
    return Region(SimpleNamespace(bdf="0000:01:00.0"), info, "ROM")


def _journal_in(folder: str, text: str) -> Journal:
    import pathlib

    path = pathlib.Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    (path / "journal.json").write_text(text)
    return Journal(path)


#: A journal as pyvfio writes it: one device half-way through a bind.
_ENTRY = {"address": "0000:00:11.0", "original_driver": "nvme", "original_override": None,
          "target": "vfio-pci", "step": "unbound"}  # fmt: skip
_JOURNAL = json.dumps({"version": 1, "devices": {"0000:00:11.0": _ENTRY}})


def _journal_entry(folder: str, entry: str) -> Journal:
    return _journal_in(folder, _JOURNAL.replace(json.dumps(_ENTRY), entry))


def _journal_field(folder: str, key: str, value: object) -> Journal:
    entry = {**_ENTRY, key: value}
    return _journal_in(folder, json.dumps({"version": 1, "devices": {"0000:00:11.0": entry}}))


# -- no device: parsing, the IOVA allocator, an Iommu with nothing open ----------------------

# The case lists are tables, a row to a case (docs/robustness.md is made from them): the
# formatter would spread each row over eight lines.
# fmt: off
UNIT: list[Case] = [
    Case("normalize", "address", "int 0x1f2", lambda _: normalize(0x1F2), InvalidAddressError,
         "must be a string"),
    Case("normalize", "address", "None", lambda _: normalize(None), InvalidAddressError,
         "must be a string"),
    Case("normalize", "address", "bytes", lambda _: normalize(b"00:1f.2"), InvalidAddressError,
         "must be a string"),
    Case("normalize", "address", "empty", lambda _: normalize(""), InvalidAddressError,
         "is not a PCI address"),
    Case("normalize", "address", "function 9", lambda _: normalize("00:1f.9"),
         InvalidAddressError, "function 9 is out of range"),
    Case("normalize", "address", "device 0x20", lambda _: normalize("00:20.0"),
         InvalidAddressError, "device 0x20 is out of range"),
    Case("normalize", "address", "negative bus", lambda _: normalize("-1:00.0"),
         InvalidAddressError, "is not a PCI address"),
    Case("normalize", "address", "10000 characters", lambda _: normalize("0" * 10000),
         InvalidAddressError, "is not a PCI address"),
    Case("parse_config", "data", "str", lambda _: parse_config("abc"), TypeError,
         "configuration space is bytes"),
    Case("parse_config", "data", "None", lambda _: parse_config(None), TypeError,
         "configuration space is bytes"),
    Case("parse_config", "data", "empty", lambda _: parse_config(b""), ValueError,
         "needs at least 64 bytes"),
    Case("parse_config", "data", "63 bytes", lambda _: parse_config(bytes(63)), ValueError,
         "needs at least 64 bytes"),
    Case("IovaAllocator", "ranges", "empty", lambda _: IovaAllocator([]), ValueError,
         "no usable IOVA range"),
    Case("IovaAllocator", "ranges", "less than a page", lambda _: IovaAllocator([(1, PAGE)]),
         ValueError, "no usable IOVA range"),
    Case("IovaAllocator", "ranges", "start > last", lambda _: IovaAllocator([(10 * PAGE, PAGE)]),
         ValueError, "is not an inclusive (start, last) pair"),
    Case("IovaAllocator", "ranges", "negative start", lambda _: IovaAllocator([(-PAGE, PAGE)]),
         ValueError, "is not an inclusive (start, last) pair"),
    Case("IovaAllocator", "ranges", "last above 2**64", lambda _: IovaAllocator([(0, 1 << 70)]),
         ValueError, "is not an inclusive (start, last) pair"),
    Case("IovaAllocator", "ranges", "a str", lambda _: IovaAllocator(["ab"]), TypeError,
         "an IOVA range is a (start, last) pair"),
    Case("IovaAllocator", "ranges", "float ends", lambda _: IovaAllocator([(0.0, 4096.0)]),
         TypeError, "must be an int, not float"),
    Case("IovaAllocator", "page_size", "3", lambda _: IovaAllocator([(0, GiB)], page_size=3),
         ValueError, "is not a power of two"),
    Case("IovaAllocator", "page_size", "0", lambda _: IovaAllocator([(0, GiB)], page_size=0),
         ValueError, "is not a power of two"),
    Case("IovaAllocator", "reserved", "start > last",
         lambda _: IovaAllocator([(0, GiB)], reserved=[(2 * PAGE, PAGE)]), ValueError,
         "reserved range"),
    Case("IovaAllocator.allocate", "size", "0", lambda _: _alloc().allocate(0), ValueError,
         "must be positive"),
    Case("IovaAllocator.allocate", "size", "-4096", lambda _: _alloc().allocate(-PAGE),
         ValueError, "must be positive"),
    Case("IovaAllocator.allocate", "size", "str", lambda _: _alloc().allocate("4096"),
         TypeError, "size must be an int, not str"),
    Case("IovaAllocator.allocate", "size", "float", lambda _: _alloc().allocate(4096.0),
         TypeError, "size must be an int, not float"),
    Case("IovaAllocator.allocate", "size", "huge: 2**60",
         lambda _: _alloc().allocate(1 << 60), IovaExhaustedError, "no free IOVA range fits"),
    Case("IovaAllocator.allocate", "align", "3", lambda _: _alloc().allocate(PAGE, align=3),
         ValueError, "is not a power of two"),
    Case("IovaAllocator.allocate", "align", "0", lambda _: _alloc().allocate(PAGE, align=0),
         ValueError, "is not a power of two"),
    Case("IovaAllocator.allocate", "align", "below the page",
         lambda _: _alloc().allocate(PAGE, align=512), ValueError,
         "is below the IOMMU page size"),
    Case("IovaAllocator.allocate", "align", "str", lambda _: _alloc().allocate(PAGE, align="x"),
         TypeError, "align must be an int"),
    Case("IovaAllocator.allocate", "max_iova", "-1",
         lambda _: _alloc().allocate(PAGE, max_iova=-1), ValueError,
         "is below the lowest usable IOVA"),
    Case("IovaAllocator.allocate", "max_iova", "below the size",
         lambda _: _alloc().allocate(2 << 20, max_iova=(1 << 20) - 1), IovaExhaustedError,
         "no free IOVA range fits"),
    Case("IovaAllocator.allocate", "max_iova", "str",
         lambda _: _alloc().allocate(PAGE, max_iova="x"), TypeError,
         "max_iova must be an int"),
    Case("IovaAllocator.reserve", "iova", "overlaps an allocation", _reserve_overlap, ValueError,
         "overlaps the live allocation"),
    Case("IovaAllocator.reserve", "iova", "unaligned",
         lambda _: _alloc().reserve(0x12345, PAGE), ValueError, "is not aligned"),
    Case("IovaAllocator.reserve", "iova", "negative", lambda _: _alloc().reserve(-PAGE, PAGE),
         ValueError, "is not aligned"),
    Case("IovaAllocator.reserve", "iova", "past the end",
         lambda _: _alloc().reserve(GiB - PAGE, 2 * PAGE), ValueError,
         "not inside the usable IOVA ranges"),
    Case("IovaAllocator.reserve", "iova", "str", lambda _: _alloc().reserve("1", PAGE),
         TypeError, "iova must be an int"),
    Case("IovaAllocator.reserve", "size", "0", lambda _: _alloc().reserve(1 << 20, 0),
         ValueError, "must be positive"),
    Case("IovaAllocator.free", "iova", "never allocated", lambda _: _alloc().free(1 << 20),
         ValueError, "it is not allocated"),
    Case("IovaAllocator.free", "iova", "freed twice", _freed_twice, ValueError,
         "freed twice?"),
    Case("IovaAllocator.free", "iova", "inside an allocation", _free_inside, ValueError,
         "free it by its start"),
    Case("IovaAllocator.free", "iova", "str", lambda _: _alloc().free("x"), ValueError,
         "IOVA must be an int"),
    Case("Region.write32", "(region)", "a read-only ROM", lambda _: _rom().write32(0, 1),
         UnsupportedError, "ROM of 0000:01:00.0 is read-only"),
    Case("Region.write", "(region)", "a read-only ROM", lambda _: _rom().write(0, b"ab"),
         UnsupportedError, "is read-only"),
    Case("Region.read32", "(region)", "a write-only region", lambda _: _rom("WRITE").read32(0),
         UnsupportedError, "is not readable"),
    Case("Region.write_block32", "(region)", "a read-only ROM",
         lambda _: _rom().write_block32(0, [1, 2]), UnsupportedError, "is read-only"),
    Case("Region.read_block32", "count", "-1", lambda _: _rom().read_block32(0, -1), ValueError,
         "count must be 0 or more registers"),
    Case("Region.read_block32", "count", "past the end", lambda _: _rom().read_block32(0, 0x4001),
         ValueError, "is outside its 0x10000 bytes"),
    Case("Region.read_block32", "offset", "unaligned", lambda _: _rom().read_block32(2, 1),
         ValueError, "is not 4-byte aligned"),
    Case("Region.write_block32", "values", "bytes", lambda _: _rom("WRITE").write_block32(0, b"ab"),
         TypeError, "values must be ints, one per register"),
    Case("Region.write_block32", "values", "2**32",
         lambda _: _rom("WRITE").write_block32(0, [1, 1 << 32]), ValueError,
         "value 4294967296 does not fit in 4 bytes"),
    Case("Iommu", "backend", "'bogus'", lambda _: pyvfio.Iommu("bogus"), ValueError,
         "unknown IOMMU backend"),
    Case("Iommu", "backend", "int", lambda _: pyvfio.Iommu(1), ValueError,
         "unknown IOMMU backend"),
    Case("Iommu.open", "address", "malformed", lambda _: pyvfio.Iommu().open("zz"),
         InvalidAddressError, "is not a PCI address"),
    Case("Iommu.open", "address", "int", lambda _: pyvfio.Iommu().open(5), InvalidAddressError,
         "must be a string"),
    Case("Iommu.open", "address", "no such device", lambda _: pyvfio.Iommu().open(NO_DEVICE),
         DeviceNotFoundError, "no PCI device ffff:ff:1f.7"),
    Case("Iommu.map", "(nothing open)", "before any device",
         lambda _: pyvfio.Iommu().map(bytearray(PAGE)), VfioError, "no device is open"),
    Case("Iommu.dma_alloc", "size", "0", lambda _: pyvfio.Iommu().dma_alloc(0), ValueError,
         "must be a positive int"),
    Case("Iommu.dma_alloc", "size", "-4096", lambda _: pyvfio.Iommu().dma_alloc(-PAGE),
         ValueError, "must be a positive int"),
    Case("Iommu.dma_alloc", "size", "float", lambda _: pyvfio.Iommu().dma_alloc(4096.0),
         ValueError, "must be a positive int"),
    Case("Iommu.dma_alloc", "(nothing open)", "before any device",
         lambda _: pyvfio.Iommu().dma_alloc(PAGE), VfioError, "no device is open"),
    Case("Iommu.unmap", "iova", "never mapped", lambda _: pyvfio.Iommu().unmap(PAGE),
         ValueError, "no DMA mapping starts at"),
    Case("Iommu.unmap", "iova", "str", lambda _: pyvfio.Iommu().unmap("x"), TypeError,
         "takes a DmaMapping or its IOVA"),
    Case("Iommu.close", "(twice)", "double close", lambda _: _closed_iommu().close(), None),
    Case("Iommu.open", "(after close)", "use after close",
         lambda _: _closed_iommu().open("00:10.0"), ClosedError, "the Iommu is closed"),
    Case("Iommu.map", "(after close)", "use after close",
         lambda _: _closed_iommu().map(bytearray(PAGE)), ClosedError, "the Iommu is closed"),
    Case("Iommu.dma_alloc", "(after close)", "use after close",
         lambda _: _closed_iommu().dma_alloc(PAGE), ClosedError, "the Iommu is closed"),
    Case("Iommu.fileno", "(after close)", "use after close",
         lambda _: _closed_iommu().fileno(), ClosedError, "the Iommu is closed"),
    Case("pyvfio.open", "address", "malformed", lambda _: pyvfio.open("zz"),
         InvalidAddressError, "is not a PCI address"),
    Case("pyvfio.open", "address", "no such device", lambda _: pyvfio.open(NO_DEVICE),
         DeviceNotFoundError, "no PCI device"),
    Case("pyvfio.open", "backend", "'bogus'", lambda _: pyvfio.open("00:10.0", backend="x"),
         ValueError, "unknown IOMMU backend"),
    Case("interrupt kind", "kind", "'bogus'", lambda _: check_kind("bogus"), ValueError,
         "unknown interrupt kind"),
    Case("interrupt kind", "kind", "a list", lambda _: check_kind([]), ValueError,
         "unknown interrupt kind"),
    Case("vm.qemu.parse_size", "text", "'abc'", lambda _: parse_size("abc"), ValueError,
         "is not a size"),
    Case("vm.qemu.parse_size", "text", "'inf'", lambda _: parse_size("inf"), ValueError,
         "is not a size"),
    Case("vm.qemu.parse_size", "text", "'-4G'", lambda _: parse_size("-4G"), ValueError,
         "at least 16M"),
    Case("vm.qemu.option_value", "value", "a newline",
         lambda _: option_value("card.rom\n-device x", "--romfile"), ValueError,
         "control character"),
    Case("vm.qemu.option_value", "value", "empty", lambda _: option_value("", "--romfile"),
         ValueError, "is empty"),
    Case("Journal", "file", "not JSON", lambda tmp: _journal_in(tmp, "{not json"),
         JournalError, "cannot read the bind journal"),
    Case("Journal", "file", "another format version",
         lambda tmp: _journal_in(tmp, '{"version": 99}'), JournalError,
         "has journal format 99"),
    Case("Journal", "file", "empty", lambda tmp: _journal_in(tmp, ""), JournalError,
         "the file is empty"),
    Case("Journal", "file", "truncated", lambda tmp: _journal_in(tmp, _JOURNAL[:-20]),
         JournalError, "not JSON"),
    Case("Journal", "file", "a list", lambda tmp: _journal_in(tmp, "[]"), JournalError,
         "it holds a JSON list, not an object"),
    Case("Journal", "file", "a number", lambda tmp: _journal_in(tmp, "1"), JournalError,
         "it holds a JSON number, not an object"),
    Case("Journal", "file", "nested too deep", lambda tmp: _journal_in(tmp, "[" * 100000),
         JournalError, "nested too deep"),
    Case("Journal", "devices", "a list",
         lambda tmp: _journal_in(tmp, '{"version": 1, "devices": []}'), JournalError,
         "'devices' is a JSON list, not an object"),
    Case("Journal", "entry", "a string", lambda tmp: _journal_entry(tmp, '"vfio-pci"'),
         JournalError, "'0000:00:11.0' is a JSON string, not an object"),
    Case("Journal", "entry", "null", lambda tmp: _journal_entry(tmp, "null"), JournalError,
         "'0000:00:11.0' is a JSON null, not an object"),
    Case("Journal", "entry", "address not PCI",
         lambda tmp: _journal_in(tmp, _JOURNAL.replace('0000:00:11.0"', '../../x"', 1)),
         JournalError, "'../../x' is not a PCI address"),
    Case("Journal", "entry", "address short form",
         lambda tmp: _journal_in(tmp, _JOURNAL.replace('0000:00:11.0"', '00:11.0"', 1)),
         JournalError, "is not written as pyvfio writes it"),
    Case("Journal", "original_driver", "a number",
         lambda tmp: _journal_field(tmp, "original_driver", 7), JournalError,
         "has original_driver 7, not a driver name"),
    Case("Journal", "original_driver", "a path",
         lambda tmp: _journal_field(tmp, "original_driver", "../../../../tmp/x"),
         JournalError, "not a driver name"),
    Case("Journal", "target", "null", lambda tmp: _journal_field(tmp, "target", None),
         JournalError, "has target None, not a driver name"),
    Case("Journal", "step", "unknown", lambda tmp: _journal_field(tmp, "step", "dancing"),
         JournalError, "has step 'dancing', not one of planned"),
    Case("Journal", "waiting", "a list", lambda tmp: _journal_field(tmp, "waiting", []),
         JournalError, "has 'waiting' as a JSON list"),
    Case("Journal", "waiting", "pid a string",
         lambda tmp: _journal_field(tmp, "waiting", {"write": "x", "pid": "1", "start": 0}),
         JournalError, "a 'waiting' without a write"),
]
# fmt: on

# -- edu in the lab: regions, config, IRQs, DMA, the Iommu with a device open ---------------
# The context: c.dev (Device), c.bar0, c.config, c.iommu, c.buf (an 8 KiB DmaBuffer below
# edu's DMA mask), c.edu (the edu driver), c.irq (edu's INTx, enabled).

BAR0 = 1 << 20
BUF = 2 * PAGE


def _closed_device(c: Any) -> Any:
    c.dev.close()
    c.dev.close()  # twice is fine
    return c.dev


def _freed_buffer(c: Any) -> Any:
    c.buf.free()
    c.buf.free()  # twice is fine
    return c.buf


def _closed_irq(c: Any) -> Any:
    c.irq.close()
    c.irq.close()
    return c.irq


def _closed_lab_iommu(c: Any) -> Any:
    c.iommu.close()
    c.iommu.close()
    return c.iommu


# fmt: off
LAB: list[Case] = [
    Case("Region.read32", "offset", "the region's size", lambda c: c.bar0.read32(BAR0),
         ValueError, "is outside its 0x100000 bytes"),
    Case("Region.read32", "offset", "-4", lambda c: c.bar0.read32(-4), ValueError,
         "is outside its"),
    Case("Region.read32", "offset", "unaligned", lambda c: c.bar0.read32(2), ValueError,
         "is not 4-byte aligned"),
    Case("Region.read32", "offset", "str", lambda c: c.bar0.read32("0"), TypeError,
         "offset must be an int, not str"),
    Case("Region.read32", "offset", "float", lambda c: c.bar0.read32(4.0), TypeError,
         "offset must be an int, not float"),
    Case("Region.read64", "offset", "straddles the end", lambda c: c.bar0.read64(BAR0 - 4),
         ValueError, "is outside its"),
    Case("Region.write32", "value", "2**32", lambda c: c.bar0.write32(4, 1 << 32), ValueError,
         "does not fit in 4 bytes"),
    Case("Region.write32", "value", "-1", lambda c: c.bar0.write32(4, -1), ValueError,
         "does not fit in 4 bytes"),
    Case("Region.write8", "value", "str", lambda c: c.bar0.write8(4, "x"), ValueError,
         "does not fit in 1 bytes"),
    Case("Region.write32", "offset", "past the end", lambda c: c.bar0.write32(BAR0, 0),
         ValueError, "is outside its"),
    Case("Region.read", "length", "one past the end", lambda c: c.bar0.read(0, BAR0 + 1),
         ValueError, "is outside its"),
    Case("Region.read", "length", "huge: 2**62", lambda c: c.bar0.read(0, 1 << 62),
         ValueError, "is outside its"),
    Case("Region.read", "length", "-1", lambda c: c.bar0.read(0, -1), ValueError,
         "is outside its"),
    Case("Region.read", "length", "str", lambda c: c.bar0.read(0, "4"), TypeError,
         "length must be an int"),
    Case("Region.write", "data", "past the end", lambda c: c.bar0.write(BAR0 - 2, b"abcd"),
         ValueError, "is outside its"),
    Case("Region.write", "data", "str", lambda c: c.bar0.write(0x80, "abcd"), TypeError,
         "bytes-like"),
    Case("Region (ROM, empty)", "offset", "0 of a 0-byte region",
         lambda c: c.dev.region(6).read8(0), ValueError, "is outside its 0x0 bytes"),
    Case("Config.read32", "offset", "4096", lambda c: c.config.read32(4096), ValueError,
         "is outside its"),
    Case("Config.read", "length", "past the end", lambda c: c.config.read(0, 5000), ValueError,
         "is outside its"),
    Case("Config.read", "offset", "past the end", lambda c: c.config.read(4097), ValueError,
         "is outside its"),
    Case("Config.write16", "offset", "the vendor ID (read-only)",
         lambda c: c.config.write16(0, 0xDEAD), None),
    Case("Config.write16", "offset", "unaligned", lambda c: c.config.write16(1, 0), ValueError,
         "is not 2-byte aligned"),
    Case("Device.region", "index", "99", lambda c: c.dev.region(99), ValueError,
         "has regions 0-"),
    Case("Device.region", "index", "-1", lambda c: c.dev.region(-1), ValueError,
         "has regions 0-"),
    Case("Device.region", "index", "str", lambda c: c.dev.region("0"), ValueError,
         "has regions 0-"),
    Case("Device.bar", "index", "6", lambda c: c.dev.bar(6), ValueError,
         "BAR index must be 0-5"),
    Case("Device.bar", "index", "str", lambda c: c.dev.bar("0"), ValueError,
         "BAR index must be 0-5"),
    Case("Device.bar", "index", "a BAR edu lacks", lambda c: c.dev.bar(2), UnsupportedError,
         "has no BAR2"),
    Case("Device.enable_irqs", "kind", "'bogus'", lambda c: c.dev.enable_irqs("bogus"),
         ValueError, "unknown interrupt kind"),
    Case("Device.enable_irqs", "count", "0", lambda c: c.dev.enable_irqs("msi", 0),
         ValueError, "count must be a positive int"),
    Case("Device.enable_irqs", "count", "str", lambda c: c.dev.enable_irqs("msi", "1"),
         ValueError, "count must be a positive int"),
    Case("Device.enable_irqs", "count", "huge: 2**40",
         lambda c: c.dev.enable_irqs("msi", 1 << 40), UnsupportedError, "vector(s), not"),
    Case("Device.enable_irqs", "kind", "MSI-X edu lacks", lambda c: c.dev.enable_irqs("msix"),
         UnsupportedError, "offers 0 msix vector(s)"),
    Case("Device.irq_info", "kind", "'bogus'", lambda c: c.dev.irq_info("bogus"), ValueError,
         "unknown interrupt kind"),
    Case("Device.dma_alloc", "size", "0", lambda c: c.dev.dma_alloc(0), ValueError,
         "must be a positive int"),
    Case("Device.dma_alloc", "size", "str", lambda c: c.dev.dma_alloc("4096"), ValueError,
         "must be a positive int"),
    Case("Device.dma_alloc", "size", "huge: 2**50", lambda c: c.dev.dma_alloc(1 << 50),
         MemoryError, "cannot allocate"),
    Case("Device.dma_alloc", "max_iova", "below the first page",
         lambda c: c.dev.dma_alloc(PAGE, max_iova=PAGE - 1), ValueError,
         "is below the lowest usable IOVA"),
    Case("Device.dma_alloc", "max_iova", "too low for the size",
         lambda c: c.dev.dma_alloc(4 << 20, max_iova=(1 << 20) - 1), IovaExhaustedError,
         "no free IOVA range fits"),
    Case("Iommu.open", "address", "already open", lambda c: c.iommu.open(c.dev.bdf),
         VfioError, "is already open in this Iommu"),
    Case("pyvfio.open", "address", "open in another Iommu", lambda c: pyvfio.open(c.dev.bdf),
         VfioError, "is already open"),
    Case("Iommu.map", "buffer", "not page aligned", lambda c: c.iommu.map(c.buf.address + 8, PAGE),
         ValueError, "must be page aligned"),
    Case("Iommu.map", "size", "unaligned: 4095", lambda c: c.iommu.map(c.buf.address, PAGE - 1),
         ValueError, "must be page aligned"),
    Case("Iommu.map", "buffer", "read-only bytes", lambda c: c.iommu.map(bytes(PAGE)),
         TypeError, "needs a writable, contiguous buffer"),
    Case("Iommu.map", "buffer", "bool", lambda c: c.iommu.map(True), TypeError,
         "not a bool"),
    Case("Iommu.map", "size", "missing with an address", lambda c: c.iommu.map(c.buf.address),
         TypeError, "the size is required"),
    Case("Iommu.map", "iova", "overlaps a mapping",
         lambda c: c.iommu.map(c.buf.address, PAGE, iova=c.buf.iova + PAGE), ValueError,
         "overlaps the live allocation"),
    Case("Iommu.map", "iova", "unaligned", lambda c: c.iommu.map(c.buf.address, PAGE, iova=0x1234),
         ValueError, "is not aligned"),
    Case("Iommu.map", "iova", "past the IOVA ranges",
         lambda c: c.iommu.map(c.buf.address, PAGE, iova=1 << 63), ValueError,
         "not inside the usable IOVA ranges"),
    Case("Iommu.map", "max_iova", "below iova + size",
         lambda c: c.iommu.map(c.buf.address, 2 * PAGE, iova=1 << 24, max_iova=(1 << 24) + PAGE),
         ValueError, "ends above max_iova"),
    Case("Iommu.map", "address", "memory this process lacks",
         lambda c: c.iommu.map(PAGE, PAGE), VfioError, "VFIO_IOMMU_MAP_DMA"),
    Case("Iommu.map", "size", "huge: 2**62 past the buffer",
         lambda c: c.iommu.map(c.buf.address, 1 << 62), IovaExhaustedError,
         "no free IOVA range fits"),
    Case("Iommu.unmap", "iova", "inside a mapping", lambda c: c.iommu.unmap(c.buf.iova + PAGE),
         ValueError, "no DMA mapping starts at"),
    Case("DmaBuffer.write", "data", "one byte too many",
         lambda c: c.buf.write(bytes(BUF + 1)), ValueError, "do not fit in the 0x2000-byte"),
    Case("DmaBuffer.write", "offset", "-1", lambda c: c.buf.write(b"x", -1), ValueError,
         "do not fit"),
    Case("DmaBuffer.read", "length", "past the end", lambda c: c.buf.read(0, BUF + 1),
         ValueError, "do not fit"),
    Case("DmaBuffer.read", "offset", "-4", lambda c: c.buf.read(-4), ValueError, "do not fit"),
    Case("DmaBuffer.read", "offset", "str", lambda c: c.buf.read("0"), TypeError,
         "must be ints"),
    Case("DmaBuffer.u32", "offset", "the buffer's size", lambda c: c.buf.u32(BUF), ValueError,
         "do not fit"),
    Case("Edu.factorial", "n", "-1", lambda c: c.edu.factorial(-1), ValueError,
         "must fit in 32 bits"),
    Case("Edu.factorial", "n", "2**32", lambda c: c.edu.factorial(1 << 32), ValueError,
         "must fit in 32 bits"),
    Case("Edu.to_device", "length", "past the buffer", lambda c: c.edu.to_device(c.buf, BUF + 1),
         ValueError, "exceed the 0x2000-byte buffer"),
    Case("Edu.to_device", "offset", "-1", lambda c: c.edu.to_device(c.buf, 16, offset=-1),
         ValueError, "exceed the"),
    Case("Edu.to_device", "device_offset", "past edu's buffer",
         lambda c: c.edu.to_device(c.buf, PAGE, device_offset=100), ValueError,
         "leaves the first 4095 bytes"),
    Case("Edu.from_device", "length", "0", lambda c: c.edu.from_device(c.buf, 0), ValueError,
         "leaves the first"),
    Case("Edu.dma_raw", "ram_iova", "above the 28-bit mask",
         lambda c: c.edu.dma_raw(to_ram=True, ram_iova=1 << 28, length=16), ValueError,
         "above edu's 28-bit DMA mask"),
    # use after close, and closing twice
    Case("Device.close", "(twice)", "double close", lambda c: _closed_device(c).close(), None,
         closes=True),
    Case("Device.fileno", "(after close)", "use after close",
         lambda c: _closed_device(c).fileno(), ClosedError, "is closed", closes=True),
    Case("Region.read32", "(after close)", "use after close",
         lambda c: (_closed_device(c), c.bar0.read32(0)), ClosedError, "is closed",
         closes=True),
    Case("Config.read16", "(after close)", "use after close",
         lambda c: (_closed_device(c), c.config.read16(0)), ClosedError, "is closed",
         closes=True),
    Case("Device.region", "(after close)", "use after close",
         lambda c: _closed_device(c).region(1), ClosedError, "is closed", closes=True),
    Case("Device.enable_irqs", "(after close)", "use after close",
         lambda c: _closed_device(c).enable_irqs("msi"), ClosedError, "is closed",
         closes=True),
    Case("Device.dma_alloc", "(after close)", "use after close",
         lambda c: _closed_device(c).dma_alloc(PAGE), ClosedError, "is closed", closes=True),
    Case("DmaBuffer.free", "(twice)", "double free", lambda c: _freed_buffer(c).free(), None,
         closes=True),
    Case("DmaBuffer.read", "(after free)", "use after free", lambda c: _freed_buffer(c).read(),
         ClosedError, "was freed", closes=True),
    Case("DmaBuffer.write", "(after free)", "use after free",
         lambda c: _freed_buffer(c).write(b"x"), ClosedError, "was freed", closes=True),
    Case("DmaBuffer.u32", "(after free)", "use after free", lambda c: _freed_buffer(c).u32(0),
         ClosedError, "was freed", closes=True),
    Case("Edu.to_device", "buf", "a freed buffer",
         lambda c: c.edu.to_device(_freed_buffer(c), 16), ClosedError, "was freed", closes=True),
    Case("Interrupt.close", "(twice)", "double close", lambda c: _closed_irq(c).close(), None,
         closes=True),
    Case("Interrupt.wait", "(after close)", "use after close",
         lambda c: _closed_irq(c).wait(0), ClosedError, "is closed", closes=True),
    Case("Interrupt.fileno", "(after close)", "use after close",
         lambda c: _closed_irq(c).fileno(), ClosedError, "is closed", closes=True),
    Case("Iommu.close", "(twice, device open)", "double close",
         lambda c: _closed_lab_iommu(c).close(), None, closes=True),
    Case("Iommu.map", "(after close)", "use after close, a device was open",
         lambda c: _closed_lab_iommu(c).map(c.buf.address, PAGE), ClosedError, "is closed",
         closes=True),
    Case("Region.read32", "(Iommu closed)", "use after the Iommu's close",
         lambda c: (_closed_lab_iommu(c), c.bar0.read32(0)), ClosedError, "is closed",
         closes=True),
]
# fmt: on
for _case in LAB:
    object.__setattr__(_case, "tier", "lab")

# -- the NVMe controller in the lab (c: a Controller brought up with one I/O queue) ---------

# fmt: off
NVME: list[Case] = [
    Case("nvme.Controller.read", "lba", "-1", lambda c: c.read(-1, 1), ValueError,
         "the LBA is >= 0"),
    Case("nvme.Controller.read", "blocks", "0", lambda c: c.read(0, 0), ValueError,
         "blocks >= 1"),
    Case("nvme.Controller.read", "blocks", "huge: 2**40", lambda c: c.read(0, 1 << 40),
         ValueError, "in all"),
    Case("nvme.Controller.read", "lba", "str", lambda c: c.read("0", 1), ValueError,
         "the LBA is >= 0"),
    Case("nvme.Controller.read", "nsid", "99", lambda c: c.read(0, 1, nsid=99), ValueError,
         "has no active namespace 99"),
    Case("nvme.Controller.write", "data", "not whole blocks", lambda c: c.write(0, bytes(100)),
         ValueError, "not a whole number of 512-byte blocks"),
    Case("nvme.Controller.write", "data", "empty", lambda c: c.write(0, b""), ValueError,
         "not a whole number"),
    Case("nvme.Controller.write_zeroes", "lba", "-1", lambda c: c.write_zeroes(-1, 1),
         ValueError, "the LBA is >= 0"),
    Case("nvme.Controller.write_zeroes", "blocks", "0", lambda c: c.write_zeroes(0, 0),
         ValueError, "blocks >= 1"),
    Case("nvme.Controller.close", "(twice)", "double close",
         lambda c: (c.close(), c.close()), None, closes=True),
    Case("nvme.Controller.read", "(after close)", "use after close",
         lambda c: (c.close(), c.read(0, 1)), pyvfio.PyvfioError, "is closed", closes=True),
    Case("nvme.Controller.smart_log", "(after close)", "use after close",
         lambda c: (c.close(), c.smart_log()), pyvfio.PyvfioError, "is closed", closes=True),
]
# fmt: on
for _case in NVME:
    object.__setattr__(_case, "tier", "nvme")

# -- the command line ------------------------------------------------------------------------

S = "{snap}"
# fmt: off
CLI: list[CliCase] = [
    CliCase(("bogus",), "command", "unknown", 2, "No such command 'bogus'"),
    CliCase(("ls", "--bogus"), "option", "unknown", 2, "No such option: --bogus"),
    CliCase(("ls", "--group", "abc", "--root", S), "--group", "not a number", 2,
            "Invalid value for '--group'"),
    CliCase(("ls", "--group", "-1", "--root", S), "--group", "-1", 2, "count from 0"),
    CliCase(("ls", "--class", "bogus", "--root", S), "--class", "unknown", 2, "unknown class"),
    CliCase(("ls", "--vendor", "zzzz", "--root", S), "--vendor", "not hex", 2,
            "is not a hex ID"),
    CliCase(("ls", "--vendor", "123456", "--root", S), "--vendor", "above ffff", 2,
            "at most 4 hex digits"),
    CliCase(("ls", "--root", "/nonexistent"), "--root", "missing", 2, "no snapshot at"),
    CliCase(("ls", "--root", "/etc/hostname"), "--root", "not a snapshot", 2,
            "is not a snapshot"),
    CliCase(("show", "--root", S), "address", "missing", 2, "Missing argument 'BDF'"),
    CliCase(("show", "zz:00.0", "--root", S), "address", "malformed", 2,
            "is not a PCI address"),
    CliCase(("show", NO_DEVICE, "--root", S), "address", "no such device", 2, "no PCI device"),
    CliCase(("doctor", "--memlock", "abc", "--root", S), "--memlock", "not a size", 2,
            "is not a size"),
    CliCase(("doctor", "--memlock", "-5G", "--root", S), "--memlock", "negative", 2,
            "between 0 and 16E"),
    CliCase(("doctor", "--memlock", "inf", "--root", S), "--memlock", "inf", 2, "is not a size"),
    CliCase(("doctor", "--memlock", "99999999T", "--root", S), "--memlock", "huge", 2,
            "between 0 and 16E"),
    CliCase(("doctor", "zz:00.0", "--root", S), "addresses", "malformed", 2,
            "is not a PCI address"),
    CliCase(("doctor", NO_DEVICE, "--root", S), "addresses", "no such device", 2,
            "no PCI device"),
    CliCase(("bind",), "addresses", "missing", 2, "Missing argument"),
    CliCase(("bind", "zz:00.0"), "addresses", "malformed", 2, "is not a PCI address"),
    CliCase(("bind", "00:1f.9"), "addresses", "function 9", 2, "function 9 is out of range"),
    CliCase(("bind", ""), "addresses", "empty", 2, "is not a PCI address"),
    CliCase(("bind", NO_DEVICE), "addresses", "no such device", 2, "no PCI device"),
    CliCase(("bind", "--dry-run", NO_DEVICE), "addresses", "no such device (--dry-run)", 2,
            "no PCI device"),
    CliCase(("unbind",), "addresses", "missing", 2, "Missing argument"),
    CliCase(("unbind", "00:1f.9"), "addresses", "function 9", 2, "function 9 is out of range"),
    CliCase(("unbind", NO_DEVICE), "addresses", "no such device", 2, "no PCI device"),
    CliCase(("restore",), "addresses", "none and no --all", 2, "or use --all"),
    CliCase(("restore", "zz:00.0"), "addresses", "malformed", 2, "is not a PCI address"),
    CliCase(("restore", "--all", "zz:00.0"), "addresses", "malformed with --all", 2,
            "is not a PCI address"),
    CliCase(("sriov",), "address", "missing", 2, "Missing argument 'BDF'"),
    CliCase(("sriov", "zz:00.0", "--vfs", "1"), "address", "malformed", 2,
            "is not a PCI address"),
    CliCase(("sriov", NO_DEVICE, "--vfs", "1"), "address", "no such device", 2, "no PCI device"),
    CliCase(("sriov", NO_DEVICE, "--vfs", "two"), "--vfs", "not a number", 2,
            "Invalid value for '--vfs'"),
    CliCase(("vm", "qemu", "00:10.0", "--vf-token", "nope", "--dry-run"), "--vf-token",
            "not a UUID", 2, "is not a UUID"),
    CliCase(("reset-method", NO_DEVICE), "methods", "missing", 2, "Missing argument 'METHOD"),
    CliCase(("reset-method", "zz:00.0", "flr"), "address", "malformed", 2,
            "is not a PCI address"),
    CliCase(("reset-method", NO_DEVICE, "flr"), "address", "no such device", 2, "no PCI device"),
    CliCase(("rom", NO_DEVICE), "--out", "missing", 2, "Missing option '--out'"),
    CliCase(("rom", "zz:00.0", "--out", "{tmp}/x.rom"), "address", "malformed", 2,
            "is not a PCI address"),
    CliCase(("rom", NO_DEVICE, "--out", "{tmp}/x.rom"), "address", "no such device", 2,
            "no PCI device"),
    CliCase(("snapshot",), "out", "missing", 2, "Missing argument 'TARBALL'"),
    CliCase(("snapshot", ""), "out", "empty", 2, "name the tarball to write"),
    CliCase(("snapshot", "/nonexistent/dir/x.tar.gz"), "out", "folder missing", 2,
            "cannot write /nonexistent/dir/x.tar.gz"),
    CliCase(("snapshot", "{tmp}"), "out", "a folder", 2, "is a folder: name the tarball"),
    CliCase(("persist", "--distro", "bogus", "00:10.0", "--root", "{tmp}"), "--distro",
            "unknown", 2, "use one of debian, fedora, arch"),
    CliCase(("persist", "--distro", "debian", "zz:00.0", "--root", "{tmp}"), "addresses",
            "malformed", 2, "is not a PCI address"),
    CliCase(("persist", "--distro", "debian", "--undo", "--root", "{tmp}"), "--undo",
            "nothing applied", 1, "nothing to undo"),
    CliCase(("persist", "00:10.0", "--force", "--root", "{tmp}"), "--root",
            "a tree without sys/", 2, "has no sys/bus/pci/devices/ to read"),
    CliCase(("vm", "qemu"), "args", "missing", 2, "name the devices to pass through"),
    CliCase(("vm", "qemu", "zz:00.0", "--dry-run", "--root", S), "args", "malformed address",
            2, "is not a PCI address"),
    CliCase(("vm", "qemu", "00:10.0", "--memory", "abc", "--dry-run", "--root", S), "--memory",
            "not a size", 2, "is not a size"),
    CliCase(("vm", "qemu", "00:10.0", "--memory", "-4G", "--dry-run", "--root", S),
            "--memory", "negative", 2, "at least 16M"),
    CliCase(("vm", "qemu", "00:10.0", "--memory", "inf", "--dry-run", "--root", S),
            "--memory", "inf", 2, "is not a size"),
    CliCase(("vm", "qemu", "00:10.0", "--accel", "bogus", "--dry-run", "--root", S),
            "--accel", "unknown", 2, "use kvm, tcg or auto"),
    CliCase(("vm", "qemu", "00:10.0", "--timeout", "x", "--dry-run", "--root", S),
            "--timeout", "not a number", 2, "Invalid value for '--timeout'"),
    CliCase(("vm", "qemu", "00:10.0", "--check", "--root", S), "--root",
            "with --check", 2, "only --dry-run works on one"),
    CliCase(("vm", "qemu", "00:10.0", "--romfile", "/x.rom", "--dry-run", "--root", S),
            "--romfile", "not a GPU", 2, "apply to GPUs"),
    CliCase(("vm", "qemu", "00:10.0", "--run-as", "pyvfio-no-such-user", "--dry-run",
             "--root", S), "--run-as", "unknown user", 2, "no such user on this host"),
    CliCase(("vm", "qemu", "00:10.0", "--run-as", "nobody\n-runas root", "--dry-run",
             "--root", S), "--run-as", "a newline", 2, "control character"),
    CliCase(("vm", "qemu", "00:10.0", "--run-as", "", "--dry-run", "--root", S), "--run-as",
            "empty", 2, "is empty"),
    CliCase(("vm", "libvirt", "zz:00.0", "--root", S), "addresses", "malformed", 2,
            "is not a PCI address"),
    CliCase(("vm", "libvirt", "00:10.0", "--domain", "", "--root", S), "--domain", "empty", 2,
            "is not a libvirt domain name"),
    CliCase(("vm", "libvirt", "00:10.0", "--domain", "a/b", "--root", S), "--domain",
            "with a slash", 2, "is not a libvirt domain name"),
    CliCase(("vm", "libvirt", "00:10.0", "--domain", "vm\x1b[2J", "--root", S), "--domain",
            "a control character", 2, "control character"),
    CliCase(("vm", "libvirt", "00:10.0", "--domain", "x", "--memory", "lots", "--root", S),
            "--memory", "not a size", 2, "is not a size"),
    CliCase(("nvme", "identify", "zz:00.0"), "address", "malformed", 2, "is not a PCI address"),
    CliCase(("nvme", "identify", NO_DEVICE), "address", "no such device", 2, "no PCI device"),
    CliCase(("nvme", "smart", NO_DEVICE), "address", "no such device", 2, "no PCI device"),
    CliCase(("nvme", "read", "00:11.0", "--lba", "-1", "--count", "1", "-o", "{tmp}/out"),
            "--lba", "-1", 2, "--lba must be >= 0"),
    CliCase(("nvme", "read", "00:11.0", "--lba", "0", "--count", "0", "-o", "{tmp}/out"),
            "--count", "0", 2, "--count >= 1"),
    CliCase(("nvme", "read", "00:11.0", "--lba", "x", "--count", "1", "-o", "{tmp}/out"),
            "--lba", "not a number", 2, "Invalid value for '--lba'"),
    CliCase(("nvme", "read", "00:11.0", "--lba", "0", "-o", "{tmp}/out"), "--count",
            "missing", 2, "Missing option '--count'"),
    CliCase(("nvme", "write", "00:11.0", "--lba", "0", "-i", "/nonexistent"), "--input",
            "missing file", 2, "cannot read /nonexistent"),
    CliCase(("lab", "run", "--device", "bogus", "--", "true"), "--device", "unknown", 2,
            "unknown lab device 'bogus'"),
    CliCase(("lab", "run", "--device", "edu@nowhere", "--", "true"), "--device",
            "unknown place", 2, "unknown lab device 'edu@nowhere'"),
    CliCase(("lab", "run", "--accel", "bogus", "--", "true"), "--accel", "unknown", 2,
            "unknown accelerator 'bogus'"),
    CliCase(("lab", "run", "--timeout", "-5", "--", "true"), "--timeout", "-5", 2,
            "above 0"),
    CliCase(("lab", "run", "--iommu", "arm", "--", "true"), "--iommu", "unknown", 2,
            "unknown IOMMU 'arm': use one of intel, amd, virtio"),
    CliCase(("lab", "run", "--iommu", "virtio", "--", "true"), "--iommu",
            "virtio on Debian's kernel", 2, "--iommu virtio needs the lab's kernel"),
    CliCase(("lab", "shell", "--iommu", "virtio"), "--iommu", "virtio on Debian's kernel",
            2, "--iommu virtio needs the lab's kernel"),
    CliCase(("lab", "run", "--kernel", "/nonexistent", "--", "true"), "--kernel",
            "missing file", 1, "does not exist: give a bzImage path"),
    CliCase(("demo", "--kernel", "/nonexistent"), "--kernel", "missing file", 1,
            "does not exist: give a bzImage path"),
    CliCase(("serve", "edu", "--socket", "{tmp}/edu.sock", "--mode", "999"), "--mode",
            "not octal", 2, "is not octal permission bits"),
    CliCase(("serve", "edu", "--socket", "{tmp}/edu.sock", "--mode", "1777"), "--mode",
            "above 777", 2, "is not octal permission bits"),
    CliCase(("serve", "edu", "--socket", "{tmp}/edu.sock", "--group", "no-such-group-here"),
            "--group", "unknown", 2, "no group 'no-such-group-here' on this host"),
    CliCase(("export", "nova", "--root", S), "selection", "none", 2, "choose what to offer"),
    CliCase(("export", "nova", "--all-bound", "--root", S), "selection", "nothing matches", 2,
            "no device matches --all-bound"),
    CliCase(("export", "nova", "--device", "00:1f.2", "--root", S), "--device",
            "group not viable", 2, "IOMMU group 14 of 0000:00:1f.2 is not viable"),
    CliCase(("export", "nova", "--device", "00:10.0", "--root", S), "--device",
            "not on vfio-pci", 2, "not bound to any driver, not vfio-pci: bind it first"),
    CliCase(("export", "nova", "--group", "99", "--root", S), "--group", "missing", 2,
            "no IOMMU group 99 on this host"),
    CliCase(("export", "nova", "--all-bound", "--resource-class", "gpu", "--root", S),
            "--resource-class", "not CUSTOM_", 2, "write a Placement custom resource class"),
    CliCase(("export", "nova", "--all-bound", "--name", "10de:1b80=a:b", "--root", S),
            "--name", "has ':'", 2, "a flavor writes NAME:COUNT"),
    CliCase(("export", "kubevirt", "--ids", "10de:zz", "--root", S), "--ids", "not hex", 2,
            "is not a hex ID"),
    CliCase(("export", "kubevirt", "--all-bound", "--name", "10de:1b80=gpu", "--root", S),
            "--name", "no domain", 2, "write DOMAIN/NAME"),
]
# fmt: on

ALL: list[Case | CliCase] = [*UNIT, *LAB, *NVME, *CLI]
