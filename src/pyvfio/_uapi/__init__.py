"""The kernel ABI: mirrors of ``<linux/vfio.h>``, ``<linux/iommufd.h>`` (ctypes) and
``<linux/pci_regs.h>`` (the PCI registers).

Import names from the header's module, spelled as in the kernel::

    from pyvfio._uapi.vfio import VFIO_DEVICE_GET_REGION_INFO, vfio_region_info
    from pyvfio._uapi.iommufd import IOMMU_IOAS_MAP, IommuIoasMapFlag, iommu_ioas_map
    from pyvfio._uapi.pci_regs import PCI_COMMAND, PCI_COMMAND_MASTER

`ABI` lists everything mirrored; ``tests/unit/test_abi.py`` compiles it against the
kernel headers that `pyvfio.lab.headers.kernel_headers` finds.
"""

from typing import Final

from pyvfio._uapi import iommufd, pci_regs, vfio
from pyvfio._uapi._base import Abi, FieldMask, IoctlNumber, KernelStruct, KernelUnion, merge_abi

ABI: Final = merge_abi(vfio.ABI, iommufd.ABI, pci_regs.ABI)

__all__ = [
    "ABI",
    "Abi",
    "FieldMask",
    "IoctlNumber",
    "KernelStruct",
    "KernelUnion",
    "iommufd",
    "pci_regs",
    "vfio",
]
