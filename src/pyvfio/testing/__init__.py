"""Simulated hosts, for testing tools built on pyvfio without root, an IOMMU or the devices.

A `SyntheticHost` writes a sysfs and procfs tree into a folder (devices and their
configuration spaces, IOMMU groups, drivers, disks, network interfaces), which every
pyvfio host tool reads through ``--root`` or a `pyvfio.sysfs.Sysfs` of that folder
as if it were a live host. A `SimulatedKernel` is such a ``Sysfs`` whose driver writes
act as the PCI core's (``driver_override``, ``unbind``, ``bind``, ``drivers_probe``), so
binding runs as on a real kernel. Configuration spaces are built by the vfio-user
server's `~pyvfio.server.config.ConfigSpaceBuilder` from the capabilities declared
(`config_bytes`), so pyvfio's parser, and lspci, read them as they would a device's::

    from pyvfio.testing import SyntheticHost, SimulatedKernel, msix_cap, pcie_cap, pm_cap

    host = SyntheticHost(tmp_path)
    host.add_device("0000:03:00.0", 0x8086, 0x1533, 0x020000, driver="igb", group=3,
                    capabilities=[pm_cap(), msix_cap(8), pcie_cap(0, flr=True)],
                    resources=[(0, 0xF7000000, 16 << 10)], reset_method="flr bus")
    kernel = SimulatedKernel(host, {"0000:03:00.0": "igb"})

Ready-made hosts: `q35_lab` (the lab's guest), `intel_server` (an ACS-less switch,
SR-IOV VFs, a device without reset), `amd_desktop` (a GPU and its audio function
holding the console) and `large_host` (thousands of functions, for benchmarks).
"""

from pyvfio.testing.config import (
    BRIDGE_CLASS,
    Declaration,
    acs_ext,
    config_bytes,
    msi_cap,
    msix_cap,
    pcie_cap,
    pm_cap,
    sriov_ext,
)
from pyvfio.testing.hosts import (
    Q35_LAB,
    amd_desktop,
    intel_server,
    large_host,
    q35_lab,
    virtio_guest,
)
from pyvfio.testing.kernel import SimulatedKernel
from pyvfio.testing.sysfs import SyntheticHost

__all__ = [
    "BRIDGE_CLASS",
    "Q35_LAB",
    "Declaration",
    "SimulatedKernel",
    "SyntheticHost",
    "acs_ext",
    "amd_desktop",
    "config_bytes",
    "intel_server",
    "large_host",
    "msi_cap",
    "msix_cap",
    "pcie_cap",
    "pm_cap",
    "q35_lab",
    "sriov_ext",
    "virtio_guest",
]
