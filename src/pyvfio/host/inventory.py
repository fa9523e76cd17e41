"""What is on this host: PCI devices, their IOMMU groups, and each group's verdict.

Everything is read through a :class:`~pyvfio.host.sysfs.Sysfs`, so a recorded tree
gives the same answers as the live host.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pyvfio.host.journal import JournalEntry
from pyvfio.host.sysfs import LIVE, PCI_DEVICES, Sysfs
from pyvfio.pci import ids
from pyvfio.viability import blocks_group


@dataclass(frozen=True)
class PciDeviceInfo:
    """One PCI function as sysfs describes it."""

    address: str
    vendor_id: int
    device_id: int
    class_code: int
    driver: str | None
    iommu_group: int | None
    vendor_name: str | None = None
    device_name: str | None = None
    class_name: str | None = None

    @property
    def ids(self) -> str:
        return f"{self.vendor_id:04x}:{self.device_id:04x}"

    @property
    def is_bridge(self) -> bool:
        return self.class_code >> 16 == 0x06 and (self.class_code >> 8) & 0xFF == 0x04

    @property
    def blocks_group(self) -> bool:
        """Bound to a host driver that claims DMA, so its group is not viable."""
        return blocks_group(self.driver)

    def __str__(self) -> str:
        name = " ".join(filter(None, (self.vendor_name, self.device_name))) or "unknown device"
        return f"{self.address} [{self.ids}] {name} ({self.driver or 'no driver'})"

    def to_json(self) -> dict[str, Any]:
        # Field by field, not dataclasses.asdict: its deep copies dominate ``ls`` on
        # thousands of devices.
        return {
            "address": self.address,
            "vendor_id": self.vendor_id,
            "device_id": self.device_id,
            "class_code": f"{self.class_code:06x}",
            "driver": self.driver,
            "iommu_group": self.iommu_group,
            "vendor_name": self.vendor_name,
            "device_name": self.device_name,
            "class_name": self.class_name,
            "ids": self.ids,
        }


@dataclass(frozen=True)
class IommuGroup:
    """An IOMMU group, its members, and whether it can be handed to VFIO as it is."""

    number: int
    devices: tuple[PciDeviceInfo, ...]

    @property
    def blockers(self) -> tuple[PciDeviceInfo, ...]:
        return tuple(d for d in self.devices if d.blocks_group)

    @property
    def viable(self) -> bool:
        """The kernel's rule: no member on a driver that owns DMA (vfio, pci-stub,
        pcieport and driverless members are fine)."""
        return not self.blockers

    @property
    def verdict(self) -> str:
        if self.viable:
            return "viable"
        named = ", ".join(f"{d.address} on {d.driver}" for d in self.blockers)
        return f"not viable: {named}"

    def to_json(self) -> dict[str, Any]:
        return {
            "group": self.number,
            "viable": self.viable,
            "verdict": self.verdict,
            "devices": [d.to_json() for d in self.devices],
        }


def _group_number(sysfs: Sysfs, rel: str) -> int | None:
    name = sysfs.link_name(f"{rel}/iommu_group")
    return int(name) if name is not None and name.isdigit() else None


def device_info(address: str, sysfs: Sysfs = LIVE) -> PciDeviceInfo:
    rel = sysfs.device_dir(address)
    vendor = sysfs.read_int(f"{rel}/vendor", 16) or 0
    device = sysfs.read_int(f"{rel}/device", 16) or 0
    klass = sysfs.read_int(f"{rel}/class", 16) or 0
    names = ids.system_names()  # parses only the vendors asked for
    return PciDeviceInfo(
        address=rel.rsplit("/", 1)[1],
        vendor_id=vendor,
        device_id=device,
        class_code=klass,
        driver=sysfs.link_name(f"{rel}/driver"),
        iommu_group=_group_number(sysfs, rel),
        vendor_name=names.vendor_name(vendor) if names else None,
        device_name=names.device_name(vendor, device) if names else None,
        class_name=(names.class_name(klass >> 16, (klass >> 8) & 0xFF) if names else None),
    )


def devices(sysfs: Sysfs = LIVE) -> list[PciDeviceInfo]:
    """Every PCI function, by address."""
    return [device_info(addr, sysfs) for addr in sysfs.listdir(PCI_DEVICES)]


def iommu_groups(sysfs: Sysfs = LIVE) -> list[IommuGroup]:
    """Every IOMMU group with its members, by group number (empty: IOMMU off)."""
    by_addr = {d.address: d for d in devices(sysfs)}
    return [
        IommuGroup(number, tuple(by_addr[a] for a in members if a in by_addr))
        for number, members in sorted(sysfs.iommu_groups().items())
    ]


def group_of(address: str, sysfs: Sysfs = LIVE) -> IommuGroup | None:
    group = sysfs.iommu_group(address)
    if group is None:
        return None
    return IommuGroup(group, tuple(device_info(a, sysfs) for a in sysfs.group_devices(group)))


def listing_json(groups: list[IommuGroup], journal: Mapping[str, JournalEntry]) -> dict[str, Any]:
    """``pyvfio ls --json``: the groups, each device with what the bind journal says of it.

    Schema (docs/host-tools.md): ``{"groups": [{"group", "viable", "verdict", "devices":
    [{..., "journal": null | {"original_driver", "target", "step", "done", ...}}]}],
    "journal": [entries]}``.
    """
    out = []
    for group in groups:
        data = group.to_json()
        for dev in data["devices"]:
            entry = journal.get(dev["address"])
            dev["journal"] = entry.to_json() if entry else None
        out.append(data)
    return {"groups": out, "journal": [e.to_json() for e in journal.values()]}
