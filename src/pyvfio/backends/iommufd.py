"""The iommufd backend: ``/dev/iommu`` with one IOAS, each device through its cdev.

``VFIO_DEVICE_BIND_IOMMUFD`` binds a device's ``/dev/vfio/devices/vfioN`` to the
iommufd, ``VFIO_DEVICE_ATTACH_IOMMUFD_PT`` attaches it to the IOAS; mappings are
``IOMMU_IOAS_MAP``/``UNMAP``. There are no group fds: the kernel checks a bus reset's
ownership through the iommufd itself.
"""

from __future__ import annotations

import contextlib
import errno as E
import os
import re
import stat
import uuid
from collections.abc import Mapping

from pyvfio import _ioctl, _mem
from pyvfio._transport import DeviceTransport, KernelTransport
from pyvfio._uapi import vfio as v
from pyvfio.errors import UnsupportedError, VfioError
from pyvfio.info import IommuInfo
from pyvfio.sysfs import Sysfs
from pyvfio.viability import blocking_peers, not_viable_error

OSRELEASE = "proc/sys/kernel/osrelease"


def cdev_takes_vf_token(sysfs: Sysfs) -> bool:
    """Whether this kernel's VFIO_DEVICE_BIND_IOMMUFD takes a VF token (6.17+): before it
    a VF token can reach vfio-pci only through the group path (type1)."""
    found = re.match(r"(\d+)\.(\d+)", sysfs.read_attr(OSRELEASE) or "")
    return found is not None and (int(found[1]), int(found[2])) >= v.BIND_TOKEN_SINCE


def cdev_of(address: str, sysfs: Sysfs) -> str | None:
    """The device's VFIO cdev (``/dev/vfio/devices/vfioN``), None without one."""
    names = sysfs.listdir(f"sys/bus/pci/devices/{address}/vfio-dev")
    return f"/dev/vfio/devices/{names[0]}" if names else None


def _cdev_held_elsewhere(cdev: str, own_fd: int, sysfs: Sysfs) -> bool:
    """Whether an open fd other than ``own_fd`` of this process holds ``cdev``: any
    process's /proc/PID/fd, as far as this user may read them (root: all)."""
    try:
        rdev = os.stat(cdev).st_rdev
    except OSError:
        return False
    me = str(os.getpid())
    for pid in sysfs.listdir("proc"):
        if not pid.isdigit():
            continue
        for fd in sysfs.listdir(f"proc/{pid}/fd"):
            if pid == me and fd == str(own_fd):
                continue
            target = sysfs.readlink(f"proc/{pid}/fd/{fd}")
            if target is None or not target.startswith("/dev/vfio/devices/"):
                continue  # a cheap test first: most fds are no VFIO cdev
            st = sysfs.stat(f"proc/{pid}/fd/{fd}")  # the open file itself, however named
            if st is not None and stat.S_ISCHR(st.st_mode) and st.st_rdev == rdev:
                return True
    return False


class IommufdBackend:
    """``/dev/iommu`` with one IOAS, devices through their ``/dev/vfio/devices/vfioN``."""

    name = "iommufd"
    #: What serves it (`Backend.mode`): the same as its name.
    mode = "iommufd"
    pins_memory = True
    share_memory = False
    cdev_of = staticmethod(cdev_of)

    def __init__(self, sysfs: Sysfs, path: str = "/dev/iommu") -> None:
        self.sysfs = sysfs
        if not os.path.exists(path):
            raise UnsupportedError(
                f"{path} does not exist: this kernel has no IOMMUFD (use backend='type1')",
                device=path,
            )
        self.fd = _ioctl.open_node(path)
        try:
            self.ioas = _ioctl.ioas_alloc(self.fd)
        except BaseException:
            _ioctl.close_node(self.fd)
            raise
        self.dma = _ioctl.IoasDma(self.fd, self.ioas)  # map/unmap's arguments, made once
        self.devices: dict[str, int] = {}
        self.alignment = 0

    def fileno(self) -> int:
        return self.fd

    def attach(
        self, address: str, group: int | None, vf_token: str | None = None
    ) -> DeviceTransport:
        cdev = cdev_of(address, self.sysfs)
        if cdev is None or not os.path.exists(cdev):
            raise UnsupportedError(
                f"{address} has no VFIO device cdev: this kernel lacks "
                "CONFIG_VFIO_DEVICE_CDEV (use backend='type1')",
                device=address,
            )
        fd = _ioctl.open_node(cdev)
        try:
            try:
                if vf_token is None:
                    _ioctl.device_bind_iommufd(fd, self.fd, address)
                else:
                    token = uuid.UUID(vf_token).bytes
                    _ioctl.device_bind_iommufd(fd, self.fd, address, token)
            except VfioError as err:
                # iommu_device_claim_dma_owner: -EPERM while a kernel driver owns DMA
                # for a member of the group (owner_cnt set by another owner), -EBUSY
                # while the group is attached to a domain other than its default.
                if (
                    group is not None
                    and err.errno in (E.EPERM, E.EBUSY)
                    and blocking_peers(group, self.sysfs)
                ):
                    raise not_viable_error(
                        address, group, self.sysfs, "VFIO_DEVICE_BIND_IOMMUFD"
                    ) from err
                # vfio_df_open: a cdev binds once ("the device cdev path doesn't have a
                # secure way" to share it), so a second bind answers -EINVAL, as a malformed
                # request would. It is "already open" (EBUSY, as type1 and the group path
                # say) only where another open fd of the cdev shows it.
                if err.errno == E.EINVAL and _cdev_held_elsewhere(cdev, fd, self.sysfs):
                    raise VfioError(
                        f"{address} is already open: {cdev} is bound to another iommufd",
                        errno=E.EBUSY,
                        ioctl="VFIO_DEVICE_BIND_IOMMUFD",
                        device=address,
                    ) from err
                if err.errno == E.EINVAL and vf_token is not None:
                    raise UnsupportedError(
                        f"{address}: this kernel ({self.sysfs.read_attr(OSRELEASE)}) takes no "
                        "VF token on the device cdev path: VFIO_DEVICE_BIND_FLAG_TOKEN is "
                        f"Linux {'.'.join(map(str, v.BIND_TOKEN_SINCE))}+ (before it, the cdev "
                        "path checks no VF token at all); open it with backend='type1', "
                        "which passes the token in the device name",
                        errno=err.errno,
                        ioctl="VFIO_DEVICE_BIND_IOMMUFD",
                        device=address,
                    ) from err
                raise
            _ioctl.device_attach_iommufd_pt(fd, self.ioas, address)
        except BaseException:
            _ioctl.close_node(fd)
            raise
        self.devices[address] = fd
        return KernelTransport(fd, address)

    def detach(self, address: str) -> None:
        # Closing the device fd unbinds it from the iommufd; the device owns the fd.
        self.devices.pop(address, None)

    def group_fds(self) -> Mapping[int, int]:
        return {}

    def info(self) -> IommuInfo:
        ranges, self.alignment = _ioctl.ioas_iova_ranges(self.fd, self.ioas)
        return IommuInfo(_mem.PAGE_SIZE, ranges)

    def map(self, vaddr: int, iova: int, size: int, fd: int = -1, fd_offset: int = 0) -> None:
        self.dma.map(vaddr, iova, size)

    def unmap(self, iova: int, size: int) -> None:
        self.dma.unmap(iova, size)

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        self.dma.fd = -1
        if fd >= 0:
            with contextlib.suppress(VfioError):
                _ioctl.iommufd_destroy(fd, self.ioas)
            _ioctl.close_node(fd)
