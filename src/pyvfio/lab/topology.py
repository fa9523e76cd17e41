"""What the lab guest's PCI tree looks like, and how to tell QEMU to build it.

A topology is a list of device specs ``NAME[@PLACE]``:

* ``NAME`` is ``edu`` (QEMU's educational device, 1234:11e8), ``nvme`` (QEMU's NVMe
  controller, 1b36:0010, backed by a scratch file), ``e1000e`` (8086:10d3) or
  ``nvmesriov`` (the NVMe controller as an SR-IOV PF, no namespace: see NVME_SRIOV_VFS);
* ``PLACE`` is ``root`` (default: on the q35 root bus, as a root-complex endpoint),
  ``rootport`` (below a ``pcie-root-port`` of its own, which has ACS: its own
  IOMMU group) or ``switch`` (below the downstream port of an ``x3130-upstream`` +
  ``xio3130-downstream`` PCIe switch, which has no ACS: the port and the device
  share a group), or ``numa1`` (below a root port of a ``pxb-pcie`` expander bridge
  on NUMA node 1, whose root bus is 0x80: the guest then has two NUMA nodes, half of
  the memory each, its CPUs on node 0, and the device's ``numa_node`` is 1).

The q35 chipset's LPC (00:1f.0), SATA (00:1f.2) and SMBus (00:1f.3) functions are
always there: one multi-function slot without ACS, so one IOMMU group with three
members. virtme-ng's own virtio devices (the 9p root filesystem, consoles) take the
first slots of the root bus (how many depends on the options); the lab puts its
endpoints from slot 0x10 and its root ports from slot 0x18.

The guest's IOMMU is QEMU's ``intel-iommu`` (default), ``amd-iommu`` (AMD-Vi, described
in the ACPI IVRS table) or ``virtio-iommu-pci`` (described to an x86 guest in an ACPI
VIOT table; Debian's 6.1 kernel lacks ``CONFIG_VIRTIO_IOMMU``, so it needs the lab's
own kernel), or none. What works on which: docs/iommus.md.

Each device gets a *path*: the slot numbers from the root bus down to it, so that the
guest can find its address without guessing bus numbers (the firmware numbers buses).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pyvfio._sizes import parse_size
from pyvfio.errors import LabSpecError

#: vendor:device of each device the lab can add.
DEVICE_IDS = {
    "edu": "1234:11e8",
    "nvme": "1b36:0010",
    "e1000e": "8086:10d3",
    "nvmesriov": "1b36:0010",
}
#: ``nvmesriov``: QEMU's NVMe controller as an SR-IOV PF with this many VFs at most (its
#: functions 1..N). QEMU requires a subsystem, at least 2 flexible queues and 1 flexible
#: interrupt per VF, and 2 queues left private to the PF (hw/nvme/ctrl.c,
#: nvme_check_params); the VFs need those resources assigned by NVMe Virtualization
#: Management commands before they work as controllers, but their PCI side (config
#: space, vfio-pci, VF tokens) works without.
NVME_SRIOV_VFS = 2
PLACES = ("root", "rootport", "switch", "numa1")
#: The vIOMMUs the lab can give its guest (``pyvfio lab run --iommu``), the default first.
IOMMUS = ("intel", "amd", "virtio")
#: Kernels known to lack CONFIG_VIRTIO_IOMMU (Debian's 6.1 is the stock one).
_NO_VIRTIO_IOMMU = (None, "stock")
#: The root bus of the expander bridge on NUMA node 1 (``pxb-pcie,bus_nr=``), and its slot.
NUMA1_BUS = 0x80
_PXB_SLOT = 0x17

#: The serial number and model the lab gives QEMU's NVMe controller.
NVME_SERIAL = "pyvfio-lab-0"
NVME_MODEL = "QEMU NVMe Ctrl"
NVME_BACKING_SIZE = 64 << 20

#: The lab's root ports run their link at 2.5 GT/s x1. At QEMU's default (16 GT/s x32,
#: machines since 4.0) a port advertises Data Link Layer Link Active reporting, yet for
#: a device present at start-up it never reports the link active (seen with QEMU 7.2:
#: LnkCap LLActRep+, LnkSta DLActive-). After a secondary bus reset Linux waits for Link
#: Active on a port faster than 5 GT/s that reports it, gives up ("Data Link Layer Link
#: Active not set in 1000 msec") and VFIO_DEVICE_PCI_HOT_RESET fails with ENOTTY for
#: every device with power management (nvme, e1000e; edu has none, so no wait). At
#: 2.5 GT/s the kernel waits 100 ms and polls the device instead: the reset works.
ROOT_PORT_LINK = "x-speed=2_5,x-width=1"

_FIRST_ROOT_SLOT = 0x10
_FIRST_PORT_SLOT = 0x18
_SPEC = re.compile(r"^(?P<name>[a-z0-9]+)(?:@(?P<place>[a-z0-9]+))?$")


@dataclass(frozen=True)
class LabDevice:
    """One device the lab adds, where it sits, and how the guest finds it."""

    name: str
    place: str
    qemu_id: str
    ids: str
    #: slot.function of each hop from the root bus down to the device, e.g. ("10.0", "00.0").
    path: tuple[str, ...]
    backing_file: str | None = None

    def __str__(self) -> str:
        return f"{self.qemu_id} ({self.name}@{self.place}, {self.ids})"


@dataclass(frozen=True)
class Topology:
    """The devices to add and whether the guest has an IOMMU to use."""

    devices: tuple[str, ...] = ("edu",)
    #: A vIOMMU (``iommu`` says which); False: none at all.
    viommu: bool = True
    #: Interrupt remapping in the vIOMMU (intel, amd); without it vfio_iommu_type1 refuses
    #: groups. virtio-iommu has none: it must stay True there (it means "as the IOMMU can").
    intremap: bool = True
    #: ``intel_iommu=on`` on the guest's kernel command line (intel only: AMD-Vi and
    #: virtio-iommu are on whenever the firmware describes them).
    iommu_cmdline: bool = True
    memory: str = "2G"
    #: ``stock`` (the distribution's kernel), ``iommufd`` (the lab's own build) or a path.
    kernel: str = "stock"
    #: Which vIOMMU: one of :data:`IOMMUS`.
    iommu: str = "intel"

    def __post_init__(self) -> None:
        for spec in self.devices:
            parse_spec(spec)
        if self.iommu not in IOMMUS:
            raise LabSpecError(f"unknown IOMMU {self.iommu!r}: use one of {', '.join(IOMMUS)}")
        if self.iommu == "virtio" and not self.intremap:
            raise LabSpecError(
                "virtio-iommu never remaps interrupts: --no-intremap is for intel and amd"
            )

    def check_kernel(self, kernel: str | None) -> None:
        """Refuse a kernel known to lack this topology's IOMMU driver (LabSpecError)."""
        if self.viommu and self.iommu == "virtio" and kernel in _NO_VIRTIO_IOMMU:
            raise LabSpecError(
                "--iommu virtio needs the lab's kernel (Debian's has no CONFIG_VIRTIO_IOMMU): "
                "add --kernel iommufd"
            )

    @property
    def name(self) -> str:
        parts = list(self.devices) or ["bare"]
        if not self.viommu:
            parts.append("no-viommu")
        elif self.iommu != "intel":
            parts.append(self.iommu)
        if self.viommu and not self.intremap:
            parts.append("no-intremap")
        if not self.iommu_cmdline and self.iommu == "intel":
            parts.append("no-intel_iommu")
        if self.kernel != "stock":
            parts.append(f"kernel={Path(self.kernel).name}")
        return "+".join(parts)

    def layout(self, scratch: Path) -> tuple[LabDevice, ...]:
        """Assign QEMU ids, slots and backing files to the devices, in order."""
        root_slot, port_slot = _FIRST_ROOT_SLOT, _FIRST_PORT_SLOT
        seen: dict[str, int] = {}
        seen_numa1 = 0
        out = []
        for spec in self.devices:
            name, place = parse_spec(spec)
            n = seen.get(name, 0)
            seen[name] = n + 1
            qemu_id = f"{name}{n}"
            if place == "root":
                path: tuple[str, ...] = (f"{root_slot:02x}.0",)
                root_slot += 1
            elif place == "numa1":  # a root port on the expander's root bus, then the device
                path = (f"{NUMA1_BUS:02x}:{seen_numa1:02x}.0", "00.0")
                seen_numa1 += 1
            elif place == "rootport":
                path = (f"{port_slot:02x}.0", "00.0")
                port_slot += 1
            else:
                path = (f"{port_slot:02x}.0", "00.0", "00.0", "00.0")
                port_slot += 1
            backing = str(scratch / f"{qemu_id}.img") if name == "nvme" else None
            out.append(LabDevice(name, place, qemu_id, DEVICE_IDS[name], path, backing))
        return tuple(out)

    def qemu_args(self, devices: tuple[LabDevice, ...]) -> list[str]:
        """The QEMU options that build this topology (machine, vIOMMU, devices)."""
        # A split irqchip: interrupt remapping (intel-iommu, amd-iommu) needs it under KVM,
        # and TCG accepts it, so every topology boots the same machine.
        args = ["-machine", "q35,kernel-irqchip=split"]
        if self.viommu:
            intremap = "on" if self.intremap else "off"
            if self.iommu == "intel":
                args += ["-device", f"intel-iommu,intremap={intremap},caching-mode=on"]
            elif self.iommu == "amd":
                args += ["-device", f"amd-iommu,intremap={intremap}"]
            else:
                args += ["-device", "virtio-iommu-pci"]
        chassis = 1
        # With an expander bridge, QEMU puts a device that names no bus on the
        # expander's ("Only PCI/PCIe bridges can be plugged into pxb-pcie").
        root_bus = ""
        if self.numa_nodes > 1:
            root_bus = ",bus=pcie.0"
            args += [
                "-device",
                f"pxb-pcie,id=pxb_numa1,bus_nr={NUMA1_BUS},numa_node=1,bus=pcie.0,"
                f"addr={_PXB_SLOT:02x}.0",
            ]
        for dev in devices:
            bus = ""
            if dev.place == "numa1":
                port = f"rp_{dev.qemu_id}"
                slot = dev.path[0].split(":")[1]
                args += [
                    "-device",
                    f"pcie-root-port,id={port},bus=pxb_numa1,chassis={chassis},slot={chassis},"
                    f"addr={slot},{ROOT_PORT_LINK}",
                ]
                chassis += 1
                bus = f",bus={port}"
            elif dev.place in ("rootport", "switch"):
                port = f"rp_{dev.qemu_id}"
                args += [
                    "-device",
                    f"pcie-root-port,id={port},chassis={chassis},slot={chassis},"
                    f"addr={dev.path[0]},{ROOT_PORT_LINK}{root_bus}",
                ]
                chassis += 1
                bus = f",bus={port}"
                if dev.place == "switch":
                    up, down = f"up_{dev.qemu_id}", f"down_{dev.qemu_id}"
                    args += [
                        "-device",
                        f"x3130-upstream,id={up}{bus}",
                        "-device",
                        f"xio3130-downstream,id={down},bus={up},chassis={chassis},slot=0",
                    ]
                    chassis += 1
                    bus = f",bus={down}"
            else:
                bus = f",addr={dev.path[0]}{root_bus}"
            if dev.name == "nvme":
                drive = f"drv_{dev.qemu_id}"
                args += [
                    "-drive",
                    f"file={dev.backing_file},if=none,id={drive},format=raw",
                    "-device",
                    f"nvme,id={dev.qemu_id},serial={NVME_SERIAL},drive={drive}{bus}",
                ]
            elif dev.name == "nvmesriov":
                subsys = f"subsys_{dev.qemu_id}"
                vfs = NVME_SRIOV_VFS
                args += [
                    "-device",
                    f"nvme-subsys,id={subsys}",
                    "-device",
                    f"nvme,id={dev.qemu_id},serial={NVME_SERIAL}-{dev.qemu_id},subsys={subsys},"
                    f"sriov_max_vfs={vfs},sriov_vq_flexible={2 * vfs},sriov_vi_flexible={vfs}"
                    f"{bus}",
                ]
            elif dev.name == "e1000e":
                # A NIC wants a peer: user networking restricted to the guest itself.
                net = f"net_{dev.qemu_id}"
                args += [
                    "-netdev",
                    f"user,id={net},restrict=on",
                    "-device",
                    f"e1000e,id={dev.qemu_id},netdev={net}{bus}",
                ]
            else:
                args += ["-device", f"{dev.name},id={dev.qemu_id}{bus}"]
        return args

    @property
    def numa_nodes(self) -> int:
        """The guest's NUMA nodes: two when a device sits on node 1, else one."""
        return 2 if any(parse_spec(d)[1] == "numa1" for d in self.devices) else 1

    def numa_args(self, cpus: int) -> list[str]:
        """virtme-ng's options for the guest's NUMA nodes (none for one node): half the
        memory each, every CPU on node 0 (node 1 holds memory and the expander bridge).

        And ``no_timer_check``: under TCG on a loaded host, 3 of 4 two-node boots
        failed the IO-APIC timer check, which with interrupt remapping is a panic
        ("timer doesn't work through Interrupt-remapped IO-APIC", check_timer)."""
        if self.numa_nodes == 1:
            return []
        half = parse_size(self.memory, examples="2G") // 2 >> 20
        nodes = ["--numa", f"{half}M,cpus=0-{cpus - 1}", "--numa", f"{half}M"]
        return [*nodes, "--append=no_timer_check"]

    def kernel_args(self) -> list[str]:
        """The guest's IOMMU options: VT-d wants ``intel_iommu=on`` (Debian's 6.1 turns it
        on by default; the lab's 6.12 does not); AMD-Vi and virtio-iommu need nothing.
        Both vIOMMUs make the guest's DMA API strict on their own ("Using strict mode
        due to virtualization"), and VFIO's domains are unmanaged, so ``iommu.strict`` is
        left alone."""
        if self.iommu == "intel" and self.iommu_cmdline:
            return ["intel_iommu=on"]
        return []


def parse_spec(spec: str) -> tuple[str, str]:
    """``"edu@switch"`` -> ``("edu", "switch")``; raise LabError with the choices."""
    m = _SPEC.match(spec)
    name = m.group("name") if m else spec
    place = (m.group("place") if m else None) or "root"
    if not m or name not in DEVICE_IDS or place not in PLACES:
        raise LabSpecError(
            f"unknown lab device {spec!r}: use NAME[@PLACE] with NAME one of "
            f"{', '.join(DEVICE_IDS)} and PLACE one of {', '.join(PLACES)}"
        )
    return name, place


@dataclass(frozen=True)
class Manifest:
    """What the host told the guest about the lab: written as JSON, read in the guest."""

    topology: str
    accel: str
    kernel: str
    devices: tuple[LabDevice, ...] = field(default_factory=tuple)

    def dump(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: Path) -> Manifest:
        raw = json.loads(path.read_text())
        devices = tuple(LabDevice(**{**d, "path": tuple(d["path"])}) for d in raw.pop("devices"))
        return cls(devices=devices, **raw)
