"""Which IOMMU a host has (Intel VT-d, AMD-Vi, virtio-iommu), what each offers VFIO,
and who serves ``/dev/vfio/vfio`` (VFIO's own container or iommufd's compatibility one).

Read through :class:`~pyvfio.sysfs.Sysfs` only, with the kernel log and the device
nodes passed in by the caller (``doctor`` reads them from the host or the snapshot;
``show`` imports this module, and the snapshot module imports ``show``'s), so a
recorded host gets the answers the live one did. What works on which IOMMU and
kernel: docs/iommus.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from pyvfio.host import bind
from pyvfio.sysfs import Sysfs

#: The IOMMU kinds, by the name ``pyvfio lab run --iommu`` gives them.
LABELS: Final = {"intel": "Intel VT-d", "amd": "AMD-Vi", "virtio": "virtio-iommu"}

#: The ACPI table that describes each kind to the kernel (x86). virtio-iommu's VIOT is
#: read only by a kernel with CONFIG_ACPI_VIOT (Debian's 6.1 has neither it nor the driver).
ACPI_TABLES: Final = {"DMAR": "intel", "IVRS": "amd", "VIOT": "virtio"}

#: What virtio-iommu lacks that VT-d and AMD-Vi give VFIO (virtio-iommu spec 1.2, Linux
#: drivers/iommu/virtio-iommu.c): its capable() answers no to IOMMU_CAP_INTR_REMAP, so
#: MSI is not isolated and both vfio_iommu_type1 and iommufd refuse a group unless
#: allow_unsafe_interrupts is set; no dirty tracking, nesting or PASID either.
VIRTIO_LACKS: Final = (
    "interrupt remapping (MSI isolation)",
    "dirty-page tracking",
    "nested translation",
    "PASID",
)

#: The kernel's line when iommufd serves /dev/vfio/vfio (drivers/iommu/iommufd/main.c).
COMPAT_LOG_LINE: Final = "IOMMUFD is providing /dev/vfio/vfio"


@dataclass(frozen=True)
class IommuUnit:
    """One unit of /sys/class/iommu and its kind (``intel``, ``amd``, ``virtio`` or
    ``unknown``)."""

    name: str
    kind: str

    def __str__(self) -> str:
        return f"{LABELS.get(self.kind, 'IOMMU')} ({self.name})"


def unit_kind(name: str, sysfs: Sysfs) -> str:
    """The kind of unit ``name``: each driver leaves its own attribute group (VT-d's
    ``intel-iommu/``, AMD-Vi's ``amd-iommu/``); virtio-iommu's unit is named after its
    virtio device and that device is bound to ``virtio_iommu``."""
    base = f"sys/class/iommu/{name}"
    if sysfs.exists(f"{base}/intel-iommu"):
        return "intel"
    if sysfs.exists(f"{base}/amd-iommu"):
        return "amd"
    if sysfs.link_name(f"{base}/device/driver") == "virtio_iommu" or name.startswith("virtio"):
        return "virtio"
    return "unknown"


def units(sysfs: Sysfs) -> list[IommuUnit]:
    """The active IOMMU units, as /sys/class/iommu lists them."""
    return [IommuUnit(n, unit_kind(n, sysfs)) for n in sorted(sysfs.listdir("sys/class/iommu"))]


def device_unit(address: str, sysfs: Sysfs) -> IommuUnit | None:
    """The unit that translates ``address``'s DMA (its ``iommu`` link), None for none."""
    name = sysfs.link_name(f"sys/bus/pci/devices/{address}/iommu")
    return None if name is None else IommuUnit(name, unit_kind(name, sysfs))


def firmware_tables(sysfs: Sysfs) -> list[str]:
    """The ACPI tables present that describe an IOMMU (DMAR, IVRS, VIOT)."""
    return [t for t in ACPI_TABLES if sysfs.exists(f"sys/firmware/acpi/tables/{t}")]


def kernel_config(sysfs: Sysfs) -> dict[str, str]:
    """The running kernel's ``CONFIG_X=value`` lines from /boot/config-RELEASE ({} where
    it is not there, as for the lab's own build)."""
    release = sysfs.read_attr("proc/sys/kernel/osrelease") or ""
    out = {}
    for line in sysfs.read_lines(f"boot/config-{release}"):
        key, eq, value = line.partition("=")
        if eq and key.startswith("CONFIG_"):
            out[key] = value
    return out


def amd_log(log: str) -> list[str]:
    """AMD-Vi's own lines of the kernel log ``log`` (``AMD-Vi: ...``), the prefix dropped."""
    out = []
    for line in log.splitlines():
        _, found, rest = line.partition("AMD-Vi: ")
        if found:
            out.append(rest.strip())
    return out


def vfio_container_provider(sysfs: Sysfs, nodes: Mapping[str, object], log: str) -> str | None:
    """Who serves ``/dev/vfio/vfio``: ``vfio`` (VFIO's container, with vfio_iommu_type1),
    ``iommufd`` (iommufd's compatibility container, CONFIG_IOMMUFD_VFIO_CONTAINER), or
    None (no such node, or nothing tells).

    Both are misc devices with minor 196 (VFIO_MINOR), so the node's numbers cannot tell
    them apart; the kernel's configuration can: IOMMUFD_VFIO_CONTAINER depends on
    VFIO_CONTAINER being off, and vfio_iommu_type1 exists only with it on. So the
    answer is iommufd's log line, else the kernel config, else whether the type1 module
    exists beside a ``/dev/iommu``. ``nodes``: the device nodes present (/dev relative,
    as :func:`pyvfio.host.snapshot.device_nodes` gives them); ``log``: the kernel log.
    """
    if "dev/vfio/vfio" not in nodes:
        return None
    if COMPAT_LOG_LINE in log:
        return "iommufd"
    config = kernel_config(sysfs)
    if config.get("CONFIG_IOMMUFD_VFIO_CONTAINER") == "y":
        return "iommufd"
    if config.get("CONFIG_VFIO_CONTAINER") == "y":
        return "vfio"
    if bind.module_available("vfio_iommu_type1", sysfs):
        return "vfio"
    if "dev/iommu" in nodes:
        return "iommufd"
    return None
