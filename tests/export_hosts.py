"""The hosts the export tests offer from: pyvfio.testing's, bound as each case needs, and one
more that QEMU cannot build (SR-IOV VFs in their PF's group, as without ACS)."""

from __future__ import annotations

from pathlib import Path

from pyvfio.host.snapshot import open_root
from pyvfio.host.sysfs import Sysfs
from pyvfio.pci.capabilities import PortType
from pyvfio.testing import SimulatedKernel, amd_desktop, intel_server, q35_lab
from pyvfio.testing.config import msix_cap, pcie_cap, pm_cap, sriov_ext
from pyvfio.testing.sysfs import SyntheticHost

#: The lab's main topology, recorded (tests/data/snapshots/README.md).
LAB_SNAPSHOT = Path(__file__).resolve().parent / "data" / "snapshots" / "lab-main.tar.gz"


def bind(kernel: SimulatedKernel, driver: str | None, *addresses: str) -> SimulatedKernel:
    for address in addresses:
        kernel.host.bind(address, driver)
    return kernel


def gpu_and_audio(root: Path, audio: str | None = "vfio-pci") -> SimulatedKernel:
    """The AMD desktop's GPU on vfio-pci, its HDMI audio (same group) on ``audio``."""
    return bind(bind(amd_desktop(root), "vfio-pci", "0000:0a:00.0"), audio, "0000:0a:00.1")


def sriov_vfs(root: Path) -> SimulatedKernel:
    """The Intel server's two VFs on vfio-pci (each its own group), the PF on igb; and the
    switch's two endpoints (one group without ACS) on vfio-pci."""
    addresses = ("0000:00:02.1", "0000:00:02.2", "0000:03:00.0", "0000:04:00.0")
    return bind(intel_server(root), "vfio-pci", *addresses)


def sriov_pf(root: Path) -> SimulatedKernel:
    """The Intel server's PF on vfio-pci (VFs stay on igbvf)."""
    return bind(intel_server(root), "vfio-pci", "0000:00:02.0")


def pf_sharing_its_group(root: Path) -> SyntheticHost:
    """A PF on its host driver with its two VFs in the same IOMMU group (no ACS between
    them), the VFs on vfio-pci: the group is not viable while the PF drives the NIC."""
    host = SyntheticHost(root)
    pf = "0000:5e:00.0"
    host.add_device(
        pf,
        0x8086,
        0x1572,
        0x020000,
        driver="i40e",
        group=40,
        capabilities=[pm_cap(), msix_cap(8), pcie_cap(PortType.ENDPOINT, flr=True)],
        extended=[sriov_ext(4, 2, 0x154C)],
        resources=[(0, 0xF8000000, 1 << 20)],
        attrs={"sriov_totalvfs": "4", "sriov_numvfs": "2"},
    )
    for n, vf in enumerate(("0000:5e:02.0", "0000:5e:02.1")):
        host.add_device(vf, 0x8086, 0x154C, 0x020000, driver="vfio-pci", group=40)
        host.link(f"{host.real[vf]}/physfn", host.real[pf])
        host.link(f"{host.real[pf]}/virtfn{n}", host.real[vf])
    return host


def lab_snapshot() -> Sysfs:
    """The recorded lab guest (nothing on vfio-pci there: edu has no driver)."""
    return open_root(LAB_SNAPSHOT)


def lab_edu_bound(root: Path) -> SimulatedKernel:
    """The lab guest with both edu devices on vfio-pci (one alone, one behind a switch)."""
    return bind(q35_lab(root), "vfio-pci", "0000:00:10.0", "0000:04:00.0")
