"""The edu suite: pyvfio's userspace API against QEMU's edu device on the real kernel.

`EduSuite` is collected once per kernel by a ``Test...`` subclass in a module marked
with that kernel's lab topology, whose ``backend`` fixture names the backends to run it
with (``test_edu.py``: the stock kernel, type1; ``test_edu_iommufd.py``: the lab's
kernel, iommufd and type1), so the same tests prove every backend. Each test gets
``edu_dev``: edu bound to vfio-pci and opened in an Iommu of that backend. The
driver-level tests, which hold over vfio-user too, are inherited from
tests/edu_driver_suite.py and run here as well.
"""

from __future__ import annotations

import mmap
import os
import random
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

import pyvfio
from edu_driver_suite import EduDriverSuite
from pyvfio._uapi.pci_regs import PCI_COMMAND, PCI_COMMAND_MASTER
from pyvfio.drivers import edu as edu_mod
from pyvfio.drivers.edu import Edu
from pyvfio.host import bind
from pyvfio.lab.pytest_plugin import LabFixture
from pyvfio.pci.config import CapId

from .labhelp import (
    fresh_dmar_window,
    kernel_log,
    no_fault_seen,
    on_vfio,
    open_fds,
    wait_dmar_faults,
)
from .loadwork import map_many_and_back

KILLED_USER = textwrap.dedent(
    """
    import sys, time
    import pyvfio
    from pyvfio.drivers import edu as e
    from pyvfio.drivers.edu import Edu
    iommu = pyvfio.Iommu(sys.argv[2])
    edu = Edu(iommu.open(sys.argv[1]))
    bufs = [iommu.dma_alloc(4096, max_iova=e.DMA_MASK) for _ in range(64)]
    edu.bar0.map()
    irq = edu.device.enable_irqs("msi")[0]
    edu.raise_interrupt(0x1000)  # fired, never acknowledged
    irq.wait(10)
    bufs[0].write(b"left-behind" * 8)
    edu.bar0.write64(e.REG_DMA_SRC, bufs[0].iova)  # a DMA with its interrupt, not awaited
    edu.bar0.write64(e.REG_DMA_DST, e.BUFFER_ADDR)
    edu.bar0.write64(e.REG_DMA_COUNT, 88)
    edu.bar0.write32(e.REG_DMA_CMD, e.DMA_START | e.DMA_IRQ)
    print(len(iommu.mappings), flush=True)
    time.sleep(600)
    """
)


def _closed(irq: pyvfio.Interrupt) -> bool:
    try:
        irq.fileno()
    except pyvfio.ClosedError:
        return True
    return False


class EduSuite(EduDriverSuite):
    """The suite, collected by a ``Test...`` subclass that gives the ``backend`` fixture."""

    #: Whether the guest's IOMMU logs the DMA it blocks. QEMU 7.2's amd-iommu blocks it
    #: but logs nothing (its page walk returns on a zero PTE without an IO_PAGE_FAULT
    #: event), so there the suite checks only that nothing got through (docs/iommus.md).
    faults_logged = True

    def assert_fault_logged(self, address: str, since: str, iova: int) -> None:
        if self.faults_logged:
            assert wait_dmar_faults(address, since, iova), no_fault_seen(address, since, iova)

    @pytest.fixture
    def iommu(self, backend: str) -> Iterator[pyvfio.Iommu]:
        bind.load_module("vfio-pci")  # /dev/vfio/vfio appears with the vfio modules
        with pyvfio.Iommu(backend=backend) as iommu:
            yield iommu

    @pytest.fixture
    def edu_dev(self, lab: LabFixture, iommu: pyvfio.Iommu) -> Iterator[pyvfio.Device]:
        for address in on_vfio(lab.address("edu")):
            with iommu.open(address) as dev:
                yield dev

    @pytest.fixture
    def edu(self, edu_dev: pyvfio.Device) -> Edu:
        return Edu(edu_dev)

    def test_backend_is_the_one_asked_for(self, edu_dev: pyvfio.Device, backend: str) -> None:
        assert edu_dev.iommu.backend == backend
        assert edu_dev.iommu.info.iova_ranges

    def test_bar0_map_and_registers(self, edu: Edu) -> None:
        bar = edu.bar0
        assert bar.size == 1 << 20
        view = bar.map()
        assert len(view) == bar.size and bar.mapped
        assert bar.read32(edu_mod.REG_ID) == 0x010000ED
        assert edu.version == (1, 0)
        for value in (0, 0x12345678, 0xFFFFFFFF):
            assert edu.liveness(value) == value ^ 0xFFFFFFFF
        bar.write64(edu_mod.REG_DMA_SRC, 0x1122334455667788)
        assert bar.read64(edu_mod.REG_DMA_SRC) == 0x1122334455667788

    def test_config_space_and_capabilities(self, edu_dev: pyvfio.Device, lab: LabFixture) -> None:
        cfg = edu_dev.config
        assert (cfg.read16(0), cfg.read16(2)) == (0x1234, 0x11E8)
        with open(f"/sys/bus/pci/devices/{edu_dev.bdf}/config", "rb") as f:
            sysfs = f.read(64)
        assert cfg.read(0, 4) == sysfs[:4]
        assert cfg.read(8, 4) == sysfs[8:12]  # revision and class code
        space = cfg.capabilities
        assert not space.problems
        msi = space.find(CapId.MSI)
        assert msi is not None and msi.offset == 0x40

    def test_isolation_unmapped_iova_is_not_read(self, edu: Edu) -> None:
        """The device asked to read an IOVA that is no longer mapped gets nothing of ours."""
        dev = edu.device
        secret = b"pyvfio-secret-" * 8
        page = mmap.mmap(-1, 4096)  # memory the caller owns; stays alive after unmap
        with dev.dma_alloc(4096, max_iova=edu_mod.DMA_MASK) as sink:
            mapping = dev.iommu.map(page, max_iova=edu_mod.DMA_MASK)
            # Put a known pattern in the device's buffer through the mapping, then put a
            # secret in the page and unmap it: the page still holds the secret.
            page[: len(secret)] = b"\x11" * len(secret)
            edu.dma_raw(to_ram=False, ram_iova=mapping.iova, length=len(secret))
            page[: len(secret)] = secret
            dev.iommu.unmap(mapping)
            fresh_dmar_window()
            before = kernel_log()
            edu.dma_raw(to_ram=False, ram_iova=mapping.iova, length=len(secret))
            edu.from_device(sink, len(secret))
            got = sink.read(0, len(secret))
            assert got != secret and secret[:14] not in got
            self.assert_fault_logged(dev.bdf, before, mapping.iova)
        page.close()

    def test_isolation_just_past_a_mapping_is_not_reached(self, edu: Edu) -> None:
        """DMA that runs off the end of a mapping stops at its last byte: the page after it
        (ours, but not mapped) is neither written nor read, and the kernel logs the fault."""
        dev, iommu = edu.device, edu.device.iommu
        limit = edu_mod.DMA_MASK >> 1  # room above for the page past the end
        with dev.dma_alloc(4096, max_iova=edu_mod.DMA_MASK) as source:
            area = mmap.mmap(-1, 8192)  # page A: mapped; page B right after it: not mapped
            view = memoryview(area)
            try:
                probe = iommu.map(area, max_iova=limit)  # an IOVA with a free page after it
                iommu.unmap(probe)
                mapping = iommu.map(view[:4096], iova=probe.iova)
                end = mapping.iova + mapping.size
                assert not any(m.iova <= end < m.iova + m.size for m in iommu.mappings)
                page_a, page_b = b"\xaa" * 4096, b"\xbb" * 4096
                area[:] = page_a + page_b

                # Device writes 16 bytes from 8 before the end: 8 land, 8 meet the IOMMU.
                source.write(bytes(range(16)))
                edu.to_device(source, 16)
                fresh_dmar_window()
                before = kernel_log()
                edu.dma_raw(to_ram=True, ram_iova=end - 8, length=16)
                assert area[4096:] == page_b, "the DMA wrote past the mapping's end"
                assert area[:4088] == page_a[:4088]
                assert area[4088:4096] == bytes(range(8))
                self.assert_fault_logged(dev.bdf, before, end)

                # Device reads from the end: page B holds a secret it must not get.
                secret = b"pyvfio-page-b-secret" * 8
                area[4096 : 4096 + len(secret)] = secret
                edu.to_device(source, len(secret))  # the device buffer: known bytes first
                before = kernel_log()
                edu.dma_raw(to_ram=False, ram_iova=end, length=len(secret))
                edu.from_device(source, len(secret))
                got = source.read(0, len(secret))
                assert secret[:20] not in got, "the device read past the mapping's end"
                self.assert_fault_logged(dev.bdf, before, end)
            finally:
                for m in iommu.mappings:  # ours: the mmap cannot close while one holds it
                    if m.vaddr != source.address:
                        iommu.unmap(m)
                view.release()
                area.close()

    def test_isolation_after_free_the_old_iova_is_dead(self, edu: Edu) -> None:
        """A buffer's IOVA stops working at free(): DMA to or from it reaches nothing."""
        dev, iommu = edu.device, edu.device.iommu
        with dev.dma_alloc(4096, max_iova=edu_mod.DMA_MASK) as sink:
            buf = dev.dma_alloc(4096, max_iova=edu_mod.DMA_MASK)
            old_iova = buf.iova
            secret = b"freed-buffer-secret!" * 8
            buf.write(secret)
            edu.to_device(buf, len(secret))  # works while the buffer lives
            edu.from_device(sink, len(secret))
            assert sink.read(0, len(secret)) == secret
            buf.free()
            assert not any(m.iova <= old_iova < m.iova + m.size for m in iommu.mappings)
            with pytest.raises(pyvfio.ClosedError, match="freed"):
                edu.to_device(buf, 16)  # the driver refuses a freed buffer outright

            # Device reads the old IOVA: the secret does not come back.
            sink.write(b"\x00" * len(secret))
            edu.to_device(sink, len(secret))  # zeroes in the device buffer
            fresh_dmar_window()
            before = kernel_log()
            edu.dma_raw(to_ram=False, ram_iova=old_iova, length=len(secret))
            edu.from_device(sink, len(secret))
            assert sink.read(0, len(secret)) == b"\x00" * len(secret)
            self.assert_fault_logged(dev.bdf, before, old_iova)

            # Device writes the old IOVA: the write is blocked, our live memory unchanged.
            pattern = b"\x5a" * 64
            sink.write(pattern)
            edu.to_device(sink, len(pattern))
            sink.write(b"\x00" * 4096)
            before = kernel_log()
            edu.dma_raw(to_ram=True, ram_iova=old_iova, length=len(pattern))
            assert sink.read() == b"\x00" * 4096
            self.assert_fault_logged(dev.bdf, before, old_iova)

    def test_2000_live_mappings_and_back_leave_nothing_behind(self, edu: Edu) -> None:
        """The leak check of the load runs (test_load.py) on every backend: on iommufd the
        IOAS itself answers that nothing is left mapped."""
        figures = map_many_and_back(edu.device.iommu, 2000)
        assert figures.count == 2000

    def test_a_process_killed_with_live_dma_and_irqs_leaves_the_device_reusable(
        self, lab: LabFixture, iommu: pyvfio.Iommu, backend: str
    ) -> None:
        for address in on_vfio(lab.address("edu")):
            child = subprocess.Popen(
                [sys.executable, "-c", KILLED_USER, address, backend],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            try:
                assert child.stdout is not None
                ready = child.stdout.readline().strip()
                if ready != "64":
                    child.wait(timeout=60)
                    why = child.stderr.read() if child.stderr else ""
                    raise AssertionError(f"the child did not get ready: {why}")
            finally:
                child.send_signal(signal.SIGKILL)
                child.wait(timeout=60)
                for pipe in (child.stdout, child.stderr):
                    if pipe is not None:
                        pipe.close()
            assert child.returncode == -signal.SIGKILL
            # The next process (this one) opens it with no manual step: the kernel closed
            # the fds, unmapped and unpinned the DMA, freed the IRQs and cleared bus master.
            with iommu.open(address) as dev:
                assert not dev.config.read16(PCI_COMMAND) & PCI_COMMAND_MASTER
                edu = Edu(dev)
                edu._poll(edu_mod.REG_DMA_CMD, edu_mod.DMA_START, 5, "the killed process's DMA")
                assert edu.interrupt_status & 0x1000  # edu itself was not reset: its state stays
                edu.acknowledge(edu.interrupt_status)
                irq = dev.enable_irqs("msi")[0]
                edu.raise_interrupt(0x2)
                assert irq.wait(5) == 1
                edu.acknowledge(0x2)
                payload = random.Random(9).randbytes(256)
                with (
                    dev.dma_alloc(4096, max_iova=edu_mod.DMA_MASK) as out,
                    dev.dma_alloc(4096, max_iova=edu_mod.DMA_MASK) as back,
                ):
                    out.write(payload)
                    edu.to_device(out, len(payload), irq=irq)
                    edu.from_device(back, len(payload), irq=irq)
                    assert back.read(0, len(payload)) == payload

    def test_edu_and_nvme_share_one_iommu(self, lab: LabFixture, iommu: pyvfio.Iommu) -> None:
        for edu_addr in on_vfio(lab.address("edu")):
            for nvme_addr in on_vfio(lab.address("nvme")):
                edu_dev = iommu.open(edu_addr)
                nvme = iommu.open(nvme_addr)
                assert {d.bdf for d in iommu.devices} == {edu_addr, nvme_addr}
                assert edu_dev.iommu is nvme.iommu is iommu
                cap = nvme.bar(0).read64(0)  # NVMe CAP: MQES in bits 15:0 is non-zero
                assert cap & 0xFFFF
                buf = iommu.dma_alloc(4096, max_iova=edu_mod.DMA_MASK)
                buf.write(b"shared")
                edu = Edu(edu_dev)
                edu.to_device(buf, 6)
                back = iommu.dma_alloc(4096, max_iova=edu_mod.DMA_MASK)
                edu.from_device(back, 6)
                assert back.read(0, 6) == b"shared"
                nvme.close()
                edu_dev.close()

    def test_edu_below_a_switch_opens(self, lab: LabFixture, iommu: pyvfio.Iommu) -> None:
        for address in on_vfio(lab.address("edu", 1)):
            with iommu.open(address) as dev:
                assert Edu(dev).ident == 0x010000ED

    def test_chipset_group_not_viable_names_its_peers(self, iommu: pyvfio.Iommu) -> None:
        smbus = "0000:00:1f.3"
        for address in on_vfio(smbus):
            with pytest.raises(pyvfio.GroupNotViableError) as info:
                iommu.open(address)
            peers = {p.address: p.driver for p in info.value.peers}
            assert peers == {"0000:00:1f.0": "lpc_ich", "0000:00:1f.2": "ahci"}
            assert "pyvfio bind --group" in str(info.value)

    def test_device_not_on_vfio_pci_says_how_to_bind(
        self, lab: LabFixture, iommu: pyvfio.Iommu
    ) -> None:
        with pytest.raises(pyvfio.DeviceNotBoundError, match="pyvfio bind"):
            iommu.open(lab.address("nvme"))  # still on the kernel's nvme driver

    def test_reset_unsupported_on_edu(self, edu_dev: pyvfio.Device) -> None:
        assert not edu_dev.info.reset_works
        with pytest.raises(pyvfio.UnsupportedError, match="no function reset") as caught:
            edu_dev.reset()
        # edu sits on the root bus: no bus reset either, so none is suggested (issue 19)
        assert "try hot_reset()" not in str(caught.value) and "root bus" in str(caught.value)
        with pytest.raises(pyvfio.UnsupportedError, match=r"bus-reset: .* sits on a root bus"):
            edu_dev.hot_reset()

    def test_hugepage_buffer(self, edu: Edu) -> None:
        path = "/proc/sys/vm/nr_hugepages"
        with open(path) as f:
            old = f.read().strip()
        with open(path, "w") as f:
            f.write("4")
        try:
            with edu.device.dma_alloc(2 << 20, max_iova=edu_mod.DMA_MASK, hugepages=True) as buf:
                assert buf.iova % (2 << 20) == 0 and buf.size == 2 << 20
                buf.write(b"huge", offset=(1 << 20))
                edu.to_device(buf, 4, offset=1 << 20)
                edu.from_device(buf, 4, offset=0)
                assert buf.read(0, 4) == b"huge"
        finally:
            with open(path, "w") as f:
                f.write(old)

    def test_close_releases_every_fd_and_mapping(self, lab: LabFixture, backend: str) -> None:
        for address in on_vfio(lab.address("edu")):
            before = open_fds()
            iommu = pyvfio.Iommu(backend=backend)
            dev = iommu.open(address)
            start = iommu.info.dma_avail
            bufs = [dev.dma_alloc(4096) for _ in range(16)]
            dev.bar(0).map()
            dev.enable_irqs("msi")
            assert len(iommu.mappings) == 16
            if start is not None:
                assert iommu.info.dma_avail == start - 16
            for b in bufs[:8]:
                b.free()
            if start is not None:
                assert iommu.info.dma_avail == start - 8
            iommu.close()
            iommu.close()  # twice is fine
            assert dev.closed and iommu.closed
            assert open_fds() == before
            with pytest.raises(pyvfio.ClosedError):
                dev.bar(0).read32(0)
            with pytest.raises(pyvfio.ClosedError):
                iommu.dma_alloc(4096)

    def test_pyvfio_open_owns_its_iommu(self, lab: LabFixture) -> None:
        for address in on_vfio(lab.address("edu")):
            before = open_fds()
            with pyvfio.open(address) as dev:
                assert dev.bdf == address
                buf = dev.dma_alloc(4096)
                assert buf.iova
            assert dev.iommu.closed and buf.freed
            assert open_fds() == before
            assert os.path.exists(f"/dev/vfio/{dev.group}")

    def test_memlock_limit_is_checked_for_unprivileged_callers(
        self, edu: Edu, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        import resource

        from pyvfio import iommu as iommu_mod

        monkeypatch.setattr(iommu_mod, "_has_cap_ipc_lock", lambda: False)
        soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (64 << 10, hard))
        try:
            with pytest.raises(pyvfio.MemlockLimitError) as info:
                edu.device.dma_alloc(128 << 10)
            assert info.value.limit == 64 << 10 and info.value.requested == 128 << 10
            assert "ulimit -l" in str(info.value)
            assert not edu.device.iommu.mappings  # nothing half-done
        finally:
            resource.setrlimit(resource.RLIMIT_MEMLOCK, (soft, hard))

    def test_msix_vectors_on_nvme(self, lab: LabFixture, iommu: pyvfio.Iommu) -> None:
        for address in on_vfio(lab.address("nvme")):
            with iommu.open(address) as nvme:
                table = nvme.config.capabilities.msix
                assert table is not None
                info = nvme.irq_info("msix")
                assert info.count == table.table_size
                irqs = nvme.enable_irqs("msix", count=4)
                assert [i.vector for i in irqs] == [0, 1, 2, 3]
                assert len({i.fileno() for i in irqs}) == 4
                with pytest.raises(pyvfio.UnsupportedError, match="offers"):
                    nvme.enable_irqs("msix", count=info.count + 1)
                nvme.disable_irqs("msix")
                assert all(_closed(i) for i in irqs)
                # The BAR holding the MSI-X table still reads through VFIO.
                assert nvme.bar(0).read32(0x08) >> 16 >= 1  # VS: major version

    def test_function_reset_on_nvme(self, lab: LabFixture, iommu: pyvfio.Iommu) -> None:
        for address in on_vfio(lab.address("nvme")):
            with iommu.open(address) as nvme:
                assert nvme.config.capabilities.flr_capable
                assert nvme.info.reset_works
                cc = 0x14  # NVMe Controller Configuration: reset clears it to 0
                nvme.bar(0).write32(cc, 0x00460000)  # IOSQES/IOCQES set, EN=0
                assert nvme.bar(0).read32(cc) == 0x00460000
                nvme.reset()
                assert nvme.bar(0).read32(cc) == 0

    def test_bus_reset_below_a_root_port(self, lab: LabFixture, iommu: pyvfio.Iommu) -> None:
        """e1000e has power management, so after the reset the kernel waits for it behind
        its port: it came back (ENOTTY on main, whose ports ran at QEMU's 16 GT/s and
        reported the link down). The reset is real: a register e1000e's reset clears is
        back to its value at reset, and vfio restored the config space (BAR0 decodes)."""
        rdbal0 = 0x2800  # Receive Descriptor Base Address Low, queue 0: plain storage
        for address in on_vfio(lab.address("e1000e")):
            with iommu.open(address) as nic:
                bar = nic.bar(0)
                at_reset = bar.read32(rdbal0)
                bar.write32(rdbal0, at_reset ^ 0x12340000)
                assert bar.read32(rdbal0) == at_reset ^ 0x12340000
                nic.hot_reset()
                assert bar.read32(rdbal0) == at_reset
                assert (nic.config.read16(0), nic.config.read16(2)) == (0x8086, 0x10D3)

    def test_hot_reset_dependents_below_a_root_port(
        self, lab: LabFixture, iommu: pyvfio.Iommu
    ) -> None:
        for address in on_vfio(lab.address("e1000e")):
            with iommu.open(address) as nic:
                dependents = nic.hot_reset_dependents()
                assert [d.address for d in dependents] == [address]
                if nic.iommu.backend == "type1":
                    assert dependents[0].group_id == nic.group
                else:  # a cdev reports iommufd device ids, and whether we own them all
                    assert dependents[0].group_id is None and dependents[0].devid is not None
                    assert dependents[0].owned
