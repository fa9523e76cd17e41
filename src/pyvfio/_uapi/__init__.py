"""The kernel ABI: ctypes mirrors of ``<linux/vfio.h>`` and ``<linux/iommufd.h>``.

Import names from the header's module, spelled as in the kernel::

    from pyvfio._uapi.vfio import VFIO_DEVICE_GET_REGION_INFO, vfio_region_info
    from pyvfio._uapi.iommufd import IOMMU_IOAS_MAP, IommuIoasMapFlag, iommu_ioas_map

`ABI` lists everything mirrored; ``tests/unit/test_abi.py`` compiles it against the
kernel headers that `pyvfio.lab.headers.kernel_headers` finds.
"""

from typing import Final

from pyvfio._uapi import iommufd, vfio
from pyvfio._uapi._base import Abi, IoctlNumber, KernelStruct, KernelUnion, merge_abi

ABI: Final = merge_abi(vfio.ABI, iommufd.ABI)

__all__ = ["ABI", "Abi", "IoctlNumber", "KernelStruct", "KernelUnion", "iommufd", "vfio"]
