"""Names of PCI vendors, devices, subsystems and classes, from the system's ``pci.ids``.

Debian ships the database in the ``pci.ids`` package (``/usr/share/misc/pci.ids``);
Fedora and others in ``hwdata`` (``/usr/share/hwdata/pci.ids``). The first that exists is
parsed on first use and cached. Every lookup returns None when the ID is unknown or no
database is installed, so callers fall back to printing numbers, as lspci does::

    >>> device_name(0x8086, 0x10C9)
    '82576 Gigabit Network Connection'
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = [
    "PCI_IDS_PATHS",
    "PciIds",
    "class_name",
    "device_name",
    "subsystem_name",
    "system_ids",
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
