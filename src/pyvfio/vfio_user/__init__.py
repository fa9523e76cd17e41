"""vfio-user: VFIO over a UNIX socket (QEMU docs/interop/vfio-user.rst).

`protocol` is the wire format both ends share; `client` is the device's transport
and the Iommu's backend for ``vfio-user:PATH`` addresses; ``pyvfio.server`` is the
device end. The address form is here, so that telling a vfio-user address from a
PCI one imports neither the client nor the protocol.
"""

from __future__ import annotations

import os

#: ``pyvfio.open("vfio-user:/path/to.sock")``: the address form of a vfio-user device.
SCHEME = "vfio-user:"


def is_vfio_user(address: str) -> bool:
    return isinstance(address, str) and address.startswith(SCHEME)


def socket_path(address: str) -> str:
    """The socket path of ``vfio-user:PATH`` (absolute, so the address names one device)."""
    path = address[len(SCHEME) :] if is_vfio_user(address) else address
    if not path:
        raise ValueError(f"{address!r} names no socket: use vfio-user:/path/to.sock")
    return os.path.abspath(path)


__all__ = ["SCHEME", "is_vfio_user", "socket_path"]
