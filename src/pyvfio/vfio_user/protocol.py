"""The vfio-user wire format (QEMU docs/interop/vfio-user.rst), shared by server and client.

Every message is a 16-byte `Header` followed by a command-specific payload; file
descriptors ride along as ``SCM_RIGHTS`` ancillary data of the message's first byte.
All integers are in host byte order (the spec's rule; pyvfio targets x86_64, so
little-endian).

Where the spec says a payload *is* the kernel's struct, the kernel mirror from
`pyvfio._uapi.vfio` is reused (``vfio_region_info`` and its sparse mmap capability,
``vfio_irq_info``, ``vfio_irq_set``).  The others are the vfio-user structs below,
named as the spec's C names would be.  Where QEMU's client (hw/vfio-user) and the
spec differ, the comment says which one is followed and why.

`send_message` and `receive_message` move one whole message; they raise
`VfioUserProtocolError` for anything that breaks the format (the receiver replies
with its ``errno``) and `VfioUserDisconnectedError` when the peer is gone.  Given a
`Waiter`, they never block in the socket: each step that would is handed to the
waiter, which may give up (a deadline, a stop request) by raising.
"""

from __future__ import annotations

import array
import contextlib
import ctypes
import errno
import json
import os
import select
import socket
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum, IntFlag
from typing import Any, ClassVar, Final, Self, TypeVar

from pyvfio._uapi.vfio import (
    vfio_info_cap_header,
    vfio_irq_info,
    vfio_irq_set,
    vfio_region_info,
    vfio_region_info_cap_sparse_mmap,
    vfio_region_sparse_mmap_area,
)
from pyvfio.errors import VfioUserDisconnectedError, VfioUserProtocolError

__all__ = [
    "DEFAULT_MAX_DATA_XFER_SIZE",
    "DEFAULT_MAX_MSG_FDS",
    "HEADER_SIZE",
    "VFIO_USER_MAJOR",
    "VFIO_USER_MINOR",
    "Command",
    "DmaMapFlag",
    "Header",
    "Message",
    "MessageFlag",
    "Waiter",
    "WireStruct",
    "close_fds",
    "command_name",
    "decode_capabilities",
    "encode_capabilities",
    "parse_kernel_struct",
    "receive_message",
    "send_error",
    "send_message",
    "send_reply",
    "vfio_info_cap_header",
    "vfio_irq_info",
    "vfio_irq_set",
    "vfio_region_info",
    "vfio_region_info_cap_sparse_mmap",
    "vfio_region_sparse_mmap_area",
    "vfio_user_device_info",
    "vfio_user_dma_map",
    "vfio_user_dma_region_access",
    "vfio_user_dma_unmap",
    "vfio_user_region_access",
    "vfio_user_version",
    "vfio_user_wr_one",
]

# QEMU's client (hw/vfio-user/protocol.h) proposes 0.0 and rejects a reply with a
# higher minor; the spec has no other version yet, so 0.0 is what both sides speak.
VFIO_USER_MAJOR: Final = 0
VFIO_USER_MINOR: Final = 0

HEADER_SIZE: Final = 16
#: The spec's defaults when a peer's capabilities leave them out.
DEFAULT_MAX_MSG_FDS: Final = 1
DEFAULT_MAX_DATA_XFER_SIZE: Final = 1 << 20
DEFAULT_MAX_DMA_MAPS: Final = 65535
DEFAULT_PGSIZES: Final = 4096
#: The most fds one message may carry before ``receive_message`` calls it malformed
#: (QEMU's VFIO_USER_MAX_MAX_FDS).
MAX_MSG_FDS_LIMIT: Final = 16


class Command(IntEnum):
    """The command ids of the spec's table (14 was the withdrawn DIRTY_PAGES)."""

    VFIO_USER_VERSION = 1
    VFIO_USER_DMA_MAP = 2
    VFIO_USER_DMA_UNMAP = 3
    VFIO_USER_DEVICE_GET_INFO = 4
    VFIO_USER_DEVICE_GET_REGION_INFO = 5
    VFIO_USER_DEVICE_GET_REGION_IO_FDS = 6
    VFIO_USER_DEVICE_GET_IRQ_INFO = 7
    VFIO_USER_DEVICE_SET_IRQS = 8
    VFIO_USER_REGION_READ = 9
    VFIO_USER_REGION_WRITE = 10
    VFIO_USER_DMA_READ = 11
    VFIO_USER_DMA_WRITE = 12
    VFIO_USER_DEVICE_RESET = 13
    VFIO_USER_REGION_WRITE_MULTI = 15
    VFIO_USER_DEVICE_FEATURE = 16
    VFIO_USER_MIG_DATA_READ = 17
    VFIO_USER_MIG_DATA_WRITE = 18


class MessageFlag(IntFlag):
    """The header's flags: a 4-bit type (command 0, reply 1), No_reply and Error."""

    VFIO_USER_REQUEST = 0x0
    VFIO_USER_REPLY = 0x1
    VFIO_USER_TYPE = 0xF
    VFIO_USER_NO_REPLY = 0x10
    VFIO_USER_ERROR = 0x20


class DmaMapFlag(IntFlag):
    """``vfio_user_dma_map.flags``: what the server may do to the client's memory."""

    VFIO_USER_F_DMA_REGION_READ = 1 << 0
    VFIO_USER_F_DMA_REGION_WRITE = 1 << 1


def command_name(command: int) -> str:
    """``VFIO_USER_REGION_READ`` for 9, ``command 99`` for an unknown id."""
    try:
        return Command(command).name
    except ValueError:
        return f"command {command}"


_HEADER = struct.Struct("=HHIII")


@dataclass(frozen=True, slots=True)
class Header:
    """The 16 bytes in front of every message.

    ``msg_id`` is the sender's, echoed in the reply; ``size`` counts the header too;
    ``error`` is an errno, meaningful in a reply with ``VFIO_USER_ERROR`` set.
    """

    msg_id: int
    command: int
    size: int
    flags: int = 0
    error: int = 0

    def pack(self) -> bytes:
        return _HEADER.pack(self.msg_id, self.command, self.size, self.flags, self.error)

    @classmethod
    def unpack(cls, data: bytes | bytearray | memoryview) -> Header:
        if len(data) < HEADER_SIZE:
            raise VfioUserProtocolError(
                f"a vfio-user header is {HEADER_SIZE} bytes, got {len(data)}"
            )
        return cls(*_HEADER.unpack_from(data))

    @property
    def is_reply(self) -> bool:
        return self.flags & MessageFlag.VFIO_USER_TYPE == MessageFlag.VFIO_USER_REPLY

    @property
    def is_command(self) -> bool:
        return self.flags & MessageFlag.VFIO_USER_TYPE == MessageFlag.VFIO_USER_REQUEST

    @property
    def no_reply(self) -> bool:
        return bool(self.flags & MessageFlag.VFIO_USER_NO_REPLY)

    @property
    def is_error(self) -> bool:
        return bool(self.flags & MessageFlag.VFIO_USER_ERROR)

    def __str__(self) -> str:
        kind = "reply" if self.is_reply else "command"
        error = f" error {self.error}" if self.is_error else ""
        return f"{command_name(self.command)} {kind} id {self.msg_id} size {self.size}{error}"


@dataclass(frozen=True, slots=True)
class Message:
    """One received message.  The receiver owns ``fds``: close them (`close_fds`) or
    hand them on."""

    header: Header
    payload: bytes
    fds: tuple[int, ...] = field(default=())

    @property
    def command(self) -> int:
        return self.header.command


def close_fds(fds: Iterable[int]) -> None:
    """Close each fd, ignoring the ones already closed."""
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


# ---- payload structs ----------------------------------------------------------------


class WireStruct(ctypes.Structure):
    """Base of the vfio-user payload structs: ``parse`` from a payload, ``bytes()`` out."""

    _c_name_: ClassVar[str]

    @classmethod
    def parse(cls, payload: bytes | bytearray | memoryview, *, command: str = "") -> Self:
        """The struct at the start of ``payload``; VfioUserProtocolError if it is short."""
        size = ctypes.sizeof(cls)
        if len(payload) < size:
            what = f"{command} payload" if command else "payload"
            raise VfioUserProtocolError(
                f"{what} is {len(payload)} bytes, {cls._c_name_} needs {size}",
                errno=errno.EINVAL,
                ioctl=command or None,
            )
        return cls.from_buffer_copy(bytes(payload[:size]))

    def pack(self) -> bytes:
        return bytes(self)

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name, *_ in self._fields_)
        return f"{type(self).__name__}({fields})"


_T = TypeVar("_T", bound=ctypes.Structure)


def parse_kernel_struct(
    cls: type[_T], payload: bytes | bytearray | memoryview, *, command: str = ""
) -> _T:
    """`WireStruct.parse` for the kernel mirrors the spec reuses (vfio_region_info, ...)."""
    size = ctypes.sizeof(cls)
    if len(payload) < size:
        raise VfioUserProtocolError(
            f"{command or 'payload'} is {len(payload)} bytes, {cls.__name__} needs {size}",
            errno=errno.EINVAL,
            ioctl=command or None,
        )
    return cls.from_buffer_copy(bytes(payload[:size]))


class vfio_user_version(WireStruct):
    """``VFIO_USER_VERSION`` request and reply, followed by NUL-terminated JSON
    (``{"capabilities": {...}}``), optional.

    ::

        struct vfio_user_version {
                uint16_t major;
                uint16_t minor;
                char     data[];
        };
    """

    _c_name_ = "struct vfio_user_version"
    _fields_ = (("major", ctypes.c_uint16), ("minor", ctypes.c_uint16))
    major: int
    minor: int


class vfio_user_dma_map(WireStruct):
    """``VFIO_USER_DMA_MAP`` request; one fd with it when the server may mmap the memory.

    ::

        struct vfio_user_dma_map {
                uint32_t argsz;         /* sizeof this struct: there is no reply payload */
                uint32_t flags;         /* DmaMapFlag */
                uint64_t offset;        /* in the fd; 0 without one */
                uint64_t addr;          /* DMA (IOVA) address */
                uint64_t size;
        };
    """

    _c_name_ = "struct vfio_user_dma_map"
    _fields_ = (
        ("argsz", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("offset", ctypes.c_uint64),
        ("addr", ctypes.c_uint64),
        ("size", ctypes.c_uint64),
    )
    argsz: int
    flags: int
    offset: int
    addr: int
    size: int


class vfio_user_dma_unmap(WireStruct):
    """``VFIO_USER_DMA_UNMAP`` request and reply (the reply echoes the request).

    ::

        struct vfio_user_dma_unmap {
                uint32_t argsz;         /* the most reply payload wanted */
                uint32_t flags;         /* unused (0) */
                uint64_t addr;          /* must match a mapping exactly */
                uint64_t size;
        };
    """

    _c_name_ = "struct vfio_user_dma_unmap"
    _fields_ = (
        ("argsz", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("addr", ctypes.c_uint64),
        ("size", ctypes.c_uint64),
    )
    argsz: int
    flags: int
    addr: int
    size: int


class vfio_user_device_info(WireStruct):
    """``VFIO_USER_DEVICE_GET_INFO`` request and reply: the kernel's ``vfio_device_info``
    without ``cap_offset`` and ``pad`` (16 bytes, the spec's and QEMU's layout).

    ::

        struct vfio_user_device_info {
                uint32_t argsz;
                uint32_t flags;         /* VfioDeviceFlag: RESET, PCI */
                uint32_t num_regions;
                uint32_t num_irqs;
        };
    """

    _c_name_ = "struct vfio_user_device_info"
    _fields_ = (
        ("argsz", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("num_regions", ctypes.c_uint32),
        ("num_irqs", ctypes.c_uint32),
    )
    argsz: int
    flags: int
    num_regions: int
    num_irqs: int


class vfio_user_region_access(WireStruct):
    """``VFIO_USER_REGION_READ``/``WRITE`` request and reply; ``data`` follows in a read
    reply and a write request.

    ::

        struct vfio_user_region_access {
                uint64_t offset;
                uint32_t region;
                uint32_t count;
                uint8_t  data[];
        };
    """

    _c_name_ = "struct vfio_user_region_access"
    _fields_ = (
        ("offset", ctypes.c_uint64),
        ("region", ctypes.c_uint32),
        ("count", ctypes.c_uint32),
    )
    offset: int
    region: int
    count: int


class vfio_user_dma_region_access(WireStruct):
    """``VFIO_USER_DMA_READ``/``WRITE`` (server to client); ``data`` follows in a read
    reply and a write request.

    The spec's layout: a 64-bit count, data at offset 16.  (QEMU 10-11's VFIOUserDMARW
    declares a 32-bit count; on little-endian hosts the count reads the same.)

    ::

        struct vfio_user_dma_region_access {
                uint64_t addr;
                uint64_t count;
                uint8_t  data[];
        };
    """

    _c_name_ = "struct vfio_user_dma_region_access"
    _fields_ = (("addr", ctypes.c_uint64), ("count", ctypes.c_uint64))
    addr: int
    count: int


class vfio_user_wr_one(WireStruct):
    """One write of ``VFIO_USER_REGION_WRITE_MULTI`` (after its ``uint64_t wr_cnt``).

    ::

        struct vfio_user_wr_one {
                uint64_t offset;
                uint32_t region;
                uint32_t count;         /* at most 8 */
                uint8_t  data[8];
        };
    """

    _c_name_ = "struct vfio_user_wr_one"
    _fields_ = (
        ("offset", ctypes.c_uint64),
        ("region", ctypes.c_uint32),
        ("count", ctypes.c_uint32),
        ("data", ctypes.c_uint8 * 8),
    )
    offset: int
    region: int
    count: int
    data: ctypes.Array[ctypes.c_uint8]


# ---- version capabilities -------------------------------------------------------------


def encode_capabilities(capabilities: Mapping[str, Any]) -> bytes:
    """The version data: ``{"capabilities": {...}}`` as UTF-8 JSON with its NUL
    (QEMU rejects a reply whose data does not end in NUL)."""
    text = json.dumps({"capabilities": dict(capabilities)}, separators=(",", ":"))
    return text.encode() + b"\0"


def decode_capabilities(data: bytes) -> dict[str, Any]:
    """The ``capabilities`` object of a version message's data ({} when there is none).

    VfioUserProtocolError when the data is not NUL-terminated JSON holding an object.
    """
    if not data:
        return {}
    if not data.endswith(b"\0"):
        raise VfioUserProtocolError("version data is not NUL-terminated", ioctl="VFIO_USER_VERSION")
    try:
        document = json.loads(data[:-1].decode())
    except (UnicodeDecodeError, ValueError) as err:
        raise VfioUserProtocolError(
            f"version data is not JSON: {err}", ioctl="VFIO_USER_VERSION"
        ) from err
    if not isinstance(document, dict):
        raise VfioUserProtocolError("version data is not a JSON object", ioctl="VFIO_USER_VERSION")
    capabilities = document.get("capabilities", {})
    if not isinstance(capabilities, dict):
        raise VfioUserProtocolError(
            '"capabilities" in the version data is not an object', ioctl="VFIO_USER_VERSION"
        )
    return capabilities


# ---- sending and receiving ------------------------------------------------------------

#: ``wait(events)``: return once the socket may be ready for ``events``
#: (``select.POLLIN`` or ``select.POLLOUT``), or raise to give the message up.
Waiter = Callable[[int], None]


def send_message(
    sock: socket.socket,
    msg_id: int,
    command: int,
    payload: bytes | bytearray | memoryview = b"",
    *,
    flags: int = MessageFlag.VFIO_USER_REQUEST,
    error: int = 0,
    fds: Sequence[int] = (),
    wait: Waiter | None = None,
) -> Header:
    """Send one message (header built here) with ``fds`` attached; the header sent.

    VfioUserDisconnectedError when the peer has gone; the fds stay the caller's.
    With ``wait``, a full socket is waited for by ``wait(POLLOUT)`` (what it raises
    comes through; part of the message may have gone), never in ``sendmsg``.
    """
    header = Header(msg_id & 0xFFFF, command, HEADER_SIZE + len(payload), flags, error)
    head = header.pack()
    body = memoryview(payload).cast("B")
    try:
        # Header and payload as two buffers of one sendmsg: no copy of a large payload.
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        if wait is None:
            sent = sock.sendmsg([head, body], ancillary)
            if sent < HEADER_SIZE:
                sock.sendall(head[sent:])
                sock.sendall(body)
            elif sent < HEADER_SIZE + len(body):
                sock.sendall(body[sent - HEADER_SIZE :])
        else:
            _send_waiting(sock, head, body, ancillary, wait)
    except (BrokenPipeError, ConnectionResetError) as err:
        raise VfioUserDisconnectedError(
            f"the vfio-user peer closed the socket while {command_name(command)} was sent",
            errno=err.errno or errno.EPIPE,
            ioctl=command_name(command),
        ) from err
    return header


def _send_waiting(
    sock: socket.socket,
    head: bytes,
    body: memoryview,
    ancillary: list[tuple[int, int, array.array[int]]],
    wait: Waiter,
) -> None:
    pieces = [piece for piece in (memoryview(head), body) if len(piece)]
    while pieces:
        try:
            sent = sock.sendmsg(pieces, ancillary, socket.MSG_DONTWAIT)
        except BlockingIOError:
            wait(select.POLLOUT)
            continue
        ancillary = []  # the fds went with the first byte
        while sent:
            first = pieces[0]
            if sent < len(first):
                pieces[0], sent = first[sent:], 0
            else:
                pieces.pop(0)
                sent -= len(first)


def send_reply(
    sock: socket.socket,
    request: Header,
    payload: bytes | bytearray | memoryview = b"",
    *,
    fds: Sequence[int] = (),
    wait: Waiter | None = None,
) -> Header:
    """The reply to ``request``: same id and command, type reply."""
    return send_message(
        sock, request.msg_id, request.command, payload,
        flags=MessageFlag.VFIO_USER_REPLY, fds=fds, wait=wait,
    )  # fmt: skip


def send_error(
    sock: socket.socket, request: Header, error: int, *, wait: Waiter | None = None
) -> Header:
    """An error reply to ``request``: the header alone, Error set, ``error`` the errno."""
    return send_message(
        sock, request.msg_id, request.command,
        flags=MessageFlag.VFIO_USER_REPLY | MessageFlag.VFIO_USER_ERROR,
        error=error or errno.EINVAL, wait=wait,
    )  # fmt: skip


def _fds_from(ancillary: list[tuple[int, int, bytes]], into: list[int]) -> None:
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds = array.array("i")
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
            into.extend(fds)


def _receive_exactly(
    sock: socket.socket, length: int, fds: list[int], wait: Waiter | None
) -> bytes:
    """``length`` bytes (fewer only when the peer closed), gathering any fds.

    Received into one buffer (``recvmsg_into``): ``recvmsg`` would allocate the whole
    remaining size for every chunk the socket hands over, and a join after.
    """
    buffer = bytearray(length)
    view = memoryview(buffer)
    got = 0
    space = socket.CMSG_SPACE(MAX_MSG_FDS_LIMIT * 4)
    flags = socket.MSG_CMSG_CLOEXEC | (socket.MSG_DONTWAIT if wait is not None else 0)
    while got < length:
        try:
            count, ancillary, msg_flags, _ = sock.recvmsg_into([view[got:]], space, flags)
        except BlockingIOError:
            if wait is None:
                raise
            wait(select.POLLIN)
            continue
        except ConnectionResetError:
            count, ancillary, msg_flags = 0, [], 0
        _fds_from(ancillary, fds)
        if msg_flags & socket.MSG_CTRUNC:
            close_fds(fds)
            fds.clear()
            raise VfioUserProtocolError(
                f"a vfio-user message carried more than {MAX_MSG_FDS_LIMIT} file descriptors",
                errno=errno.EINVAL,
            )
        if not count:
            break
        got += count
    view.release()
    if got < length:
        del buffer[got:]
    return bytes(buffer)


def receive_message(sock: socket.socket, max_size: int, *, wait: Waiter | None = None) -> Message:
    """Read one whole message of at most ``max_size`` bytes (header included).

    VfioUserDisconnectedError when the peer closed the socket, before the message or
    in its middle; VfioUserProtocolError for a size field below 16 or above
    ``max_size`` (``.header`` set, the payload left unread: the stream has lost its
    framing, so the caller should reply with ``.errno`` and close) or for too many fds.
    With ``wait``, an empty socket is waited for by ``wait(POLLIN)`` (what it raises
    comes through), never in ``recvmsg``.  Received fds are closed on every error.
    """
    fds: list[int] = []
    try:
        raw = _receive_exactly(sock, HEADER_SIZE, fds, wait)
        if not raw:
            raise VfioUserDisconnectedError("the vfio-user peer closed the socket")
        if len(raw) < HEADER_SIZE:
            raise VfioUserDisconnectedError(
                f"the vfio-user peer closed the socket after {len(raw)} bytes of a header"
            )
        header = Header.unpack(raw)
        name = command_name(header.command)
        if header.size < HEADER_SIZE:
            raise VfioUserProtocolError(
                f"{name} message size {header.size} is smaller than its {HEADER_SIZE}-byte header",
                header=header,
                errno=errno.EINVAL,
                ioctl=name,
            )
        if header.size > max_size:
            raise VfioUserProtocolError(
                f"{name} message of {header.size} bytes exceeds the {max_size}-byte limit",
                header=header,
                errno=errno.E2BIG,
                ioctl=name,
            )
        payload = _receive_exactly(sock, header.size - HEADER_SIZE, fds, wait)
        if len(payload) < header.size - HEADER_SIZE:
            raise VfioUserDisconnectedError(
                f"the vfio-user peer closed the socket {len(payload)} bytes into the "
                f"{header.size - HEADER_SIZE}-byte payload of {name}",
                ioctl=name,
            )
    except BaseException:
        close_fds(fds)
        raise
    return Message(header, payload, tuple(fds))
