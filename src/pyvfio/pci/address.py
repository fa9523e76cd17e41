"""PCI addresses: ``[DOMAIN:]BUS:DEVICE.FUNCTION`` in hex, as lspci and sysfs write them."""

from __future__ import annotations

import re

from pyvfio.errors import InvalidAddressError

_ADDRESS = re.compile(
    r"^(?:(?P<domain>[0-9a-fA-F]{1,8}):)?(?P<bus>[0-9a-fA-F]{1,2}):"
    r"(?P<device>[0-9a-fA-F]{1,2})\.(?P<function>[0-9a-fA-F])$"
)


def normalize(address: str) -> str:
    """``"00:1f.2"`` -> ``"0000:00:1f.2"``; InvalidAddressError saying why otherwise.

    Devices are 0..0x1f and functions 0..7 (PCI Local Bus spec); the domain is 16 bits
    on most hosts but Linux allows 32 (VMD), so up to 8 hex digits are taken.
    """
    if not isinstance(address, str):
        raise InvalidAddressError(
            f"a PCI address must be a string like 0000:00:1f.2, not {type(address).__name__}"
        )
    text = address.strip()
    m = _ADDRESS.match(text)
    if not m:
        raise InvalidAddressError(
            f"{address!r} is not a PCI address: write [DOMAIN:]BUS:DEVICE.FUNCTION in hex, "
            "e.g. 0000:00:1f.2 or 00:1f.2 (lspci -D lists them)"
        )
    domain = int(m.group("domain") or "0", 16)
    bus, device, function = (int(m.group(k), 16) for k in ("bus", "device", "function"))
    if device > 0x1F:
        raise InvalidAddressError(f"{address!r}: device {device:#x} is out of range 00-1f")
    if function > 7:
        raise InvalidAddressError(f"{address!r}: function {function} is out of range 0-7")
    return f"{domain:04x}:{bus:02x}:{device:02x}.{function:x}"
