"""Inside the lab guest: which devices the host asked for, and where they ended up."""

from __future__ import annotations

import os
from pathlib import Path

from pyvfio.errors import LabError
from pyvfio.lab.runner import MANIFEST_ENV
from pyvfio.lab.topology import LabDevice, Manifest

SYSFS_PCI_ROOT = Path("/sys/devices/pci0000:00")


def in_guest() -> bool:
    """True when this process runs inside a lab guest started by pyvfio.lab."""
    return MANIFEST_ENV in os.environ


def manifest() -> Manifest:
    """The manifest the host wrote for this guest."""
    path = os.environ.get(MANIFEST_ENV)
    if not path:
        raise LabError(f"not in a lab guest (${MANIFEST_ENV} is not set)")
    return Manifest.load(Path(path))


def address_of(device: LabDevice, sysfs_root: Path = SYSFS_PCI_ROOT) -> str:
    """The PCI address the guest gave ``device``, found by walking its slot path.

    Bus numbers are the firmware's choice; the path of slots from the root bus is
    the lab's, so each hop is the child of the previous one with that slot.function.
    A first hop ``BUS:SLOT.FN`` starts on another root bus (an expander bridge's).
    """
    bus, _, slot = device.path[0].rpartition(":")  # "80:00.0": on another root bus
    root = sysfs_root.with_name(f"pci0000:{bus}") if bus else sysfs_root
    node = root / f"0000:{bus or '00'}:{slot}"
    for hop in device.path[1:]:
        children = sorted(node.glob(f"0000:??:{hop}"))
        if not children:
            raise LabError(f"lab device {device} not found below {node}")
        node = children[0]
    if not node.exists():
        raise LabError(f"lab device {device} not found at {node}")
    return node.name


def devices(name: str | None = None) -> list[tuple[LabDevice, str]]:
    """The lab's devices (those called ``name`` if given) with their addresses."""
    return [(d, address_of(d)) for d in manifest().devices if name in (None, d.name)]


def address(name: str, index: int = 0) -> str:
    """The address of the ``index``-th lab device called ``name`` (``edu``, ``nvme``...)."""
    found = devices(name)
    if index >= len(found):
        raise LabError(
            f"the lab has {len(found)} {name} device(s); topology "
            f"{manifest().topology!r} needs another --device {name}"
        )
    return found[index][1]
