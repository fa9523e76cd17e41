"""``pyvfio.server``: PCI devices written in Python, served over vfio-user.

The device side of VFIO, in a process of its own: a VMM (QEMU's ``vfio-user-pci``)
or pyvfio's own vfio-user client connects to a UNIX socket and drives the device as
it would drive one bound to vfio-pci.  Write a device as a `PciDevice` subclass,
serve it with `Server`::

    from pyvfio.server import EduDevice, Server

    with Server(EduDevice(), "/run/edu.sock") as server:
        server.serve_forever()

The protocol is QEMU's docs/interop/vfio-user.rst; the wire format lives in
`pyvfio.vfio_user.protocol`, shared with the client.
"""

from collections.abc import Callable

from pyvfio.server.config import BarKind, BarSpec, ConfigSpaceBuilder, EmulatedConfig
from pyvfio.server.device import DmaAccess, Interrupts, MmapArea, PciDevice, Region
from pyvfio.server.dma import DmaRange, DmaSpace
from pyvfio.server.edu import EduDevice
from pyvfio.server.server import Server, ServerOptions, running, serve_connection

__all__ = [
    "BarKind",
    "BarSpec",
    "ConfigSpaceBuilder",
    "DmaAccess",
    "DmaRange",
    "DmaSpace",
    "EduDevice",
    "EmulatedConfig",
    "Interrupts",
    "MmapArea",
    "PciDevice",
    "Region",
    "Server",
    "ServerOptions",
    "running",
    "serve_connection",
]

#: Devices ``pyvfio serve`` knows by name.
DEVICES: dict[str, Callable[[], PciDevice]] = {"edu": EduDevice}
