"""How a `Device` reaches its device: the kernel's device fd, or a vfio-user socket.

`Device`, `Region`, `Interrupt` and `Config` speak to a ``DeviceTransport`` only, so
the same public objects work over both. `KernelTransport` is the kernel's: one
ioctl of `pyvfio._ioctl` per method, ``pread``/``pwrite`` at the region's offset, the
device fd to mmap. The vfio-user one is `pyvfio.vfio_user.client.VfioUserClient`.

The register hot path does not come through here: `Region` loads and stores through
its mapping directly, and only asks the transport for the fd to map; a region that is
never mapped (the config space) asks once for the fd to ``pread`` (`region_fd`).
"""

from __future__ import annotations

import contextlib
import os
from typing import Protocol

from pyvfio import _ioctl
from pyvfio.info import DependentDevice, DeviceInfo, IrqInfo, RegionInfo


class DeviceTransport(Protocol):
    """What a device offers, as plain values; errors are `VfioError` (``OSError``)."""

    def fileno(self) -> int:
        """The fd behind the device (the device fd, or the socket); -1 once closed."""
        ...

    def device_info(self) -> DeviceInfo: ...

    def region_info(self, index: int) -> RegionInfo:
        """The region, with only the mmap areas this transport can really map."""
        ...

    def region_read(self, info: RegionInfo, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset`` of the region, not through any mapping."""
        ...

    def region_write(self, info: RegionInfo, offset: int, data: bytes) -> int:
        """Write ``data`` at ``offset`` of the region; the bytes written."""
        ...

    def mmap_fd(self, info: RegionInfo) -> int:
        """The fd whose ``info.offset + area.offset`` maps each of the region's areas."""
        ...

    def region_fd(self, info: RegionInfo) -> int:
        """The fd on which ``pread``/``pwrite`` at ``info.offset + offset`` are
        ``region_read``/``region_write``, or -1 when they are not (messages). A
        never-mapped region (the config space) keeps it for its fast path."""
        ...

    def irq_info(self, index: int) -> IrqInfo: ...

    def set_irqs(
        self,
        index: int,
        start: int,
        flags: int,
        eventfds: list[int] | None = None,
        count: int | None = None,
    ) -> None:
        """``VFIO_DEVICE_SET_IRQS``: ``eventfds`` with DATA_EVENTFD, else ``count``."""
        ...

    def reset(self) -> None: ...

    def hot_reset_info(self) -> tuple[DependentDevice, ...]: ...

    def hot_reset(self, group_fds: list[int]) -> None: ...

    def close(self) -> None:
        """Release the device (idempotent)."""
        ...


class KernelTransport:
    """A vfio-pci device fd: ioctls, ``pread``/``pwrite`` and ``mmap`` on it."""

    __slots__ = ("address", "fd")

    def __init__(self, fd: int, address: str) -> None:
        self.fd = fd
        self.address = address

    def fileno(self) -> int:
        return self.fd

    def device_info(self) -> DeviceInfo:
        return _ioctl.device_get_info(self.fd, self.address)

    def region_info(self, index: int) -> RegionInfo:
        return _ioctl.device_get_region_info(self.fd, index, self.address)

    def region_read(self, info: RegionInfo, offset: int, length: int) -> bytes:
        return os.pread(self.fd, length, info.offset + offset)

    def region_write(self, info: RegionInfo, offset: int, data: bytes) -> int:
        return os.pwrite(self.fd, data, info.offset + offset)

    def mmap_fd(self, info: RegionInfo) -> int:
        return self.fd

    def region_fd(self, info: RegionInfo) -> int:
        return self.fd

    def irq_info(self, index: int) -> IrqInfo:
        return _ioctl.device_get_irq_info(self.fd, index, self.address)

    def set_irqs(
        self,
        index: int,
        start: int,
        flags: int,
        eventfds: list[int] | None = None,
        count: int | None = None,
    ) -> None:
        _ioctl.device_set_irqs(self.fd, index, start, flags, eventfds, count, self.address)

    def reset(self) -> None:
        _ioctl.device_reset(self.fd, self.address)

    def hot_reset_info(self) -> tuple[DependentDevice, ...]:
        return _ioctl.device_get_pci_hot_reset_info(self.fd, self.address)

    def hot_reset(self, group_fds: list[int]) -> None:
        _ioctl.device_pci_hot_reset(self.fd, group_fds, self.address)

    def set_vf_token(self, token: bytes) -> None:
        """An SR-IOV PF's VF token (16 bytes); vfio-pci's alone, so not in the protocol."""
        _ioctl.device_set_vf_token(self.fd, token, self.address)

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)


__all__ = ["DeviceTransport", "KernelTransport"]
