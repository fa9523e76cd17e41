"""Hand-made sysfs trees: the files and links the kernel shows, written into a folder.

:class:`SyntheticHost` writes the files and relative symlinks the kernel shows (device
folders below ``sys/devices/pci*``, ``sys/bus/pci/devices`` links, IOMMU groups,
drivers, class links, block and net devices, ``proc`` files) into a folder that
:class:`~pyvfio.host.sysfs.Sysfs` then reads as if it were a live host.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from pyvfio.sysfs import IOMMU_GROUPS, PCI_DEVICES
from pyvfio.testing.config import Declaration, config_bytes

__all__ = ["SyntheticHost"]


class SyntheticHost:
    """Writes a sysfs/procfs tree below ``root``, one call per thing a host has."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        for rel in (PCI_DEVICES, IOMMU_GROUPS, "sys/bus/pci/drivers", "sys/class/iommu", "proc"):
            self.path(rel).mkdir(parents=True, exist_ok=True)
        self.mounts: list[str] = ["proc /proc proc rw 0 0", "sysfs /sys sysfs rw 0 0"]
        self.write("proc/mounts", "\n".join(self.mounts) + "\n")
        self.write("proc/sys/kernel/osrelease", "6.1.0-synthetic\n")
        for module in ("vfio", "vfio_pci", "vfio_iommu_type1"):
            self.path(f"sys/module/{module}").mkdir(parents=True, exist_ok=True)
        self.path("sys/bus/pci/drivers/vfio-pci").mkdir(parents=True, exist_ok=True)
        self.real: dict[str, str] = {}

    def path(self, rel: str) -> Path:
        return self.root / rel

    def write(self, rel: str, text: str | bytes) -> None:
        p = self.path(rel)
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            p.write_bytes(text)
        else:
            p.write_text(text)

    def link(self, rel: str, target_rel: str) -> None:
        """A relative symlink at ``rel`` to ``target_rel`` (both below the root)."""
        p = self.path(rel)
        p.parent.mkdir(parents=True, exist_ok=True)
        if p.is_symlink():
            p.unlink()
        p.symlink_to(os.path.relpath(self.path(target_rel), p.parent))

    def add_device(
        self,
        address: str,
        vendor: int,
        device: int,
        class_code: int,
        *,
        driver: str | None = None,
        group: int | None = None,
        parent: str | None = None,
        config: bytes | None = None,
        capabilities: Sequence[Declaration] = (),
        extended: Sequence[Declaration] = (),
        resources: Iterable[tuple[int, int, int]] = (),
        reset_method: str | None = "bus",
        numa_node: int = -1,
        attrs: dict[str, str] | None = None,
    ) -> str:
        """Add one PCI function; return its real folder (``sys/devices/pci0000:00/...``).

        Its ``config`` file is ``config``, or else built by `config_bytes` from the IDs,
        the ``capabilities`` and ``extended`` capabilities declared, and the BARs among
        ``resources`` (``(index, start, size)``, which the ``resource`` file lists too).
        """
        if parent is None:
            domain, bus = address.split(":")[:2]
            real = f"sys/devices/pci{domain}:{bus}/{address}"
        else:
            real = f"{self.real[parent]}/{address}"
        self.real[address] = real
        files = {
            "vendor": f"0x{vendor:04x}",
            "device": f"0x{device:04x}",
            "class": f"0x{class_code:06x}",
            "subsystem_vendor": "0x0000",
            "subsystem_device": "0x0000",
            "numa_node": str(numa_node),
            "driver_override": "(null)",
            "irq": "0",
            "enable": "1",
        }
        if reset_method is not None:
            files["reset_method"] = reset_method
        resources = list(resources)
        lines = [(0, 0, 0)] * 13
        for index, start, size in resources:
            lines[index] = (start, start + size - 1, 0x40200)
        files["resource"] = "".join(f"0x{a:016x} 0x{b:016x} 0x{c:016x}\n" for a, b, c in lines)
        files.update(attrs or {})
        for name, text in files.items():
            self.write(f"{real}/{name}", text + ("" if text.endswith("\n") else "\n"))
        if config is None:
            config = config_bytes(
                vendor,
                device,
                class_code,
                capabilities=capabilities,
                extended=extended,
                resources=resources,
            )
        self.write(f"{real}/config", config)
        self.link(f"{PCI_DEVICES}/{address}", real)
        if driver is not None:
            self.bind(address, driver)
        if group is not None:
            self.link(f"{real}/iommu_group", f"{IOMMU_GROUPS}/{group}")
            self.link(f"{IOMMU_GROUPS}/{group}/devices/{address}", real)
        return real

    def bind(self, address: str, driver: str | None) -> None:
        link = self.path(f"{self.real[address]}/driver")
        if link.is_symlink():
            link.unlink()
        if driver is not None:
            self.path(f"sys/bus/pci/drivers/{driver}").mkdir(parents=True, exist_ok=True)
            self.link(f"{self.real[address]}/driver", f"sys/bus/pci/drivers/{driver}")

    def add_mount(self, source: str, point: str, fstype: str) -> None:
        self.mounts.append(f"{source} {point} {fstype} rw 0 0")
        self.write("proc/mounts", "\n".join(self.mounts) + "\n")

    def add_block(self, address: str, disk: str, partitions: Sequence[str] = ()) -> None:
        """A disk below ``address`` (NVMe, AHCI...) with its partitions."""
        where = f"{self.real[address]}/block/{disk}"
        self.write(f"{where}/dev", "259:0\n")
        self.link(f"sys/class/block/{disk}", where)
        for part in partitions:
            self.write(f"{where}/{part}/partition", "1\n")
            self.link(f"sys/class/block/{part}", f"{where}/{part}")

    def add_net(
        self, address: str, iface: str, *, up: bool, routes: int = 0, ipv6: int = 0
    ) -> None:
        where = f"{self.real[address]}/net/{iface}"
        self.write(f"{where}/flags", "0x1003\n" if up else "0x1002\n")
        self.link(f"sys/class/net/{iface}", where)
        route = self.path("proc/net/route")
        text = route.read_text() if route.exists() else "Iface\tDestination\tGateway\n"
        text += "".join(f"{iface}\t0000000A\t00000000\n" for _ in range(routes))
        self.write("proc/net/route", text)
        inet6 = self.path("proc/net/if_inet6")
        text = inet6.read_text() if inet6.exists() else ""
        text += "".join(
            f"20010db8000000000000000000000{n:03x} 02 40 00 80 {iface}\n" for n in range(ipv6)
        )
        self.write("proc/net/if_inet6", text)

    def add_virtio_9p(self, address: str, child: str, tag: str) -> None:
        self.write(f"{self.real[address]}/{child}/mount_tag", tag + "\0")

    def add_framebuffer(self, address: str, fb: str = "fb0") -> None:
        where = f"{self.real[address]}/graphics/{fb}"
        self.write(f"{where}/name", "simple\n")
        self.link(f"sys/class/graphics/{fb}", where)

    def add_process(self, pid: int) -> None:
        """A real process of this machine shows in the tree's ``proc`` as itself (its fds,
        status, command line): the process holding a node of the tree open, in tests."""
        link = self.path(f"proc/{pid}")
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(f"/proc/{pid}")
