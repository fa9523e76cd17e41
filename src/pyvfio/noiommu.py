"""VFIO's unsafe no-IOMMU mode: refused unless the caller opts in by name.

With ``vfio.enable_unsafe_noiommu_mode=1`` (``CONFIG_VFIO_NOIOMMU``) vfio-pci takes
devices that have no IOMMU: each gets a fake group named ``vfio-noiommu`` in
``/sys/kernel/iommu_groups/N/name`` and a node ``/dev/vfio/noiommu-N``, which only
``CAP_SYS_RAWIO`` may open, and the container speaks ``VFIO_NOIOMMU_IOMMU``, which
maps nothing (the kernel taints itself the first time one is used). The device's DMA
then reaches every byte of host memory at whatever bus address it is given: nothing
translates or checks it.

pyvfio opens such a device only through ``backend="unsafe-noiommu"``
(``pyvfio.open(BDF, backend="unsafe-noiommu")`` or ``Iommu("unsafe-noiommu")``), and
refuses the other backends with :class:`~pyvfio.errors.UnsafeNoIommuError`. With the
opt-in, config space, BARs, interrupts and reset work; DMA mapping raises
:class:`~pyvfio.errors.UnsupportedError`.

This module is the rule (is the mode on, which groups are no-IOMMU ones, may this
backend open that group); the backend itself is `pyvfio.backends.noiommu`, whose
names are importable from here too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pyvfio.errors import UnsafeNoIommuError, UnsupportedError
from pyvfio.sysfs import LIVE, Sysfs

if TYPE_CHECKING:
    from pyvfio.backends.noiommu import UNSAFE_NOIOMMU, NoIommuBackend


def __getattr__(name: str) -> Any:
    # The backend's names, imported on first use: which groups are no-IOMMU ones
    # (``pyvfio ls``) is read from sysfs and needs none of the ioctl layer.
    if name in ("UNSAFE_NOIOMMU", "NoIommuBackend"):
        from pyvfio.backends import noiommu

        return getattr(noiommu, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: The vfio module's parameter (Y/N); absent when the kernel lacks CONFIG_VFIO_NOIOMMU.
MODE_PARAM = "sys/module/vfio/parameters/enable_unsafe_noiommu_mode"
#: The name vfio_noiommu_group_alloc() gives its fake groups.
GROUP_NAME = "vfio-noiommu"


def noiommu_mode(sysfs: Sysfs = LIVE) -> bool | None:
    """Whether the mode is on (None: this kernel cannot have it)."""
    value = sysfs.read_attr(MODE_PARAM)
    return None if value is None else value in ("Y", "1")


def is_noiommu_group(group: int, sysfs: Sysfs = LIVE) -> bool:
    return sysfs.read_attr(f"sys/kernel/iommu_groups/{group}/name") == GROUP_NAME


def noiommu_groups(sysfs: Sysfs = LIVE) -> list[int]:
    return [g for g in sorted(sysfs.iommu_groups()) if is_noiommu_group(g, sysfs)]


def check_backend(address: str, group: int, requested: str, sysfs: Sysfs = LIVE) -> None:
    """Refuse a no-IOMMU device without the opt-in, and the opt-in for any other device."""
    from pyvfio.backends.noiommu import UNSAFE_NOIOMMU

    noiommu = is_noiommu_group(group, sysfs)
    if noiommu and requested != UNSAFE_NOIOMMU:
        raise UnsafeNoIommuError(
            f"{address} is in VFIO's unsafe no-IOMMU group {group}: nothing confines its "
            f"DMA, which can overwrite any host memory; open it only with "
            f"backend={UNSAFE_NOIOMMU!r} (as root, and no DMA mapping is possible)",
            device=address,
        )
    if not noiommu and requested == UNSAFE_NOIOMMU:
        raise UnsupportedError(
            f"{address} is in IOMMU group {group}, which an IOMMU protects: "
            f"backend={UNSAFE_NOIOMMU!r} is only for no-IOMMU groups; use backend='auto'",
            device=address,
        )


__all__ = [
    "GROUP_NAME",
    "MODE_PARAM",
    "UNSAFE_NOIOMMU",
    "NoIommuBackend",
    "check_backend",
    "is_noiommu_group",
    "noiommu_groups",
    "noiommu_mode",
]
