"""``pyvfio vm libvirt``: ``<hostdev>`` elements, or a whole minimal q35 domain.

``managed='yes'`` makes libvirt do what ``pyvfio vm qemu`` does: bind the device to
vfio-pci when the domain starts and give it back when it stops. In a whole domain each
physical device gets its own ``pcie-root-port`` controller and its functions stay
functions of one guest slot (``multifunction='on'`` on function 0), as for QEMU.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence

from pyvfio.host.sysfs import LIVE, Sysfs
from pyvfio.vm.layout import PassedDevice, layout
from pyvfio.vm.qemu import MIB, NO_GPU_OPTIONS, GpuOptions, check_text, parse_size


def _hex(value: int, width: int) -> str:
    return f"0x{value:0{width}x}"


def hostdev(dev: PassedDevice, gpu: GpuOptions = NO_GPU_OPTIONS, *, placed: bool) -> ET.Element:
    """One ``<hostdev>``; ``placed`` adds the guest address on its root port's bus."""
    domain, bus, rest = dev.address.split(":")
    slot, function = rest.split(".")
    el = ET.Element("hostdev", mode="subsystem", type="pci", managed="yes")
    source = ET.SubElement(el, "source")
    ET.SubElement(
        source,
        "address",
        domain=_hex(int(domain, 16), 4),
        bus=_hex(int(bus, 16), 2),
        slot=_hex(int(slot, 16), 2),
        function=_hex(int(function, 16), 1),
    )
    if dev.is_gpu and (gpu.romfile is not None or not gpu.rombar):
        rom = ET.SubElement(el, "rom")
        if not gpu.rombar:
            rom.set("bar", "off")
        if gpu.romfile is not None:
            rom.set("file", gpu.romfile)
    if placed:
        address = ET.SubElement(
            el,
            "address",
            type="pci",
            domain="0x0000",
            bus=_hex(dev.port, 2),
            slot="0x00",
            function=_hex(dev.function, 1),
        )
        if dev.multifunction:
            address.set("multifunction", "on")
    return el


def _text(el: ET.Element) -> str:
    ET.indent(el, "  ")
    return ET.tostring(el, encoding="unicode")


def _check_vfs(devices: Sequence[PassedDevice], sysfs: Sysfs) -> None:
    """A VF whose PF is on vfio-pci opens only with a VF token, which a libvirt
    ``<hostdev>`` cannot carry: refused, naming what does."""
    for dev in devices:
        pf = dev.physical_function
        if pf is not None and sysfs.driver(pf) == "vfio-pci":
            raise ValueError(
                f"{dev.address} is a VF of {pf}, which is on vfio-pci: vfio-pci opens it only "
                "with a VF token, and a libvirt <hostdev> has no setting for one; give the PF "
                "back to its own driver (pyvfio unbind), or use pyvfio vm qemu --vf-token UUID"
            )


def _check_gpu(devices: Sequence[PassedDevice], gpu: GpuOptions) -> None:
    # ElementTree escapes markup in attributes, but XML 1.0 has no way at all to carry
    # most control characters: ET would write them raw and libvirt reject the file.
    if gpu.romfile is not None:
        check_text(gpu.romfile, "--romfile")
    if gpu.x_vga:
        raise ValueError(
            "libvirt has no x-vga setting for hostdevs; pass the GPU without it "
            "(with UEFI firmware the guest needs no legacy VGA)"
        )
    if gpu.any and not any(d.is_gpu for d in devices):
        raise ValueError("--romfile and --no-rombar apply to GPUs; none of these is a GPU")


def hostdevs(
    addresses: Sequence[str], *, gpu: GpuOptions = NO_GPU_OPTIONS, sysfs: Sysfs = LIVE
) -> str:
    """The ``<hostdev>`` elements to paste into a domain's ``<devices>``.

    Without the domain's controllers there is no guest address to give, so libvirt
    places each function on a port of its own; a comment says where functions of one
    device should share a slot (``--domain`` does it).
    """
    devices = layout(addresses, sysfs)
    _check_gpu(devices, gpu)
    _check_vfs(devices, sysfs)
    parts = []
    for dev in devices:
        if dev.multifunction:
            peers = ", ".join(d.address for d in devices if d.port == dev.port)
            parts.append(
                f"<!-- {peers} are functions of one device: give them one guest slot "
                "(<address ... function='0x0' multifunction='on'/> and function='0x1'...) -->"
            )
        parts.append(_text(hostdev(dev, gpu, placed=False)))
    return "\n".join(parts) + "\n"


def domain(
    addresses: Sequence[str],
    name: str,
    *,
    memory: str = "4G",
    hugepages: bool = False,
    vcpus: int = 2,
    gpu: GpuOptions = NO_GPU_OPTIONS,
    sysfs: Sysfs = LIVE,
) -> str:
    """A minimal q35 KVM domain named ``name`` with the devices passed through."""
    if not name or "/" in name or name.strip() != name:
        raise ValueError(f"{name!r} is not a libvirt domain name (no '/', no outer spaces)")
    check_text(name, "--domain")
    devices = layout(addresses, sysfs)
    _check_gpu(devices, gpu)
    _check_vfs(devices, sysfs)
    size = parse_size(memory)
    root = ET.Element("domain", type="kvm")
    ET.SubElement(root, "name").text = name
    ET.SubElement(root, "memory", unit="MiB").text = str(size // MIB)
    if hugepages:
        backing = ET.SubElement(root, "memoryBacking")
        ET.SubElement(backing, "hugepages")
    ET.SubElement(root, "vcpu").text = str(vcpus)
    os_el = ET.SubElement(root, "os")
    ET.SubElement(os_el, "type", arch="x86_64", machine="q35").text = "hvm"
    features = ET.SubElement(root, "features")
    ET.SubElement(features, "acpi")
    ET.SubElement(features, "apic")
    ET.SubElement(root, "cpu", mode="host-passthrough")
    devs = ET.SubElement(root, "devices")
    ET.SubElement(devs, "controller", type="pci", index="0", model="pcie-root")
    for port in sorted({d.port for d in devices}):
        ET.SubElement(devs, "controller", type="pci", index=str(port), model="pcie-root-port")
    for dev in devices:
        devs.append(hostdev(dev, gpu, placed=True))
    return _text(root) + "\n"
