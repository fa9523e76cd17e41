"""Choose KVM when it really works, TCG otherwise.

The probe itself is :mod:`pyvfio.host.accel` (``vm qemu --check`` uses it too): a
64 KiB firmware that exits through ``isa-debug-exit`` tells in milliseconds whether
KVM runs a vCPU here. This module adds the lab's override, ``$PYVFIO_LAB_ACCEL``.
"""

from __future__ import annotations

import os

from pyvfio.errors import LabSpecError
from pyvfio.host.accel import kvm_usable, probe

__all__ = ["ACCEL_ENV", "choose_accel", "kvm_usable", "probe"]

#: Environment variable forcing the accelerator: ``kvm`` or ``tcg``.
ACCEL_ENV = "PYVFIO_LAB_ACCEL"


def choose_accel(requested: str | None = None) -> str:
    """``kvm`` or ``tcg``: the one asked for (argument or $PYVFIO_LAB_ACCEL), else probed."""
    requested = requested or os.environ.get(ACCEL_ENV) or None
    if requested is not None:
        if requested not in ("kvm", "tcg"):
            raise LabSpecError(f"unknown accelerator {requested!r}: use kvm or tcg")
        return requested
    return "kvm" if kvm_usable()[0] else "tcg"
