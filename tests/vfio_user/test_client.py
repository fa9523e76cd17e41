"""The vfio-user client against scripted peers: what a well-behaved server never does.

The edu tests (test_edu_vfio_user.py) run the client against pyvfio's own server; here
a peer thread follows a script over a real UNIX socket, so that the client meets
error replies, silence, a server that hangs up, requests interleaved with replies,
and versions it cannot speak, on demand.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from rawserver import (
    Peer,
    Script,
    answer_device_info,
    answer_version,
    receive,
    receive_until_closed,
)

import pyvfio
from pyvfio import _mem
from pyvfio._uapi import vfio as v
from pyvfio.errors import (
    ClosedError,
    VfioError,
    VfioUserDisconnectedError,
    VfioUserProtocolError,
    VfioUserRemoteError,
    VfioUserTimeoutError,
)
from pyvfio.info import RegionInfo, SparseArea
from pyvfio.server import MmapArea, PciDevice, running
from pyvfio.vfio_user import protocol as p
from pyvfio.vfio_user.client import VfioUserClient, socket_path
from pyvfio.vfio_user.protocol import Command


@pytest.fixture
def sock_path(tmp_path: Path) -> Path:
    return tmp_path / "dev.sock"


@pytest.fixture
def peers() -> Iterator[list[Peer]]:
    started: list[Peer] = []
    yield started
    for peer in started:
        peer.finish()


def start(peers: list[Peer], path: Path, script: Script) -> Peer:
    peer = Peer(path, script)
    peers.append(peer)
    return peer


def test_no_server_says_how_to_start_one(sock_path: Path) -> None:
    with pytest.raises(VfioUserDisconnectedError, match="pyvfio serve edu --socket") as info:
        pyvfio.open(f"vfio-user:{sock_path}")
    assert info.value.errno == errno.ENOENT


def test_address_names_an_absolute_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert socket_path("vfio-user:dev.sock") == str(tmp_path / "dev.sock")
    with pytest.raises(ValueError, match="names no socket"):
        socket_path("vfio-user:")


def test_version_negotiation_takes_the_servers_limits(sock_path: Path, peers: list[Peer]) -> None:
    caps = {"max_msg_fds": 4, "max_data_xfer_size": 8, "max_dma_maps": 3, "pgsizes": 4096}

    def script(conn: socket.socket) -> None:
        answer_version(conn, caps)
        # A 20-byte read is split at the server's 8-byte limit: 8 + 8 + 4.
        for expect_offset, expect_count in ((0x10, 8), (0x18, 8), (0x20, 4)):
            msg = receive(conn)
            offset, region, count = struct.unpack_from("=QII", msg.payload)
            assert (offset, region, count) == (expect_offset, 2, expect_count)
            data = bytes(range(offset, offset + count))
            p.send_reply(conn, msg.header, msg.payload[:16] + data)

    start(peers, sock_path, script)
    with VfioUserClient(str(sock_path)) as client:
        assert client.server.max_msg_fds == 4
        assert client.server.max_data_xfer_size == 8
        assert client.server.max_dma_maps == 3
        region = RegionInfo(2, v.VfioRegionInfoFlag.VFIO_REGION_INFO_FLAG_READ, 0x100, 0)
        assert client.region_read(region, 0x10, 20) == bytes(range(0x10, 0x24))


def test_a_version_the_client_does_not_speak(sock_path: Path, peers: list[Peer]) -> None:
    def script(conn: socket.socket) -> None:
        msg = receive(conn)
        p.send_reply(conn, msg.header, p.vfio_user_version(major=1, minor=0).pack())

    start(peers, sock_path, script)
    with pytest.raises(VfioUserProtocolError, match="another protocol version"):
        VfioUserClient(str(sock_path))


def test_bad_capabilities_are_refused(sock_path: Path, peers: list[Peer]) -> None:
    start(peers, sock_path, lambda conn: answer_version(conn, {"max_data_xfer_size": "big"}))
    with pytest.raises(VfioUserProtocolError, match="max_data_xfer_size"):
        VfioUserClient(str(sock_path))


def test_error_reply_names_the_command_and_errno(sock_path: Path, peers: list[Peer]) -> None:
    def script(conn: socket.socket) -> None:
        answer_version(conn)
        answer_device_info(conn)
        msg = receive(conn)
        assert msg.command == Command.VFIO_USER_DEVICE_RESET
        p.send_error(conn, msg.header, errno.ENOTTY)
        receive_until_closed(conn)

    start(peers, sock_path, script)
    with pyvfio.open(f"vfio-user:{sock_path}") as dev:
        assert dev.group is None and dev.iommu.backend == "vfio-user"
        with pytest.raises(pyvfio.UnsupportedError, match="no function reset"):
            dev.reset()  # the server did not offer VFIO_DEVICE_FLAGS_RESET
        transport = dev._transport
        with pytest.raises(VfioUserRemoteError, match="VFIO_USER_DEVICE_RESET") as info:
            transport.reset()
        assert info.value.errno == errno.ENOTTY
        assert info.value.ioctl == "VFIO_USER_DEVICE_RESET"
        assert "Inappropriate ioctl" in str(info.value)


def test_silence_times_out_and_the_connection_stays_usable(
    sock_path: Path, peers: list[Peer]
) -> None:
    def script(conn: socket.socket) -> None:
        answer_version(conn)
        silent = receive(conn)  # never answered in time
        time.sleep(0.5)
        p.send_reply(conn, silent.header, b"\0" * 16)  # late: dropped by the client
        answer_device_info(conn, flags=3)
        receive_until_closed(conn)

    start(peers, sock_path, script)
    client = VfioUserClient(str(sock_path), timeout=0.2)
    try:
        with pytest.raises(VfioUserTimeoutError, match=r"did not answer within 0\.2 s") as info:
            client.device_info()
        assert isinstance(info.value, TimeoutError) and info.value.errno == errno.ETIMEDOUT
        client.timeout = 5
        assert client.device_info().reset_works  # the late reply was not taken for this one
    finally:
        client.close()


def test_server_hanging_up_is_a_clear_error_for_every_later_call(
    sock_path: Path, peers: list[Peer]
) -> None:
    def script(conn: socket.socket) -> None:
        answer_version(conn)
        answer_device_info(conn)
        receive(conn)  # the read: hang up instead of answering

    start(peers, sock_path, script)
    dev = pyvfio.open(f"vfio-user:{sock_path}")
    with pytest.raises(VfioUserDisconnectedError, match="closed the connection") as info:
        dev.irq_info("msi")
    assert "VFIO_USER_DEVICE_GET_IRQ_INFO" in str(info.value)
    assert isinstance(info.value, ConnectionError)
    with pytest.raises(VfioUserDisconnectedError, match="device is gone"):
        dev.irq_info("intx")
    dev.close()
    dev.close()
    with pytest.raises(ClosedError, match="closed"):
        dev.irq_info("msi")


def test_server_dma_requests_are_served_between_a_command_and_its_reply(
    sock_path: Path, peers: list[Peer]
) -> None:
    """The server reads and writes our memory (no fd shared) before it answers."""
    seen: dict[str, object] = {}

    def script(conn: socket.socket) -> None:
        answer_version(conn)
        answer_device_info(conn)
        dma_map = receive(conn)
        assert dma_map.command == Command.VFIO_USER_DMA_MAP and not dma_map.fds
        mapping = p.vfio_user_dma_map.parse(dma_map.payload)
        seen["map"] = (mapping.addr, mapping.size, mapping.flags)
        p.send_reply(conn, dma_map.header)
        write = receive(conn)  # a region write that makes the "device" copy memory
        assert write.command == Command.VFIO_USER_REGION_WRITE
        base = mapping.addr
        p.send_message(conn, 7, Command.VFIO_USER_DMA_READ, struct.pack("=QQ", base + 8, 5))
        got = receive(conn)
        assert got.header.is_reply and got.header.msg_id == 7
        seen["read"] = got.payload[16:]
        p.send_message(
            conn, 8, Command.VFIO_USER_DMA_WRITE, struct.pack("=QQ", base + 100, 5) + b"WORLD"
        )
        assert receive(conn).header.is_reply
        # Outside the mapping: the client answers with EFAULT, the Error bit set.
        p.send_message(conn, 9, Command.VFIO_USER_DMA_READ, struct.pack("=QQ", base + 4090, 16))
        bad = receive(conn)
        seen["bad"] = (bad.header.is_error, bad.header.error)
        p.send_reply(conn, write.header, write.payload[:16])
        unmap = receive(conn)
        assert unmap.command == Command.VFIO_USER_DMA_UNMAP
        p.send_reply(conn, unmap.header, unmap.payload)
        receive_until_closed(conn)

    start(peers, sock_path, script)
    with pyvfio.Iommu(backend="vfio-user", share_memory=False) as iommu:
        dev = iommu.open(f"vfio-user:{sock_path}")
        buf = dev.dma_alloc(4096)
        buf.write(b"HELLO", offset=8)
        region = RegionInfo(0, v.VfioRegionInfoFlag.VFIO_REGION_INFO_FLAG_WRITE, 0x1000, 0)
        assert dev._transport.region_write(region, 0x98, b"\1\0\0\0") == 4
        assert buf.read(100, 5) == b"WORLD"
        buf.free()
        dev.close()
    assert seen["map"] == (buf.iova, 4096, 3)
    assert seen["read"] == b"HELLO"
    assert seen["bad"] == (True, errno.EFAULT)


def _memfd(size: int, seals: int) -> int:
    fd = os.memfd_create("test", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    os.ftruncate(fd, size)
    if seals:
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
    return fd


def test_dma_map_passes_a_sealed_memfd(sock_path: Path, peers: list[Peer]) -> None:
    seen: dict[str, bytes] = {}

    def script(conn: socket.socket) -> None:
        answer_version(conn)
        answer_device_info(conn)
        msg = receive(conn)
        assert len(msg.fds) == 1
        mapping = p.vfio_user_dma_map.parse(msg.payload)
        seen["bytes"] = os.pread(msg.fds[0], 4, mapping.offset + 16)
        os.close(msg.fds[0])
        p.send_reply(conn, msg.header)
        msg = receive(conn)
        assert msg.command == Command.VFIO_USER_DMA_UNMAP
        p.send_reply(conn, msg.header, msg.payload)
        receive_until_closed(conn)

    start(peers, sock_path, script)
    with pyvfio.Iommu(backend="vfio-user") as iommu:
        dev = iommu.open(f"vfio-user:{sock_path}")
        # Caller memory that is a sealed memfd's: Iommu.map(..., fd=) passes the fd along.
        fd = _memfd(4096, fcntl.F_SEAL_SHRINK)
        os.pwrite(fd, b"PING", 16)
        memory = mmap.mmap(fd, 4096)
        mapping = iommu.map(memory, fd=fd)
        iommu.unmap(mapping)
        memory.close()
        os.close(fd)
        dev.close()
    assert seen["bytes"] == b"PING"


def _unsealed() -> tuple[int, int]:
    return _memfd(8192, 0), 0


def _too_small() -> tuple[int, int]:  # sealed, but the map runs past its end
    return _memfd(4096, fcntl.F_SEAL_SHRINK), 4096


def _a_regular_file() -> tuple[int, int]:
    fd = os.open("/tmp", os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC)
    os.ftruncate(fd, 8192)
    return fd, 0


@pytest.mark.parametrize("make", [_unsealed, _too_small, _a_regular_file])
def test_an_fd_the_server_could_not_map_safely_is_not_sent(
    sock_path: Path, peers: list[Peer], make: Callable[[], tuple[int, int]]
) -> None:
    """Memory whose fd the owner could truncate (or that is smaller than the map) goes
    by DMA_READ/WRITE: the server would refuse to map it, by the same rule."""
    seen: dict[str, object] = {}
    served = threading.Event()

    def script(conn: socket.socket) -> None:
        answer_version(conn)
        answer_device_info(conn)
        msg = receive(conn)
        seen["fds"] = len(msg.fds)
        p.close_fds(msg.fds)
        base = p.vfio_user_dma_map.parse(msg.payload).addr
        p.send_reply(conn, msg.header)
        p.send_message(conn, 5, Command.VFIO_USER_DMA_READ, struct.pack("=QQ", base + 16, 4))
        seen["read"] = receive(conn).payload[16:]
        served.set()
        msg = receive(conn)
        assert msg.command == Command.VFIO_USER_DMA_UNMAP
        p.send_reply(conn, msg.header, msg.payload)
        receive_until_closed(conn)

    start(peers, sock_path, script)
    fd, offset = make()
    with pyvfio.Iommu(backend="vfio-user") as iommu:
        dev = iommu.open(f"vfio-user:{sock_path}")
        memory = mmap.mmap(-1, 8192)
        memory[16:20] = b"PONG"
        mapping = iommu.map(memory, fd=fd, fd_offset=offset)
        assert served.wait(10)
        iommu.unmap(mapping)
        memory.close()
        os.close(fd)
        dev.close()
    assert seen == {"fds": 0, "read": b"PONG"}


def test_use_after_close(sock_path: Path, peers: list[Peer]) -> None:
    def script(conn: socket.socket) -> None:
        answer_version(conn)
        receive_until_closed(conn)

    start(peers, sock_path, script)
    client = VfioUserClient(str(sock_path))
    assert client.fileno() >= 0
    client.close()
    client.close()
    assert client.closed and client.fileno() == -1
    with pytest.raises(ClosedError, match="is closed"):
        client.device_info()


class Scratch(PciDevice):
    """BAR0: a register page served by messages, then three pages the client maps;
    BAR2: 8 KiB mapped whole."""

    def __init__(self) -> None:
        super().__init__(vendor_id=0x1234, device_id=0x0001, name="scratch")
        self.register = 0
        self.register_accesses = 0
        self.bar0 = self.add_bar(
            0,
            0x4000,
            read=self._read,
            write=self._write,
            mmap_areas=[MmapArea(0x1000, 0x3000)],
        )
        self.bar2 = self.add_bar(2, 0x2000, mmap_areas=[MmapArea(0, 0x2000)])

    def _read(self, offset: int, size: int) -> bytes:
        self.register_accesses += 1
        return self.register.to_bytes(8, "little")[:size]

    def _write(self, offset: int, data: bytes) -> None:
        self.register_accesses += 1
        self.register = int.from_bytes(data, "little")


def test_mmap_areas_the_server_shares_are_the_fast_path(tmp_path: Path) -> None:
    device = Scratch()
    with (
        running(device, tmp_path / "scratch.sock") as server,
        pyvfio.open(f"vfio-user:{server.path}") as dev,
    ):
        bar0 = dev.bar(0)
        assert bar0.info.sparse_areas == (SparseArea(0x1000, 0x3000),)
        view = bar0.map()
        assert bar0.mapped and len(view) == 0x4000
        # The mapped pages are the server's memory: no message goes.
        bar0.write32(0x1008, 0xCAFEF00D)
        assert device.bar0.memory[0x1008:0x100C] == (0xCAFEF00D).to_bytes(4, "little")
        device.bar0.memory[0x2000:0x2008] = (0x1122334455667788).to_bytes(8, "little")
        assert bar0.read64(0x2000) == 0x1122334455667788
        assert device.register_accesses == 0
        # The register page is not mapped: its accesses are messages to the callbacks.
        bar0.write32(0x0, 0x5A5A)
        assert bar0.read32(0x0) == 0x5A5A and device.register == 0x5A5A
        assert device.register_accesses == 2
        # A BAR mapped whole takes the single-load path of Region.read32.
        bar2 = dev.bar(2)
        bar2.write32(0x1FFC, 7)
        assert bar2._whole and bar2.read32(0x1FFC) == 7
        assert device.bar2.memory[0x1FFC] == 7


class TwoAreas(PciDevice):
    """BAR0: four pages, of which the client may map the first and the third."""

    def __init__(self) -> None:
        super().__init__(vendor_id=0x1234, device_id=0x0002, name="two-areas")
        self.bar0 = self.add_bar(
            0, 0x4000, mmap_areas=[MmapArea(0x0, 0x1000), MmapArea(0x2000, 0x1000)]
        )


def _mapped_over(start: int, size: int) -> list[str]:
    """The lines of /proc/self/maps that overlap ``size`` bytes at ``start``."""
    lines = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            low, high = (int(x, 16) for x in line.split()[0].split("-"))
            if low < start + size and start < high:
                lines.append(line.strip())
    return lines


def test_a_sparse_map_that_fails_part_way_gives_back_all_it_mapped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Region.map reserves the region, then lays each area into it: when the second
    area's mmap fails, the reservation and the first area are unmapped again."""
    device = TwoAreas()
    device.bar0.memory[0x2000:0x2004] = (0xA5A5A5A5).to_bytes(4, "little")
    made: list[tuple[int, int, int]] = []  # (address, length, flags) of each mmap
    real_map = _mem.map_memory

    def second_area_fails(
        length: int,
        prot: int,
        flags: int,
        fd: int = -1,
        offset: int = 0,
        address: int | None = None,
    ) -> int:
        if flags & _mem.MAP_FIXED and sum(f & _mem.MAP_FIXED for _, _, f in made):
            raise OSError(errno.ENOMEM, os.strerror(errno.ENOMEM))
        got = real_map(length, prot, flags, fd, offset, address)
        made.append((got, length, flags))
        return got

    with (
        running(device, tmp_path / "two.sock") as server,
        pyvfio.open(f"vfio-user:{server.path}") as dev,
    ):
        bar0 = dev.bar(0)
        assert bar0.info.sparse_areas == (SparseArea(0x0, 0x1000), SparseArea(0x2000, 0x1000))
        monkeypatch.setattr(_mem, "map_memory", second_area_fails)
        with pytest.raises(VfioError, match=r"mmap of BAR0 of .* failed") as info:
            bar0.map()
        monkeypatch.undo()
        assert info.value.errno == errno.ENOMEM and not bar0.mapped
        (reserved, size, _), (first, _, _) = made  # the reservation, then the first area
        assert size == 0x4000 and first == reserved
        assert _mapped_over(reserved, size) == []  # nothing left behind
        # The next access maps it for good and reads the server's memory.
        assert bar0.read32(0x2000) == 0xA5A5A5A5 and bar0.mapped


def test_a_refused_unmap_still_fences_the_memory(sock_path: Path, peers: list[Peer]) -> None:
    """The server refuses DMA_UNMAP, then asks for the bytes: the client, whose
    buffer is freed by then, answers EFAULT rather than read freed memory."""
    seen: dict[str, object] = {}

    def script(conn: socket.socket) -> None:
        answer_version(conn)
        answer_device_info(conn)
        dma_map = receive(conn)
        base = p.vfio_user_dma_map.parse(dma_map.payload).addr
        p.send_reply(conn, dma_map.header)
        unmap = receive(conn)
        p.send_error(conn, unmap.header, errno.EBUSY)
        reset = receive(conn)  # the next command: ask for the unmapped bytes first
        p.send_message(conn, 3, Command.VFIO_USER_DMA_READ, struct.pack("=QQ", base, 8))
        late = receive(conn)
        seen["late"] = (late.header.is_error, late.header.error)
        p.send_reply(conn, reset.header)
        receive_until_closed(conn)

    start(peers, sock_path, script)
    with pyvfio.Iommu(backend="vfio-user", share_memory=False) as iommu:
        dev = iommu.open(f"vfio-user:{sock_path}")
        buf = dev.dma_alloc(4096)
        with pytest.raises(VfioUserRemoteError, match="VFIO_USER_DMA_UNMAP") as info:
            buf.free()
        assert info.value.errno == errno.EBUSY and buf.freed and not iommu.mappings
        dev._transport.reset()
        dev.close()
    assert seen["late"] == (True, errno.EFAULT)


def test_a_server_that_stops_reading_times_the_send_out(sock_path: Path, peers: list[Peer]) -> None:
    done = threading.Event()

    def script(conn: socket.socket) -> None:
        answer_version(conn)
        done.wait(10)  # read nothing more while the client writes

    start(peers, sock_path, script)
    client = VfioUserClient(str(sock_path), timeout=0.3)
    try:
        region = RegionInfo(0, v.VfioRegionInfoFlag.VFIO_REGION_INFO_FLAG_WRITE, 1 << 20, 0)
        with pytest.raises(VfioUserTimeoutError, match="VFIO_USER_REGION_WRITE"):
            client.region_write(region, 0, bytes(1 << 20))  # more than the socket buffers
        with pytest.raises(VfioUserDisconnectedError, match="stopped reading"):
            client.device_info()
    finally:
        done.set()
        client.close()
