"""Every error pyvfio raises, each naming its cause and the fix.

The tree::

    PyvfioError                      anything pyvfio raises on purpose
    ├── InvalidAddressError          a PCI address that does not parse (also ValueError)
    ├── DeviceNotFoundError          no such PCI device on this host
    ├── VfioError                    the VFIO path failed; carries .errno, .ioctl, .device
    │   ├── DeviceNotBoundError      the device is not on vfio-pci
    │   ├── GroupNotViableError      a group member sits on a host driver; .peers
    │   ├── PermissionDeniedError    /dev/vfio/N or /dev/iommu cannot be opened (pyvfio grant)
    │   ├── VfTokenError             an SR-IOV VF refused: VF token missing, wrong or unwanted
    │   ├── UnsafeNoIommuError       a no-IOMMU group, opened without backend="unsafe-noiommu"
    │   ├── MemlockLimitError        RLIMIT_MEMLOCK too small to pin the DMA memory
    │   ├── NoInterruptRemappingError  type1 refuses to attach without IRQ remapping
    │   ├── IovaExhaustedError       no free IOVA range fits the request
    │   ├── UnsupportedError         the device or kernel cannot do what was asked
    │   ├── ClosedError              the object was used after close()
    │   │   └── DeviceRemovedError   the device was closed after the host asked for it back
    │   └── VfioUserError            the vfio-user socket failed (vfio_user); .errno
    │       ├── VfioUserProtocolError  a short, oversized or malformed message; .header
    │       ├── VfioUserDisconnectedError  the peer closed the socket (also ConnectionError)
    │       ├── VfioUserRemoteError  the peer answered with an error reply; .errno, .command
    │       └── VfioUserTimeoutError  no reply within the client's timeout (also TimeoutError)
    ├── HostError                    sysfs/driver changes on the host failed
    │   ├── UnknownDriverError       no such driver (host.bind; also ValueError)
    │   ├── NotRootError             changing the host needs root (host.bind; also ValueError)
    │   ├── DeviceInUseError         the host uses the device: root fs, disk, NIC, console
    │   ├── UnknownUserError         grant/revoke: no such user (host.grant; also ValueError)
    │   ├── SharedGroupError         grant: the group node opens other devices; --group (ValueError)
    │   ├── SnapshotError            a --root snapshot that cannot be read (also ValueError)
    │   └── PersistError             persist cannot write or undo its files (vm.persist)
    │       └── PersistRefusedError  a file it cannot read exactly or that changed (ValueError)
    ├── QemuError / QmpError         QEMU would not start, or its monitor would not answer (vm)
    ├── NvmeError                    the NVMe driver (drivers.nvme_spec)
    │   ├── NvmeStatusError          a command's status, decoded (SCT/SC/DNR and the names)
    │   ├── ControllerFatalError     CSTS.CFS: the controller gave up
    │   └── NvmeTimeoutError         bring-up or a command timed out (also TimeoutError)
    └── LabError                     the VM lab cannot boot or run
        ├── LabSpecError             a topology the lab cannot build (also ValueError)
        └── LabUnavailableError      something the lab needs is missing (says what to install)
            └── KernelBuildError     the lab kernel cannot be built (lab.kernel_build)

The subclasses outside this module live beside the code that raises them.

Every ioctl goes through :func:`pyvfio._ioctl.call`, which turns ``OSError`` into
one of the ``VfioError`` subclasses with ``raise ... from err``.
"""

from __future__ import annotations

import errno as _errno
from dataclasses import dataclass


class PyvfioError(Exception):
    """Base of everything pyvfio raises on purpose."""


class InvalidAddressError(PyvfioError, ValueError):
    """A PCI address that does not parse."""


class DeviceNotFoundError(PyvfioError, LookupError):
    """No PCI device at that address on this host."""


class VfioError(PyvfioError, OSError):
    """A VFIO operation failed.

    ``errno`` is the kernel's errno (0 when the failure was found before any
    system call), ``ioctl`` the ioctl's kernel name, ``device`` the device or
    node it was issued on.
    """

    def __init__(
        self,
        message: str,
        *,
        errno: int = 0,
        ioctl: str | None = None,
        device: str | None = None,
    ) -> None:
        super().__init__(message)
        self.errno = errno
        self.ioctl = ioctl
        self.device = device
        self.message = message

    def __str__(self) -> str:
        return self.message


class DeviceNotBoundError(VfioError):
    """The device is not bound to vfio-pci."""


@dataclass(frozen=True)
class Peer:
    """A member of an IOMMU group and the driver it is bound to (None: no driver)."""

    address: str
    driver: str | None

    def __str__(self) -> str:
        return f"{self.address} ({self.driver or 'no driver'})"


class GroupNotViableError(VfioError):
    """An IOMMU group has a member bound to a host driver; ``peers`` names them."""

    def __init__(
        self,
        message: str,
        *,
        peers: tuple[Peer, ...],
        group: int | None = None,
        errno: int = _errno.EPERM,
        ioctl: str | None = None,
        device: str | None = None,
    ) -> None:
        super().__init__(message, errno=errno, ioctl=ioctl, device=device)
        self.peers = peers
        self.group = group


class PermissionDeniedError(VfioError):
    """A VFIO node exists but this process may not open it."""


class VfTokenError(VfioError):
    """vfio-pci refused an SR-IOV device for its VF token: a VF whose PF is on vfio-pci
    opens only with the token the PF's user set (``Device.set_vf_token``), passed as
    ``pyvfio.open(vf, vf_token=UUID)``; a token where none is wanted is refused too."""


class UnsafeNoIommuError(VfioError):
    """The device is in VFIO's unsafe no-IOMMU mode: nothing confines its DMA.

    Opened only with the explicit opt-in ``backend="unsafe-noiommu"`` (:mod:`pyvfio.noiommu`).
    """


class MemlockLimitError(VfioError):
    """Pinning DMA memory would exceed RLIMIT_MEMLOCK."""

    def __init__(
        self,
        message: str,
        *,
        limit: int,
        requested: int,
        errno: int = _errno.ENOMEM,
        ioctl: str | None = None,
        device: str | None = None,
    ) -> None:
        super().__init__(message, errno=errno, ioctl=ioctl, device=device)
        self.limit = limit
        self.requested = requested


class NoInterruptRemappingError(VfioError):
    """vfio_iommu_type1 refuses to attach a group without interrupt remapping."""


class IovaExhaustedError(VfioError):
    """No free IOVA range satisfies the size, alignment and ``max_iova`` asked for."""


class UnsupportedError(VfioError):
    """The device or the kernel does not support the operation."""


class ClosedError(VfioError):
    """The object was used after ``close()``."""


class VfioUserError(VfioError):
    """The vfio-user socket path failed (``pyvfio.vfio_user``, ``pyvfio.server``).

    ``errno`` is the errno to put in an error reply (or the one received; EINVAL
    unless said otherwise), ``ioctl`` the vfio-user command's name when one is known.
    """

    def __init__(
        self,
        message: str,
        *,
        errno: int = _errno.EINVAL,
        ioctl: str | None = None,
        device: str | None = None,
    ) -> None:
        super().__init__(message, errno=errno, ioctl=ioctl, device=device)


class VfioUserProtocolError(VfioUserError):
    """A message that breaks the wire format: short, oversized, malformed, or with the
    wrong number of file descriptors.

    ``header`` is the message's `pyvfio.vfio_user.protocol.Header` when it could be
    read (so that an error reply can echo its id), else None.
    """

    def __init__(
        self,
        message: str,
        *,
        header: object | None = None,
        errno: int = _errno.EINVAL,
        ioctl: str | None = None,
        device: str | None = None,
    ) -> None:
        super().__init__(message, errno=errno, ioctl=ioctl, device=device)
        self.header = header


class VfioUserDisconnectedError(VfioUserError, ConnectionError):
    """The peer closed the vfio-user socket (between messages or in the middle of one)."""

    def __init__(
        self,
        message: str,
        *,
        errno: int = _errno.ECONNRESET,
        ioctl: str | None = None,
        device: str | None = None,
    ) -> None:
        super().__init__(message, errno=errno, ioctl=ioctl, device=device)


class VfioUserRemoteError(VfioUserError):
    """The peer answered a command with an error reply; ``errno`` is the errno it sent."""


class VfioUserTimeoutError(VfioUserError, TimeoutError):
    """The vfio-user server did not answer a command within the client's ``timeout``."""


class DeviceRemovedError(ClosedError):
    """The device was used after it was closed for its removal from the host.

    vfio-pci holds a ``remove`` (sysfs, hot-unplug, unbind) until userspace closes
    the device, and signals its request interrupt meanwhile
    (:meth:`pyvfio.Device.watch_removal`); a device closed after that request is gone.
    """


class HostError(PyvfioError):
    """Changing the host (sysfs binding, modules) failed."""


class LabError(PyvfioError):
    """The VM lab failed to boot or run a command."""


class LabSpecError(LabError, ValueError):
    """A lab device or topology that does not exist."""


class LabUnavailableError(LabError):
    """Something the lab needs is missing; the message says what to install."""
