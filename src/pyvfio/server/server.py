"""The vfio-user server loop: one client at a time on a UNIX socket.

`Server` listens on a socket path, negotiates the version with each client, answers
every command (an error reply carrying an errno for anything malformed, unknown or
refused: the server goes on), lends the device the client's memory for DMA, and
when the client goes away unmaps that memory and closes the client's eventfds, the
device keeping its state (the spec's "Client Disconnection").  A second client that
connects while one is served is closed at once.

A message whose size field cannot be trusted (below the header or above the limit)
gets an error reply and ends the session: the stream has lost its framing.  So does
a client that takes longer than ``io_timeout`` to finish a message it began, or to
take a reply off the socket.

No wait is on the client's terms: the socket is never read or written blocking, and
every wait (for a message, for the rest of one, for room to send, for the reply to
the server's own DMA_READ/WRITE, for the next client) also watches the wake fd, so
`Server.stop` (or a signal, `Server.stop_on_signals`) ends it whatever the client
does.  Interrupt eventfds are written non-blocking; what the client can make the
server hold is bounded (commands queued while it waits for a DMA reply: count and
bytes; memory mapped: `pyvfio.server.dma`).

Run it in a thread (`Server.start`, `Server.stop`: tests) or in the foreground
(`Server.serve_forever`: ``pyvfio serve``).  ``serve_connection`` serves one already
connected socket (a socketpair in tests).
"""

from __future__ import annotations

import collections
import ctypes
import errno
import grp
import logging
import os
import select
import signal
import socket
import stat
import struct
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from pyvfio._uapi.vfio import (
    VfioDeviceFlag,
    VfioDmaUnmapFlag,
    VfioRegionInfoCap,
    VfioRegionInfoFlag,
    vfio_info_cap_header,
    vfio_irq_info,
    vfio_irq_set,
    vfio_region_info,
    vfio_region_info_cap_sparse_mmap,
    vfio_region_sparse_mmap_area,
)
from pyvfio.errors import (
    VfioUserDisconnectedError,
    VfioUserError,
    VfioUserProtocolError,
    VfioUserRemoteError,
)
from pyvfio.server.device import PciDevice, _NoClient
from pyvfio.server.dma import DmaSpace
from pyvfio.vfio_user.protocol import (
    DEFAULT_MAX_DATA_XFER_SIZE,
    DEFAULT_MAX_MSG_FDS,
    HEADER_SIZE,
    MAX_MSG_FDS_LIMIT,
    VFIO_USER_MAJOR,
    VFIO_USER_MINOR,
    Command,
    Header,
    Message,
    Waiter,
    close_fds,
    command_name,
    decode_capabilities,
    encode_capabilities,
    parse_kernel_struct,
    receive_message,
    send_error,
    send_message,
    send_reply,
    vfio_user_device_info,
    vfio_user_dma_map,
    vfio_user_dma_unmap,
    vfio_user_region_access,
    vfio_user_version,
    vfio_user_wr_one,
)

__all__ = ["Server", "ServerOptions", "serve_connection"]

log = logging.getLogger("pyvfio.server")

#: Commands from the client a server waiting for its own DMA reply queues; more (or
#: more bytes than `ServerOptions.max_pending_bytes`) and the client is flooding, and
#: the session ends.
_MAX_PENDING: Final = 1024
#: The floor of the bytes so queued (see `ServerOptions.max_pending_bytes`).
_MAX_PENDING_BYTES: Final = 16 << 20
#: Commands served even while the server waits for its own DMA reply. QEMU's vCPU
#: waits for a region access (and its main loop for DMA map replies) holding the lock
#: its main loop needs to answer the server's DMA_READ/WRITE: queueing them deadlocks
#: until QEMU's x-msg-timeout (5 s) fails the access. The spec forbids stalling
#: command processing on a reply for this reason (docs/vfio-user-qemu.md).
_SERVED_WHILE_WAITING: Final = frozenset(
    {
        Command.VFIO_USER_REGION_READ,
        Command.VFIO_USER_REGION_WRITE,
        Command.VFIO_USER_REGION_WRITE_MULTI,
        Command.VFIO_USER_DMA_MAP,
        Command.VFIO_USER_DMA_UNMAP,
    }
)
#: Room for the version message's JSON on top of the largest data transfer.
_MESSAGE_SLACK: Final = 4096


@dataclass(frozen=True, slots=True)
class ServerOptions:
    """What the server declares in the version reply, and how long it waits.

    ``io_timeout`` bounds the wait for the rest of a message once it has begun, and
    for the client's reply to a DMA_READ/WRITE; an idle client may wait forever.
    """

    max_data_xfer_size: int = DEFAULT_MAX_DATA_XFER_SIZE
    max_msg_fds: int = MAX_MSG_FDS_LIMIT
    max_dma_maps: int = 65535
    pgsizes: int = 4096
    io_timeout: float = 10.0

    def __post_init__(self) -> None:
        if not 1 <= self.max_msg_fds <= MAX_MSG_FDS_LIMIT:
            raise ValueError(f"max_msg_fds is 1 to {MAX_MSG_FDS_LIMIT}, not {self.max_msg_fds}")
        if not 4096 <= self.max_data_xfer_size <= 64 << 20:
            raise ValueError("max_data_xfer_size is 4 KiB to 64 MiB (QEMU's limit)")
        if not 1 <= self.max_dma_maps <= 65535:
            raise ValueError("max_dma_maps is 1 to 65535 (QEMU refuses more)")

    @property
    def max_message_size(self) -> int:
        return self.max_data_xfer_size + HEADER_SIZE + 16 + _MESSAGE_SLACK

    @property
    def max_pending_bytes(self) -> int:
        """Bytes of commands queued while the server waits for a DMA reply: 16 MiB, or
        two of the largest messages (without it, 1024 of 1 MiB held 1 GiB)."""
        return max(_MAX_PENDING_BYTES, 2 * self.max_message_size)


class _EndSession(Exception):
    """The session cannot go on (framing lost, unsupported version, flood)."""


class _StopRequested(BaseException):
    """The wake fd became readable: the server is asked to stop, every wait gives up.

    A BaseException, like KeyboardInterrupt, so that device code catching Exception
    around its DMA does not swallow it.
    """


def _errno_of(err: BaseException) -> int:
    if isinstance(err, OSError) and err.errno:
        return err.errno
    if isinstance(err, ValueError):
        return errno.EINVAL
    return errno.EIO


class _Session:
    """One client connection: negotiation, dispatch, the client's DMA and eventfds."""

    def __init__(
        self, device: PciDevice, sock: socket.socket, options: ServerOptions, wake_fd: int
    ) -> None:
        self.device = device
        self.sock = sock
        # Blocking, with no timeout of its own: every call that could wait is made
        # with MSG_DONTWAIT, and the waiting done in poll() with the wake fd (_ready).
        sock.settimeout(None)
        self.options = options
        self.wake_fd = wake_fd
        self.negotiated = False
        self.client_max_fds = DEFAULT_MAX_MSG_FDS
        self.client_max_xfer = DEFAULT_MAX_DATA_XFER_SIZE
        self.write_multiple = False
        self.pending: collections.deque[Message] = collections.deque()
        self.pending_bytes = 0
        self.next_id = 0
        self.dma = DmaSpace(
            self.request, max_maps=options.max_dma_maps, max_xfer=options.max_data_xfer_size
        )
        self.commands_served = 0
        self._waiting = 0  # how many requests to the client await their reply

    # -- waiting ------------------------------------------------------------------------

    def _ready(self, events: int, timeout: float | None, watched: tuple[int, ...] = ()) -> set[int]:
        """The fds ready within ``timeout`` seconds (None: no limit): the socket for
        ``events``, the ``watched`` eventfds; _StopRequested when the wake fd is."""
        poller = select.poll()
        poller.register(self.sock.fileno(), events)
        poller.register(self.wake_fd, select.POLLIN)
        for fd in watched:
            poller.register(fd, select.POLLIN)
        ready = {fd for fd, _ in poller.poll(None if timeout is None else max(0.0, timeout) * 1000)}
        if self.wake_fd in ready:
            raise _StopRequested
        return ready

    def _waiter(self, what: str) -> Waiter:
        """A `Waiter` for one message: the whole of it within ``io_timeout``."""
        timeout = self.options.io_timeout
        deadline = time.monotonic() + timeout
        sock = self.sock.fileno()

        def wait(events: int) -> None:
            if sock not in self._ready(events, deadline - time.monotonic()):
                raise TimeoutError(f"the client {what} for {timeout} s")

        return wait

    # -- receiving ----------------------------------------------------------------------

    def _receive(self) -> Message:
        try:
            return receive_message(
                self.sock,
                self.options.max_message_size,
                wait=self._waiter("stopped in the middle of a message"),
            )
        except TimeoutError as err:
            raise _EndSession(str(err)) from err
        except VfioUserProtocolError as err:
            header = err.header
            if isinstance(header, Header) and header.is_command and not header.no_reply:
                with suppress(VfioUserDisconnectedError, OSError):
                    send_error(self.sock, header, err.errno or errno.EINVAL, wait=self._send_wait())
            raise _EndSession(str(err)) from err

    def _send_wait(self) -> Waiter:
        return self._waiter("stopped reading its replies")

    def next_message(self) -> Message | None:
        """The next command to serve, None when the server is asked to stop."""
        while not self.pending:
            watched = tuple(self.device.interrupts.watched_fds())
            try:
                ready = self._ready(select.POLLIN, None, watched)
            except _StopRequested:
                return None
            for fd in watched:
                if fd in ready:
                    self.device.interrupts.fd_ready(fd)
            if self.sock.fileno() in ready:
                return self._receive()
        message = self.pending.popleft()
        self.pending_bytes -= message.header.size
        return message

    # -- server-to-client commands (DMA by message) -------------------------------------

    def request(self, command: int, payload: bytes) -> bytes:
        """Send a command to the client and wait for its reply; region accesses and DMA
        maps that arrive meanwhile are served, other commands queued.
        VfioUserRemoteError for an error reply."""
        self.next_id = (self.next_id + 1) & 0xFFFF
        msg_id = self.next_id
        try:
            send_message(self.sock, msg_id, command, payload, wait=self._send_wait())
        except TimeoutError as err:  # part of it may have gone: the framing is lost
            raise _EndSession(str(err)) from err
        self._waiting += 1
        # One deadline for the reply, however much else the client sends meanwhile.
        deadline = time.monotonic() + self.options.io_timeout
        try:
            while True:
                left = deadline - time.monotonic()
                if self.sock.fileno() not in self._ready(select.POLLIN, left):
                    # The device's DMA fails; a late reply is dropped as answering nothing.
                    raise VfioUserError(
                        f"the client did not answer {command_name(command)} within "
                        f"{self.options.io_timeout} s",
                        errno=errno.ETIMEDOUT,
                        ioctl=command_name(command),
                    )
                message = self._receive()
                header = message.header
                if header.is_reply:
                    close_fds(message.fds)
                    if header.msg_id == msg_id and header.command == command:
                        if header.is_error:
                            raise VfioUserRemoteError(
                                f"the client refused {command_name(command)}: "
                                f"{os.strerror(header.error) if header.error else 'no errno'}",
                                errno=header.error,
                                ioctl=command_name(command),
                            )
                        return message.payload
                    log.info("dropped a reply nobody waits for: %s", header)
                    continue
                # Region accesses and DMA maps are served now (see _SERVED_WHILE_WAITING);
                # a request made while serving one (depth 2) queues everything, so that
                # no reply can be taken by the wrong waiter.
                if self._waiting == 1 and header.command in _SERVED_WHILE_WAITING:
                    self.handle(message)
                    continue
                limit = self.options.max_pending_bytes
                if len(self.pending) >= _MAX_PENDING or self.pending_bytes + header.size > limit:
                    close_fds(message.fds)
                    raise _EndSession(
                        f"the client queued more than {_MAX_PENDING} commands or {limit} bytes "
                        f"while the server waited for its {command_name(command)} reply"
                    )
                self.pending.append(message)
                self.pending_bytes += header.size
        finally:
            self._waiting -= 1

    # -- serving ------------------------------------------------------------------------

    def serve(self) -> None:
        self.device.dma = self.dma
        try:
            while True:
                message = self.next_message()
                if message is None:
                    return
                self.handle(message)
                self.run_deferred()
        except VfioUserDisconnectedError as err:
            log.info("client gone: %s", err)
        except _StopRequested:
            log.info("session ended: the server is stopping")
        except _EndSession as err:
            log.warning("session ended: %s", err)
        except OSError as err:  # a send that timed out or failed: the stream is unusable
            log.warning("session ended: %s", err)
        except Exception:  # a server bug must not take the next client's session down too
            log.exception("session ended by an unexpected error")
        finally:
            self.close()

    def run_deferred(self) -> None:
        try:
            self.device.run_deferred()
        except VfioUserDisconnectedError:
            raise
        except _EndSession:
            raise
        except Exception:
            log.exception("%s: deferred device work failed", self.device.name)

    def close(self) -> None:
        with suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # the client sees the session end
        for message in self.pending:
            close_fds(message.fds)
        self.pending.clear()
        self.pending_bytes = 0
        self.device.dma = _NoClient()
        self.dma.unmap_all()
        self.device.interrupts.release_all()
        with suppress(Exception):
            self.device.client_disconnected()

    def handle(self, message: Message) -> None:
        header = message.header
        if header.is_reply:
            log.info("dropped a reply to nothing: %s", header)
            close_fds(message.fds)
            return
        kept: list[int] = []
        try:
            if not header.is_command:
                raise VfioUserError(
                    f"message type {header.flags & 0xF} is neither command nor reply"
                )
            handler = (
                self._handlers.get(Command(header.command)) if header.command in _COMMANDS else None
            )
            if handler is None:
                raise VfioUserError(
                    f"{command_name(header.command)} is not supported", errno=errno.EOPNOTSUPP
                )
            if not self.negotiated and header.command != Command.VFIO_USER_VERSION:
                raise VfioUserError(f"{command_name(header.command)} before VFIO_USER_VERSION")
            payload, fds, kept = handler(self, message)
        except (_EndSession, VfioUserDisconnectedError, _StopRequested):
            close_fds(fd for fd in message.fds if fd not in kept)
            raise
        except Exception as err:
            close_fds(fd for fd in message.fds if fd not in kept)
            code = _errno_of(err)
            if isinstance(err, VfioUserError | ValueError):
                log.info("%s: %s (errno %d)", header, err, code)
            else:
                log.exception("%s: %s failed", self.device.name, command_name(header.command))
            self.commands_served += 1
            if not header.no_reply:
                send_error(self.sock, header, code, wait=self._send_wait())
            if header.command == Command.VFIO_USER_VERSION and isinstance(err, _VersionRefused):
                raise _EndSession(str(err)) from err
            return
        close_fds(fd for fd in message.fds if fd not in kept)
        self.commands_served += 1
        if not header.no_reply:
            send_reply(self.sock, header, payload, fds=fds, wait=self._send_wait())

    # -- the commands -------------------------------------------------------------------

    def _no_fds(self, message: Message) -> None:
        if message.fds:
            raise VfioUserError(
                f"{command_name(message.command)} takes no file descriptors, "
                f"{len(message.fds)} came"
            )

    def version(self, message: Message) -> _Result:
        self._no_fds(message)
        if self.negotiated:
            raise VfioUserError("VFIO_USER_VERSION was already negotiated")
        request = vfio_user_version.parse(message.payload, command="VFIO_USER_VERSION")
        if request.major != VFIO_USER_MAJOR:
            raise _VersionRefused(
                f"the client speaks vfio-user {request.major}.{request.minor}; "
                f"this server speaks {VFIO_USER_MAJOR}.{VFIO_USER_MINOR}",
                errno=errno.ENOTSUP,
            )
        caps = decode_capabilities(message.payload[4:])
        self.client_max_fds = _cap_int(caps, "max_msg_fds", DEFAULT_MAX_MSG_FDS, 0)
        self.client_max_xfer = _cap_int(caps, "max_data_xfer_size", DEFAULT_MAX_DATA_XFER_SIZE, 1)
        self.dma.max_xfer = min(self.client_max_xfer, self.options.max_data_xfer_size)
        self.write_multiple = caps.get("write_multiple") is True
        ours: dict[str, Any] = {
            "max_msg_fds": self.options.max_msg_fds,
            "max_data_xfer_size": self.options.max_data_xfer_size,
            "pgsizes": self.options.pgsizes,
            "max_dma_maps": self.options.max_dma_maps,
        }
        # No "migration" object: migration is not supported (DEVICE_FEATURE says so too).
        if self.write_multiple:
            ours["write_multiple"] = True
        reply = vfio_user_version(major=VFIO_USER_MAJOR, minor=min(request.minor, VFIO_USER_MINOR))
        self.negotiated = True
        log.info("client negotiated vfio-user %d.%d: %s", reply.major, reply.minor, caps)
        with suppress(Exception):
            self.device.client_connected()
        return reply.pack() + encode_capabilities(ours), (), []

    def dma_map(self, message: Message) -> _Result:
        if len(message.fds) > 1:
            raise VfioUserError(f"VFIO_USER_DMA_MAP takes 0 or 1 fds, {len(message.fds)} came")
        request = vfio_user_dma_map.parse(message.payload, command="VFIO_USER_DMA_MAP")
        # The fd is mapped (which keeps no fd open) or not used: closed either way.
        self.dma.map(request, message.fds[0] if message.fds else -1)
        return b"", (), []

    def dma_unmap(self, message: Message) -> _Result:
        self._no_fds(message)
        request = vfio_user_dma_unmap.parse(message.payload, command="VFIO_USER_DMA_UNMAP")
        if request.flags == VfioDmaUnmapFlag.VFIO_DMA_UNMAP_FLAG_ALL:
            if request.addr or request.size:
                raise VfioUserError("DMA_UNMAP of everything needs address and size 0")
            self.dma.unmap_all()
        elif request.flags:
            raise VfioUserError(
                f"DMA_UNMAP flags {request.flags:#x} are not supported (dirty bitmaps: no "
                "migration here)",
                errno=errno.ENOTSUP,
            )
        else:
            self.dma.unmap(request.addr, request.size)
        request.argsz = ctypes.sizeof(vfio_user_dma_unmap)
        return request.pack(), (), []

    def device_info(self, message: Message) -> _Result:
        self._no_fds(message)
        request = vfio_user_device_info.parse(message.payload, command="VFIO_USER_DEVICE_GET_INFO")
        size = ctypes.sizeof(vfio_user_device_info)
        if request.argsz < size:
            raise VfioUserError(f"DEVICE_GET_INFO argsz {request.argsz} is below {size}")
        flags = VfioDeviceFlag.VFIO_DEVICE_FLAGS_PCI
        if self.device.supports_reset:
            flags |= VfioDeviceFlag.VFIO_DEVICE_FLAGS_RESET
        reply = vfio_user_device_info(
            argsz=size,
            flags=flags,
            num_regions=self.device.num_regions,
            num_irqs=self.device.num_irqs,
        )
        return reply.pack(), (), []

    def region_info(self, message: Message) -> _Result:
        self._no_fds(message)
        name = "VFIO_USER_DEVICE_GET_REGION_INFO"
        request = parse_kernel_struct(vfio_region_info, message.payload, command=name)
        base = ctypes.sizeof(vfio_region_info)
        if request.argsz < base:
            raise VfioUserError(f"GET_REGION_INFO argsz {request.argsz} is below {base}")
        if request.index >= self.device.num_regions:
            raise VfioUserError(
                f"region {request.index} does not exist (the device has {self.device.num_regions})"
            )
        region = self.device.regions.get(request.index)
        reply = vfio_region_info(argsz=base, flags=0, index=request.index, cap_offset=0)
        if region is None:
            return bytes(reply), (), []
        reply.size = region.size
        reply.flags = region.flags
        caps = b""
        areas = region.mmap_areas
        if areas and [(a.offset, a.size) for a in areas] != [(0, region.size)]:
            sparse = vfio_region_info_cap_sparse_mmap()
            sparse.header = vfio_info_cap_header(
                id=VfioRegionInfoCap.VFIO_REGION_INFO_CAP_SPARSE_MMAP, version=1, next=0
            )
            sparse.nr_areas = len(areas)
            caps = bytes(sparse) + b"".join(
                bytes(vfio_region_sparse_mmap_area(offset=a.offset, size=a.size)) for a in areas
            )
            reply.flags |= VfioRegionInfoFlag.VFIO_REGION_INFO_FLAG_CAPS
            reply.argsz = base + len(caps)
            if request.argsz >= reply.argsz:
                reply.cap_offset = base
            else:
                caps = b""  # too little room: argsz tells the client how much to ask for
        fds = (region.shared_fd(),) if region.mappable else ()
        return bytes(reply) + caps, fds, []

    def irq_info(self, message: Message) -> _Result:
        self._no_fds(message)
        name = "VFIO_USER_DEVICE_GET_IRQ_INFO"
        request = parse_kernel_struct(vfio_irq_info, message.payload, command=name)
        size = ctypes.sizeof(vfio_irq_info)
        if request.argsz < size:
            raise VfioUserError(f"GET_IRQ_INFO argsz {request.argsz} is below {size}")
        if request.index >= self.device.num_irqs:
            raise VfioUserError(
                f"IRQ index {request.index} does not exist (the device has {self.device.num_irqs})"
            )
        interrupts = self.device.interrupts
        reply = vfio_irq_info(
            argsz=size,
            flags=interrupts.info_flags(request.index),
            index=request.index,
            count=interrupts.count(request.index),
        )
        return bytes(reply), (), []

    def set_irqs(self, message: Message) -> _Result:
        name = "VFIO_USER_DEVICE_SET_IRQS"
        request = parse_kernel_struct(vfio_irq_set, message.payload, command=name)
        if request.index >= self.device.num_irqs:
            raise VfioUserError(f"IRQ index {request.index} does not exist")
        data = message.payload[ctypes.sizeof(vfio_irq_set) :]
        kept = self.device.interrupts.set_irqs(
            request.flags, request.index, request.start, request.count, data, message.fds
        )
        return b"", (), kept

    def _region_for(self, index: int, offset: int, count: int, write: bool) -> Any:
        region = self.device.regions.get(index)
        if region is None or index >= self.device.num_regions:
            raise VfioUserError(f"region {index} does not exist")
        if count > self.options.max_data_xfer_size:
            raise VfioUserError(
                f"{count}-byte access exceeds max_data_xfer_size {self.options.max_data_xfer_size}",
                errno=errno.E2BIG,
            )
        if offset + count > region.size:
            raise VfioUserError(
                f"{count} bytes at {offset:#x} leave {region.name} ({region.size:#x} bytes)"
            )
        if not (region.writable if write else region.readable):
            raise VfioUserError(
                f"{region.name} is not {'writable' if write else 'readable'}", errno=errno.EACCES
            )
        return region

    def region_read(self, message: Message) -> _Result:
        self._no_fds(message)
        access = vfio_user_region_access.parse(message.payload, command="VFIO_USER_REGION_READ")
        region = self._region_for(access.region, access.offset, access.count, write=False)
        data = region.read(access.offset, access.count)
        return access.pack() + data, (), []

    def region_write(self, message: Message) -> _Result:
        self._no_fds(message)
        access = vfio_user_region_access.parse(message.payload, command="VFIO_USER_REGION_WRITE")
        data = message.payload[16:]
        if len(data) != access.count:
            raise VfioUserError(f"REGION_WRITE says {access.count} bytes and carries {len(data)}")
        region = self._region_for(access.region, access.offset, access.count, write=True)
        region.write(access.offset, data)
        return access.pack(), (), []

    def region_write_multi(self, message: Message) -> _Result:
        self._no_fds(message)
        payload = message.payload
        if len(payload) < 8:
            raise VfioUserError("REGION_WRITE_MULTI without its write count")
        (count,) = struct.unpack_from("=Q", payload)
        one = ctypes.sizeof(vfio_user_wr_one)
        if len(payload) != 8 + count * one:
            raise VfioUserError(
                f"REGION_WRITE_MULTI of {count} writes is {len(payload)} bytes, not "
                f"{8 + count * one}"
            )
        writes = [
            vfio_user_wr_one.parse(payload[8 + i * one : 8 + (i + 1) * one]) for i in range(count)
        ]
        for w in writes:
            if w.count > 8:
                raise VfioUserError(f"REGION_WRITE_MULTI write of {w.count} bytes (at most 8)")
            region = self._region_for(w.region, w.offset, w.count, write=True)
            region.write(w.offset, bytes(w.data)[: w.count])
        return struct.pack("=Q", count), (), []

    def reset(self, message: Message) -> _Result:
        self._no_fds(message)
        if not self.device.supports_reset:
            raise VfioUserError(f"{self.device.name} cannot be reset", errno=errno.ENOTTY)
        self.device.reset()
        return b"", (), []

    def feature(self, message: Message) -> _Result:
        # VFIO_DEVICE_FEATURE_MIGRATION and the dirty-logging features: none supported,
        # answered as the kernel answers a feature it lacks.
        self._no_fds(message)
        raise VfioUserError("no device features (no migration, no DMA logging)", errno=errno.ENOTTY)

    def wrong_direction(self, message: Message) -> _Result:
        raise VfioUserError(f"{command_name(message.command)} goes from server to client")

    _handlers: Final = {
        Command.VFIO_USER_VERSION: version,
        Command.VFIO_USER_DMA_MAP: dma_map,
        Command.VFIO_USER_DMA_UNMAP: dma_unmap,
        Command.VFIO_USER_DEVICE_GET_INFO: device_info,
        Command.VFIO_USER_DEVICE_GET_REGION_INFO: region_info,
        Command.VFIO_USER_DEVICE_GET_IRQ_INFO: irq_info,
        Command.VFIO_USER_DEVICE_SET_IRQS: set_irqs,
        Command.VFIO_USER_REGION_READ: region_read,
        Command.VFIO_USER_REGION_WRITE: region_write,
        Command.VFIO_USER_REGION_WRITE_MULTI: region_write_multi,
        Command.VFIO_USER_DEVICE_RESET: reset,
        Command.VFIO_USER_DEVICE_FEATURE: feature,
        Command.VFIO_USER_DMA_READ: wrong_direction,
        Command.VFIO_USER_DMA_WRITE: wrong_direction,
    }


_Result = tuple[bytes, tuple[int, ...], list[int]]
_COMMANDS: Final = frozenset(int(c) for c in Command)


class _VersionRefused(VfioUserError):
    """A version this server cannot speak: error reply, then the session ends."""


def _cap_int(caps: dict[str, Any], name: str, default: int, minimum: int) -> int:
    value = caps.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise VfioUserError(f'capability "{name}" is {value!r}, not an integer >= {minimum}')
    return value


def serve_connection(
    device: PciDevice,
    sock: socket.socket,
    options: ServerOptions | None = None,
    *,
    wake_fd: int | None = None,
) -> int:
    """Serve one connected client until it goes (or ``wake_fd`` becomes readable);
    the number of commands answered.  The socket is the caller's to close."""
    own_pipe = wake_fd is None
    read_end, write_end = os.pipe2(os.O_CLOEXEC) if own_pipe else (wake_fd, -1)
    assert read_end is not None
    session = _Session(device, sock, options or ServerOptions(), read_end)
    try:
        session.serve()
    finally:
        if own_pipe:
            os.close(read_end)
            os.close(write_end)
    return session.commands_served


class Server:
    """A vfio-user server for ``device`` on the UNIX socket ``path``.

    ``with Server(dev, path) as server: server.start()`` serves in a thread;
    ``server.serve_forever()`` in the caller's.  The socket file is created on
    `listen` (refusing a path a live server holds) and removed on `close`.

    The socket is created with ``mode`` (0600 by default: only this user may connect,
    whatever the umask) and, with ``group`` (a name or a number), given to that group
    (``mode=0o660, group="kvm"`` lets the group's members connect).  ValueError for a
    mode that is not permission bits, a group this host does not have or this user
    cannot give files to.
    """

    def __init__(
        self,
        device: PciDevice,
        path: str | os.PathLike[str],
        options: ServerOptions | None = None,
        *,
        mode: int = 0o600,
        group: str | int | None = None,
    ) -> None:
        if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o777:
            raise ValueError(
                f"socket mode {mode!r} is not permission bits (0 to 0o777, e.g. 0o660)"
            )
        self.device = device
        self.path = Path(path)
        self.options = options or ServerOptions()
        self.mode = mode
        self.gid = None if group is None else _group_id(group)
        self.sessions = 0
        self._listener: socket.socket | None = None
        # Non-blocking: a signal handler writes it (and the kernel, as the wakeup fd of
        # stop_on_signals); it is never read, so that it stays readable once stopped.
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._stopping = False
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._idle = threading.Event()
        self._idle.set()

    # -- the socket ---------------------------------------------------------------------

    def listen(self) -> None:
        """Bind and listen on ``path``.  VfioUserError with the fix when it cannot."""
        if self._listener is not None:
            return
        path = self.path
        if not path.parent.is_dir():
            raise VfioUserError(
                f"cannot listen on {path}: directory {path.parent} does not exist; create it "
                "or choose another --socket path",
                errno=errno.ENOENT,
            )
        if path.exists() or path.is_symlink():
            if not stat.S_ISSOCK(path.lstat().st_mode):
                raise VfioUserError(
                    f"cannot listen on {path}: it exists and is not a socket; remove it or "
                    "choose another path",
                    errno=errno.EEXIST,
                )
            if _is_live(path):
                raise VfioUserError(
                    f"cannot listen on {path}: a server is already listening there; stop it "
                    "or choose another path",
                    errno=errno.EADDRINUSE,
                )
            path.unlink()  # a stale socket left by a server that died
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        bound = False
        try:
            _bind_with_mode(listener, path, self.mode)
            bound = True
            if self.gid is not None:
                os.chown(path, -1, self.gid, follow_symlinks=False)
            # Only now can anyone connect (before listen() a connect is refused), and
            # the file has its mode and group already.
            listener.listen(1)
            listener.setblocking(False)  # accept() after a poll never waits
        except OSError as err:
            listener.close()
            if bound:
                with suppress(OSError):
                    path.unlink()
            raise VfioUserError(
                f"cannot listen on {path}: {err.strerror}", errno=err.errno or errno.EIO
            ) from err
        self._listener = listener

    def fileno(self) -> int:
        if self._listener is None:
            raise VfioUserError("the server is not listening (call listen())", errno=errno.EBADF)
        return self._listener.fileno()

    # -- serving ------------------------------------------------------------------------

    def serve_forever(self, *, once: bool = False) -> None:
        """Accept clients one at a time until `stop` (or, with ``once``, until the first
        client leaves)."""
        self.listen()
        assert self._listener is not None
        poller = select.poll()
        poller.register(self._listener.fileno(), select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        while not self._stopping:
            ready = {fd for fd, _ in poller.poll()}
            if self._wake_r in ready or self._stopping:
                break
            try:
                client, _ = self._listener.accept()
            except BlockingIOError:
                continue  # the connection went away between poll and accept
            except OSError as err:
                log.warning("accept failed: %s", err)
                continue
            self._serve_client(client)
            if once:
                break

    @property
    def stopping(self) -> bool:
        """Whether `stop` was called (or a signal of `stop_on_signals` came)."""
        return self._stopping

    def _serve_client(self, client: socket.socket) -> None:
        with self._lock:
            if self._stopping:
                client.close()
                return
            self._idle.clear()
        self.sessions += 1
        log.info("client connected (session %d)", self.sessions)
        done = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        rejector = threading.Thread(target=self._reject_others, args=(done,), daemon=True)
        rejector.start()
        try:
            session = _Session(self.device, client, self.options, self._wake_r)
            session.serve()
        finally:
            os.eventfd_write(done, 1)
            with suppress(OSError):
                client.close()
            rejector.join()
            os.close(done)
            with self._lock:
                self._idle.set()
            log.info("client disconnected (session %d)", self.sessions)

    def _reject_others(self, done: int) -> None:
        """While one client is served, close anyone else who connects."""
        listener = self._listener
        if listener is None:
            return
        poller = select.poll()
        for fd in (listener.fileno(), done, self._wake_r):
            poller.register(fd, select.POLLIN)
        while True:
            ready = {fd for fd, _ in poller.poll()}
            if done in ready or self._wake_r in ready:
                return
            try:
                other, _ = listener.accept()
            except OSError:
                continue
            log.info("refused a second client: one client at a time")
            other.close()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no client is being served (the last one's cleanup is done)."""
        return self._idle.wait(timeout)

    def start(self, *, once: bool = False) -> threading.Thread:
        """Listen, then serve in a daemon thread (stop with `stop`; ``once``: see
        `serve_forever`)."""
        self.listen()
        thread = threading.Thread(
            target=self.serve_forever, kwargs={"once": once}, name="pyvfio-server", daemon=True
        )
        thread.start()
        self._thread = thread
        return thread

    def stop(self) -> None:
        """Ask the loop to end: the current client is disconnected, no new one accepted.

        Every wait of the server watches the wake pipe this writes, so the loop ends
        whatever the client does; from another thread, `stop` waits for it.  Safe in
        a signal handler (no lock is taken).
        """
        self._stopping = True
        wake = self._wake_w
        if wake >= 0:
            with suppress(OSError):  # full already (BlockingIOError): readable anyway
                os.write(wake, b"x")
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
            self._thread = None

    @contextmanager
    def stop_on_signals(
        self, signums: Iterable[int] = (signal.SIGINT, signal.SIGTERM)
    ) -> Iterator[None]:
        """Within the block, those signals `stop` the server (main thread only).

        Whichever thread the kernel delivers the signal to, its byte lands in the wake
        pipe (``signal.set_wakeup_fd``), so a server blocked in any wait sees it at once;
        the handlers run `stop`.  Installed handlers, even an inherited "ignore" (a
        background job of a shell ignores SIGINT), are put back afterwards.
        """
        signums = tuple(signums)
        previous = {signum: signal.getsignal(signum) for signum in signums}
        old_wakeup = signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        try:
            for signum in signums:
                signal.signal(signum, self._on_signal)
            yield
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _on_signal(self, signum: int, frame: object) -> None:
        log.info("signal %d: stopping", signum)
        self.stop()

    def close(self) -> None:
        """Stop, remove the socket file, release the wake pipe; idempotent."""
        if self._closed:
            return
        self.stop()
        self._closed = True
        if self._listener is not None:
            self._listener.close()
            self._listener = None
            with suppress(FileNotFoundError):
                self.path.unlink()
        wake_r, wake_w, self._wake_r, self._wake_w = self._wake_r, self._wake_w, -1, -1
        os.close(wake_r)
        os.close(wake_w)

    def __enter__(self) -> Server:
        self.listen()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: umask is the process's: two servers binding at once must not undo each other's.
_umask_lock = threading.Lock()


def _bind_with_mode(listener: socket.socket, path: Path, mode: int) -> None:
    """bind() creating the socket file with exactly ``mode``, whatever the umask.

    bind() gives the file 0777 minus the umask, so the umask is set for the call:
    process-wide, which for that instant only narrows what other threads create.
    A directory's default ACL overrides the umask; the mode is then set after bind
    (no one can connect before listen(), so there is no window).
    """
    with _umask_lock:
        old = os.umask(0o777 & ~mode)
        try:
            listener.bind(str(path))
        finally:
            os.umask(old)
    made = path.lstat()
    if stat.S_ISSOCK(made.st_mode) and stat.S_IMODE(made.st_mode) != mode:
        os.chmod(path, mode)


def _group_id(group: str | int) -> int:
    """The gid of ``group`` (a name, or a number as int or text), checked to be one this
    process may give its files to (root any; others their own groups)."""
    text = str(group)
    try:
        gid = int(text) if text.isdigit() else grp.getgrnam(text).gr_gid
    except KeyError:
        raise ValueError(f"no group {text!r} on this host (getent group lists them)") from None
    if os.geteuid() != 0 and gid != os.getegid() and gid not in os.getgroups():
        raise ValueError(
            f"cannot give the socket to group {text!r}: this user is not in it (and not root)"
        )
    return gid


def _is_live(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


@contextmanager
def running(
    device: PciDevice, path: str | os.PathLike[str], options: ServerOptions | None = None
) -> Iterator[Server]:
    """A server for ``device`` on ``path``, serving in a thread for the ``with`` block."""
    server = Server(device, path, options)
    try:
        server.start()
        yield server
    finally:
        server.close()
