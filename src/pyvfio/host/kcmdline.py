"""The IOMMU options of a kernel command line: which VFIO needs, which are there already,
and which keep the IOMMU off.

The kernel reads ``intel_iommu=`` and ``iommu=`` once per occurrence, each value a comma
list (``intel_iommu_setup()``, ``iommu_setup()`` walk the items), so
``intel_iommu=igfx_off intel_iommu=on`` is ``intel_iommu=igfx_off,on``, and where both
``on`` and ``off`` appear the last one wins. An option to add is therefore added as a
word of its own: the words already there are never rewritten, and the user's items
(``igfx_off``, ``sm_on``) are kept as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pyvfio.sysfs import Sysfs

#: CPU vendors whose IOMMU is AMD-Vi (Hygon's Dhyana is AMD's design).
_AMD_VENDORS = ("AuthenticAMD", "HygonGenuine")


def is_amd(sysfs: Sysfs) -> bool:
    """Whether this host's IOMMU is AMD-Vi (``amd_iommu=``), not VT-d (``intel_iommu=``):
    an AMD or Hygon CPU, or the firmware's IVRS table (which only AMD-Vi has)."""
    if sysfs.exists("sys/firmware/acpi/tables/IVRS"):
        return True
    for line in sysfs.read_lines("proc/cpuinfo"):
        key, _, value = line.partition(":")
        if key.strip() == "vendor_id":
            return value.strip() in _AMD_VENDORS
    return False


def split(text: str) -> list[str]:
    """The words of a command line; quotes (the kernel's ``"``, GRUB's ``'`` too) keep
    spaces inside one word, as in ``acpi_osi="Windows 2015"``."""
    words: list[str] = []
    word: list[str] = []
    quote = ""
    started = False
    for c in text:
        if quote:
            word.append(c)
            if c == quote:
                quote = ""
        elif c in "\"'":
            word.append(c)
            quote = c
            started = True
        elif c.isspace():
            if started:
                words.append("".join(word))
                word, started = [], False
        else:
            word.append(c)
            started = True
    if started:
        words.append("".join(word))
    return words


def iommu_options(amd: bool) -> tuple[str, ...]:
    """What VFIO wants on the command line: AMD-Vi is on whenever the firmware enables it;
    Intel VT-d needs ``intel_iommu=on`` unless the kernel was built with
    CONFIG_INTEL_IOMMU_DEFAULT_ON. ``iommu=pt`` spares host devices the translation."""
    return ("iommu=pt",) if amd else ("intel_iommu=on", "iommu=pt")


@dataclass(frozen=True)
class Review:
    """What a command line lacks of :func:`iommu_options`, and what is in the way."""

    #: the options to add, each a word of its own
    add: tuple[str, ...]
    #: the word that switches the IOMMU off (None: nothing does)
    off: str | None
    #: a choice of the user's that pyvfio keeps (e.g. ``iommu=nopt``)
    kept: str | None = None


def review(words: Sequence[str], amd: bool) -> Review:
    """Compare ``words`` (one command line) with what VFIO wants on this CPU vendor."""
    vendor_key = "amd_iommu" if amd else "intel_iommu"
    off: str | None = None
    vendor_on: str | None = None  # the word that decides on/off last, and how
    vendor_state = ""
    passthrough = ""
    passthrough_word = ""
    for word in words:
        name, eq, value = word.partition("=")
        if not eq:
            continue
        items = [i.strip("\"'") for i in value.split(",")]
        if name == "iommu":
            if "off" in items:
                off = word  # no IOMMU driver starts (x86 no_iommu), either vendor
            for item in items:
                if item in ("pt", "nopt"):
                    passthrough, passthrough_word = item, word
        elif name == "iommu.passthrough":
            on = value.strip("\"'").lower() in ("1", "y", "yes", "on", "true")
            passthrough, passthrough_word = ("pt" if on else "nopt"), word
        elif name == vendor_key:
            for item in items:
                if item in ("on", "off"):  # amd_iommu has "off" only; the last one wins
                    vendor_state, vendor_on = item, word
    if vendor_state == "off" and off is None:
        off = vendor_on
    if off is not None:
        return Review((), off)
    add: list[str] = []
    if not amd and vendor_state != "on":
        add.append("intel_iommu=on")
    if passthrough == "":
        add.append("iommu=pt")
    kept = passthrough_word if passthrough == "nopt" else None
    return Review(tuple(add), None, kept)
