"""The one door to sysfs, procfs and /dev, under its older path: see :mod:`pyvfio.sysfs`.

The VFIO core reads sysfs too, and the core imports nothing of ``pyvfio.host``, so the
module lives at ``pyvfio.sysfs``; every name stays importable from here.
"""

from pyvfio.sysfs import (
    IOMMU_GROUPS,
    LIVE,
    MAX_LINK_HOPS,
    MAX_LOOKUP_STEPS,
    PCI_DEVICES,
    Sysfs,
    WriteTimeoutError,
    process_start,
    resolve_inside,
)

__all__ = [
    "IOMMU_GROUPS",
    "LIVE",
    "MAX_LINK_HOPS",
    "MAX_LOOKUP_STEPS",
    "PCI_DEVICES",
    "Sysfs",
    "WriteTimeoutError",
    "process_start",
    "resolve_inside",
]
