"""The kernel (or socket) interfaces an `~pyvfio.Iommu` is made of, one module each.

* `type1`: ``/dev/vfio/vfio`` + ``/dev/vfio/N`` per IOMMU group (`Type1Backend`);
* `noiommu`: the same with VFIO's no-IOMMU groups and no DMA (`NoIommuBackend`);
* `iommufd`: ``/dev/iommu`` + each device's cdev (`IommufdBackend`);
* `vfio_user`: devices behind UNIX sockets (`VfioUserBackend`), imported only when
  one is opened, with the vfio-user client it brings.

Each is a `Backend`: the Iommu and its devices use a backend through this protocol
only (pyusb's ``IBackend``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Protocol

from pyvfio._transport import DeviceTransport
from pyvfio.backends.iommufd import IommufdBackend, cdev_of, cdev_takes_vf_token
from pyvfio.backends.noiommu import UNSAFE_NOIOMMU, NoIommuBackend
from pyvfio.backends.type1 import Type1Backend
from pyvfio.info import IommuInfo
from pyvfio.sysfs import Sysfs

#: Every backend's name, in the order the docs and errors list them.
NAMES = ("type1", "iommufd", "vfio-user", UNSAFE_NOIOMMU)


class Backend(Protocol):
    """One IOMMU address space as a kernel (or a vfio-user server) provides it."""

    #: ``type1``, ``iommufd``, ``vfio-user`` or ``unsafe-noiommu``.
    name: str

    @property
    def mode(self) -> str:
        """What serves it, in the kernel VFIO selftests' names where they have one:
        ``vfio_type1v2_iommu``, ``iommufd_compat_type1v2``, ``iommufd``; ``vfio-user``."""
        ...

    #: Whether a mapping pins the memory (RLIMIT_MEMLOCK applies): the kernel's do.
    pins_memory: bool
    #: Whether DMA memory goes to the device as an fd (a memfd), for a vfio-user
    #: server to map; the kernel's backends take any memory.
    share_memory: bool

    def fileno(self) -> int:
        """The container's or iommufd's fd (UnsupportedError where there is none)."""
        ...

    def attach(
        self, address: str, group: int | None, vf_token: str | None = None
    ) -> DeviceTransport:
        """Open ``address`` (in IOMMU group ``group``) into this address space;
        ``vf_token``: an SR-IOV VF's token (a UUID's 36 characters), where vfio-pci wants one."""
        ...

    def detach(self, address: str) -> None:
        """Forget a device whose transport is closed (its group leaves with the last)."""
        ...

    def group_fds(self) -> Mapping[int, int]:
        """The open group fds by group number: what ``VFIO_DEVICE_PCI_HOT_RESET``
        passes for a bus reset (empty where the kernel checks ownership otherwise)."""
        ...

    def info(self) -> IommuInfo: ...

    def map(self, vaddr: int, iova: int, size: int, fd: int = -1, fd_offset: int = 0) -> None:
        """Map ``size`` bytes at ``vaddr`` to ``iova``; ``fd``/``fd_offset`` name the
        memory's file where it has one (only vfio-user uses them)."""
        ...

    def unmap(self, iova: int, size: int) -> None: ...

    def close(self) -> None:
        """Detach every device and close the fds (idempotent)."""
        ...


def start(
    name: str, sysfs: Sysfs, *, share_memory: bool = True, timeout: float | None = None
) -> Backend:
    """A new backend by name (`NAMES`); ``share_memory`` and ``timeout`` are vfio-user's."""
    if name == "type1":
        return Type1Backend(sysfs)
    if name == "iommufd":
        return IommufdBackend(sysfs)
    if name == UNSAFE_NOIOMMU:
        return NoIommuBackend(sysfs)
    if name == "vfio-user":
        from pyvfio.backends.vfio_user import VfioUserBackend  # brings the client: on use

        return VfioUserBackend(share_memory=share_memory, timeout=timeout)
    raise ValueError(f"unknown IOMMU backend {name!r}: use one of {', '.join(NAMES)}")


def choose(address: str, sysfs: Sysfs, *, vf_token: bool = False) -> str:
    """``auto`` for a PCI device: iommufd where ``/dev/iommu`` and the device's cdev
    exist and this user may open both, type1 otherwise; type1 also for a device opened
    with a VF token on a kernel whose cdev path takes none (before 6.17)."""
    if vf_token and not cdev_takes_vf_token(sysfs):
        return "type1"
    cdev = cdev_of(address, sysfs)
    # A user granted only the type1 nodes (or none: then type1 names pyvfio grant)
    # must not be sent to an iommufd they cannot open.
    use_iommufd = cdev is not None and all(
        os.access(p, os.R_OK | os.W_OK, effective_ids=True) for p in ("/dev/iommu", cdev)
    )
    return "iommufd" if use_iommufd else "type1"


__all__ = [
    "NAMES",
    "UNSAFE_NOIOMMU",
    "Backend",
    "IommufdBackend",
    "NoIommuBackend",
    "Type1Backend",
    "choose",
    "start",
]
