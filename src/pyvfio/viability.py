"""The kernel's rules for who may use a device through VFIO, written once.

Two questions, asked by the core before it opens a device and by the host tools
(``pyvfio ls``, ``bind``, ``grant``, ``doctor``) before they change or report anything:

* **Is a driver a vfio driver?** vfio-pci, or one of the kernel's *variant* drivers
  built on ``vfio-pci-core`` for one device family (live migration, device-specific
  regions). A device on any of them has a VFIO group node (or cdev) to open.
* **Is an IOMMU group viable?** The kernel lets a group be used through VFIO only while
  no member is on a driver that uses the DMA API itself: each member must be on no
  driver, on a vfio driver, or on a driver the kernel marks ``driver_managed_dma``
  (``pci-stub``; ``pcieport`` for bridges and ports), which claims no DMA
  (``iommu_device_use_default_domain``; the group reports ``VFIO_GROUP_FLAGS_VIABLE``
  only then).

`bound_group` is the check both sides make before anything else: bound to a vfio
driver, and in an IOMMU group.
"""

from __future__ import annotations

from typing import TypeGuard

from pyvfio.errors import (
    DeviceNotBoundError,
    GroupNotViableError,
    InvalidAddressError,
    Peer,
    UnsupportedError,
)
from pyvfio.pci.address import normalize
from pyvfio.pci.config import parse_config
from pyvfio.sysfs import LIVE, Sysfs

#: The kernel's variant drivers (``drivers/vfio/pci/*``), as they register: each
#: ``.name = KBUILD_MODNAME`` of a module ``NAME-vfio-pci.o``, so with underscores.
VFIO_VARIANT_DRIVERS = frozenset(
    {
        "mlx5_vfio_pci",  # mlx5/: ConnectX VFs, live migration
        "hisi_acc_vfio_pci",  # hisilicon/: HiSilicon accelerator VFs
        "virtio_vfio_pci",  # virtio/: virtio-net VFs (legacy I/O BAR, migration)
        "nvgrace_gpu_vfio_pci",  # nvgrace-gpu/: Grace Hopper GPU device memory
        "pds_vfio_pci",  # pds/: AMD/Pensando DSC VFs
        "qat_vfio_pci",  # qat/: Intel QAT VFs
        "xe_vfio_pci",  # xe/: Intel Xe graphics VFs
    }
)
#: Drivers besides the vfio drivers that leave a group viable: the kernel marks them
#: ``driver_managed_dma`` (pci-stub, and pcieport for bridges and ports).
VIABLE_DRIVERS = frozenset({"vfio-pci", "pci-stub", "pcieport"})


def is_vfio_driver(driver: str | None) -> TypeGuard[str]:
    """Whether ``driver`` is vfio-pci or a variant driver of vfio-pci-core.

    A variant registers as ``NAME_vfio_pci`` (`VFIO_VARIANT_DRIVERS` lists the
    kernel's own); ``NAME-vfio-pci`` is accepted too, for out-of-tree drivers that
    spell the name themselves.
    """
    return driver is not None and (
        driver == "vfio-pci" or driver.endswith(("_vfio_pci", "-vfio-pci"))
    )


def blocks_group(driver: str | None) -> bool:
    """Whether a member on ``driver`` makes its IOMMU group not viable (None: no driver)."""
    return driver is not None and driver not in VIABLE_DRIVERS and not is_vfio_driver(driver)


def blocking_peers(group: int, sysfs: Sysfs = LIVE) -> tuple[Peer, ...]:
    """Members of ``group`` on a driver that makes the group not viable."""
    peers = []
    for addr in sysfs.group_devices(group):
        driver = sysfs.link_name(f"sys/bus/pci/devices/{addr}/driver")
        if blocks_group(driver):
            peers.append(Peer(addr, driver))
    return tuple(peers)


def not_viable_error(
    address: str, group: int, sysfs: Sysfs = LIVE, ioctl: str | None = None
) -> GroupNotViableError:
    """The error for a group the kernel found not viable, naming the members in the way."""
    peers = blocking_peers(group, sysfs)
    named = ", ".join(map(str, peers)) or "a member on a host driver"
    return GroupNotViableError(
        f"IOMMU group {group} of {address} is not viable: {named}; bind them to vfio-pci "
        f"or unbind them (pyvfio bind --group {address})",
        peers=peers,
        group=group,
        ioctl=ioctl,
        device=address,
    )


def bound_group(address: str, sysfs: Sysfs = LIVE, *, then: str = "") -> int:
    """The IOMMU group of a device on a vfio driver.

    `DeviceNotBoundError` when it is on another driver or none, `UnsupportedError`
    when it has no IOMMU group (the IOMMU is off); `DeviceNotFoundError` when there
    is no such device. ``then`` ends the bind hint with what to do after binding
    (``", then grant it"``).
    """
    sysfs.device_dir(address)
    driver = sysfs.driver(address)
    if not is_vfio_driver(driver):
        raise DeviceNotBoundError(
            f"{address} is {'bound to ' + driver if driver else 'not bound to any driver'}, "
            f"not vfio-pci: bind it first (pyvfio bind {address}){then}",
            device=address,
        )
    group = sysfs.iommu_group(address)
    if group is None:
        raise UnsupportedError(
            f"{address} has no IOMMU group: the IOMMU is off; enable VT-d/AMD-Vi in the "
            "firmware and boot with intel_iommu=on or amd_iommu=on (pyvfio doctor)",
            device=address,
        )
    return group


__all__ = [
    "VFIO_VARIANT_DRIVERS",
    "VIABLE_DRIVERS",
    "blocking_peers",
    "blocks_group",
    "bound_group",
    "is_vfio_driver",
    "not_viable_error",
]


def parent_bridge(address: str, sysfs: Sysfs = LIVE) -> str | None:
    """The address of the bridge or port above ``address`` (None: on a root bus)."""
    real = sysfs.realpath(sysfs.device_dir(address))
    if real is None:
        return None
    parts = real.split("/")
    parent = parts[-2] if len(parts) > 1 else ""  # pci0000:00 for a root bus
    try:
        return normalize(parent) if parent.count(":") == 2 else None
    except InvalidAddressError:
        return None


def bus_reset_blocker(
    address: str, sysfs: Sysfs = LIVE, *, after_probe: bool = False
) -> str | None:
    """Why a bus (hot) reset of ``address`` fails on this host, or None (none known).

    Two of the kernel's rules, in the order it applies them. A bus reset needs a bridge
    above the device (pci_probe_reset_slot/bus: a device on the root bus, e.g. built into
    the root complex, has none; VFIO_DEVICE_GET_PCI_HOT_RESET_INFO answers ENODEV). After
    the reset the kernel waits for the device behind the bridge, and gives up where the
    port reports its link down although it reports link state at all
    (`PciExpress.bus_reset_gives_up`: the reset answers ENOTTY). The second needs the
    bridge's config space past 64 bytes (root); unread, it is not reported.
    ``after_probe``: the kernel's probe passed (VFIO answered), so only the second rule.
    """
    bridge = parent_bridge(address, sysfs)
    if bridge is None:
        if after_probe:  # a slot reset the kernel found without a bridge: its answer
            return None
        return (
            f"{address} sits on a root bus, with no bridge above it whose bus the kernel "
            "could reset (a slot below a PCIe root port or switch port has one)"
        )
    data = sysfs.read_bytes(f"{sysfs.device_dir(bridge)}/config")
    express = parse_config(data).express if data else None
    if express is not None and express.bus_reset_gives_up:
        return (
            f"its port {bridge} advertises Link Active reporting at over 5 GT/s but reports "
            "the link down, so the kernel gives up on the device after the reset (QEMU's "
            "pcie-root-port does at its default x-speed: give the port x-speed=2_5)"
        )
    return None
