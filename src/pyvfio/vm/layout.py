"""Where each passed device goes in the guest: one PCIe root port per physical device.

QEMU and libvirt both want a passed function on a PCIe port of a q35 guest (a device
on the root bus is an integrated endpoint: no link, no hotplug, and guest drivers that
look at the link get confused). The functions of one physical device stay functions of
one guest slot, with ``multifunction=on`` on function 0, because drivers expect them
together (a GPU's driver finds its HDMI audio at function 1 of the same slot). An
SR-IOV VF is a device of its own: a port of its own, as function 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pyvfio.errors import InvalidAddressError
from pyvfio.host import details, inventory
from pyvfio.host.details import Resource
from pyvfio.host.inventory import PciDeviceInfo
from pyvfio.host.sysfs import LIVE, Sysfs
from pyvfio.pci.address import normalize

#: PCI base class 0x03: display controller; 0x0300 is VGA-compatible (legacy VGA ranges).
DISPLAY_CLASS = 0x03
VGA_SUBCLASS = 0x0300


@dataclass(frozen=True)
class PassedDevice:
    """One host function and where the guest sees it: root port ``port``, ``function``."""

    info: PciDeviceInfo
    port: int
    function: int
    multifunction: bool
    bars: tuple[Resource, ...]
    #: The PF of an SR-IOV VF (None for any other device).
    physical_function: str | None = None

    @property
    def address(self) -> str:
        return self.info.address

    @property
    def qdev_id(self) -> str:
        """The id QEMU gives the device (``query-pci`` reports it back as ``qdev_id``)."""
        return f"hostdev{self.port}-{self.function}"

    @property
    def is_gpu(self) -> bool:
        return self.info.class_code >> 16 == DISPLAY_CLASS

    @property
    def is_vga(self) -> bool:
        return self.info.class_code >> 8 == VGA_SUBCLASS

    def __str__(self) -> str:
        return f"{self.info} -> guest port {self.port}, function {self.function}"


def _slot(address: str) -> str:
    return address.rsplit(".", 1)[0]


def layout(addresses: Sequence[str], sysfs: Sysfs = LIVE) -> tuple[PassedDevice, ...]:
    """The guest placement of ``addresses`` (bad input raises; nothing is changed).

    Functions keep their numbers when function 0 is among them; otherwise they are
    renumbered from 0, since a guest scans a slot only when function 0 answers.
    """
    if not addresses:
        raise InvalidAddressError("name at least one PCI address, e.g. 0000:01:00.0")
    named = list(dict.fromkeys(normalize(a) for a in addresses))
    infos = {a: inventory.device_info(a, sysfs) for a in named}
    for info in infos.values():
        if info.is_bridge:
            raise ValueError(
                f"{info.address} is a PCI bridge: VFIO passes endpoints, not bridges "
                "(name the devices below it)"
            )
    pfs = {a: sysfs.link_name(f"{sysfs.device_dir(a)}/physfn") for a in named}
    slots: dict[str, list[str]] = {}
    for addr in sorted(named):
        # A VF is a device of its own (its function number is the PF's offset and
        # stride, not a sibling function): a port of its own, as function 0.
        slots.setdefault(addr if pfs[addr] else _slot(addr), []).append(addr)
    out = []
    for port, members in enumerate(slots.values(), start=1):
        functions = [int(a.rsplit(".", 1)[1], 16) for a in members]
        if 0 not in functions:
            functions = list(range(len(members)))
        for addr, function in zip(members, functions, strict=True):
            bars = tuple(r for r in details.resources(addr, sysfs) if r.index < details.ROM_INDEX)
            out.append(
                PassedDevice(
                    info=infos[addr],
                    port=port,
                    function=function,
                    multifunction=function == 0 and len(members) > 1,
                    bars=bars,
                    physical_function=pfs[addr],
                )
            )
    return tuple(out)
