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

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names as mypy and IDEs see them; at run time __getattr__ below
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

#: Where each public name lives. They are imported on first use (PEP 562), so that
#: ``import pyvfio.host.inventory`` or the ``pyvfio`` command does not pay for the
#: device, DMA and ioctl layers it never touches.
_LAZY = {
    "Config": "pyvfio.device",
    "Device": "pyvfio.device",
    "DmaBuffer": "pyvfio.dma",
    "DmaMapping": "pyvfio.dma",
    "Interrupt": "pyvfio.interrupt",
    "Iommu": "pyvfio.iommu",
    "open": "pyvfio.iommu",
    "Region": "pyvfio.region",
    **dict.fromkeys(
        (
            "ClosedError",
            "DeviceNotBoundError",
            "DeviceNotFoundError",
            "DeviceRemovedError",
            "GroupNotViableError",
            "HostError",
            "InvalidAddressError",
            "IovaExhaustedError",
            "MemlockLimitError",
            "NoInterruptRemappingError",
            "PermissionDeniedError",
            "PyvfioError",
            "UnsupportedError",
            "VfioError",
            "VfTokenError",
        ),
        "pyvfio.errors",
    ),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pyvfio' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


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
