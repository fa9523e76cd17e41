"""Hand-made sysfs trees: what QEMU cannot build, for tests and benchmarks.

:class:`SyntheticHost` writes the files and relative symlinks the kernel shows (device
folders below ``sys/devices/pci*``, ``sys/bus/pci/devices`` links, IOMMU groups,
drivers, class links) into a folder that :class:`~pyvfio.host.sysfs.Sysfs` then reads
as if it were a live host. :class:`SimulatedKernel` is a ``Sysfs`` over such a tree that
answers driver writes (``driver_override``, ``unbind``, ``bind``, ``drivers_probe``) the
way the PCI core does, so binding can be tested without root or hardware.
"""

from __future__ import annotations

import errno
import os
import select
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from pyvfio.host.sysfs import (
    IOMMU_GROUPS,
    PCI_DEVICES,
    Sysfs,
    WriteTimeoutError,
    process_start,
)

BRIDGE_CLASS = 0x060400


def _cap(cap_id: int, body: bytes) -> bytes:
    return bytes([cap_id, 0]) + body


def config_bytes(
    vendor: int,
    device: int,
    class_code: int,
    *,
    capabilities: Sequence[bytes] = (),
    extended: Sequence[tuple[int, bytes]] = (),
    interrupt_pin: int = 1,
    bars: Sequence[int] = (),
) -> bytes:
    """A 4 KiB configuration space: header, a chain of standard capabilities (each
    ``bytes([id, 0]) + body``, linked from 0x40 in 0x20 steps... up to 0x100), and the
    extended ``(id, body)`` chain from 0x100."""
    data = bytearray(4096)
    bridge = class_code >> 8 == BRIDGE_CLASS >> 8
    data[0:2] = vendor.to_bytes(2, "little")
    data[2:4] = device.to_bytes(2, "little")
    data[4:6] = (0x0006).to_bytes(2, "little")
    data[9:12] = class_code.to_bytes(3, "little")
    data[0x0E] = 1 if bridge else 0
    for i, bar in enumerate(bars[: 2 if bridge else 6]):
        data[0x10 + 4 * i : 0x14 + 4 * i] = bar.to_bytes(4, "little")
    data[0x3D] = interrupt_pin
    if capabilities:
        data[6] = 0x10  # status: capability list
        data[0x34] = 0x40
        pos = 0x40
        step = (0x100 - 0x40) // max(len(capabilities), 1) & ~3
        for n, cap in enumerate(capabilities):
            data[pos : pos + len(cap)] = cap
            nxt = pos + step if n + 1 < len(capabilities) else 0
            data[pos + 1] = nxt
            pos = nxt
    pos = 0x100
    for n, (ext_id, body) in enumerate(extended):
        nxt = pos + 0x40 if n + 1 < len(extended) else 0
        header = ext_id | (1 << 16) | (nxt << 20)
        data[pos : pos + 4] = header.to_bytes(4, "little")
        data[pos + 4 : pos + 4 + len(body)] = body
        pos = nxt
    return bytes(data)


def pcie_cap(port_type: int, *, flr: bool = False) -> bytes:
    """A PCI Express capability (version 2) of ``port_type``, with or without FLR."""
    flags = 2 | (port_type << 4)
    devcap = (1 << 28) if flr else 0
    return _cap(0x10, flags.to_bytes(2, "little") + devcap.to_bytes(4, "little") + bytes(52))


def pm_cap(*, no_soft_reset: bool = False) -> bytes:
    pmc = 3
    pmcsr = 0x8 if no_soft_reset else 0
    return _cap(0x01, pmc.to_bytes(2, "little") + pmcsr.to_bytes(2, "little") + bytes(2))


def msi_cap(vectors: int = 1) -> bytes:
    mmc = (vectors.bit_length() - 1) << 1
    return _cap(0x05, (mmc | 0x80).to_bytes(2, "little") + bytes(20))


def msix_cap(table_size: int) -> bytes:
    return _cap(0x11, (table_size - 1).to_bytes(2, "little") + bytes(8))


def acs_ext(capability: int = 0x1F, control: int = 0x1D) -> tuple[int, bytes]:
    """An ACS extended capability; the default has SV, RR, CR, UF enabled."""
    return 0x0D, capability.to_bytes(2, "little") + control.to_bytes(2, "little")


def sriov_ext(total_vfs: int, num_vfs: int, vf_device: int) -> tuple[int, bytes]:
    body = bytearray(60)
    body[4:6] = (0x9 if num_vfs else 0).to_bytes(2, "little")  # control: VF enable, MSE
    body[10:12] = total_vfs.to_bytes(2, "little")  # initial VFs
    body[12:14] = total_vfs.to_bytes(2, "little")
    body[16:18] = num_vfs.to_bytes(2, "little")
    body[20:22] = (0x80).to_bytes(2, "little")  # first VF offset
    body[22:24] = (1).to_bytes(2, "little")  # VF stride
    body[26:28] = vf_device.to_bytes(2, "little")
    return 0x10, bytes(body)


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
        resources: Iterable[tuple[int, int, int]] = (),
        reset_method: str | None = "bus",
        numa_node: int = -1,
        attrs: dict[str, str] | None = None,
    ) -> str:
        """Add one PCI function; return its real folder (``sys/devices/pci0000:00/...``)."""
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
        lines = [(0, 0, 0)] * 13
        for index, start, size in resources:
            lines[index] = (start, start + size - 1, 0x40200)
        files["resource"] = "".join(f"0x{a:016x} 0x{b:016x} 0x{c:016x}\n" for a, b, c in lines)
        files.update(attrs or {})
        for name, text in files.items():
            self.write(f"{real}/{name}", text + ("" if text.endswith("\n") else "\n"))
        self.write(f"{real}/config", config or config_bytes(vendor, device, class_code))
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


class SimulatedKernel(Sysfs):
    """A Sysfs over a synthetic tree whose driver writes act as the PCI core's do.

    ``defaults`` maps an address to the driver the kernel would pick for it when probed
    without an override (its ID table match).
    """

    __slots__ = ("defaults", "host", "hung", "locked", "refuse", "waiters", "writes")

    def __init__(self, host: SyntheticHost, defaults: dict[str, str] | None = None) -> None:
        # A tree the tests build (its proc links to real processes): not confined.
        super().__init__(host.root, confined=False)
        self.host = host
        self.defaults = dict(defaults or {})
        self.refuse: set[tuple[str, str]] = set()  # (address, driver) probes that fail
        #: Devices whose driver's remove waits for a user to close them, as vfio-pci's
        #: does: an unbind drops the driver link and then does not return, and every
        #: later write for the device waits behind it (``locked``: the device lock the
        #: unbind holds), until release().
        self.hung: set[str] = set()
        self.locked: set[str] = set()
        #: The writer processes still waiting, by hung device.
        self.waiters: dict[str, list[int]] = {}
        self.writes: list[tuple[str, str]] = []

    def write_attr(self, rel: str, value: str, *, timeout: float | None = None) -> None:
        self.writes.append((rel, value))
        parts = rel.strip("/").split("/")
        addr = value.strip()
        device = parts[-2] if parts[-1] == "driver_override" else addr
        if device in self.hung and parts[-1] == "unbind":
            self.host.bind(addr, None)  # driver_sysfs_remove() comes before remove()
            self.locked.add(device)
        if device in self.locked:
            if timeout is None:
                raise AssertionError(f"a write for {device} would wait forever: no timeout")
            # A real writer process waits on a FIFO nobody reads, as on the device lock.
            fifo = self.path(f"hung/{device}")
            if not fifo.exists():
                fifo.parent.mkdir(parents=True, exist_ok=True)
                os.mkfifo(fifo)
            try:
                Sysfs.write_attr(self, f"hung/{device}", value, timeout=timeout)
            except WriteTimeoutError as err:
                self.waiters.setdefault(device, []).append(err.pid)
                raise
            return
        if parts[-1] == "driver_override":
            text = value.strip() or "(null)"
            self.path(rel).write_text(text + "\n")
        elif parts[:4] == ["sys", "bus", "pci", "drivers"] and parts[-1] == "unbind":
            if self.driver(addr) != parts[4]:
                raise OSError(errno.ENODEV, os.strerror(errno.ENODEV))
            self.host.bind(addr, None)
        elif parts[:4] == ["sys", "bus", "pci", "drivers"] and parts[-1] == "bind":
            self._probe(addr, parts[4], explicit=True)
        elif rel.strip("/") == "sys/bus/pci/drivers_probe":
            override = self.read_attr(f"{self.device_dir(addr)}/driver_override")
            wanted = override if override not in (None, "(null)") else self.defaults.get(addr)
            if wanted is not None:
                self._probe(addr, wanted, explicit=False)
        else:
            super().write_attr(rel, value)

    def release(self, address: str, timeout: float = 10.0) -> None:
        """The user of a hung device closed it: the writes waiting for it return."""
        self.hung.discard(address)
        self.locked.discard(address)
        fifo = self.path(f"hung/{address}")
        if not fifo.exists():
            return
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        try:  # a reader lets the writers' open() return; read until they are all gone
            deadline = time.monotonic() + timeout
            waiters = self.waiters.pop(address, [])
            while any(process_start(pid) is not None for pid in waiters):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the writers {waiters} waiting on {fifo} stay")
                if select.select([reader], [], [], 0.05)[0]:
                    os.read(reader, 4096)
        finally:
            os.close(reader)
        fifo.unlink()

    def _probe(self, addr: str, driver: str, *, explicit: bool) -> None:
        if self.driver(addr) is not None:
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY))
        override = self.read_attr(f"{self.device_dir(addr)}/driver_override")
        if override not in (None, "(null)") and override != driver:
            raise OSError(errno.ENODEV, os.strerror(errno.ENODEV))
        if (addr, driver) in self.refuse or not self.exists(f"sys/bus/pci/drivers/{driver}"):
            if explicit:
                raise OSError(errno.ENODEV, os.strerror(errno.ENODEV))
            return
        self.host.bind(addr, driver)


# -- Example hosts -------------------------------------------------------------------------------

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


def q35_lab(root: str | os.PathLike[str]) -> SimulatedKernel:
    """The lab guest (edu, nvme, e1000e behind a root port, edu behind a switch, the
    chipset group, the 9p root on virtio), with a kernel that binds as the real one."""
    host = SyntheticHost(root)
    defaults = {}
    for addr, vendor, device, klass, driver, group, parent in Q35_LAB:
        caps: list[bytes] = []
        ext: list[tuple[int, bytes]] = []
        flr = False
        if klass == BRIDGE_CLASS:
            port_type = {None: 0x4, "0000:00:19.0": 0x5, "0000:02:00.0": 0x6}[parent]
            caps = [pcie_cap(port_type), pm_cap(), msi_cap()]
            ext = [acs_ext()] if port_type == 0x4 else []
        elif vendor in (0x1234, 0x1B36, 0x8086) and klass >> 16 != 0x06:
            caps = [pm_cap(), msi_cap(), msix_cap(64)]
            flr = parent is not None or klass == 0x010802
            if flr:
                caps.append(pcie_cap(0x0, flr=True))
        config = config_bytes(vendor, device, klass, capabilities=caps, extended=ext)
        reset = "flr bus" if flr else "bus"
        host.add_device(
            addr,
            vendor,
            device,
            klass,
            driver=driver,
            group=group,
            parent=parent,
            config=config,
            resources=[(0, 0xFE000000 + (len(host.real) << 20), 1 << 20)],
            reset_method=reset,
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
    rp = config_bytes(
        0x8086, 0x2030, BRIDGE_CLASS, capabilities=[pcie_cap(0x4)], extended=[acs_ext()]
    )
    host.add_device(
        "0000:00:01.0", 0x8086, 0x2030, BRIDGE_CLASS, driver="pcieport", group=1, config=rp
    )
    up = config_bytes(0x10B5, 0x8747, BRIDGE_CLASS, capabilities=[pcie_cap(0x5)])
    host.add_device(
        "0000:01:00.0",
        0x10B5,
        0x8747,
        BRIDGE_CLASS,
        driver="pcieport",
        group=2,
        parent="0000:00:01.0",
        config=up,
    )
    down = config_bytes(0x10B5, 0x8747, BRIDGE_CLASS, capabilities=[pcie_cap(0x6)])
    for port, ep, ids, klass, drv in (
        ("0000:02:08.0", "0000:03:00.0", (0x144D, 0xA808), 0x010802, "nvme"),
        ("0000:02:10.0", "0000:04:00.0", (0x8086, 0x1533), 0x020000, "igb"),
    ):
        host.add_device(
            port,
            0x10B5,
            0x8747,
            BRIDGE_CLASS,
            driver="pcieport",
            group=3,
            parent="0000:01:00.0",
            config=down,
        )
        cfg = config_bytes(
            *ids, klass, capabilities=[pm_cap(), msix_cap(8), pcie_cap(0x0, flr=True)]
        )
        host.add_device(
            ep,
            *ids,
            klass,
            driver=drv,
            group=3,
            parent=port,
            config=cfg,
            reset_method="flr bus",
            resources=[(0, 0xF7000000, 16 << 10)],
        )
    pf_cfg = config_bytes(
        0x8086,
        0x1521,
        0x020000,
        capabilities=[pm_cap(), msix_cap(10), pcie_cap(0x0, flr=True)],
        extended=[sriov_ext(7, 2, 0x1520)],
    )
    host.add_device(
        "0000:00:02.0",
        0x8086,
        0x1521,
        0x020000,
        driver="igb",
        group=4,
        config=pf_cfg,
        reset_method="flr",
        attrs={"sriov_totalvfs": "7", "sriov_numvfs": "2"},
        resources=[(0, 0xF6000000, 1 << 20), (3, 0xF6100000, 16 << 10)],
    )
    for n, vf in enumerate(("0000:00:02.1", "0000:00:02.2")):
        vf_cfg = config_bytes(
            0xFFFF,
            0xFFFF,
            0x020000,
            capabilities=[msix_cap(3), pcie_cap(0x0, flr=True)],
            interrupt_pin=0,
        )
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
    old = config_bytes(0x1234, 0x5678, 0x118000, capabilities=[pm_cap(no_soft_reset=True)])
    host.add_device(
        "0000:00:05.0",
        0x1234,
        0x5678,
        0x118000,
        group=7,
        config=old,
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
    gpp = config_bytes(
        0x1022, 0x1483, BRIDGE_CLASS, capabilities=[pcie_cap(0x4)], extended=[acs_ext()]
    )
    host.add_device(
        "0000:00:03.1", 0x1022, 0x1483, BRIDGE_CLASS, driver="pcieport", group=12, config=gpp
    )
    gpu = config_bytes(0x10DE, 0x1B80, 0x030000, capabilities=[pm_cap(), msi_cap(1), pcie_cap(0x0)])
    host.add_device(
        "0000:0a:00.0",
        0x10DE,
        0x1B80,
        0x030000,
        driver="nouveau",
        group=13,
        parent="0000:00:03.1",
        config=gpu,
        reset_method="bus",
        resources=[
            (0, 0xF6000000, 16 << 20),
            (1, 0xE0000000, 256 << 20),
            (6, 0xF7000000, 512 << 10),
        ],
        attrs={"boot_vga": "1"},
    )
    audio = config_bytes(
        0x10DE, 0x10F0, 0x040300, capabilities=[pm_cap(), msi_cap(1), pcie_cap(0x0)]
    )
    host.add_device(
        "0000:0a:00.1",
        0x10DE,
        0x10F0,
        0x040300,
        driver="snd_hda_intel",
        group=13,
        parent="0000:00:03.1",
        config=audio,
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
    caps = [pm_cap(), msi_cap(4), msix_cap(64), pcie_cap(0x0, flr=True)]
    configs = {mix: config_bytes(mix[0], mix[1], mix[2], capabilities=caps) for mix in _LARGE_MIX}
    for n in range(devices):
        group, function = divmod(n, per_group)
        bus, slot = divmod(group, 32)
        mix = _LARGE_MIX[group % len(_LARGE_MIX)]
        vendor, device, klass, driver = mix
        host.add_device(
            f"0000:{bus + 1:02x}:{slot:02x}.{function}",
            vendor,
            device,
            klass,
            driver=driver,
            group=group,
            config=configs[mix],
            resources=[(0, 0x80000000 + (n << 20), 1 << 20)],
            reset_method="flr bus",
        )
    return host
