"""Configuration spaces for simulated devices, built by the vfio-user server's builder.

A device is declared with the capabilities it has (``pm_cap()``, ``msix_cap(64)``,
``pcie_cap(PortType.ROOT_PORT)``, ``acs_ext()`` ...) and `config_bytes` lays them out
with `pyvfio.server.config.ConfigSpaceBuilder`, the same register tables pyvfio's
parser reads them with::

    data = config_bytes(0x8086, 0x1533, 0x020000,
                        capabilities=[pm_cap(), msix_cap(8), pcie_cap(PortType.ENDPOINT, flr=True)],
                        resources=[(0, 0xF7000000, 16 << 10)])
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from pyvfio._uapi.pci_regs import (
    PCI_BASE_ADDRESS_0,
    PCI_COMMAND,
    PCI_COMMAND_MASTER,
    PCI_COMMAND_MEMORY,
    PCI_STD_NUM_BARS,
)
from pyvfio.pci.extended import ACS_LAYOUT, SRIOV_LAYOUT, AcsFlags
from pyvfio.server.config import BarSpec, ConfigSpaceBuilder

__all__ = [
    "BRIDGE_CLASS",
    "Declaration",
    "acs_ext",
    "config_bytes",
    "msi_cap",
    "msix_cap",
    "pcie_cap",
    "pm_cap",
    "sriov_ext",
]

BRIDGE_CLASS = 0x060400  # PCI_CLASS_BRIDGE_PCI, programming interface 0

#: A capability a device has: it lays itself out on the builder.
Declaration = Callable[[ConfigSpaceBuilder], object]


def pm_cap(*, no_soft_reset: bool = False) -> Declaration:
    """Power Management; ``no_soft_reset`` if D3hot -> D0 keeps the function's state."""
    return lambda builder: builder.add_pm(no_soft_reset=no_soft_reset)


def msi_cap(vectors: int = 1) -> Declaration:
    """64-bit MSI with ``vectors``."""
    return lambda builder: builder.add_msi(vectors, is_64bit=True)


def msix_cap(table_size: int) -> Declaration:
    """MSI-X of ``table_size`` vectors, its table and PBA in BAR 0 (declare that one)."""
    return lambda builder: builder.add_msix(table_size, table_bar=0)


def pcie_cap(port_type: int, *, flr: bool = False) -> Declaration:
    """A PCI Express capability (version 2) of ``port_type``, with or without FLR."""
    return lambda builder: builder.add_express(port_type=port_type, flr=flr)


def acs_ext(capability: int = 0x1F, control: int = 0x1D) -> Declaration:
    """An ACS extended capability; the default has SV, RR, CR, UF enabled."""
    return lambda builder: builder.add_extended_capability(
        ACS_LAYOUT, capability=AcsFlags(capability), control=AcsFlags(control)
    )


def sriov_ext(total_vfs: int, num_vfs: int, vf_device: int) -> Declaration:
    """SR-IOV with ``num_vfs`` of ``total_vfs`` VFs enabled (VF memory on), routing IDs
    from 0x80 on in steps of 1."""
    return lambda builder: builder.add_extended_capability(
        SRIOV_LAYOUT,
        initial_vfs=total_vfs,
        total_vfs=total_vfs,
        num_vfs=num_vfs,
        vf_enable=bool(num_vfs),
        vf_memory_space_enable=bool(num_vfs),
        vf_offset=0x80,
        vf_stride=1,
        vf_device_id=vf_device,
    )


def config_bytes(
    vendor: int,
    device: int,
    class_code: int,
    *,
    capabilities: Sequence[Declaration] = (),
    extended: Sequence[Declaration] = (),
    interrupt_pin: int = 1,
    resources: Iterable[tuple[int, int, int]] = (),
) -> bytes:
    """The configuration space of a function with these capabilities (a type 1 header for
    a PCI bridge's class), memory decoding and bus mastering on, and its BARs
    (``(index, start, size)``, as for `SyntheticHost.add_device`) sized and programmed as
    firmware leaves them.  256 bytes, or 4 KiB with PCI Express."""
    bridge = class_code >> 8 == BRIDGE_CLASS >> 8
    builder = ConfigSpaceBuilder(
        vendor, device, class_code=class_code, interrupt_pin=interrupt_pin, bridge=bridge
    )
    bars = [(index, start, size) for index, start, size in resources if index < PCI_STD_NUM_BARS]
    for index, _start, size in bars:
        builder.add_bar(BarSpec(index, size))
    for declare in (*capabilities, *extended):
        declare(builder)
    config = builder.build()
    for index, start, _size in bars:
        config.write(PCI_BASE_ADDRESS_0 + 4 * index, start.to_bytes(4, "little"))
    command = PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER
    config.write(PCI_COMMAND, command.to_bytes(2, "little"))
    return bytes(config.data)
