"""A bare vfio-user client for the server tests: raw messages, nothing hidden.

`RawClient` sends what it is told (any header, any payload, any fds) and reads whole
messages back; `call` waits for the reply to one command and, meanwhile, answers the
server's DMA_READ/DMA_WRITE from ``memory`` (a dict of client "guest" buffers keyed by
DMA address) as a VMM would.  `served` runs a server thread on one end of a
socketpair.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import select
import socket
import struct
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from pyvfio._uapi.vfio import vfio_irq_info, vfio_irq_set, vfio_region_info
from pyvfio.server import PciDevice, ServerOptions, serve_connection
from pyvfio.vfio_user.protocol import (
    HEADER_SIZE,
    Command,
    Header,
    Message,
    MessageFlag,
    close_fds,
    decode_capabilities,
    encode_capabilities,
    receive_message,
    send_error,
    send_message,
    send_reply,
    vfio_user_dma_map,
    vfio_user_dma_region_access,
    vfio_user_region_access,
    vfio_user_version,
)

REPLY_TIMEOUT = 30.0  # a generous bound so a broken server fails the test, not hangs it


@dataclass
class RawClient:
    sock: socket.socket
    memory: dict[int, bytearray] = field(default_factory=dict)
    dma_requests: list[Header] = field(default_factory=list)
    next_id: int = 0

    def send(
        self,
        command: int,
        payload: bytes = b"",
        *,
        fds: Sequence[int] = (),
        flags: int = 0,
        msg_id: int | None = None,
    ) -> int:
        if msg_id is None:
            self.next_id = (self.next_id + 1) & 0xFFFF
            msg_id = self.next_id
        send_message(self.sock, msg_id, command, payload, flags=flags, fds=fds)
        return msg_id

    def receive(self, timeout: float = REPLY_TIMEOUT) -> Message:
        ready, _, _ = select.select([self.sock], [], [], timeout)
        assert ready, f"no message from the server within {timeout} s"
        return receive_message(self.sock, 1 << 24)

    def closed_by_server(self, timeout: float = REPLY_TIMEOUT) -> bool:
        """True when the server closed its end (EOF), after draining what it sent."""
        while True:
            ready, _, _ = select.select([self.sock], [], [], timeout)
            assert ready, f"the server neither answered nor closed within {timeout} s"
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:  # closed with our bytes unread
                return True
            if not data:
                return True

    def wait_reply(self, msg_id: int, command: int) -> Message:
        while True:
            message = self.receive()
            header = message.header
            if header.is_reply:
                assert (header.msg_id, header.command) == (msg_id, command), header
                return message
            self.serve_dma(message)

    def call(
        self, command: int, payload: bytes = b"", *, fds: Sequence[int] = (), flags: int = 0
    ) -> Message:
        msg_id = self.send(command, payload, fds=fds, flags=flags)
        return self.wait_reply(msg_id, command)

    def ok(self, command: int, payload: bytes = b"", *, fds: Sequence[int] = ()) -> Message:
        reply = self.call(command, payload, fds=fds)
        assert not reply.header.is_error, f"{reply.header}: {os.strerror(reply.header.error)}"
        return reply

    def error(self, command: int, payload: bytes = b"", *, fds: Sequence[int] = ()) -> int:
        reply = self.call(command, payload, fds=fds)
        assert reply.header.is_error, f"{reply.header} succeeded"
        assert reply.header.size == HEADER_SIZE and not reply.payload
        return reply.header.error

    # -- the server's DMA requests --------------------------------------------------------

    def _locate(self, addr: int, count: int) -> tuple[bytearray, int] | None:
        for base, buf in self.memory.items():
            if base <= addr and addr + count <= base + len(buf):
                return buf, addr - base
        return None

    def serve_dma(self, message: Message) -> None:
        header = message.header
        self.dma_requests.append(header)
        close_fds(message.fds)
        access = vfio_user_dma_region_access.parse(message.payload)
        where = self._locate(access.addr, access.count)
        if where is None:
            send_error(self.sock, header, 14)  # EFAULT
            return
        buf, offset = where
        if header.command == Command.VFIO_USER_DMA_READ:
            data = bytes(buf[offset : offset + access.count])
            send_reply(self.sock, header, access.pack() + data)
        elif header.command == Command.VFIO_USER_DMA_WRITE:
            data = message.payload[16:]
            buf[offset : offset + len(data)] = data
            send_reply(self.sock, header, access.pack())
        else:
            raise AssertionError(f"unexpected command from the server: {header}")

    # -- conveniences -------------------------------------------------------------------

    def negotiate(self, caps: dict[str, object] | None = None) -> dict[str, object]:
        payload = vfio_user_version(major=0, minor=0).pack()
        payload += encode_capabilities(caps or {"max_msg_fds": 8, "max_data_xfer_size": 1 << 20})
        reply = self.ok(Command.VFIO_USER_VERSION, payload)
        version = vfio_user_version.parse(reply.payload)
        assert (version.major, version.minor) == (0, 0)
        return decode_capabilities(reply.payload[4:])

    def enable_bus_master(self) -> None:
        """Set Memory Space and Bus Master Enable, as a driver does before DMA."""
        self.write(7, 4, (0x0006).to_bytes(2, "little"))

    def region_info(self, index: int, argsz: int = 32) -> tuple[vfio_region_info, Message]:
        request = vfio_region_info(argsz=argsz, index=index)
        reply = self.ok(Command.VFIO_USER_DEVICE_GET_REGION_INFO, bytes(request))
        return vfio_region_info.from_buffer_copy(reply.payload[:32]), reply

    def irq_info(self, index: int) -> vfio_irq_info:
        reply = self.ok(
            Command.VFIO_USER_DEVICE_GET_IRQ_INFO, bytes(vfio_irq_info(argsz=16, index=index))
        )
        return vfio_irq_info.from_buffer_copy(reply.payload)

    def read(self, region: int, offset: int, count: int) -> bytes:
        access = vfio_user_region_access(offset=offset, region=region, count=count)
        reply = self.ok(Command.VFIO_USER_REGION_READ, access.pack())
        echoed = vfio_user_region_access.parse(reply.payload)
        assert (echoed.offset, echoed.region, echoed.count) == (offset, region, count)
        return reply.payload[16:]

    def write(self, region: int, offset: int, data: bytes) -> None:
        access = vfio_user_region_access(offset=offset, region=region, count=len(data))
        reply = self.ok(Command.VFIO_USER_REGION_WRITE, access.pack() + data)
        assert vfio_user_region_access.parse(reply.payload).count == len(data)

    def read32(self, offset: int, region: int = 0) -> int:
        return int.from_bytes(self.read(region, offset, 4), "little")

    def write32(self, offset: int, value: int, region: int = 0) -> None:
        self.write(region, offset, value.to_bytes(4, "little"))

    def write64(self, offset: int, value: int, region: int = 0) -> None:
        self.write(region, offset, value.to_bytes(8, "little"))

    def set_irqs(
        self,
        flags: int,
        index: int,
        start: int,
        count: int,
        *,
        data: bytes = b"",
        fds: Sequence[int] = (),
    ) -> Message:
        request = vfio_irq_set(
            argsz=ctypes.sizeof(vfio_irq_set) + len(data),
            flags=flags,
            index=index,
            start=start,
            count=count,
        )
        return self.call(Command.VFIO_USER_DEVICE_SET_IRQS, bytes(request) + data, fds=fds)

    def dma_map(
        self, addr: int, size: int, *, fd: int = -1, offset: int = 0, flags: int = 3
    ) -> Message:
        request = vfio_user_dma_map(argsz=32, flags=flags, offset=offset, addr=addr, size=size)
        return self.call(Command.VFIO_USER_DMA_MAP, request.pack(), fds=(fd,) if fd >= 0 else ())


@dataclass
class Served:
    client: RawClient
    thread: threading.Thread
    result: list[object]
    server_sock: socket.socket

    def finished(self, timeout: float = REPLY_TIMEOUT) -> bool:
        self.thread.join(timeout)
        return not self.thread.is_alive()


@contextmanager
def served(device: PciDevice, options: ServerOptions | None = None) -> Iterator[Served]:
    """``device`` served on one end of a socketpair, a RawClient on the other."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    result: list[object] = []

    def run() -> None:
        try:
            result.append(serve_connection(device, theirs, options))
        except BaseException as err:  # the test asserts the server never raises
            result.append(err)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield Served(RawClient(ours), thread, result, theirs)
    finally:
        ours.close()
        thread.join(REPLY_TIMEOUT)
        theirs.close()


def eventfd() -> int:
    return os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)


def guest_ram(size: int, *, seals: int = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW) -> int:
    """A memfd of ``size`` bytes as a VMM's guest RAM: sealed against shrinking (what a
    server needs before it maps it; QEMU's memory-backend-memfd seals so by default)."""
    fd = os.memfd_create("guest-ram", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    os.ftruncate(fd, size)
    if seals:
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
    return fd


def fired(fd: int, timeout: float = REPLY_TIMEOUT) -> int:
    """Wait for an eventfd and read its count."""
    ready, _, _ = select.select([fd], [], [], timeout)
    assert ready, f"eventfd {fd} was not signalled within {timeout} s"
    (count,) = struct.unpack("=Q", os.read(fd, 8))
    return int(count)


def pending(fd: int) -> bool:
    ready, _, _ = select.select([fd], [], [], 0)
    return bool(ready)


__all__ = [
    "MessageFlag",
    "RawClient",
    "Served",
    "eventfd",
    "fired",
    "guest_ram",
    "pending",
    "served",
]
