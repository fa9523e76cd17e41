"""``pyvfio rom``: a device's option ROM, dumped through sysfs for QEMU's ``romfile=``.

The kernel shows the ROM as the device's ``rom`` file (root's, mode 0600), readable only
after ``1`` is written to it (drivers/pci/pci-sysfs.c, pci_read_rom): then it maps the
ROM BAR, checks the images' 0x55AA signatures and returns the images it found
(pci_get_rom_size), EIO when it finds none. Writing ``0`` turns the ROM BAR off again,
which is always done, whatever happened in between.

An option ROM is a chain of images (PCI Firmware Specification 3.3, 5.1): each starts
with 0x55 0xAA and points at its PCI Data Structure (``PCIR``), which gives the image's
length, its code type (x86 BIOS, EFI, ...) and whether it is the last. A GPU's ROM
typically holds a legacy BIOS image and an EFI GOP image; QEMU's NIC ROMs (iPXE's
``efi-*.rom``) the same pair.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyvfio._sizes import size_text
from pyvfio.errors import HostError
from pyvfio.host.durable import Replacement
from pyvfio.host.sysfs import LIVE, Sysfs
from pyvfio.pci.address import normalize

SIGNATURE = b"\x55\xaa"
PCIR = b"PCIR"
#: Offsets in an image's header and in its PCI Data Structure (PCI Firmware spec 5.1.1,
#: 5.1.2), and the EFI image header's (UEFI spec 14.4.2: "PCI Option ROMs").
_PCIR_POINTER = 0x18
_PCIR_VENDOR, _PCIR_DEVICE = 0x04, 0x06
_PCIR_IMAGE_LENGTH = 0x10  # in 512-byte units
_PCIR_CODE_TYPE, _PCIR_INDICATOR = 0x14, 0x15
_PCIR_LAST_IMAGE = 0x80
_EFI_SIGNATURE, _EFI_MACHINE = 0x04, 0x0C
_EFI_MAGIC = 0x0EF1
IMAGE_UNIT = 512

CODE_TYPES = {0: "x86 BIOS", 1: "Open Firmware", 2: "PA-RISC", 3: "EFI"}
EFI_MACHINES = {0x014C: "IA32", 0x0200: "Itanium", 0x0EBC: "EBC", 0x8664: "x64", 0xAA64: "AArch64"}


class RomError(HostError):
    """The device's ROM could not be read, or is not an option ROM (no 0x55AA)."""


class NoRomError(RomError, ValueError):
    """The device has no ROM to read (no ``rom`` file): bad input, exit 2."""


@dataclass(frozen=True)
class RomImage:
    """One image of an option ROM."""

    offset: int
    length: int
    code_type: int
    vendor_id: int
    device_id: int
    last: bool
    #: EFI images only: the machine type (0x8664: x64).
    efi_machine: int | None = None

    @property
    def code_name(self) -> str:
        name = CODE_TYPES.get(self.code_type, f"code type {self.code_type:#04x}")
        if self.efi_machine is not None:
            name += f" ({EFI_MACHINES.get(self.efi_machine, f'machine {self.efi_machine:#06x}')})"
        return name

    def __str__(self) -> str:
        return (
            f"{self.code_name}, {size_text(self.length)} at {self.offset:#x}, "
            f"{self.vendor_id:04x}:{self.device_id:04x}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "offset": self.offset,
            "length": self.length,
            "code_type": self.code_type,
            "code_name": self.code_name,
            "vendor_id": self.vendor_id,
            "device_id": self.device_id,
            "last": self.last,
            "efi_machine": self.efi_machine,
        }


def _u16(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 2], "little")


def parse_images(data: bytes) -> tuple[RomImage, ...]:
    """The images of an option ROM, in order; RomError unless the first starts with
    0x55AA and points at a PCI Data Structure. A chain that ends early (a later image
    without its signature) ends the list there, as the kernel's pci_get_rom_size does."""
    images: list[RomImage] = []
    offset = 0
    while offset + _PCIR_POINTER + 2 <= len(data):
        if data[offset : offset + 2] != SIGNATURE:
            if not images:
                found = data[:2].hex() or "nothing"
                raise RomError(f"not an option ROM: it starts with {found}, not the 55aa signature")
            break
        pcir = offset + _u16(data, offset + _PCIR_POINTER)
        if data[pcir : pcir + 4] != PCIR or pcir + _PCIR_INDICATOR >= len(data):
            if not images:
                raise RomError(
                    "not an option ROM: the first image has no PCI Data Structure ('PCIR')"
                )
            break
        length = _u16(data, pcir + _PCIR_IMAGE_LENGTH) * IMAGE_UNIT
        code_type = data[pcir + _PCIR_CODE_TYPE]
        machine = None
        if code_type == 3 and _u16(data, offset + _EFI_SIGNATURE) == _EFI_MAGIC:
            machine = _u16(data, offset + _EFI_MACHINE)
        last = bool(data[pcir + _PCIR_INDICATOR] & _PCIR_LAST_IMAGE)
        images.append(
            RomImage(
                offset,
                length,
                code_type,
                _u16(data, pcir + _PCIR_VENDOR),
                _u16(data, pcir + _PCIR_DEVICE),
                last,
                machine,
            )
        )
        if last or length == 0:
            break
        offset += length
    if not images:
        raise RomError(f"not an option ROM: {len(data)} bytes are too few for an image header")
    return tuple(images)


def rom_file(address: str, sysfs: Sysfs = LIVE) -> str:
    """The device's ``rom`` attribute, or NoRomError."""
    addr = normalize(address)
    rel = f"{sysfs.device_dir(addr)}/rom"
    if not sysfs.exists(rel):
        raise NoRomError(
            f"{addr} has no option ROM: the kernel shows no rom file for it (no ROM BAR; "
            "pyvfio show lists its BARs)"
        )
    return rel


def read_rom(address: str, sysfs: Sysfs = LIVE) -> bytes:
    """The ROM's bytes as the kernel returns them: ``1`` written to ``rom`` first, ``0``
    after, always. RomError when the kernel finds no image (EIO) or refuses."""
    addr = normalize(address)
    rel = rom_file(addr, sysfs)
    _switch(sysfs, rel, addr, "1")
    try:
        fd = os.open(sysfs.path(rel), os.O_RDONLY | os.O_CLOEXEC)
        try:
            chunks = []
            while chunk := os.read(fd, 1 << 16):
                chunks.append(chunk)
        finally:
            os.close(fd)
    except PermissionError as err:
        raise RomError(f"reading {addr}'s ROM: permission denied; run as root") from err
    except OSError as err:
        if err.errno == errno.EIO:
            raise RomError(
                f"{addr}'s ROM holds no valid image (the kernel found no 55aa signature; "
                "dmesg says more): some GPUs show it only before their driver has run, or "
                "only as the boot GPU"
            ) from err
        raise RomError(f"reading {addr}'s ROM failed: {err.strerror}") from err
    finally:
        _switch(sysfs, rel, addr, "0")
    return b"".join(chunks)


def _switch(sysfs: Sysfs, rel: str, addr: str, value: str) -> None:
    try:
        sysfs.write_attr(rel, value)
    except PermissionError as err:
        raise RomError(f"reading {addr}'s ROM needs root: run it with sudo") from err
    except OSError as err:
        raise RomError(f"writing {value} to /{rel} failed: {err.strerror}") from err


@dataclass(frozen=True)
class RomDump:
    """A ROM written to a file: how many bytes, and its images."""

    address: str
    path: str
    size: int
    images: tuple[RomImage, ...]

    def __str__(self) -> str:
        lines = [
            f"wrote {self.address}'s option ROM to {self.path}: {self.size} bytes "
            f"({size_text(self.size)}), {len(self.images)} image(s)"
        ]
        lines += [f"  image {n}: {image}" for n, image in enumerate(self.images)]
        lines.append(f"QEMU: -device vfio-pci,host={self.address},romfile={self.path}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "path": self.path,
            "size": self.size,
            "images": [i.to_json() for i in self.images],
        }


def dump_rom(address: str, out: str, *, force: bool = False, sysfs: Sysfs = LIVE) -> RomDump:
    """Write the device's ROM to ``out`` (through a new file renamed over it, so a failure
    leaves nothing half-written); an existing ``out`` is replaced only with ``force``.
    The ROM must start with a valid image (RomError otherwise, nothing written)."""
    addr = normalize(address)
    rom_file(addr, sysfs)
    path = Path(os.path.abspath(out))
    if path.is_dir():
        raise ValueError(f"{out} is a folder: name a file to write, e.g. {out}/{addr}.rom")
    if os.path.lexists(path) and not force:
        raise ValueError(f"{out} exists: name another file, or --force to replace it")
    try:
        new = Replacement(path, mode=0o644)
    except OSError as err:
        raise ValueError(
            f"cannot write {out}: {err.strerror}; name a file in a folder you can write"
        ) from None
    with new:
        data = read_rom(addr, sysfs)
        images = parse_images(data)
        new.file.write(data)
    return RomDump(addr, str(path), len(data), images)


@dataclass(frozen=True)
class RomInfo:
    """What ``pyvfio show`` says of the ROM: the ``rom`` file's size (the ROM BAR's)
    and the Expansion ROM Base Address register."""

    present: bool
    size: int | None
    bar_address: int | None
    bar_enabled: bool

    def __str__(self) -> str:
        if not self.present:
            return "none"
        text = size_text(self.size) if self.size else "size unknown"
        if self.bar_address is not None:
            state = "enabled" if self.bar_enabled else "disabled"
            text += f", ROM BAR at {self.bar_address:#x} [{state}]"
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "present": self.present,
            "size": self.size,
            "bar_address": self.bar_address,
            "bar_enabled": self.bar_enabled,
        }
