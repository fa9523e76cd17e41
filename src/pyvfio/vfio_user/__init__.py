"""vfio-user: VFIO over a UNIX socket (QEMU docs/interop/vfio-user.rst).

`protocol` is the wire format both ends share; ``pyvfio.server`` is the device end.
"""
