"""The vfio-user server, driven with raw protocol messages by a test client.

Every test talks to a real server thread over a real UNIX socket (a socketpair, or
the listening path for `Server`): negotiation, device/region/IRQ info, the edu
registers, interrupts through eventfds, DMA through a shared memfd and through
DMA_READ/WRITE messages, reset, and malformed input of every kind, after which the
server must still answer (or, where the stream lost its framing, close cleanly).
"""

from __future__ import annotations

import errno
import grp
import mmap
import os
import signal
import socket
import stat
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rawclient import RawClient, eventfd, fired, guest_ram, pending, served

from pyvfio._uapi.vfio import (
    VfioDeviceFlag,
    VfioIrqInfoFlag,
    VfioIrqSetFlag,
    VfioRegionInfoCap,
    VfioRegionInfoFlag,
    vfio_info_cap_header,
    vfio_region_info_cap_sparse_mmap,
    vfio_region_sparse_mmap_area,
)
from pyvfio.drivers import edu as edu_driver
from pyvfio.errors import VfioUserError
from pyvfio.pci.config import parse_config
from pyvfio.server import EduDevice, MmapArea, PciDevice, Server, ServerOptions, running
from pyvfio.server.edu import DMA_BUFFER_ADDR
from pyvfio.vfio_user.protocol import (
    Command,
    Header,
    MessageFlag,
    receive_message,
    vfio_user_dma_unmap,
    vfio_user_version,
)

TRIGGER_EVENTFD = (
    VfioIrqSetFlag.VFIO_IRQ_SET_DATA_EVENTFD | VfioIrqSetFlag.VFIO_IRQ_SET_ACTION_TRIGGER
)
DISABLE = VfioIrqSetFlag.VFIO_IRQ_SET_DATA_NONE | VfioIrqSetFlag.VFIO_IRQ_SET_ACTION_TRIGGER
UNMASK = VfioIrqSetFlag.VFIO_IRQ_SET_DATA_NONE | VfioIrqSetFlag.VFIO_IRQ_SET_ACTION_UNMASK
INTX, MSI, MSIX = 0, 1, 2
CONFIG = 7


@pytest.fixture
def edu() -> Iterator[tuple[RawClient, EduDevice]]:
    device = EduDevice()
    with served(device) as s:
        s.client.negotiate()
        s.client.enable_bus_master()
        yield s.client, device
        s.client.sock.close()
        assert s.finished()
        assert isinstance(s.result[0], int), s.result  # the server returned, never raised
    device.close()


def device_info(client: RawClient) -> tuple[int, int, int, int]:
    reply = client.ok(Command.VFIO_USER_DEVICE_GET_INFO, struct.pack("=4I", 16, 0, 0, 0))
    return struct.unpack("=4I", reply.payload)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# ---- negotiation ----------------------------------------------------------------------


def test_version_negotiation_declares_limits_and_no_migration() -> None:
    with served(EduDevice()) as s:
        caps = s.client.negotiate({"max_msg_fds": 4, "max_data_xfer_size": 4096, "migration": {}})
        assert caps == {
            "max_msg_fds": 16,
            "max_data_xfer_size": 1 << 20,
            "pgsizes": 4096,
            "max_dma_maps": 65535,
        }
        assert "migration" not in caps
        again = vfio_user_version(major=0, minor=0).pack()
        assert s.client.error(Command.VFIO_USER_VERSION, again) == errno.EINVAL
        # Migration is refused the way the kernel refuses a feature it lacks.
        feature = struct.pack("=II", 16, 1 | 1 << 16)  # VFIO_DEVICE_FEATURE_MIGRATION, GET
        assert s.client.error(Command.VFIO_USER_DEVICE_FEATURE, feature) == errno.ENOTTY


def test_write_multiple_only_when_proposed() -> None:
    with served(EduDevice()) as s:
        caps = s.client.negotiate({"write_multiple": True})
        assert caps["write_multiple"] is True
        writes = b"".join(
            struct.pack("=QII8s", offset, 0, 4, value.to_bytes(8, "little"))
            for offset, value in ((0x04, 0x0F0F0F0F), (0x60, 0x10))
        )
        reply = s.client.ok(Command.VFIO_USER_REGION_WRITE_MULTI, struct.pack("=Q", 2) + writes)
        assert struct.unpack("=Q", reply.payload) == (2,)
        assert s.client.read32(0x04) == 0xF0F0F0F0
        assert s.client.read32(0x24) == 0x10
    with served(EduDevice()) as s:
        assert "write_multiple" not in s.client.negotiate({})


def test_commands_before_version_are_refused_and_the_session_goes_on() -> None:
    with served(EduDevice()) as s:
        assert s.client.error(Command.VFIO_USER_DEVICE_GET_INFO, bytes(16)) == errno.EINVAL
        s.client.negotiate()
        assert device_info(s.client)[2] == 9


def test_unsupported_major_version_is_refused_then_closed() -> None:
    with served(EduDevice()) as s:
        payload = vfio_user_version(major=1, minor=0).pack()
        assert s.client.error(Command.VFIO_USER_VERSION, payload) == errno.ENOTSUP
        assert s.client.closed_by_server()
        assert s.finished()


@pytest.mark.parametrize(
    "caps",
    [b"{not json\0", b'{"capabilities": {"max_msg_fds": -1}}\0', b'{"capabilities": []}\0'],
)
def test_malformed_capabilities_get_einval(caps: bytes) -> None:
    with served(EduDevice()) as s:
        payload = vfio_user_version(major=0, minor=0).pack() + caps
        assert s.client.error(Command.VFIO_USER_VERSION, payload) == errno.EINVAL
        s.client.negotiate()  # a correct one still works


# ---- device, region and IRQ info ------------------------------------------------------


def test_device_region_and_irq_info(edu: tuple[RawClient, EduDevice]) -> None:
    client, _ = edu
    argsz, flags, regions, irqs = device_info(client)
    assert argsz == 16
    assert flags == VfioDeviceFlag.VFIO_DEVICE_FLAGS_PCI | VfioDeviceFlag.VFIO_DEVICE_FLAGS_RESET
    assert (regions, irqs) == (9, 5)
    bar0, reply = client.region_info(0)
    rw = (
        VfioRegionInfoFlag.VFIO_REGION_INFO_FLAG_READ
        | VfioRegionInfoFlag.VFIO_REGION_INFO_FLAG_WRITE
    )
    assert (bar0.size, bar0.flags, bar0.index) == (1 << 20, rw, 0)
    assert not reply.fds  # registers: no mmap
    config, _ = client.region_info(CONFIG)
    assert (config.size, config.flags) == (256, rw)
    for absent in (1, 2, 3, 4, 5, 6, 8):
        info, _ = client.region_info(absent)
        assert (info.size, info.flags) == (0, 0)
    intx = client.irq_info(INTX)
    assert intx.count == 1
    assert intx.flags == (
        VfioIrqInfoFlag.VFIO_IRQ_INFO_EVENTFD
        | VfioIrqInfoFlag.VFIO_IRQ_INFO_MASKABLE
        | VfioIrqInfoFlag.VFIO_IRQ_INFO_AUTOMASKED
    )
    msi = client.irq_info(MSI)
    assert msi.count == 1 and msi.flags & VfioIrqInfoFlag.VFIO_IRQ_INFO_NORESIZE
    assert client.irq_info(MSIX).count == 0


@pytest.mark.parametrize(
    ("command", "payload"),
    [
        (Command.VFIO_USER_DEVICE_GET_REGION_INFO, struct.pack("=4IQQ", 32, 0, 9, 0, 0, 0)),
        (Command.VFIO_USER_DEVICE_GET_REGION_INFO, struct.pack("=4IQQ", 8, 0, 0, 0, 0, 0)),
        (Command.VFIO_USER_DEVICE_GET_REGION_INFO, b"\x20\0\0\0"),
        (Command.VFIO_USER_DEVICE_GET_IRQ_INFO, struct.pack("=4I", 16, 0, 5, 0)),
        (Command.VFIO_USER_DEVICE_GET_INFO, struct.pack("=4I", 4, 0, 0, 0)),
        (Command.VFIO_USER_REGION_READ, struct.pack("=QII", 0, 9, 4)),  # no such region
        (Command.VFIO_USER_REGION_READ, struct.pack("=QII", 0, 1, 4)),  # BAR1 absent
        (Command.VFIO_USER_REGION_READ, struct.pack("=QII", (1 << 20) - 2, 0, 4)),  # past end
        (Command.VFIO_USER_REGION_READ, struct.pack("=QII", 254, CONFIG, 4)),
        (Command.VFIO_USER_REGION_READ, struct.pack("=QII", 1 << 63, 0, 4)),
        (Command.VFIO_USER_REGION_WRITE, struct.pack("=QII", 4, 0, 4) + b"\0\0"),  # short data
        (Command.VFIO_USER_REGION_WRITE, struct.pack("=QII", 4, 0, 2) + b"\0\0\0\0"),  # long
        (Command.VFIO_USER_DMA_MAP, struct.pack("=IIQQQ", 32, 3, 0, 0x1000, 0)),  # empty
        (Command.VFIO_USER_DMA_MAP, struct.pack("=IIQQQ", 32, 0x10, 0, 0x1000, 0x1000)),
        (Command.VFIO_USER_DMA_MAP, struct.pack("=IIQQQ", 32, 3, 0, 2**64 - 4096, 8192)),
        (Command.VFIO_USER_DMA_UNMAP, struct.pack("=IIQQ", 24, 0, 0x1000, 0x1000)),  # none
        (Command.VFIO_USER_DMA_UNMAP, struct.pack("=IIQQ", 24, 1, 0x1000, 0x1000)),  # bitmap
        (Command.VFIO_USER_DEVICE_SET_IRQS, struct.pack("=5I", 20, 0x21, 0, 0, 2)),  # count>1
        (Command.VFIO_USER_DEVICE_SET_IRQS, struct.pack("=5I", 20, 0x23, 0, 0, 1)),  # 2 DATA_
        (Command.VFIO_USER_DEVICE_SET_IRQS, struct.pack("=5I", 20, 0x09, 1, 0, 1)),  # mask MSI
        (Command.VFIO_USER_DEVICE_SET_IRQS, struct.pack("=5I", 20, 0x22, 0, 0, 1)),  # no bool
        (Command.VFIO_USER_DEVICE_SET_IRQS, struct.pack("=5I", 20, 0x21, 7, 0, 1)),
        (Command.VFIO_USER_DMA_READ, struct.pack("=QQ", 0, 4)),  # the server's own command
        (Command.VFIO_USER_DEVICE_GET_REGION_IO_FDS, struct.pack("=4I", 16, 0, 0, 0)),
        (Command.VFIO_USER_MIG_DATA_READ, struct.pack("=II", 8, 4)),
        (14, b""),  # the withdrawn DIRTY_PAGES
        (0, b""),
        (0xFFFF, b"\0" * 64),
    ],
)
def test_bad_requests_get_an_error_and_the_server_goes_on(
    edu: tuple[RawClient, EduDevice], command: int, payload: bytes
) -> None:
    client, _ = edu
    assert client.error(command, payload) in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOENT,
                                              errno.ENOTSUP, errno.E2BIG)  # fmt: skip
    assert client.read32(edu_driver.REG_ID) == 0x010000ED  # still serving


def test_unknown_command_is_eopnotsupp(edu: tuple[RawClient, EduDevice]) -> None:
    client, _ = edu
    assert client.error(99, b"whatever") == errno.EOPNOTSUPP


def test_oversized_access_is_e2big() -> None:
    options = ServerOptions(max_data_xfer_size=4096)
    with served(EduDevice(), options) as s:
        s.client.negotiate()
        request = struct.pack("=QII", 0, 0, 8192)
        assert s.client.error(Command.VFIO_USER_REGION_READ, request) == errno.E2BIG
        assert s.client.read32(0) == 0x010000ED


# ---- the edu registers ----------------------------------------------------------------


def test_config_space_reads_back_as_edu(edu: tuple[RawClient, EduDevice]) -> None:
    client, _ = edu
    space = parse_config(client.read(CONFIG, 0, 256))
    assert not space.problems
    header = space.header
    assert (header.vendor_id, header.device_id, header.revision) == (0x1234, 0x11E8, 0x10)
    assert (header.base_class, header.subclass) == (0x00, 0xFF)
    assert header.interrupt_pin == 1
    assert (header.subsystem_vendor_id, header.subsystem_id) == (0x1AF4, 0x1100)
    msi = space.msi
    assert msi is not None and msi.offset == 0x40 and msi.is_64bit and msi.vectors == 1
    assert [b.index for b in header.bars] == []  # unprogrammed 32-bit BAR0 reads 0


def test_config_writes_follow_the_write_mask(edu: tuple[RawClient, EduDevice]) -> None:
    client, device = edu
    client.write(CONFIG, 0, b"\xff\xff\xff\xff")  # vendor/device are read-only
    assert client.read(CONFIG, 0, 4) == b"\x34\x12\xe8\x11"
    client.write(CONFIG, 4, (0x0006).to_bytes(2, "little"))  # memory + bus master
    assert int.from_bytes(client.read(CONFIG, 4, 2), "little") == 0x0006
    assert device.config.bus_master
    client.write(CONFIG, 0x10, b"\xff\xff\xff\xff")  # BAR sizing
    assert int.from_bytes(client.read(CONFIG, 0x10, 4), "little") == 0xFFF00000  # 1 MiB
    client.write(CONFIG, 0x10, (0xFEB00000).to_bytes(4, "little"))
    assert parse_config(client.read(CONFIG, 0, 256)).header.bars[0].address == 0xFEB00000
    client.write(CONFIG, 0x42, b"\x01\x00")  # MSI enable latches
    assert device.config.msi_enabled


def test_edu_registers(edu: tuple[RawClient, EduDevice]) -> None:
    client, _ = edu
    assert client.read32(edu_driver.REG_ID) == 0x010000ED
    for value in (0, 0x12345678, 0xFFFFFFFF):
        client.write32(edu_driver.REG_LIVENESS, value)
        assert client.read32(edu_driver.REG_LIVENESS) == value ^ 0xFFFFFFFF
    client.write32(edu_driver.REG_FACTORIAL, 10)
    assert client.read32(edu_driver.REG_STATUS) & edu_driver.STATUS_COMPUTING == 0
    assert client.read32(edu_driver.REG_FACTORIAL) == 3628800
    client.write32(edu_driver.REG_FACTORIAL, 13)  # 13! wraps in 32 bits, as in QEMU
    assert client.read32(edu_driver.REG_FACTORIAL) == 6227020800 & 0xFFFFFFFF
    client.write64(edu_driver.REG_DMA_SRC, 0x1122334455667788)
    assert client.read(0, edu_driver.REG_DMA_SRC, 8) == (0x1122334455667788).to_bytes(8, "little")
    # QEMU's access rules: below 0x80 only 32-bit; others read all-ones, writes ignored.
    assert client.read(0, edu_driver.REG_ID, 2) == b"\xff\xff"
    client.write(0, edu_driver.REG_LIVENESS, b"\0\0")
    assert client.read32(edu_driver.REG_LIVENESS) == 0
    assert client.read32(0x1000) == 0xFFFFFFFF  # nothing there


def test_msi_interrupts(edu: tuple[RawClient, EduDevice]) -> None:
    client, _ = edu
    fd = eventfd()
    try:
        assert not client.set_irqs(TRIGGER_EVENTFD, MSI, 0, 1, fds=[fd]).header.is_error
        client.write32(edu_driver.REG_STATUS, edu_driver.STATUS_IRQ_FACT)
        client.write32(edu_driver.REG_FACTORIAL, 6)
        assert fired(fd) == 1
        assert client.read32(edu_driver.REG_FACTORIAL) == 720
        assert client.read32(edu_driver.REG_IRQ_STATUS) == edu_driver.IRQ_FACTORIAL
        client.write32(edu_driver.REG_IRQ_ACK, edu_driver.IRQ_FACTORIAL)
        client.write32(edu_driver.REG_IRQ_RAISE, 0x55)
        assert fired(fd) == 1
        assert client.read32(edu_driver.REG_IRQ_STATUS) == 0x55
        client.write32(edu_driver.REG_IRQ_ACK, 0x55)
        assert client.read32(edu_driver.REG_IRQ_STATUS) == 0
        assert not pending(fd)
        # Disabling the index: a raise then reaches no eventfd.
        assert not client.set_irqs(DISABLE, MSI, 0, 0).header.is_error
        client.write32(edu_driver.REG_IRQ_RAISE, 0x1)
        assert not pending(fd)
    finally:
        os.close(fd)


def test_intx_is_level_triggered_and_automasked(edu: tuple[RawClient, EduDevice]) -> None:
    client, _ = edu
    fd = eventfd()
    try:
        assert not client.set_irqs(TRIGGER_EVENTFD, INTX, 0, 1, fds=[fd]).header.is_error
        client.write32(edu_driver.REG_IRQ_RAISE, 0x1)
        assert fired(fd) == 1
        client.write32(edu_driver.REG_IRQ_RAISE, 0x2)  # still asserted and masked: nothing
        assert not pending(fd)
        client.write32(edu_driver.REG_IRQ_ACK, 0x1)  # 0x2 still pending
        assert not client.set_irqs(UNMASK, INTX, 0, 1).header.is_error
        assert fired(fd) == 1  # unmasked while asserted: signalled again
        client.write32(edu_driver.REG_IRQ_ACK, 0x2)  # deasserted
        assert not client.set_irqs(UNMASK, INTX, 0, 1).header.is_error
        assert not pending(fd)
        client.write32(edu_driver.REG_IRQ_RAISE, 0x4)
        assert fired(fd) == 1
    finally:
        os.close(fd)


def test_intx_unmask_eventfd(edu: tuple[RawClient, EduDevice]) -> None:
    client, _ = edu
    trigger, unmask = eventfd(), eventfd()
    try:
        client.set_irqs(TRIGGER_EVENTFD, INTX, 0, 1, fds=[trigger])
        unmask_eventfd = (
            VfioIrqSetFlag.VFIO_IRQ_SET_DATA_EVENTFD | VfioIrqSetFlag.VFIO_IRQ_SET_ACTION_UNMASK
        )
        assert not client.set_irqs(unmask_eventfd, INTX, 0, 1, fds=[unmask]).header.is_error
        client.write32(edu_driver.REG_IRQ_RAISE, 0x1)
        assert fired(trigger) == 1
        os.write(unmask, (1).to_bytes(8, "little"))  # what KVM's resamplefd does
        assert fired(trigger) == 1  # still asserted, so signalled again once unmasked
    finally:
        os.close(trigger)
        os.close(unmask)


def test_client_triggered_interrupts(edu: tuple[RawClient, EduDevice]) -> None:
    client, _ = edu
    fd = eventfd()
    try:
        client.set_irqs(TRIGGER_EVENTFD, MSI, 0, 1, fds=[fd])
        trigger_bool = (
            VfioIrqSetFlag.VFIO_IRQ_SET_DATA_BOOL | VfioIrqSetFlag.VFIO_IRQ_SET_ACTION_TRIGGER
        )
        client.set_irqs(trigger_bool, MSI, 0, 1, data=b"\x00")
        assert not pending(fd)
        client.set_irqs(trigger_bool, MSI, 0, 1, data=b"\x01")
        assert fired(fd) == 1
        client.set_irqs(DISABLE, MSI, 0, 1)  # DATA_NONE with a count: a loopback trigger
        assert fired(fd) == 1
    finally:
        os.close(fd)


# ---- DMA ------------------------------------------------------------------------------


def run_edu_dma(client: RawClient, *, to_ram: bool, ram: int, length: int, offset: int = 0) -> None:
    device = DMA_BUFFER_ADDR + offset
    src, dst = (device, ram) if to_ram else (ram, device)
    client.write64(edu_driver.REG_DMA_SRC, src)
    client.write64(edu_driver.REG_DMA_DST, dst)
    client.write64(edu_driver.REG_DMA_COUNT, length)
    command = edu_driver.DMA_START | edu_driver.DMA_IRQ | (edu_driver.DMA_TO_RAM if to_ram else 0)
    client.write32(edu_driver.REG_DMA_CMD, command)
    # The transfer runs after the reply to that write; region reads are answered while
    # the server waits for its DMA_READ/WRITE replies, so poll the busy bit as a driver does.
    for _ in range(1000):
        if client.read32(edu_driver.REG_DMA_CMD) & edu_driver.DMA_START == 0:
            return
    raise AssertionError("the edu DMA never finished")


def test_dma_through_shared_memory(edu: tuple[RawClient, EduDevice]) -> None:
    client, device = edu
    memfd = guest_ram(3 * 4096)
    irq = eventfd()
    try:
        ram = mmap.mmap(memfd, 3 * 4096)
        client.set_irqs(TRIGGER_EVENTFD, MSI, 0, 1, fds=[irq])
        # Map the last two pages of the file at DMA address 0x100000.
        assert not client.dma_map(0x100000, 8192, fd=memfd, offset=4096).header.is_error
        payload = os.urandom(4000)
        ram[4096 : 4096 + 4000] = payload
        run_edu_dma(client, to_ram=False, ram=0x100000, length=4000)
        assert fired(irq) == 1
        assert bytes(device.buffer[:4000]) == payload
        client.write32(edu_driver.REG_IRQ_ACK, edu_driver.IRQ_DMA)
        run_edu_dma(client, to_ram=True, ram=0x101000 + 10, length=100, offset=50)
        assert fired(irq) == 1
        assert ram[8192 + 10 : 8192 + 110] == payload[50:150]
        assert client.dma_requests == []  # no message was needed: it was all mmap'ed
        ram.close()
    finally:
        os.close(memfd)
        os.close(irq)


def test_dma_by_message_when_no_fd_was_given(edu: tuple[RawClient, EduDevice]) -> None:
    client, device = edu
    guest = bytearray(os.urandom(8192))
    client.memory[0x200000] = guest
    assert not client.dma_map(0x200000, 8192).header.is_error  # no fd
    run_edu_dma(client, to_ram=False, ram=0x200000 + 100, length=3000)
    assert bytes(device.buffer[:3000]) == guest[100:3100]
    run_edu_dma(client, to_ram=True, ram=0x201000, length=64, offset=8)
    assert guest[4096 : 4096 + 64] == guest[108:172]
    commands = [h.command for h in client.dma_requests]
    assert commands == [Command.VFIO_USER_DMA_READ, Command.VFIO_USER_DMA_WRITE]
    assert all(h.is_command for h in client.dma_requests)


def test_dma_by_message_in_pieces_of_the_clients_max_transfer() -> None:
    device = EduDevice()
    with served(device) as s:
        s.client.negotiate({"max_data_xfer_size": 1024})
        s.client.enable_bus_master()
        guest = bytearray(os.urandom(4096))
        s.client.memory[0x300000] = guest
        s.client.dma_map(0x300000, 4096)
        run_edu_dma(s.client, to_ram=False, ram=0x300000, length=4000)
        assert bytes(device.buffer[:4000]) == guest[:4000]
        assert len(s.client.dma_requests) == 4  # 1024 + 1024 + 1024 + 928


def test_dma_spanning_two_adjacent_mappings(edu: tuple[RawClient, EduDevice]) -> None:
    client, device = edu
    memfd = guest_ram(4096)
    try:
        ram = mmap.mmap(memfd, 4096)
        ram[:] = b"A" * 4096
        client.memory[0x401000] = bytearray(b"B" * 4096)
        client.dma_map(0x400000, 4096, fd=memfd)
        client.dma_map(0x401000, 4096)
        run_edu_dma(client, to_ram=False, ram=0x400F00, length=0x200)
        assert bytes(device.buffer[:0x200]) == b"A" * 0x100 + b"B" * 0x100
        ram.close()
    finally:
        os.close(memfd)


def test_dma_outside_the_mappings_does_not_happen(edu: tuple[RawClient, EduDevice]) -> None:
    client, device = edu
    irq = eventfd()
    try:
        client.set_irqs(TRIGGER_EVENTFD, MSI, 0, 1, fds=[irq])
        device.buffer[:16] = b"x" * 16
        run_edu_dma(client, to_ram=False, ram=0x500000, length=16)  # nothing mapped there
        assert fired(irq) == 1  # the transfer still completes, as edu's would
        assert bytes(device.buffer[:16]) == b"x" * 16
        assert client.dma_requests == []
    finally:
        os.close(irq)


def test_dma_without_a_client_is_efault() -> None:
    device = EduDevice()
    device.config.write(4, b"\x04\x00")  # bus master on
    with pytest.raises(VfioUserError, match="no vfio-user client") as info:
        device.dma_read(0x1000, 4)
    assert info.value.errno == errno.EFAULT


def test_no_dma_without_bus_master(edu: tuple[RawClient, EduDevice]) -> None:
    client, device = edu
    client.memory[0x700000] = bytearray(b"z" * 4096)
    client.dma_map(0x700000, 4096)
    client.write(CONFIG, 4, b"\x02\x00")  # memory space on, bus master off
    run_edu_dma(client, to_ram=False, ram=0x700000, length=16)
    assert client.dma_requests == [] and bytes(device.buffer[:16]) == bytes(16)
    with pytest.raises(VfioUserError, match="Bus Master Enable off") as info:
        device.dma_read(0x700000, 4)
    assert info.value.errno == errno.EPERM
    client.enable_bus_master()
    run_edu_dma(client, to_ram=False, ram=0x700000, length=16)
    assert bytes(device.buffer[:16]) == b"z" * 16


def test_a_client_that_does_not_answer_fails_the_dma_not_the_session() -> None:
    device = EduDevice()
    with served(device, ServerOptions(io_timeout=0.3)) as s:
        client = s.client
        client.negotiate()
        client.enable_bus_master()
        client.dma_map(0x800000, 4096)  # no fd: the server has to ask
        irq = eventfd()
        try:
            client.set_irqs(TRIGGER_EVENTFD, MSI, 0, 1, fds=[irq])
            client.write64(edu_driver.REG_DMA_SRC, 0x800000)
            client.write64(edu_driver.REG_DMA_DST, DMA_BUFFER_ADDR)
            client.write64(edu_driver.REG_DMA_COUNT, 16)
            client.write32(edu_driver.REG_DMA_CMD, edu_driver.DMA_START | edu_driver.DMA_IRQ)
            # The client waits on the interrupt without reading the socket: the server's
            # DMA_READ goes unanswered, the transfer fails and still completes.
            assert fired(irq) == 1
            client.memory[0x800000] = bytearray(4096)
            # The stale DMA_READ is answered now; the server drops that late reply.
            assert client.read32(edu_driver.REG_DMA_CMD) & edu_driver.DMA_START == 0
            assert [h.command for h in client.dma_requests] == [Command.VFIO_USER_DMA_READ]
            assert client.read32(edu_driver.REG_ID) == 0x010000ED
        finally:
            os.close(irq)
    device.close()


def test_dma_refused_by_the_client_is_survived(edu: tuple[RawClient, EduDevice]) -> None:
    client, _ = edu
    client.dma_map(0x600000, 4096)  # mapped, but the test client holds no memory there
    run_edu_dma(client, to_ram=False, ram=0x600000, length=16)
    assert [h.command for h in client.dma_requests] == [Command.VFIO_USER_DMA_READ]
    assert client.read32(edu_driver.REG_ID) == 0x010000ED


def test_dma_map_rules(edu: tuple[RawClient, EduDevice]) -> None:
    client, _ = edu
    assert not client.dma_map(0x10000, 0x4000).header.is_error
    assert client.dma_map(0x12000, 0x4000).header.error == errno.EEXIST  # overlap
    assert client.dma_map(0xE000, 0x4000).header.error == errno.EEXIST
    assert not client.dma_map(0x14000, 0x1000).header.is_error  # adjacent is fine
    unmap = vfio_user_dma_unmap(argsz=24, flags=0, addr=0x10000, size=0x2000)
    assert client.error(Command.VFIO_USER_DMA_UNMAP, unmap.pack()) == errno.ENOENT  # not exact
    unmap.size = 0x4000
    reply = client.ok(Command.VFIO_USER_DMA_UNMAP, unmap.pack())
    assert vfio_user_dma_unmap.parse(reply.payload).addr == 0x10000  # echoed
    everything = vfio_user_dma_unmap(argsz=24, flags=2, addr=0, size=0)
    client.ok(Command.VFIO_USER_DMA_UNMAP, everything.pack())
    assert not client.dma_map(0x14000, 0x1000).header.is_error  # it was gone


def test_dma_map_fd_counts_and_leaks(edu: tuple[RawClient, EduDevice]) -> None:
    client, _ = edu
    r, w = os.pipe()
    memfd = guest_ram(4096)
    try:
        before = open_fds()
        request = struct.pack("=IIQQQ", 32, 3, 0, 0x10000, 4096)
        reply = client.call(Command.VFIO_USER_DMA_MAP, request, fds=[memfd, r])
        assert reply.header.error == errno.EINVAL  # two fds for one mapping
        reply = client.call(Command.VFIO_USER_DMA_MAP, request, fds=[r])
        assert not reply.header.is_error  # a pipe is not mapped: served by messages
        client.ok(Command.VFIO_USER_DMA_UNMAP, struct.pack("=IIQQ", 24, 0, 0x10000, 4096))
        reply = client.call(
            Command.VFIO_USER_DEVICE_GET_INFO, struct.pack("=4I", 16, 0, 0, 0), fds=[r]
        )
        assert reply.header.error == errno.EINVAL  # fds where none belong
        reply = client.set_irqs(TRIGGER_EVENTFD, MSI, 0, 1, fds=[r, w])
        assert reply.header.error == errno.EINVAL  # two eventfds for one vector
        assert open_fds() == before  # the server closed every copy it got
        assert not client.dma_map(0x10000, 4096, fd=memfd).header.is_error
        assert open_fds() == before  # mapped: the server keeps no fd for its mapping
        client.ok(Command.VFIO_USER_DMA_UNMAP, struct.pack("=IIQQ", 24, 0, 0x10000, 4096))
        assert open_fds() == before
    finally:
        os.close(r)
        os.close(w)
        os.close(memfd)


# ---- reset and disconnection ----------------------------------------------------------


def test_reset(edu: tuple[RawClient, EduDevice]) -> None:
    client, _ = edu
    client.write32(edu_driver.REG_LIVENESS, 0)
    client.write32(edu_driver.REG_IRQ_RAISE, 0x8)
    client.write(CONFIG, 4, b"\x06\x00")
    client.ok(Command.VFIO_USER_DEVICE_RESET)
    assert client.read32(edu_driver.REG_LIVENESS) == 0
    assert client.read32(edu_driver.REG_IRQ_STATUS) == 0
    assert client.read(CONFIG, 4, 2) == b"\x00\x00"
    assert client.read32(edu_driver.REG_ID) == 0x010000ED


def test_disconnect_releases_the_clients_resources_and_keeps_device_state() -> None:
    device = EduDevice()
    memfd = guest_ram(4096)
    irq = eventfd()
    try:
        before = open_fds()
        with served(device) as s:
            s.client.negotiate()
            s.client.dma_map(0x10000, 4096, fd=memfd)
            s.client.set_irqs(TRIGGER_EVENTFD, MSI, 0, 1, fds=[irq])
            s.client.write32(edu_driver.REG_LIVENESS, 0x0000FFFF)
            # the socketpair, the wake pipe, the server's eventfd (its mapping keeps none)
            assert open_fds() == before + 5
            s.client.sock.close()
            assert s.finished() and isinstance(s.result[0], int)
        assert open_fds() == before  # DMA unmapped, eventfd closed, sockets closed
        assert device.liveness == 0xFFFF0000  # the device state stays
        assert device.interrupts.mode is None
    finally:
        os.close(memfd)
        os.close(irq)
        device.close()


def test_disconnect_mid_message_is_a_clean_stop() -> None:
    with served(EduDevice()) as s:
        s.client.negotiate()
        s.client.sock.sendall(Header(9, Command.VFIO_USER_REGION_WRITE, 40).pack() + b"\0" * 7)
        s.client.sock.close()
        assert s.finished() and isinstance(s.result[0], int)


def test_truncated_header_is_a_clean_stop() -> None:
    with served(EduDevice()) as s:
        s.client.sock.sendall(b"\x01\x00\x01")
        s.client.sock.close()
        assert s.finished() and isinstance(s.result[0], int)


@pytest.mark.parametrize(("size", "error"), [(8, errno.EINVAL), (1 << 31, errno.E2BIG)])
def test_untrustworthy_size_gets_an_error_then_the_session_ends(size: int, error: int) -> None:
    with served(EduDevice()) as s:
        s.client.negotiate()
        s.client.sock.sendall(Header(77, Command.VFIO_USER_REGION_READ, size).pack())
        reply = s.client.receive()
        assert reply.header.is_reply and reply.header.msg_id == 77
        assert reply.header.error == error
        assert s.client.closed_by_server()
        assert s.finished() and isinstance(s.result[0], int)


def test_stalled_client_is_dropped() -> None:
    with served(EduDevice(), ServerOptions(io_timeout=0.2)) as s:
        s.client.negotiate()
        s.client.sock.sendall(Header(1, Command.VFIO_USER_REGION_READ, 32).pack())
        assert s.client.closed_by_server()  # the rest never came


def test_client_that_stops_reading_is_dropped() -> None:
    with served(EduDevice(), ServerOptions(io_timeout=0.3)) as s:
        s.client.negotiate()
        for _ in range(4):  # 4 MiB of replies nobody reads
            s.client.send(Command.VFIO_USER_REGION_READ, struct.pack("=QII", 0, 0, 1 << 20))
        assert s.finished() and isinstance(s.result[0], int), s.result


def test_no_reply_commands_are_served_in_order(edu: tuple[RawClient, EduDevice]) -> None:
    client, _ = edu
    access = struct.pack("=QII", edu_driver.REG_LIVENESS, 0, 4) + (5).to_bytes(4, "little")
    client.send(Command.VFIO_USER_REGION_WRITE, access, flags=MessageFlag.VFIO_USER_NO_REPLY)
    bad = struct.pack("=QII", 0, 9, 4)
    client.send(Command.VFIO_USER_REGION_READ, bad, flags=MessageFlag.VFIO_USER_NO_REPLY)
    assert client.read32(edu_driver.REG_LIVENESS) == 0xFFFFFFFA  # its reply came first
    assert not pending(client.sock.fileno())


def test_a_reply_from_the_client_to_nothing_is_ignored(edu: tuple[RawClient, EduDevice]) -> None:
    client, _ = edu
    client.send(Command.VFIO_USER_DMA_READ, b"\0" * 16, flags=MessageFlag.VFIO_USER_REPLY)
    assert client.read32(edu_driver.REG_ID) == 0x010000ED


# ---- a device with mmap-able areas and MSI-X ------------------------------------------


class Scratch(PciDevice):
    """A PCIe device with a 16 KiB BAR2 whose last two pages are shared memory."""

    def __init__(self) -> None:
        super().__init__(vendor_id=0x1B36, device_id=0x0005, class_code=0x058000, name="scratch")
        self.writes: list[tuple[int, bytes]] = []
        self.add_bar(0, 4096, read=self.read_bar0, write=self.write_bar0)
        self.add_bar(2, 16384, read=lambda o, n: bytes(n), write=lambda o, d: None,
                     mmap_areas=[MmapArea(8192, 8192)])  # fmt: skip
        self.add_pm()
        self.add_msix(4, table_bar=0, table_offset=0x800)
        self.add_express()

    def read_bar0(self, offset: int, size: int) -> bytes:
        return offset.to_bytes(8, "little")[:size]

    def write_bar0(self, offset: int, data: bytes) -> None:
        self.writes.append((offset, data))
        if offset == 0:
            self.raise_irq(int.from_bytes(data, "little"))


def test_mmap_area_is_passed_as_an_fd_with_a_sparse_capability() -> None:
    device = Scratch()
    with served(device) as s:
        client = s.client
        client.negotiate()
        short, reply = client.region_info(2)  # argsz 32: too small for the capability
        assert short.argsz == 32 + 16 + 16 and short.cap_offset == 0
        assert short.flags & VfioRegionInfoFlag.VFIO_REGION_INFO_FLAG_MMAP
        assert short.flags & VfioRegionInfoFlag.VFIO_REGION_INFO_FLAG_CAPS
        for fd in reply.fds:
            os.close(fd)
        info, reply = client.region_info(2, argsz=short.argsz)
        assert info.cap_offset == 32 and len(reply.fds) == 1
        cap = vfio_region_info_cap_sparse_mmap.from_buffer_copy(reply.payload[32:48])
        assert cap.header.id == VfioRegionInfoCap.VFIO_REGION_INFO_CAP_SPARSE_MMAP
        assert (cap.header.version, cap.nr_areas) == (1, 1)
        area = vfio_region_sparse_mmap_area.from_buffer_copy(reply.payload[48:64])
        assert (area.offset, area.size) == (8192, 8192)
        assert vfio_info_cap_header.from_buffer_copy(reply.payload[32:40]).next == 0
        shared = mmap.mmap(reply.fds[0], 8192, offset=info.offset + area.offset)
        os.close(reply.fds[0])
        shared[100:105] = b"hello"  # the client writes straight into the device's memory
        assert bytes(device.regions[2].memory[8192 + 100 : 8192 + 105]) == b"hello"
        assert client.read(2, 8192 + 100, 5) == b"hello"  # and region reads see it too
        client.write(2, 8192 + 200, b"world")
        assert shared[200:205] == b"world"
        # An access across the border: the callback part reads zeros.
        assert client.read(2, 8192 - 2, 4) == b"\0\0" + bytes(shared[0:2])
        shared.close()
    device.close()


def test_msix_vectors_and_table() -> None:
    device = Scratch()
    with served(device) as s:
        client = s.client
        client.negotiate()
        space = parse_config(client.read(CONFIG, 0, 4096))
        assert not space.problems
        assert space.msix is not None and space.msix.table_size == 4
        assert space.express is not None and space.power_management is not None
        assert client.irq_info(MSIX).count == 4
        fds = [eventfd() for _ in range(4)]
        try:
            assert not client.set_irqs(TRIGGER_EVENTFD, MSIX, 0, 4, fds=fds).header.is_error
            client.write(0, 0, (2).to_bytes(4, "little"))
            assert fired(fds[2]) == 1
            assert not any(pending(fd) for fd in fds)
            # De-assigning vector 2 alone (an EVENTFD set with no fds).
            client.set_irqs(TRIGGER_EVENTFD, MSIX, 2, 1)
            client.write(0, 0, (2).to_bytes(4, "little"))
            assert not pending(fds[2])
            # The MSI-X table is memory, not the device's callback.
            client.write(0, 0x800, b"\x11\x22\x33\x44")
            assert client.read(0, 0x800, 4) == b"\x11\x22\x33\x44"
            assert (0x800, b"\x11\x22\x33\x44") not in device.writes
            assert client.read(0, 0x10, 4) == (0x10).to_bytes(4, "little")  # callback
        finally:
            for fd in fds:
                os.close(fd)
    device.close()


def test_device_callback_failures_become_error_replies() -> None:
    class Faulty(PciDevice):
        def __init__(self) -> None:
            super().__init__(vendor_id=0x1234, device_id=0x0002)
            self.add_bar(0, 4096, read=self.boom, write=self.boom_write)

        def boom(self, offset: int, size: int) -> bytes:
            if offset == 0:
                raise OSError(errno.EIO, "the hardware caught fire")
            if offset == 4:
                return b"short"[: size - 1]
            raise ZeroDivisionError("a device bug")

        def boom_write(self, offset: int, data: bytes) -> None:
            raise ValueError("not that value")

    with served(Faulty()) as s:
        s.client.negotiate()
        assert (
            s.client.error(Command.VFIO_USER_REGION_READ, struct.pack("=QII", 0, 0, 4)) == errno.EIO
        )
        assert (
            s.client.error(Command.VFIO_USER_REGION_READ, struct.pack("=QII", 4, 0, 4)) == errno.EIO
        )
        assert (
            s.client.error(Command.VFIO_USER_REGION_READ, struct.pack("=QII", 8, 0, 4)) == errno.EIO
        )
        write = struct.pack("=QII", 0, 0, 4) + b"\0" * 4
        assert s.client.error(Command.VFIO_USER_REGION_WRITE, write) == errno.EINVAL
        assert device_info(s.client)[2] == 9


# ---- random and mutated messages ------------------------------------------------------

_commands = st.one_of(st.sampled_from([int(c) for c in Command]), st.integers(0, 0xFFFF))
_flags = st.sampled_from([0, 0x10, 0x2, 0xF, 0x20, 0x30])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(command=_commands, payload=st.binary(max_size=200), flags=_flags, n_fds=st.integers(0, 3))
def test_random_well_framed_messages_never_stop_the_server(
    command: int, payload: bytes, flags: int, n_fds: int
) -> None:
    device = EduDevice()
    fds = [os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC) for _ in range(n_fds)]
    before = open_fds()
    try:
        with served(device) as s:
            s.client.negotiate()
            s.client.send(command, payload, flags=flags, fds=fds)
            # Whatever that was, the server still answers, in order.
            info_id = s.client.send(
                Command.VFIO_USER_DEVICE_GET_INFO, struct.pack("=4I", 16, 0, 0, 0)
            )
            while True:
                message = s.client.receive()
                for fd in message.fds:
                    os.close(fd)
                if message.header.is_reply and message.header.msg_id == info_id:
                    assert not message.header.is_error
                    break
                if message.header.is_command:  # a DMA request the fuzz caused
                    s.client.serve_dma(message)
            s.client.sock.close()
            assert s.finished() and isinstance(s.result[0], int), s.result
        device.close()
        assert open_fds() == before  # nothing the message brought was kept
    finally:
        for fd in fds:
            os.close(fd)
        device.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=300), negotiate=st.booleans())
def test_random_bytes_get_replies_or_a_clean_close(data: bytes, negotiate: bool) -> None:
    device = EduDevice()
    with served(device) as s:
        if negotiate:
            s.client.negotiate()
        s.client.sock.sendall(data)
        s.client.sock.shutdown(socket.SHUT_WR)
        # Everything the server sends back is a well-formed reply, then it closes.
        while True:
            try:
                message = receive_message(s.client.sock, 1 << 24)
            except ConnectionError:
                break
            for fd in message.fds:
                os.close(fd)
            assert message.header.is_reply or message.header.is_command
        assert s.finished() and isinstance(s.result[0], int), s.result
    device.close()


def _valid_messages() -> list[tuple[int, bytes]]:
    return [
        (Command.VFIO_USER_DEVICE_GET_INFO, struct.pack("=4I", 16, 0, 0, 0)),
        (Command.VFIO_USER_DEVICE_GET_REGION_INFO, struct.pack("=4IQQ", 32, 0, 0, 0, 0, 0)),
        (Command.VFIO_USER_DEVICE_GET_IRQ_INFO, struct.pack("=4I", 16, 0, 1, 0)),
        (Command.VFIO_USER_REGION_READ, struct.pack("=QII", 0x20, 0, 4)),
        (Command.VFIO_USER_REGION_WRITE, struct.pack("=QII", 0x04, 0, 4) + b"\x01\x02\x03\x04"),
        (Command.VFIO_USER_REGION_WRITE, struct.pack("=QII", 0x98, 0, 4) + b"\x05\0\0\0"),
        (Command.VFIO_USER_REGION_READ, struct.pack("=QII", 0, CONFIG, 64)),
        (Command.VFIO_USER_REGION_WRITE, struct.pack("=QII", 4, CONFIG, 2) + b"\x06\x00"),
        (Command.VFIO_USER_DEVICE_SET_IRQS, struct.pack("=5I", 20, 0x21, 1, 0, 1)),
        (Command.VFIO_USER_DEVICE_SET_IRQS, struct.pack("=5I", 21, 0x22, 0, 0, 1) + b"\x01"),
        (Command.VFIO_USER_DMA_MAP, struct.pack("=IIQQQ", 32, 3, 0, 0x10000, 0x1000)),
        (Command.VFIO_USER_DMA_UNMAP, struct.pack("=IIQQ", 24, 0, 0x10000, 0x1000)),
        (Command.VFIO_USER_REGION_WRITE_MULTI, struct.pack("=QQII8s", 1, 4, 0, 4, b"\x07" * 8)),
        (Command.VFIO_USER_DEVICE_RESET, b""),
    ]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_valid_messages_never_stop_the_server(data: st.DataObject) -> None:
    messages = _valid_messages()
    device = EduDevice()
    with served(device) as s:
        s.client.negotiate({"write_multiple": True})
        s.client.memory[0x10000] = bytearray(0x1000)
        for _ in range(data.draw(st.integers(1, 4))):
            command, payload = data.draw(st.sampled_from(messages))
            mutated = bytearray(payload)
            for _ in range(data.draw(st.integers(0, 4))):
                if mutated:
                    at = data.draw(st.integers(0, len(mutated) - 1))
                    mutated[at] = data.draw(st.integers(0, 255))
            cut = data.draw(st.integers(0, len(mutated)))
            if data.draw(st.booleans()):
                mutated = mutated[:cut]  # a short payload
            s.client.send(command, bytes(mutated), flags=data.draw(st.sampled_from([0, 0x10])))
        probe = s.client.send(Command.VFIO_USER_DEVICE_GET_INFO, struct.pack("=4I", 16, 0, 0, 0))
        while True:
            message = s.client.receive()
            for fd in message.fds:
                os.close(fd)
            if message.header.is_command:
                s.client.serve_dma(message)
            elif message.header.msg_id == probe:
                assert not message.header.is_error
                break
        s.client.sock.close()
        assert s.finished() and isinstance(s.result[0], int), s.result
    device.close()


# ---- the listening server -------------------------------------------------------------


def connect(path: Path) -> RawClient:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(path))
    return RawClient(sock)


def test_server_on_a_path_serves_clients_one_after_another(tmp_path: Path) -> None:
    path = tmp_path / "edu.sock"
    device = EduDevice()
    with running(device, path) as server:
        first = connect(path)
        first.negotiate()
        first.write32(edu_driver.REG_LIVENESS, 0x1234)
        second = connect(path)  # one client at a time: the second is closed at once
        assert second.closed_by_server()
        second.sock.close()
        assert first.read32(edu_driver.REG_LIVENESS) == 0x1234 ^ 0xFFFFFFFF
        first.sock.close()
        assert server.wait_idle(30)  # the server saw the first client go
        third = connect(path)  # after the first left, the next is served
        third.negotiate()
        assert third.read32(edu_driver.REG_LIVENESS) == 0x1234 ^ 0xFFFFFFFF  # state kept
        assert server.sessions >= 2
        third.sock.close()
    assert not path.exists()  # close() removed the socket
    device.close()


def test_stop_disconnects_the_current_client(tmp_path: Path) -> None:
    path = tmp_path / "edu.sock"
    server = Server(EduDevice(), path)
    server.start()
    client = connect(path)
    client.negotiate()
    server.close()
    assert client.closed_by_server()
    client.sock.close()
    assert not path.exists()
    server.close()  # twice is fine


def test_serve_forever_once(tmp_path: Path) -> None:
    path = tmp_path / "edu.sock"
    with Server(EduDevice(), path) as server:
        thread = threading.Thread(target=server.serve_forever, kwargs={"once": True})
        thread.start()
        client = connect(path)
        client.negotiate()
        client.sock.close()
        thread.join(30)
        assert not thread.is_alive()


def test_listen_errors_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(VfioUserError, match=r"directory .* does not exist"):
        Server(EduDevice(), tmp_path / "missing" / "edu.sock").listen()
    plain = tmp_path / "plain"
    plain.write_text("not a socket")
    with pytest.raises(VfioUserError, match="not a socket"):
        Server(EduDevice(), plain).listen()
    live = tmp_path / "live.sock"
    with Server(EduDevice(), live), pytest.raises(VfioUserError, match="already listening"):
        Server(EduDevice(), live).listen()
    stale = tmp_path / "stale.sock"
    leftover = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    leftover.bind(str(stale))
    leftover.close()  # a socket file nobody listens on: reused
    with Server(EduDevice(), stale) as server:
        assert server.fileno() >= 0


@pytest.mark.parametrize("mode", [0o600, 0o660, 0o640])
@pytest.mark.parametrize("umask", [0o002, 0o000, 0o077])
def test_the_socket_has_its_mode_whatever_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    path = tmp_path / "edu.sock"
    old = os.umask(umask)
    try:
        with Server(EduDevice(), path, mode=mode):
            assert stat.S_IMODE(path.lstat().st_mode) == mode
        assert os.umask(umask) == umask  # the server put the umask back
    finally:
        os.umask(old)
    assert Server(EduDevice(), tmp_path / "default.sock").mode == 0o600


def test_bad_mode_or_group_is_refused_before_anything_is_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "edu.sock"
    before = open_fds()
    for mode in (0o1777, -1, 0o7777, True, "600"):
        with pytest.raises(ValueError, match="is not permission bits"):
            Server(EduDevice(), path, mode=mode)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no group 'no-such-group-here' on this host"):
        Server(EduDevice(), path, group="no-such-group-here")
    other = next(g for g in grp.getgrall() if g.gr_gid not in (os.getegid(), *os.getgroups()))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)  # as a user outside that group
    with pytest.raises(ValueError, match="this user is not in it"):
        Server(EduDevice(), path, group=other.gr_name)
    assert not path.exists() and open_fds() == before


def test_stop_on_signals_ends_a_session_held_mid_message(tmp_path: Path) -> None:
    path = tmp_path / "edu.sock"
    previous = signal.getsignal(signal.SIGTERM)
    with Server(EduDevice(), path) as server:
        thread = server.start()
        client = connect(path)
        client.negotiate()
        client.sock.sendall(Header(9, Command.VFIO_USER_REGION_WRITE, 4096).pack() + b"\0" * 7)
        with server.stop_on_signals():
            os.kill(os.getpid(), signal.SIGTERM)  # the handler stops (and joins) the server
            assert server.stopping and not thread.is_alive()
        assert signal.getsignal(signal.SIGTERM) is previous
        assert client.closed_by_server()
        client.sock.close()


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="max_msg_fds"):
        ServerOptions(max_msg_fds=0)
    with pytest.raises(ValueError, match="64 MiB"):
        ServerOptions(max_data_xfer_size=1 << 30)


def test_declarations_close_once_served() -> None:
    device = EduDevice()
    device.config  # noqa: B018 - builds the config space
    with pytest.raises(RuntimeError, match="declarations come before"):
        device.add_bar(2, 4096)
