"""Example hosts: the lab's q35 guest, and what QEMU cannot build.

Each function writes a host below ``root`` and returns the `SimulatedKernel` over it
(`large_host`, a benchmark's tree, returns the `SyntheticHost`).
"""

from __future__ import annotations

import os

from pyvfio.pci.capabilities import PortType
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
from pyvfio.testing.kernel import SimulatedKernel
from pyvfio.testing.sysfs import SyntheticHost

__all__ = ["Q35_LAB", "amd_desktop", "intel_server", "large_host", "q35_lab", "virtio_guest"]

#: The lab's q35 guest as the host tools see it: (address, ids, class, driver, group, parent).
Q35_LAB = (
    ("0000:00:00.0", 0x8086, 0x29C0, 0x060000, None, 0, None),
    ("0000:00:01.0", 0x1AF4, 0x1009, 0x000200, "virtio-pci", 1, None),
    ("0000:00:10.0", 0x1234, 0x11E8, 0x00FF00, None, 2, None),
    ("0000:00:11.0", 0x1B36, 0x0010, 0x010802, "nvme", 3, None),
    ("0000:00:18.0", 0x1B36, 0x000C, 0x060400, "pcieport", 4, None),
    ("0000:01:00.0", 0x8086, 0x10D3, 0x020000, "e1000e", 5, "0000:00:18.0"),
    ("0000:00:19.0", 0x1B36, 0x000C, 0x060400, "pcieport", 6, None),
    ("0000:02:00.0", 0x104C, 0x8232, 0x060400, "pcieport", 7, "0000:00:19.0"),
    ("0000:03:00.0", 0x104C, 0x8233, 0x060400, "pcieport", 8, "0000:02:00.0"),
    ("0000:04:00.0", 0x1234, 0x11E8, 0x00FF00, None, 8, "0000:03:00.0"),
    ("0000:00:1f.0", 0x8086, 0x2918, 0x060100, "lpc_ich", 9, None),
    ("0000:00:1f.2", 0x8086, 0x2922, 0x010601, "ahci", 9, None),
    ("0000:00:1f.3", 0x8086, 0x2930, 0x0C0500, "i801_smbus", 9, None),
)

# Where each bridge of the lab sits: a root port, or the two ends of the switch.
_Q35_PORTS = {
    None: PortType.ROOT_PORT,
    "0000:00:19.0": PortType.UPSTREAM_PORT,
    "0000:02:00.0": PortType.DOWNSTREAM_PORT,
}


def q35_lab(root: str | os.PathLike[str]) -> SimulatedKernel:
    """The lab guest (edu, nvme, e1000e behind a root port, edu behind a switch, the
    chipset group, the 9p root on virtio), with a kernel that binds as the real one."""
    host = SyntheticHost(root)
    defaults = {}
    for addr, vendor, device, klass, driver, group, parent in Q35_LAB:
        caps: list[Declaration] = []
        ext: list[Declaration] = []
        flr = False
        if klass == BRIDGE_CLASS:
            port_type = _Q35_PORTS[parent]
            caps = [pcie_cap(port_type), pm_cap(), msi_cap()]
            ext = [acs_ext()] if port_type == PortType.ROOT_PORT else []
        elif vendor in (0x1234, 0x1B36, 0x8086) and klass >> 16 != 0x06:
            caps = [pm_cap(), msi_cap(), msix_cap(64)]
            flr = parent is not None or klass == 0x010802
            if flr:
                caps.append(pcie_cap(PortType.ENDPOINT, flr=True))
        host.add_device(
            addr,
            vendor,
            device,
            klass,
            driver=driver,
            group=group,
            parent=parent,
            capabilities=caps,
            extended=ext,
            resources=[(0, 0xFE000000 + (len(host.real) << 20), 1 << 20)],
            reset_method="flr bus" if flr else "bus",
        )
        if driver is not None:
            defaults[addr] = driver
    host.add_virtio_9p("0000:00:01.0", "virtio0", "/dev/root")
    host.add_mount("/dev/root", "/", "9p")
    host.add_block("0000:00:11.0", "nvme0n1")
    host.add_net("0000:01:00.0", "eth0", up=False)
    for table in ("DMAR",):
        host.write(f"sys/firmware/acpi/tables/{table}", b"")
    return SimulatedKernel(host, defaults)


def _add_port(
    host: SyntheticHost,
    address: str,
    ids: tuple[int, int],
    port_type: PortType,
    group: int,
    parent: str | None = None,
) -> None:
    """A PCI Express port (a bridge on pcieport), with ACS if it is a root port."""
    host.add_device(
        address,
        *ids,
        BRIDGE_CLASS,
        driver="pcieport",
        group=group,
        parent=parent,
        capabilities=[pcie_cap(port_type)],
        extended=[acs_ext()] if port_type == PortType.ROOT_PORT else [],
    )


def intel_server(root: str | os.PathLike[str]) -> SimulatedKernel:
    """What QEMU cannot make: a PCIe switch without ACS holding two endpoints, an SR-IOV
    NIC with two of seven VFs enabled, and a device that offers no reset method."""
    host = SyntheticHost(root)
    host.write("proc/cpuinfo", "vendor_id\t: GenuineIntel\nflags\t\t: fpu vmx sse2\n\n")
    host.write("proc/cmdline", "BOOT_IMAGE=/vmlinuz root=/dev/sda1 intel_iommu=on iommu=pt\n")
    host.write("sys/firmware/acpi/tables/DMAR", b"")
    host.write("sys/devices/virtual/iommu/dmar0/intel-iommu/ecap", "f020de\n")
    host.link("sys/class/iommu/dmar0", "sys/devices/virtual/iommu/dmar0")
    host.write("pyvfio/dmesg.txt", "DMAR-IR: Enabled IRQ remapping in x2apic mode\n")
    host.write("pyvfio/nodes.json", '{"dev/kvm": {"mode": 8630, "uid": 0, "gid": 0}}')
    _add_port(host, "0000:00:01.0", (0x8086, 0x2030), PortType.ROOT_PORT, group=1)
    switch = (0x10B5, 0x8747)
    _add_port(host, "0000:01:00.0", switch, PortType.UPSTREAM_PORT, 2, parent="0000:00:01.0")
    for port, ep, ids, klass, drv in (
        ("0000:02:08.0", "0000:03:00.0", (0x144D, 0xA808), 0x010802, "nvme"),
        ("0000:02:10.0", "0000:04:00.0", (0x8086, 0x1533), 0x020000, "igb"),
    ):
        _add_port(host, port, switch, PortType.DOWNSTREAM_PORT, 3, parent="0000:01:00.0")
        host.add_device(
            ep,
            *ids,
            klass,
            driver=drv,
            group=3,
            parent=port,
            capabilities=[pm_cap(), msix_cap(8), pcie_cap(PortType.ENDPOINT, flr=True)],
            reset_method="flr bus",
            resources=[(0, 0xF7000000, 16 << 10)],
        )
    host.add_device(
        "0000:00:02.0",
        0x8086,
        0x1521,
        0x020000,
        driver="igb",
        group=4,
        capabilities=[pm_cap(), msix_cap(10), pcie_cap(PortType.ENDPOINT, flr=True)],
        extended=[sriov_ext(7, 2, 0x1520)],
        reset_method="flr",
        attrs={"sriov_totalvfs": "7", "sriov_numvfs": "2"},
        resources=[(0, 0xF6000000, 1 << 20), (3, 0xF6100000, 16 << 10)],
    )
    # A VF's ID registers read all ones (the kernel shows the IDs from the PF) and its
    # BAR registers read zero: the PF's SR-IOV capability places the VF BARs.
    # The BAR 0 declared (never assigned) is the one its MSI-X table sits in.
    vf_cfg = config_bytes(
        0xFFFF,
        0xFFFF,
        0x020000,
        capabilities=[msix_cap(3), pcie_cap(PortType.ENDPOINT, flr=True)],
        interrupt_pin=0,
        resources=[(0, 0, 16 << 10)],
    )
    for n, vf in enumerate(("0000:00:02.1", "0000:00:02.2")):
        host.add_device(
            vf,
            0x8086,
            0x1520,
            0x020000,
            driver="igbvf",
            group=5 + n,
            config=vf_cfg,
            reset_method="flr",
        )
        host.link(f"{host.real[vf]}/physfn", host.real["0000:00:02.0"])
        host.link(f"{host.real['0000:00:02.0']}/virtfn{n}", host.real[vf])
    host.add_device(
        "0000:00:05.0",
        0x1234,
        0x5678,
        0x118000,
        group=7,
        capabilities=[pm_cap(no_soft_reset=True)],
        reset_method=None,
        resources=[(0, 0xF5000000, 4096)],
    )
    host.write(
        "proc/self/limits",
        "Limit                     Soft Limit           Hard Limit           Units\n"
        "Max locked memory         8388608              8388608              bytes\n",
    )
    defaults = {a: d for a, d in (("0000:03:00.0", "nvme"), ("0000:04:00.0", "igb"))}
    return SimulatedKernel(host, defaults)


def amd_desktop(root: str | os.PathLike[str]) -> SimulatedKernel:
    """An AMD host (IVRS, ivhd units, the AMD-Vi log) with a GPU and its HDMI audio in one
    group behind a GPP bridge, the GPU holding the console and the boot framebuffer."""
    host = SyntheticHost(root)
    host.write("proc/cpuinfo", "vendor_id\t: AuthenticAMD\nflags\t\t: fpu svm sse2\n\n")
    host.write("proc/cmdline", "BOOT_IMAGE=/vmlinuz root=/dev/nvme0n1p2 quiet\n")
    host.write("sys/firmware/acpi/tables/IVRS", b"")
    host.write("sys/devices/virtual/iommu/ivhd0/amd-iommu/features", "25bf732fa2295afe\n")
    host.link("sys/class/iommu/ivhd0", "sys/devices/virtual/iommu/ivhd0")
    host.write("pyvfio/dmesg.txt", "AMD-Vi: Interrupt remapping enabled\n")
    host.write("proc/iomem", "e0000000-efffffff : 0000:0a:00.0\n  e0000000-e07fffff : BOOTFB\n")
    host.add_device("0000:00:00.0", 0x1022, 0x1480, 0x060000, group=0)
    _add_port(host, "0000:00:03.1", (0x1022, 0x1483), PortType.ROOT_PORT, group=12)
    gpu_caps = [pm_cap(), msi_cap(1), pcie_cap(PortType.ENDPOINT)]
    host.add_device(
        "0000:0a:00.0",
        0x10DE,
        0x1B80,
        0x030000,
        driver="nouveau",
        group=13,
        parent="0000:00:03.1",
        capabilities=gpu_caps,
        reset_method="bus",
        resources=[
            (0, 0xF6000000, 16 << 20),
            (1, 0xE0000000, 256 << 20),
            (6, 0xF7000000, 512 << 10),
        ],
        attrs={"boot_vga": "1"},
    )
    host.add_device(
        "0000:0a:00.1",
        0x10DE,
        0x10F0,
        0x040300,
        driver="snd_hda_intel",
        group=13,
        parent="0000:00:03.1",
        capabilities=gpu_caps,
        reset_method="bus",
        resources=[(0, 0xF7080000, 16 << 10)],
    )
    host.add_framebuffer("0000:0a:00.0")
    return SimulatedKernel(host, {"0000:0a:00.0": "nouveau", "0000:0a:00.1": "snd_hda_intel"})


#: (vendor, device, class, driver) of the functions a large synthetic host repeats.
_LARGE_MIX = (
    (0x8086, 0x1521, 0x020000, "igb"),
    (0x15B3, 0x1017, 0x020000, "mlx5_core"),
    (0x144D, 0xA808, 0x010802, "nvme"),
    (0x10DE, 0x1DB4, 0x030200, "nvidia"),
    (0x8086, 0x0D58, 0x0C0330, "xhci_hcd"),
    (0x1022, 0x1498, 0x108000, None),
)


def large_host(root: str | os.PathLike[str], devices: int, per_group: int = 4) -> SyntheticHost:
    """``devices`` functions in groups of ``per_group``: multi-function slots on buses
    1..N, each slot its own group, with names pci.ids knows (the ``ls`` benchmark)."""
    host = SyntheticHost(root)
    caps = [pm_cap(), msi_cap(4), msix_cap(64), pcie_cap(PortType.ENDPOINT, flr=True)]
    for n in range(devices):
        group, function = divmod(n, per_group)
        bus, slot = divmod(group, 32)
        vendor, device, klass, driver = _LARGE_MIX[group % len(_LARGE_MIX)]
        host.add_device(
            f"0000:{bus + 1:02x}:{slot:02x}.{function}",
            vendor,
            device,
            klass,
            driver=driver,
            group=group,
            capabilities=caps,
            resources=[(0, 0x80000000 + (n << 20), 1 << 20)],
            reset_method="flr bus",
        )
    return host


def virtio_guest(root: str | os.PathLike[str], *, driver: bool = True) -> SimulatedKernel:
    """The lab's q35 guest with QEMU's virtio-iommu-pci: a VIOT table instead of the
    DMAR, and (``driver``) the virtio_iommu driver's unit ``virtio1``."""
    kernel = q35_lab(root)
    kernel.path("sys/firmware/acpi/tables/DMAR").unlink()
    kernel.host.write("sys/firmware/acpi/tables/VIOT", b"")
    kernel.host.write("proc/cmdline", "console=ttyS0\n")
    if driver:
        dev = "sys/devices/pci0000:00/0000:00:03.0/virtio1"
        kernel.host.write(f"{dev}/iommu/virtio1/uevent", "")
        kernel.host.write("sys/bus/virtio/drivers/virtio_iommu/uevent", "")
        kernel.host.link(f"{dev}/driver", "sys/bus/virtio/drivers/virtio_iommu")
        kernel.host.link(f"{dev}/iommu/virtio1/device", dev)
        kernel.host.link("sys/class/iommu/virtio1", f"{dev}/iommu/virtio1")
        kernel.host.link("sys/bus/pci/devices/0000:00:10.0/iommu", f"{dev}/iommu/virtio1")
    return kernel
