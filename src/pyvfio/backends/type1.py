"""The type1 backend: ``/dev/vfio/vfio`` (a container) and ``/dev/vfio/N`` per group.

``VFIO_GROUP_SET_CONTAINER`` puts each group into the container, the first one
followed by ``VFIO_SET_IOMMU(VFIO_TYPE1v2_IOMMU)``; ``VFIO_GROUP_GET_DEVICE_FD`` opens
each device; mappings are ``VFIO_IOMMU_MAP_DMA``/``UNMAP_DMA`` on the container.
The group fds stay open while a device of the group is: a bus reset names them.

`NoIommuBackend` (`pyvfio.backends.noiommu`) is this with another group node and
another IOMMU type.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping

from pyvfio import _ioctl
from pyvfio._transport import DeviceTransport, KernelTransport
from pyvfio._uapi import iommufd as ufd
from pyvfio._uapi import vfio as v
from pyvfio.errors import DeviceNotBoundError, UnsupportedError, VfioError
from pyvfio.info import IommuInfo
from pyvfio.sysfs import Sysfs
from pyvfio.viability import not_viable_error


def _served_by_iommufd(fd: int, path: str) -> bool:
    """Whether ``fd`` (an open ``/dev/vfio/vfio``) is iommufd's compatibility container
    (CONFIG_IOMMUFD_VFIO_CONTAINER). Both are misc devices with minor 196, so the node
    cannot tell; the open file can: iommufd answers its own IOMMU_OPTION, while VFIO's
    container hands an ioctl it does not know to its IOMMU driver, and with none set
    yet answers EINVAL (drivers/vfio/container.c)."""
    try:
        _ioctl.option_get(fd, ufd.IommuOption.IOMMU_OPTION_RLIMIT_MODE, device=path)
    except VfioError:
        return False
    return True


class _Group:
    """An open ``/dev/vfio/N`` attached to the container, and its open devices."""

    __slots__ = ("devices", "fd", "number")

    def __init__(self, number: int, fd: int) -> None:
        self.number, self.fd, self.devices = number, fd, set[str]()


class Type1Backend:
    """``/dev/vfio/vfio`` with ``VFIO_TYPE1v2_IOMMU``."""

    name = "type1"
    pins_memory = True
    share_memory = False
    #: What VFIO_SET_IOMMU sets once the first group is in the container.
    iommu_type = v.VfioExtension.VFIO_TYPE1v2_IOMMU
    #: Asked of the container when it opens, and what to say when it is missing
    #: (None: not asked).
    required_extension: v.VfioExtension | None = v.VfioExtension.VFIO_TYPE1v2_IOMMU
    missing_extension = "this kernel's VFIO has no TYPE1v2 IOMMU (modprobe vfio_iommu_type1)"

    def __init__(self, sysfs: Sysfs, path: str = "/dev/vfio/vfio") -> None:
        self.sysfs = sysfs
        if not os.path.exists(path):
            raise UnsupportedError(
                f"{path} does not exist: load the vfio module (modprobe vfio-pci)", device=path
            )
        self.fd = _ioctl.open_node(path)
        self.dma = _ioctl.Type1Dma(self.fd)  # map/unmap's arguments, made once
        self.groups: dict[int, _Group] = {}
        self.iommu_set = False
        try:
            version = _ioctl.get_api_version(self.fd)
            if version != v.VFIO_API_VERSION:
                raise UnsupportedError(
                    f"{path} speaks VFIO API {version}, pyvfio {v.VFIO_API_VERSION}", device=path
                )
            extension = self.required_extension
            if extension is not None and not _ioctl.check_extension(self.fd, extension):
                raise UnsupportedError(self.missing_extension, device=path)
            self.iommufd_compat = _served_by_iommufd(self.fd, path)
        except BaseException:
            _ioctl.close_node(self.fd)
            raise

    @property
    def mode(self) -> str:
        """The kernel VFIO selftests' name for what serves this container:
        ``vfio_type1v2_iommu`` (VFIO's own, vfio_iommu_type1) or ``iommufd_compat_type1v2``
        (the same ioctls on iommufd's compatibility container); ``noiommu`` likewise."""
        kind = "type1v2" if self.iommu_type == v.VfioExtension.VFIO_TYPE1v2_IOMMU else "noiommu"
        return f"iommufd_compat_{kind}" if self.iommufd_compat else f"vfio_{kind}_iommu"

    @staticmethod
    def group_node(group: int) -> str:
        """The group's node: ``/dev/vfio/N``."""
        return f"/dev/vfio/{group}"

    def fileno(self) -> int:
        return self.fd

    def attach(
        self, address: str, group: int | None, vf_token: str | None = None
    ) -> DeviceTransport:
        if group is None:
            raise UnsupportedError(f"{address} has no IOMMU group", device=address)
        grp = self.groups.get(group)
        if grp is None:
            grp = self._open_group(address, group)
        try:
            fd = (
                _ioctl.group_get_device_fd(grp.fd, address)
                if vf_token is None
                else _ioctl.group_get_device_fd(grp.fd, address, vf_token)
            )
        except BaseException:
            if not grp.devices:  # the group was opened for this device: let it go again
                self.detach_group(group)
            raise
        grp.devices.add(address)
        return KernelTransport(fd, address)

    def _open_group(self, address: str, group: int) -> _Group:
        path = self.group_node(group)
        if not os.path.exists(path):
            raise DeviceNotBoundError(
                f"{path} is missing although {address} is on vfio-pci; is this a no-IOMMU group?",
                device=address,
            )
        fd = _ioctl.open_node(path)
        try:
            status = _ioctl.group_get_status(fd, address)
            if not status & v.VfioGroupFlag.VFIO_GROUP_FLAGS_VIABLE:
                raise not_viable_error(address, group, self.sysfs, "VFIO_GROUP_GET_STATUS")
            _ioctl.group_set_container(fd, self.fd, address)
            if not self.iommu_set:
                _ioctl.set_iommu(self.fd, self.iommu_type)
                self.iommu_set = True
        except BaseException:
            with contextlib.suppress(VfioError):
                _ioctl.group_unset_container(fd, address)
            _ioctl.close_node(fd)
            raise
        grp = _Group(group, fd)
        self.groups[group] = grp
        return grp

    def detach(self, address: str) -> None:
        for number, grp in list(self.groups.items()):
            if address in grp.devices:
                grp.devices.discard(address)
                if not grp.devices:
                    self.detach_group(number, address)

    def detach_group(self, number: int, address: str | None = None) -> None:
        """Take group ``number`` out of the container and close it."""
        grp = self.groups.pop(number)
        with contextlib.suppress(VfioError):
            _ioctl.group_unset_container(grp.fd, address)
        _ioctl.close_node(grp.fd)

    def group_fds(self) -> Mapping[int, int]:
        return {number: grp.fd for number, grp in self.groups.items()}

    def info(self) -> IommuInfo:
        return _ioctl.iommu_get_info(self.fd)

    def map(self, vaddr: int, iova: int, size: int, fd: int = -1, fd_offset: int = 0) -> None:
        self.dma.map(vaddr, iova, size)

    def unmap(self, iova: int, size: int) -> None:
        self.dma.unmap(iova, size)

    def close(self) -> None:
        for grp in list(self.groups.values()):
            for address in list(grp.devices):
                self.detach(address)
        fd, self.fd = self.fd, -1
        self.dma.fd = -1
        if fd >= 0:
            _ioctl.close_node(fd)
