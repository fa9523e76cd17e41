"""Names of PCI vendors, devices, subsystems and classes, from the system's ``pci.ids``.

Debian ships the database in the ``pci.ids`` package (``/usr/share/misc/pci.ids``);
Fedora and others in ``hwdata`` (``/usr/share/hwdata/pci.ids``). The first that exists is
parsed on first use and cached. Every lookup returns None when the ID is unknown or no
database is installed, so callers fall back to printing numbers, as lspci does::

    >>> device_name(0x8086, 0x10C9)
    '82576 Gigabit Network Connection'

:func:`system_names` answers the same lookups without parsing the whole file (it
parses only the blocks of the vendors asked for, and the classes): what a command that
names a few devices wants, as ``pyvfio ls`` does.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = [
    "PCI_IDS_PATHS",
    "PciIds",
    "PciIdsFile",
    "class_name",
    "device_name",
    "subsystem_name",
    "system_ids",
    "system_names",
    "vendor_name",
]

PCI_IDS_PATHS: Final = (Path("/usr/share/misc/pci.ids"), Path("/usr/share/hwdata/pci.ids"))


@dataclass(frozen=True, slots=True)
class PciIds:
    """A parsed ``pci.ids``: names keyed by numeric IDs."""

    vendors: Mapping[int, str]
    devices: Mapping[tuple[int, int], str]
    subsystems: Mapping[tuple[int, int, int, int], str]
    classes: Mapping[tuple[int, ...], str]  # (base,), (base, sub), (base, sub, prog-if)
    path: Path | None = None

    @classmethod
    def load(cls, path: Path) -> PciIds:
        """Parse the file at ``path``; OSError if it cannot be read."""
        with path.open(encoding="utf-8", errors="replace") as lines:
            return cls.parse(lines, path)

    @classmethod
    def parse(cls, lines: Iterable[str], path: Path | None = None) -> PciIds:
        """Parse ``pci.ids`` text: tab depth says vendor/device/subsystem or class level.

        Lines that do not fit the format are skipped: a damaged entry must not cost
        every other name.
        """
        vendors: dict[int, str] = {}
        devices: dict[tuple[int, int], str] = {}
        subsystems: dict[tuple[int, int, int, int], str] = {}
        classes: dict[tuple[int, ...], str] = {}
        vendor = device = base = sub = None
        in_classes = False
        for raw_line in lines:
            line = raw_line.rstrip("\n")
            if not line or line.startswith("#"):
                continue
            try:
                if line.startswith("C "):  # "C 06  Bridge"
                    in_classes = True
                    base, sub = int(line[2:4], 16), None
                    classes[(base,)] = line[4:].strip()
                elif not line.startswith("\t"):  # "8086  Intel Corporation"
                    in_classes = False
                    vendor, device = int(line[:4], 16), None
                    vendors[vendor] = line[4:].strip()
                elif in_classes:
                    if base is None:
                        continue
                    if line.startswith("\t\t"):  # "\t\t00  Normal decode"
                        if sub is not None:
                            classes[(base, sub, int(line[2:4], 16))] = line[4:].strip()
                    else:  # "\t04  PCI bridge"
                        sub = int(line[1:3], 16)
                        classes[(base, sub)] = line[3:].strip()
                elif vendor is None:
                    continue
                elif line.startswith("\t\t"):  # "\t\t17aa 2233  ThinkPad ..."
                    if device is not None:
                        key = (vendor, device, int(line[2:6], 16), int(line[7:11], 16))
                        subsystems[key] = line[11:].strip()
                else:  # "\t9d10  Sunrise Point-LP PCI Express Root Port #1"
                    device = int(line[1:5], 16)
                    devices[(vendor, device)] = line[5:].strip()
            except ValueError:
                continue
        return cls(vendors, devices, subsystems, classes, path)

    def vendor_name(self, vendor_id: int) -> str | None:
        return self.vendors.get(vendor_id)

    def device_name(self, vendor_id: int, device_id: int) -> str | None:
        return self.devices.get((vendor_id, device_id))

    def subsystem_name(
        self, vendor_id: int, device_id: int, subsystem_vendor_id: int, subsystem_id: int
    ) -> str | None:
        """The name pci.ids gives this subsystem of this device, if any."""
        return self.subsystems.get((vendor_id, device_id, subsystem_vendor_id, subsystem_id))

    def class_name(
        self, base_class: int, subclass: int | None = None, prog_if: int | None = None
    ) -> str | None:
        """The name at the level asked for: base class, subclass, or programming interface."""
        key: tuple[int, ...] = (base_class,)
        if subclass is not None:
            key += (subclass,)
            if prog_if is not None:
                key += (prog_if,)
        return self.classes.get(key)


#: A line that starts a vendor or a class (not indented, not a comment, not empty):
#: the end of the block above it.
_TOP_LINE = re.compile(rb"\n[^\t#\n]")
#: A line indented once (a device, or a subclass): the end of the one above it.
_SECOND_LINE = re.compile(rb"\n\t[^\t]")


class PciIdsFile:
    """The lookups of :class:`PciIds` on a ``pci.ids`` read as bytes, without parsing it.

    Each lookup searches the bytes for the lines it needs (pci.ids spells IDs as
    lower-case hex at the start of a line: ``8086  Intel Corporation``, then
    ``\t10c9  82576 ...`` indented below it) and parses only those lines with
    :meth:`PciIds.parse`, so that naming a few devices costs a few searches of the
    bytes instead of a parse of the whole file (tens of thousands of lines, most of
    ``pyvfio ls``'s time). Where an ID has several lines the last counts, as in the
    full parse; a unit test compares the answers with it over the whole database.
    """

    __slots__ = ("_blocks", "_data", "_subsystems", "path")

    def __init__(self, data: bytes, path: Path | None = None) -> None:
        # Universal newlines, as a file read in text mode; every line follows a newline.
        self._data = b"\n" + data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        self.path = path
        self._blocks: dict[bytes, list[tuple[int, int]]] = {}
        self._subsystems: dict[int, PciIds] = {}

    @classmethod
    def load(cls, path: Path) -> PciIdsFile:
        """Read the file at ``path``; OSError if it cannot be read."""
        return cls(path.read_bytes(), path)

    def _top(self, key: bytes) -> list[tuple[int, int]]:
        """Each block of a vendor or class line beginning ``key``: (its newline, block end)."""
        blocks = self._blocks.get(key)
        if blocks is None:
            blocks = self._find(key, 0, len(self._data), _TOP_LINE)
            self._blocks[key] = blocks
        return blocks

    def _find(
        self, key: bytes, start: int, end: int, stop: re.Pattern[bytes]
    ) -> list[tuple[int, int]]:
        data, found, pos = self._data, [], start
        while (pos := data.find(key, pos, end)) >= 0:
            after = stop.search(data, pos + len(key), end)
            found.append((pos, after.start() if after else end))
            pos += len(key)
        return found

    def _line(self, newline: int) -> str:
        end = self._data.find(b"\n", newline + 1)
        return self._data[newline + 1 : end if end >= 0 else None].decode("utf-8", "replace")

    def _nested(
        self, blocks: list[tuple[int, int]], key: bytes
    ) -> tuple[str, str, tuple[int, int]] | None:
        """The last line beginning ``key`` inside ``blocks``: its block's first line, it,
        and its own block (up to the next line indented once)."""
        for start, end in reversed(blocks):
            pos = self._data.rfind(key, start, end)
            if pos >= 0:
                after = _SECOND_LINE.search(self._data, pos + len(key), end)
                return self._line(start), self._line(pos), (pos, after.start() if after else end)
        return None

    def vendor_name(self, vendor_id: int) -> str | None:
        blocks = self._top(b"\n%04x" % vendor_id)
        return PciIds.parse([self._line(blocks[-1][0])]).vendor_name(vendor_id) if blocks else None

    def device_name(self, vendor_id: int, device_id: int) -> str | None:
        found = self._nested(self._top(b"\n%04x" % vendor_id), b"\n\t%04x" % device_id)
        return PciIds.parse(found[:2]).device_name(vendor_id, device_id) if found else None

    def subsystem_name(
        self, vendor_id: int, device_id: int, subsystem_vendor_id: int, subsystem_id: int
    ) -> str | None:
        """The name pci.ids gives this subsystem of this device, if any."""
        table = self._subsystems.get(vendor_id)
        if table is None:  # rarely asked: the vendor's blocks parsed whole
            blocks = self._top(b"\n%04x" % vendor_id)
            text = b"".join(self._data[start + 1 : end + 1] for start, end in blocks)
            table = PciIds.parse(text.decode("utf-8", "replace").split("\n"))
            self._subsystems[vendor_id] = table
        return table.subsystem_name(vendor_id, device_id, subsystem_vendor_id, subsystem_id)

    def class_name(
        self, base_class: int, subclass: int | None = None, prog_if: int | None = None
    ) -> str | None:
        """The name at the level asked for: base class, subclass, or programming interface."""
        blocks = self._top(b"\nC %02x" % base_class)
        if not blocks:
            return None
        if subclass is None:
            return PciIds.parse([self._line(blocks[-1][0])]).class_name(base_class)
        if prog_if is None:
            found = self._nested(blocks, b"\n\t%02x" % subclass)
            return PciIds.parse(found[:2]).class_name(base_class, subclass) if found else None
        for start, end in reversed(blocks):  # the last prog-if line under any such subclass
            for sub_start, sub_end in reversed(
                self._find(b"\n\t%02x" % subclass, start, end, _SECOND_LINE)
            ):
                pos = self._data.rfind(b"\n\t\t%02x" % prog_if, sub_start, sub_end)
                if pos >= 0:
                    lines = [self._line(start), self._line(sub_start), self._line(pos)]
                    return PciIds.parse(lines).class_name(base_class, subclass, prog_if)
        return None


@functools.cache
def system_names() -> PciIdsFile | None:
    """The system's database (first of ``PCI_IDS_PATHS`` that reads) for lookups that
    parse only what they need, or None."""
    for path in PCI_IDS_PATHS:
        try:
            return PciIdsFile.load(path)
        except OSError:
            continue
    return None


@functools.cache
def system_ids() -> PciIds | None:
    """The system's database (first of ``PCI_IDS_PATHS`` that reads), or None."""
    for path in PCI_IDS_PATHS:
        try:
            return PciIds.load(path)
        except OSError:
            continue
    return None


def vendor_name(vendor_id: int) -> str | None:
    ids = system_ids()
    return ids.vendor_name(vendor_id) if ids else None


def device_name(vendor_id: int, device_id: int) -> str | None:
    ids = system_ids()
    return ids.device_name(vendor_id, device_id) if ids else None


def subsystem_name(
    vendor_id: int, device_id: int, subsystem_vendor_id: int, subsystem_id: int
) -> str | None:
    ids = system_ids()
    if ids is None:
        return None
    return ids.subsystem_name(vendor_id, device_id, subsystem_vendor_id, subsystem_id)


def class_name(
    base_class: int, subclass: int | None = None, prog_if: int | None = None
) -> str | None:
    ids = system_ids()
    return ids.class_name(base_class, subclass, prog_if) if ids else None
