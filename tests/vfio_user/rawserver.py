"""A bare vfio-user server for the client tests: raw messages, nothing hidden.

`Peer` listens on a path and runs a script on the connection it accepts: a thread
that answers exactly what the test says, so the client meets error replies, silence,
hang-ups and lies on demand.  `FakeDevice` is a script that answers the commands a
`Device` sends, with regions described by the test, down to the fd that comes with
a region's info (a hostile server's choice: any fd, any size).
"""

from __future__ import annotations

import ctypes
import socket
import struct
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pyvfio._uapi import vfio as v
from pyvfio.errors import VfioUserDisconnectedError
from pyvfio.vfio_user import protocol as p
from pyvfio.vfio_user.protocol import Command

Script = Callable[[socket.socket], None]


class Peer:
    """A scripted server: listens on ``path``; the script runs on the accepted socket."""

    def __init__(self, path: Path, script: Script) -> None:
        self.path = str(path)
        self.error: BaseException | None = None
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self.path)
        self._listener.listen(1)
        self._thread = threading.Thread(target=self._run, args=(script,), daemon=True)
        self._thread.start()

    def _run(self, script: Script) -> None:
        conn, _ = self._listener.accept()
        with conn:
            try:
                script(conn)
            except BaseException as err:  # reported by finish()
                self.error = err

    def finish(self) -> None:
        self._thread.join(10)
        self._listener.close()
        assert not self._thread.is_alive(), "the scripted peer did not finish"
        if self.error is not None:
            raise self.error


def receive(conn: socket.socket) -> p.Message:
    return p.receive_message(conn, 1 << 21)


def receive_until_closed(conn: socket.socket) -> None:
    while True:
        try:
            receive(conn)
        except VfioUserDisconnectedError:
            return


def answer_version(conn: socket.socket, caps: Mapping[str, object] | None = None) -> None:
    msg = receive(conn)
    assert msg.command == Command.VFIO_USER_VERSION
    ours = p.decode_capabilities(msg.payload[4:])
    assert ours["max_msg_fds"] >= 1 and ours["max_data_xfer_size"] >= 4096
    body = p.vfio_user_version(major=0, minor=0).pack()
    p.send_reply(conn, msg.header, body + p.encode_capabilities(caps or {}))


def answer_device_info(conn: socket.socket, flags: int = 2) -> None:
    msg = receive(conn)
    assert msg.command == Command.VFIO_USER_DEVICE_GET_INFO
    info = p.vfio_user_device_info(argsz=16, flags=flags, num_regions=9, num_irqs=5)
    p.send_reply(conn, msg.header, info.pack())


@dataclass
class FakeRegion:
    """What the server claims about one region, and the fd it hands out with it."""

    size: int
    fd: Callable[[], int] | None = None  # made anew for each GET_REGION_INFO
    offset: int = 0  # vfio_region_info.offset: where the region lies in the fd
    sparse: Sequence[tuple[int, int]] | None = None  # (offset, size) areas
    memory: bytearray = field(default_factory=bytearray)

    def __post_init__(self) -> None:
        if not self.memory:  # the first 64 KiB: a lying size must not cost the test
            self.memory = bytearray(min(self.size, 1 << 16))


_FLAG = v.VfioRegionInfoFlag
RW = _FLAG.VFIO_REGION_INFO_FLAG_READ | _FLAG.VFIO_REGION_INFO_FLAG_WRITE


@dataclass
class FakeDevice:
    """A script answering what a `Device` asks: version, device/region/IRQ info,
    region reads and writes (from ``memory``), reset (``on_reset`` first), DMA maps."""

    regions: dict[int, FakeRegion]
    on_reset: Callable[[], None] | None = None
    seen: list[int] = field(default_factory=list)

    def __call__(self, conn: socket.socket) -> None:
        answer_version(conn)
        while True:
            try:
                msg = receive(conn)
            except VfioUserDisconnectedError:
                return
            self.seen.append(msg.command)
            p.close_fds(msg.fds)
            self._answer(conn, msg)

    def _answer(self, conn: socket.socket, msg: p.Message) -> None:
        command = msg.command
        if command == Command.VFIO_USER_DEVICE_GET_INFO:
            info = p.vfio_user_device_info(argsz=16, flags=3, num_regions=9, num_irqs=5)
            p.send_reply(conn, msg.header, info.pack())
        elif command == Command.VFIO_USER_DEVICE_GET_REGION_INFO:
            self._region_info(conn, msg)
        elif command == Command.VFIO_USER_DEVICE_GET_IRQ_INFO:
            request = v.vfio_irq_info.from_buffer_copy(msg.payload[:16])
            reply = v.vfio_irq_info(argsz=16, flags=1, index=request.index, count=0)
            p.send_reply(conn, msg.header, bytes(reply))
        elif command in (Command.VFIO_USER_REGION_READ, Command.VFIO_USER_REGION_WRITE):
            offset, index, count = struct.unpack_from("=QII", msg.payload)
            memory = self.regions[index].memory
            if command == Command.VFIO_USER_REGION_READ:
                data = bytes(memory[offset : offset + count])
                p.send_reply(conn, msg.header, msg.payload[:16] + data)
            else:
                memory[offset : offset + count] = msg.payload[16 : 16 + count]
                p.send_reply(conn, msg.header, msg.payload[:16])
        elif command == Command.VFIO_USER_DEVICE_RESET:
            if self.on_reset is not None:
                self.on_reset()
            p.send_reply(conn, msg.header)
        elif command in (Command.VFIO_USER_DMA_MAP, Command.VFIO_USER_DMA_UNMAP):
            p.send_reply(conn, msg.header, msg.payload if command == 3 else b"")
        else:
            p.send_error(conn, msg.header, 95)  # EOPNOTSUPP

    def _region_info(self, conn: socket.socket, msg: p.Message) -> None:
        request = v.vfio_region_info.from_buffer_copy(msg.payload[:32])
        region = self.regions.get(request.index)
        reply = v.vfio_region_info(argsz=32, index=request.index)
        if region is None:
            p.send_reply(conn, msg.header, bytes(reply))
            return
        reply.size, reply.offset, reply.flags = region.size, region.offset, RW
        caps = b""
        if region.fd is not None:
            reply.flags |= _FLAG.VFIO_REGION_INFO_FLAG_MMAP
        if region.sparse is not None:
            sparse = v.vfio_region_info_cap_sparse_mmap()
            sparse.header = v.vfio_info_cap_header(
                id=v.VfioRegionInfoCap.VFIO_REGION_INFO_CAP_SPARSE_MMAP, version=1, next=0
            )
            sparse.nr_areas = len(region.sparse)
            caps = bytes(sparse) + b"".join(
                bytes(v.vfio_region_sparse_mmap_area(offset=o, size=s)) for o, s in region.sparse
            )
            reply.flags |= _FLAG.VFIO_REGION_INFO_FLAG_CAPS
            reply.cap_offset = ctypes.sizeof(v.vfio_region_info)
            reply.argsz = ctypes.sizeof(v.vfio_region_info) + len(caps)
        fds = [region.fd()] if region.fd is not None else []
        try:
            p.send_reply(conn, msg.header, bytes(reply) + caps, fds=fds)
        finally:
            p.close_fds(fds)


__all__ = [
    "FakeDevice",
    "FakeRegion",
    "Peer",
    "Script",
    "answer_device_info",
    "answer_version",
    "receive",
    "receive_until_closed",
]
