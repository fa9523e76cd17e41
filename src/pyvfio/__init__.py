"""pyvfio: PCI device passthrough and userspace PCI drivers on Linux VFIO.

::

    import pyvfio
    with pyvfio.open("0000:00:10.0") as dev:      # a device already on vfio-pci
        bar = dev.bar(0)
        print(hex(bar.read32(0)))
        dev.enable_bus_master()
        with dev.dma_alloc(4096, max_iova=(1 << 28) - 1) as buf:
            ...

    with pyvfio.open("vfio-user:/run/edu.sock") as dev:   # a device served over vfio-user
        ...
"""

from pyvfio.device import Config, Device
from pyvfio.dma import DmaBuffer, DmaMapping
from pyvfio.errors import (
    ClosedError,
    DeviceNotBoundError,
    DeviceNotFoundError,
    DeviceRemovedError,
    GroupNotViableError,
    HostError,
    InvalidAddressError,
    IovaExhaustedError,
    MemlockLimitError,
    NoInterruptRemappingError,
    PermissionDeniedError,
    PyvfioError,
    UnsupportedError,
    VfioError,
    VfTokenError,
)
from pyvfio.interrupt import Interrupt
from pyvfio.iommu import Iommu, open
from pyvfio.region import Region

__version__ = "0.1.0"

__all__ = [
    "ClosedError",
    "Config",
    "Device",
    "DeviceNotBoundError",
    "DeviceNotFoundError",
    "DeviceRemovedError",
    "DmaBuffer",
    "DmaMapping",
    "GroupNotViableError",
    "HostError",
    "Interrupt",
    "InvalidAddressError",
    "Iommu",
    "IovaExhaustedError",
    "MemlockLimitError",
    "NoInterruptRemappingError",
    "PermissionDeniedError",
    "PyvfioError",
    "Region",
    "UnsupportedError",
    "VfTokenError",
    "VfioError",
    "open",
]
