"""``pyvfio show``: everything a passthrough decision needs about one device.

BARs and ROM come from the ``resource`` file (sizes are not in configuration space),
capabilities and interrupts from ``config`` parsed by :mod:`pyvfio.pci.config`, reset
methods both as the kernel offers them (``reset_method``, and what it was before
``pyvfio reset-method`` changed it) and as pyvfio can confirm them from the
capabilities, with the devices a bus reset takes along; the option ROM (the ``rom``
file and the ROM BAR), ACS for every port on the way to the root complex, SR-IOV,
NUMA node, and the IOMMU group with its verdict.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from pyvfio._sizes import size_text
from pyvfio.host import inventory, iommus, resetmethod, usage
from pyvfio.host.inventory import PciDeviceInfo
from pyvfio.host.iommus import IommuUnit
from pyvfio.host.journal import JournalError
from pyvfio.host.rom import RomInfo
from pyvfio.host.sysfs import LIVE, Sysfs
from pyvfio.pci.address import normalize
from pyvfio.pci.config import (
    AccessControlServices,
    AcsFlags,
    ConfigSpace,
    ExtCapId,
    PortType,
    SrIov,
    parse_config,
)
from pyvfio.viability import bus_reset_blocker

_ADDRESS = re.compile(r"^[0-9a-f]{4,8}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")

# include/linux/ioport.h
IORESOURCE_IO = 0x100
IORESOURCE_MEM = 0x200
IORESOURCE_PREFETCH = 0x2000
IORESOURCE_MEM_64 = 0x100000
ROM_INDEX = 6

#: What the kernel requires of every port on the path for a device to get its own
#: group (drivers/pci/pci.c, REQ_ACS_FLAGS): Source Validation, Request and
#: Completion Redirect, Upstream Forwarding.
REQ_ACS_FLAGS = AcsFlags.SV | AcsFlags.RR | AcsFlags.CR | AcsFlags.UF


@dataclass(frozen=True)
class Resource:
    """A BAR or the ROM as the kernel assigned it."""

    index: int
    start: int
    size: int
    kind: str  # "io" | "mem32" | "mem64"
    prefetchable: bool

    @property
    def name(self) -> str:
        return "ROM" if self.index == ROM_INDEX else f"BAR {self.index}"

    def __str__(self) -> str:
        pf = ", prefetchable" if self.prefetchable else ""
        return f"{self.name}: {self.kind} at {self.start:#x}, {size_text(self.size)}{pf}"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "name": self.name}


@dataclass(frozen=True)
class AcsHop:
    """One port between the device and the root complex, and its ACS."""

    address: str
    port_type: str
    acs: bool
    enabled: tuple[str, ...]
    isolates: bool

    def __str__(self) -> str:
        if not self.acs:
            return f"{self.address} ({self.port_type}): no ACS capability"
        state = "isolates" if self.isolates else "does not isolate"
        return f"{self.address} ({self.port_type}): ACS {'+'.join(self.enabled) or 'off'}, {state}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Reset:
    """Reset methods: the kernel's list, and what the capabilities confirm."""

    kernel: tuple[str, ...]
    flr: bool
    pm: bool
    bus: bool
    #: Every other device a bus reset resets too (below the same parent bridge).
    bus_peers: tuple[str, ...]
    #: Why a bus reset (``hot_reset()``, the kernel's ``bus``) fails here, or None.
    bus_blocked: str | None = None
    #: The kernel's list before ``pyvfio reset-method`` changed it (None: unchanged).
    original: tuple[str, ...] | None = None

    def __str__(self) -> str:
        confirmed = [n for n, ok in (("flr", self.flr), ("pm", self.pm), ("bus", self.bus)) if ok]
        text = f"kernel offers: {' '.join(self.kernel) or 'none'}"
        if self.original is not None:
            text += f" (set by pyvfio reset-method, was {' '.join(self.original)})"
        text += f"; confirmed from capabilities: {' '.join(confirmed) or 'none'}"
        if self.bus_peers:
            text += f"; a bus reset also resets {', '.join(self.bus_peers)}"
        if self.bus_blocked and "bus" in self.kernel:
            text += f"; but a bus reset fails here: {self.bus_blocked}"
        return text

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DeviceDetails:
    """What ``pyvfio show`` prints; ``to_json`` is its ``--json`` schema."""

    device: PciDeviceInfo
    driver_override: str | None
    numa_node: int | None
    resources: tuple[Resource, ...]
    capabilities: tuple[str, ...]
    extended_capabilities: tuple[str, ...]
    interrupt_pin: str | None
    msi_vectors: int | None
    msix_vectors: int | None
    reset: Reset
    rom: RomInfo
    acs_path: tuple[AcsHop, ...]
    sriov_total_vfs: int | None
    sriov_num_vfs: int | None
    virtual_functions: tuple[str, ...]
    physical_function: str | None
    group_members: tuple[PciDeviceInfo, ...]
    group_verdict: str
    in_use: tuple[str, ...]
    notes: tuple[str, ...]
    #: The driver of each of ``virtual_functions``, in the same order.
    vf_drivers: tuple[str | None, ...] = ()
    #: The IOMMU unit that translates the device's DMA (None: none, or not known).
    iommu_unit: IommuUnit | None = None

    def _vfs(self) -> list[tuple[str, str | None]]:
        drivers = [*self.vf_drivers, *[None] * len(self.virtual_functions)]
        return list(zip(self.virtual_functions, drivers, strict=False))

    @property
    def iommu(self) -> str | None:
        """``"AMD-Vi (ivhd0)"``: which IOMMU translates the device (None: none known)."""
        return None if self.iommu_unit is None else str(self.iommu_unit)

    def __str__(self) -> str:
        d = self.device
        lines = [str(d)]
        if d.class_name:
            lines.append(f"  class: {d.class_name} ({d.class_code:06x})")
        if self.driver_override:
            lines.append(f"  driver_override: {self.driver_override}")
        lines.append(f"  NUMA node: {self.numa_node if self.numa_node is not None else 'none'}")
        for res in self.resources:
            lines.append(f"  {res}")
        if self.capabilities:
            lines.append(f"  capabilities: {', '.join(self.capabilities)}")
        if self.extended_capabilities:
            lines.append(f"  extended capabilities: {', '.join(self.extended_capabilities)}")
        irq = [f"INTx pin {self.interrupt_pin or 'none'}"]
        if self.msi_vectors is not None:
            irq.append(f"MSI {self.msi_vectors} vector(s)")
        if self.msix_vectors is not None:
            irq.append(f"MSI-X {self.msix_vectors} vector(s)")
        lines.append(f"  interrupts: {', '.join(irq)}")
        lines.append(f"  reset: {self.reset}")
        lines.append(f"  option ROM: {self.rom}")
        if self.acs_path:
            lines.append("  ACS on the path to the root complex:")
            lines += [f"    {hop}" for hop in self.acs_path]
        if self.sriov_total_vfs is not None:
            named = [f"{vf} ({drv or 'no driver'})" for vf, drv in self._vfs()]
            vfs = f": {', '.join(named)}" if named else ""
            lines.append(f"  SR-IOV: {self.sriov_num_vfs or 0} of {self.sriov_total_vfs} VFs{vfs}")
        if self.physical_function:
            lines.append(f"  virtual function of {self.physical_function}")
        group = d.iommu_group
        if self.iommu_unit is not None:
            lines.append(f"  IOMMU: {self.iommu_unit}")
        lines.append(
            f"  IOMMU group {group if group is not None else 'none'}: {self.group_verdict}"
        )
        for member in self.group_members:
            if member.address != d.address:
                lines.append(f"    {member}")
        for user in self.in_use:
            lines.append(f"  in use: {user}")
        for note in self.notes:
            lines.append(f"  note: {note}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "device": self.device.to_json(),
            "driver_override": self.driver_override,
            "numa_node": self.numa_node,
            "resources": [r.to_json() for r in self.resources],
            "capabilities": list(self.capabilities),
            "extended_capabilities": list(self.extended_capabilities),
            "interrupts": {
                "pin": self.interrupt_pin,
                "msi_vectors": self.msi_vectors,
                "msix_vectors": self.msix_vectors,
            },
            "reset": self.reset.to_json(),
            "rom": self.rom.to_json(),
            "acs_path": [h.to_json() for h in self.acs_path],
            "sriov": {
                "total_vfs": self.sriov_total_vfs,
                "num_vfs": self.sriov_num_vfs,
                "virtual_functions": list(self.virtual_functions),
                "physical_function": self.physical_function,
                "vfs": [{"address": vf, "driver": drv} for vf, drv in self._vfs()],
            },
            "group": {
                "number": self.device.iommu_group,
                "iommu": None
                if self.iommu_unit is None
                else {"unit": self.iommu_unit.name, "kind": self.iommu_unit.kind},
                "verdict": self.group_verdict,
                "members": [m.to_json() for m in self.group_members],
            },
            "in_use": list(self.in_use),
            "notes": list(self.notes),
        }


def resources(address: str, sysfs: Sysfs = LIVE) -> tuple[Resource, ...]:
    out = []
    rel = sysfs.device_dir(address)
    for index, line in enumerate(sysfs.read_lines(f"{rel}/resource")[: ROM_INDEX + 1]):
        parts = line.split()
        if len(parts) < 3:
            continue
        start, end, flags = (int(p, 16) for p in parts[:3])
        if end <= start:
            continue
        kind = "mem64" if flags & IORESOURCE_MEM_64 else "mem32"
        if flags & IORESOURCE_IO:
            kind = "io"
        out.append(Resource(index, start, end - start + 1, kind, bool(flags & IORESOURCE_PREFETCH)))
    return tuple(out)


def config_space(address: str, sysfs: Sysfs = LIVE) -> ConfigSpace | None:
    rel = sysfs.device_dir(address)
    data = sysfs.read_bytes(f"{rel}/config")
    if not data or len(data) < 64:
        return None
    if data[:4] == b"\xff\xff\xff\xff" and sysfs.exists(f"{rel}/physfn"):
        # An SR-IOV VF's ID registers read all ones (PCIe spec 9.3.4.1.1); the kernel
        # takes the IDs from the PF's SR-IOV capability and shows them in sysfs.
        vendor = sysfs.read_int(f"{rel}/vendor", 16) or 0xFFFF
        device = sysfs.read_int(f"{rel}/device", 16) or 0xFFFF
        data = vendor.to_bytes(2, "little") + device.to_bytes(2, "little") + data[4:]
    return parse_config(data)


def _port_name(space: ConfigSpace | None) -> str:
    exp = space.express if space else None
    if exp is None:
        return "conventional PCI"
    pt = exp.port_type
    return pt.name.lower().replace("_", " ") if isinstance(pt, PortType) else f"type {pt}"


def acs_path(address: str, sysfs: Sysfs = LIVE) -> tuple[AcsHop, ...]:
    """ACS of each bridge from the device up to the root complex, nearest first."""
    real = usage.device_path(address, sysfs)
    if real is None:
        return ()
    hops = []
    for part in reversed(real.split("/")[:-1]):
        if not _ADDRESS.match(part):
            continue
        space = config_space(part, sysfs)
        acs = space.find_extended(ExtCapId.ACS) if space else None
        if isinstance(acs, AccessControlServices):
            enabled = tuple(f.name or "" for f in AcsFlags if f in acs.control)
            isolates = REQ_ACS_FLAGS & acs.capability & ~acs.control == 0
            hops.append(AcsHop(part, _port_name(space), True, enabled, bool(isolates)))
        else:
            hops.append(AcsHop(part, _port_name(space), False, (), False))
    return tuple(hops)


#: The resets the kernel offers for the device, in the order it tries them.
reset_methods = resetmethod.reset_methods


def reset_info(address: str, space: ConfigSpace | None, sysfs: Sysfs = LIVE) -> Reset:
    methods = reset_methods(address, sysfs)
    original = None
    if sysfs.is_live:  # a snapshot's journal is not this host's
        try:
            original = resetmethod.read_originals().get(normalize(address))
        except JournalError:
            original = None  # restore and reset-method say what is wrong with it
    flr = pm = False
    if space is not None:
        flr = space.flr_capable  # PCIe DevCap FLR, or the AF capability
        pmcap = space.power_management
        pm = pmcap is not None and not pmcap.no_soft_reset
    real = usage.device_path(address, sysfs) or ""
    parent = real.rsplit("/", 1)[0]
    under_bridge = bool(_ADDRESS.match(parent.rsplit("/", 1)[-1]))
    siblings = [n for n in sysfs.listdir(parent) if _ADDRESS.match(n)] if under_bridge else []
    # The kernel's bus reset (pci_parent_bus_reset) needs a bridge above and no
    # other device on the bus; a slot reset (hotplug) is reported by the kernel only.
    # Its wait after the reset is a rule of its own (`viability.bus_reset_blocker`).
    blocked = bus_reset_blocker(address, sysfs) if under_bridge else None
    bus = under_bridge and siblings == [real.rsplit("/", 1)[-1]] and not blocked
    return Reset(
        methods,
        flr,
        pm,
        bus,
        resetmethod.bus_reset_affected(address, sysfs),
        bus_blocked=blocked,
        original=original,
    )


def rom_info(address: str, space: ConfigSpace | None, sysfs: Sysfs = LIVE) -> RomInfo:
    """The ROM as ``show`` reports it: the ``rom`` file's size (the kernel sizes it as
    the ROM BAR), else the ROM line of ``resource`` (a snapshot keeps no ``rom``)."""
    rel = f"{sysfs.device_dir(address)}/rom"
    st = sysfs.stat(rel)
    size = st.st_size if st is not None else None
    if size is None:
        size = next((r.size for r in resources(address, sysfs) if r.index == ROM_INDEX), None)
    bar = space.header.expansion_rom if space is not None else None
    return RomInfo(
        present=st is not None or size is not None,
        size=size,
        bar_address=bar.address if bar is not None else None,
        bar_enabled=bar.enabled if bar is not None else False,
    )


def describe(address: str, sysfs: Sysfs = LIVE) -> DeviceDetails:
    """Everything ``pyvfio show`` says about ``address``."""
    addr = normalize(address)
    rel = sysfs.device_dir(addr)
    info = inventory.device_info(addr, sysfs)
    space = config_space(addr, sysfs)
    notes = []
    data = sysfs.read_bytes(f"{rel}/config") or b""
    if len(data) <= 64:
        notes.append("only the 64-byte header of config space is readable: run as root")
    caps = tuple(c.name for c in space.capabilities) if space else ()
    ext = tuple(c.name for c in space.extended_capabilities) if space else ()
    pin = space.header.interrupt_pin if space else 0
    msi, msix = (space.msi, space.msix) if space else (None, None)
    sriov = space.find_extended(ExtCapId.SRIOV) if space else None
    total = sysfs.read_int(f"{rel}/sriov_totalvfs")
    num = sysfs.read_int(f"{rel}/sriov_numvfs")
    if isinstance(sriov, SrIov) and total is None:
        total, num = sriov.total_vfs, sriov.num_vfs
    vfs = tuple(
        sysfs.link_name(f"{rel}/{n}") or n
        for n in sorted(
            (n for n in sysfs.listdir(rel) if n.startswith("virtfn")), key=lambda n: int(n[6:])
        )
    )
    group = inventory.group_of(addr, sysfs)
    override = sysfs.read_attr(f"{rel}/driver_override")
    return DeviceDetails(
        device=info,
        driver_override=None if override in (None, "", "(null)") else override,
        numa_node=sysfs.numa_node(addr),
        resources=resources(addr, sysfs),
        capabilities=caps,
        extended_capabilities=ext,
        interrupt_pin="ABCD"[pin - 1] if 1 <= pin <= 4 else None,
        msi_vectors=msi.vectors if msi else None,
        msix_vectors=msix.table_size if msix else None,
        reset=reset_info(addr, space, sysfs),
        rom=rom_info(addr, space, sysfs),
        acs_path=acs_path(addr, sysfs),
        sriov_total_vfs=total,
        sriov_num_vfs=num,
        virtual_functions=vfs,
        physical_function=sysfs.link_name(f"{rel}/physfn"),
        group_members=group.devices if group else (),
        group_verdict=group.verdict if group else "no IOMMU group: the IOMMU is off",
        in_use=usage.device_users(addr, sysfs),
        notes=tuple(notes),
        vf_drivers=tuple(sysfs.driver(vf) for vf in vfs),
        iommu_unit=iommus.device_unit(addr, sysfs),
    )
