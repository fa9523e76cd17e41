"""A simulated kernel: a Sysfs over a synthetic tree whose driver writes act as the PCI
core's do (``driver_override``, ``unbind``, ``bind``, ``drivers_probe``), so binding can
be tested without root or hardware."""

from __future__ import annotations

import errno
import os
import select
import shutil
import time

from pyvfio.sysfs import IOMMU_GROUPS, PCI_DEVICES, Sysfs, WriteTimeoutError, process_start
from pyvfio.testing.sysfs import SyntheticHost

__all__ = ["SimulatedKernel"]


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
        elif parts[-1] == "sriov_numvfs":
            self._sriov_numvfs(parts[-2], value)
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

    def _sriov_numvfs(self, pf: str, value: str) -> None:
        """The PCI core's sriov_numvfs_store: VFs at the PF's next functions, each in a
        group of its own, on vfio-pci when the PF is (vfio-pci's bus notifier sets their
        override), driverless otherwise."""
        rel = self.device_dir(pf)
        count, total = int(value), self.read_int(f"{rel}/sriov_totalvfs") or 0
        current = self.read_int(f"{rel}/sriov_numvfs") or 0
        driver = self.driver(pf)
        if driver is None or (
            driver == "vfio-pci"
            and self.read_attr("sys/module/vfio_pci/parameters/enable_sriov") not in ("Y", "1")
        ):
            raise OSError(errno.ENOENT, os.strerror(errno.ENOENT))
        if count > total:
            raise OSError(errno.ERANGE, os.strerror(errno.ERANGE))
        if count and current:
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY))
        if count == 0:
            for name in self.listdir(rel):
                if name.startswith("virtfn"):
                    vf = self.link_name(f"{rel}/{name}") or ""
                    group = self.link_name(f"{PCI_DEVICES}/{vf}/iommu_group")
                    if group is not None:
                        self.path(f"{IOMMU_GROUPS}/{group}/devices/{vf}").unlink()
                        if not self.listdir(f"{IOMMU_GROUPS}/{group}/devices"):
                            shutil.rmtree(self.path(f"{IOMMU_GROUPS}/{group}"))
                    # The folder from sysfs, not host.real: a forked writer made it.
                    shutil.rmtree(self.path(self.realpath(f"{PCI_DEVICES}/{vf}") or vf))
                    self.host.real.pop(vf, None)
                    self.path(f"{PCI_DEVICES}/{vf}").unlink()
                    self.path(f"{rel}/{name}").unlink()
        base, function = pf.rsplit(".", 1)
        groups = [int(g) for g in self.listdir(IOMMU_GROUPS) if g.isdigit()]
        for n in range(count):
            vf = f"{base}.{int(function) + n + 1}"
            self.host.add_device(
                vf,
                self.read_int(f"{rel}/vendor", 16) or 0,
                self.read_int(f"{rel}/sriov_vf_device", 16) or 0,
                self.read_int(f"{rel}/class", 16) or 0,
                driver="vfio-pci" if driver == "vfio-pci" else None,
                group=max(groups, default=0) + n + 1,
            )
            self.host.link(f"{self.host.real[vf]}/physfn", self.host.real[pf])
            self.host.link(f"{self.host.real[pf]}/virtfn{n}", self.host.real[vf])
        self.path(f"{rel}/sriov_numvfs").write_text(f"{count}\n")

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
