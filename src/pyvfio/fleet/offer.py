"""What a node can offer a cluster engine: one device per viable IOMMU group, on vfio-pci.

Nova and KubeVirt hand out PCI devices one at a time and know nothing of IOMMU groups,
while the kernel lets a group be used by one VFIO user at a time (one container or
IOAS). A group is therefore offered as one unit: its *lead* (the lowest address among
the devices selected in it) is what the engine sees; the group's other endpoints are its
*companions*, bound to vfio-pci or to no driver so the group stays viable, and never
offered on their own (an engine could give them to a second VM, which would then fail
to open the group). A group that is not viable is offered not at all, with the reason
(`pyvfio.viability`, the kernel's rule).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pyvfio.host.inventory import IommuGroup, PciDeviceInfo, device_info, iommu_groups
from pyvfio.pci.address import normalize
from pyvfio.sysfs import LIVE, Sysfs
from pyvfio.viability import is_vfio_driver, not_viable_error

#: What kind of function a device is, as SR-IOV makes it: a physical function that can
#: have VFs, one of those virtual functions, or neither.
KINDS = ("pci", "pf", "vf")


@dataclass(frozen=True)
class Selection:
    """Which devices a user asks to offer; every kind given must match (as ``pyvfio ls``'s
    filters do), any value within a kind may. Devices and groups named explicitly must be
    offerable, or nothing is offered; the other filters skip what is not, saying why.

    ``ids`` are ``(vendor, device)`` pairs, ``device`` None for any device of the vendor;
    ``classes`` are class-code prefixes (``(0x03,)`` every display controller,
    ``(0x01, 0x08)`` NVMe). ``all_bound`` selects every device on a vfio driver.
    """

    devices: tuple[str, ...] = ()
    ids: tuple[tuple[int, int | None], ...] = ()
    classes: tuple[tuple[int, ...], ...] = ()
    groups: tuple[int, ...] = ()
    all_bound: bool = False
    #: How the user wrote it (``--class gpu``), for messages.
    text: str = ""

    @property
    def empty(self) -> bool:
        return not (self.devices or self.ids or self.classes or self.groups or self.all_bound)

    @property
    def explicit(self) -> bool:
        """Devices or groups were named: a problem with any of them refuses the export."""
        return bool(self.devices or self.groups)

    def matches(self, device: PciDeviceInfo) -> bool:
        if self.devices and device.address not in self.devices:
            return False
        if self.groups and device.iommu_group not in self.groups:
            return False
        if self.ids and not any(
            device.vendor_id == vendor and product in (None, device.device_id)
            for vendor, product in self.ids
        ):
            return False
        parts = (device.class_code >> 16, (device.class_code >> 8) & 0xFF)
        if self.classes and not any(parts[: len(want)] == want for want in self.classes):
            return False
        if self.empty:
            return False
        # --all-bound alone: what is on a vfio driver; with other filters it narrows them.
        return not self.all_bound or is_vfio_driver(device.driver)


@dataclass(frozen=True)
class Offer:
    """One IOMMU group as an engine sees it: its lead device, and the companions that go
    with it (bound beside it, never offered apart)."""

    device: PciDeviceInfo
    group: int
    #: ``pf`` if the device can have SR-IOV VFs (sriov_totalvfs > 0), ``vf`` if it is
    #: one (it has a ``physfn`` link), else ``pci``: what libvirt, so Nova, reports.
    kind: str
    physical_function: str | None
    numa_node: int | None
    companions: tuple[str, ...]

    @property
    def address(self) -> str:
        return self.device.address

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "ids": self.device.ids,
            "vendor_id": f"{self.device.vendor_id:04x}",
            "device_id": f"{self.device.device_id:04x}",
            "class_code": f"{self.device.class_code:06x}",
            "driver": self.device.driver,
            "iommu_group": self.group,
            "kind": self.kind,
            "physical_function": self.physical_function,
            "numa_node": self.numa_node,
            "companions": list(self.companions),
            "device_name": self.device.device_name,
            "vendor_name": self.device.vendor_name,
        }


@dataclass(frozen=True)
class Skipped:
    """A selected device that is not offered, and why (a filter matched it)."""

    address: str
    group: int | None
    reason: str

    def __str__(self) -> str:
        return f"{self.address}: {self.reason}"

    def to_json(self) -> dict[str, Any]:
        return {"address": self.address, "iommu_group": self.group, "reason": self.reason}


@dataclass(frozen=True)
class OfferPlan:
    """What a node offers for one selection: offers by address, and what was skipped."""

    offers: tuple[Offer, ...]
    skipped: tuple[Skipped, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "offers": [o.to_json() for o in self.offers],
            "skipped": [s.to_json() for s in self.skipped],
        }


def _kind(sysfs: Sysfs, address: str) -> tuple[str, str | None]:
    """SR-IOV's view of a device, read as Nova reads it (nova.pci.utils: ``physfn``, and
    ``sriov_totalvfs`` > 0 for a PF), so both sides call it the same."""
    rel = f"sys/bus/pci/devices/{address}"
    parent = sysfs.link_name(f"{rel}/physfn")
    if parent is not None:
        return "vf", parent
    total = sysfs.read_int(f"{rel}/sriov_totalvfs")
    return ("pf" if total else "pci"), None


def _numa_node(sysfs: Sysfs, address: str) -> int | None:
    node = sysfs.read_int(f"sys/bus/pci/devices/{address}/numa_node")
    return None if node is None or node < 0 else node  # -1: the platform says none


def _problem(device: PciDeviceInfo, group: IommuGroup | None, sysfs: Sysfs) -> str | None:
    """Why ``device`` cannot be offered (None: it can)."""
    if device.is_bridge:
        return "a PCI bridge carries no workload: select the devices behind it"
    if group is None:
        return "no IOMMU group: the IOMMU is off (pyvfio doctor says how to turn it on)"
    if not group.viable:
        # The one wording of a non-viable group, the core's (GroupNotViableError's).
        return str(not_viable_error(device.address, group.number, sysfs))
    if not is_vfio_driver(device.driver):
        on = f"bound to {device.driver}" if device.driver else "not bound to any driver"
        return f"{on}, not vfio-pci: bind it first (pyvfio bind --group {device.address})"
    return None


def plan(selection: Selection, sysfs: Sysfs = LIVE) -> OfferPlan:
    """The offers for ``selection`` on the host ``sysfs`` reads.

    ValueError (bad input, one line) when nothing is selected, nothing matches, a named
    device or group cannot be offered (the reason), or every match was skipped.
    """
    if selection.empty:
        raise ValueError(
            "choose what to offer: --device BDF, --group N, --ids VVVV:DDDD, --vendor VVVV, "
            "--class CLASS, or --all-bound for every viable device on vfio-pci"
        )
    wanted = tuple(normalize(a) for a in selection.devices)
    for address in wanted:
        sysfs.device_dir(address)  # DeviceNotFoundError (bad input) for a missing one
    selection = Selection(
        wanted,
        selection.ids,
        selection.classes,
        selection.groups,
        selection.all_bound,
        selection.text,
    )
    groups = iommu_groups(sysfs)
    by_number = {g.number: g for g in groups}
    for number in selection.groups:
        if number not in by_number:
            raise ValueError(f"no IOMMU group {number} on this host (pyvfio ls lists them)")
    chosen = _chosen(selection, sysfs, groups)
    if not chosen:
        raise ValueError(
            f"no device matches {selection.text or 'the selection'} "
            "(pyvfio ls shows the devices and their groups)"
        )
    offers: list[Offer] = []
    skipped: list[Skipped] = []
    taken: set[int] = set()
    for device in chosen:
        group = by_number.get(device.iommu_group) if device.iommu_group is not None else None
        problem = _problem(device, group, sysfs)
        if problem is not None:
            if selection.explicit:
                raise ValueError(f"{device.address} cannot be offered: {problem}")
            skipped.append(Skipped(device.address, device.iommu_group, problem))
            continue
        assert group is not None  # _problem says so otherwise
        if group.number in taken:
            continue  # a companion of the group's lead, offered with it
        taken.add(group.number)
        kind, parent = _kind(sysfs, device.address)
        companions = tuple(
            d.address for d in group.devices if d.address != device.address and not d.is_bridge
        )
        offers.append(
            Offer(
                device,
                group.number,
                kind,
                parent,
                _numa_node(sysfs, device.address),
                tuple(sorted(companions)),
            )
        )
    if not offers:
        reasons = "; ".join(map(str, skipped))
        raise ValueError(f"nothing to offer for {selection.text or 'the selection'}: {reasons}")
    return OfferPlan(tuple(offers), tuple(skipped))


def _chosen(
    selection: Selection, sysfs: Sysfs, groups: Iterable[IommuGroup]
) -> list[PciDeviceInfo]:
    """The selected devices by address; bridges only where named (to say why not)."""
    found = {}
    for group in groups:
        for device in group.devices:
            if selection.matches(device) and (
                not device.is_bridge or device.address in selection.devices
            ):
                found[device.address] = device
    # A named device outside every group (IOMMU off) still gets its reason.
    for address in selection.devices:
        if address not in found:
            found[address] = device_info(address, sysfs)
    return [found[a] for a in sorted(found)]


__all__ = ["KINDS", "Offer", "OfferPlan", "Selection", "Skipped", "plan"]
