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
"""

from __future__ import annotations

import contextlib
import os

from pyvfio import _ioctl
from pyvfio._uapi import vfio as v
from pyvfio.errors import UnsafeNoIommuError, UnsupportedError, VfioError
from pyvfio.host.sysfs import LIVE, Sysfs
from pyvfio.info import IommuInfo

#: The opt-in: a backend name that says what it costs.
UNSAFE_NOIOMMU = "unsafe-noiommu"
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


class NoIommuBackend:
    """``/dev/vfio/vfio`` with ``VFIO_NOIOMMU_IOMMU``: devices open, DMA maps nothing."""

    name = UNSAFE_NOIOMMU

    def __init__(self, sysfs: Sysfs, path: str = "/dev/vfio/vfio") -> None:
        self.sysfs = sysfs
        if not os.path.exists(path):
            raise UnsupportedError(
                f"{path} does not exist: load the vfio module (modprobe vfio-pci)", device=path
            )
        self.fd = _ioctl.open_node(path)
        self.groups: dict[int, tuple[int, set[str]]] = {}

    def fileno(self) -> int:
        return self.fd

    def attach(self, address: str, group: int) -> int:
        if group not in self.groups:
            fd = _ioctl.open_node(f"/dev/vfio/noiommu-{group}")
            try:
                _ioctl.group_set_container(fd, self.fd, address)
                if not self.groups:
                    _ioctl.set_iommu(self.fd, v.VfioExtension.VFIO_NOIOMMU_IOMMU)
            except BaseException:
                with contextlib.suppress(VfioError):
                    _ioctl.group_unset_container(fd, address)
                os.close(fd)
                raise
            self.groups[group] = (fd, set())
        fd, devices = self.groups[group]
        device_fd = _ioctl.group_get_device_fd(fd, address)
        devices.add(address)
        return device_fd

    def detach(self, address: str) -> None:
        for group, (fd, devices) in list(self.groups.items()):
            devices.discard(address)
            if not devices:
                del self.groups[group]
                with contextlib.suppress(VfioError):
                    _ioctl.group_unset_container(fd, address)
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _no_dma(self) -> UnsupportedError:
        return UnsupportedError(
            "no DMA mapping in VFIO's no-IOMMU mode: there is no IOMMU to map through, "
            "the device would need physical addresses of pinned memory, which pyvfio does "
            "not hand out",
            ioctl="VFIO_IOMMU_MAP_DMA",
        )

    def info(self) -> IommuInfo:
        raise self._no_dma()

    def map(self, vaddr: int, iova: int, size: int) -> None:
        raise self._no_dma()

    def unmap(self, iova: int, size: int) -> None:
        raise self._no_dma()

    def close(self) -> None:
        for group in list(self.groups):
            for address in list(self.groups[group][1]):
                self.detach(address)
        fd, self.fd = self.fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)
