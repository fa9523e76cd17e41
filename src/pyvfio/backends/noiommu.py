"""VFIO's unsafe no-IOMMU mode as a backend: type1's container with no IOMMU behind it.

The same container and group ioctls as `Type1Backend`, with the group node the kernel
gives a no-IOMMU group (``/dev/vfio/noiommu-N``) and ``VFIO_NOIOMMU_IOMMU`` for the
IOMMU type, which maps nothing: every DMA call raises `UnsupportedError`. The rule of
when pyvfio uses it (only on the caller's explicit opt-in) is in `pyvfio.noiommu`.
"""

from __future__ import annotations

from typing import NoReturn

from pyvfio._uapi import vfio as v
from pyvfio.backends.type1 import Type1Backend
from pyvfio.errors import UnsupportedError
from pyvfio.info import IommuInfo

#: The opt-in: a backend name that says what it costs.
UNSAFE_NOIOMMU = "unsafe-noiommu"


class NoIommuBackend(Type1Backend):
    """``/dev/vfio/vfio`` with ``VFIO_NOIOMMU_IOMMU``: devices open, DMA maps nothing."""

    name = UNSAFE_NOIOMMU
    iommu_type = v.VfioExtension.VFIO_NOIOMMU_IOMMU
    # Not asked when the container opens: VFIO_SET_IOMMU refuses the type while the
    # mode is off, and a device in an IOMMU group gets check_backend's answer first.
    required_extension = None

    @staticmethod
    def group_node(group: int) -> str:
        """The node vfio_noiommu_group_alloc() makes: ``/dev/vfio/noiommu-N``."""
        return f"/dev/vfio/noiommu-{group}"

    def _no_dma(self) -> NoReturn:
        raise UnsupportedError(
            "no DMA mapping in VFIO's no-IOMMU mode: there is no IOMMU to map through, "
            "the device would need physical addresses of pinned memory, which pyvfio does "
            "not hand out",
            ioctl="VFIO_IOMMU_MAP_DMA",
        )

    def info(self) -> IommuInfo:
        self._no_dma()

    def map(self, vaddr: int, iova: int, size: int, fd: int = -1, fd_offset: int = 0) -> None:
        self._no_dma()

    def unmap(self, iova: int, size: int) -> None:
        self._no_dma()
