"""The client end of vfio-user: a device served over a UNIX socket, as a `Device` sees it.

``pyvfio.open("vfio-user:/run/edu.sock")`` connects here: `VfioUserClient` is the
device's transport (`pyvfio._transport.DeviceTransport`), so config space, regions,
interrupts and reset are the same calls as over kernel VFIO, and the Iommu's
``vfio-user`` backend uses it for DMA.

* **Messages.** Each command gets the next 16-bit message id; its reply is matched by
  id. An error reply becomes a `VfioUserRemoteError` carrying the server's errno and
  the command's name. No wait is unbounded: a reply that does not come within
  ``timeout`` seconds raises `VfioUserTimeoutError`; a peer that closes the socket
  raises `VfioUserDisconnectedError`, and so does every later call.
* **Regions.** An area the server lets us mmap comes with an fd in the region info
  reply; `Region` maps it and reads and writes registers with single loads and
  stores. Everything else is ``VFIO_USER_REGION_READ``/``WRITE``, split at the
  server's ``max_data_xfer_size``.
* **DMA.** ``VFIO_USER_DMA_MAP`` passes the memory's fd when it has one (the server
  maps it and reaches our memory directly); without one, the server reads and writes
  it with ``VFIO_USER_DMA_READ``/``WRITE`` requests, which this client answers from
  its own memory. Those requests may arrive between any command and its reply
  (spec: "Command Concurrency"), so the receive loop serves them while it waits; and
  while message-served mappings exist, a thread serves them when no call is waiting,
  so a server may DMA while the caller sleeps on an interrupt.
"""

from __future__ import annotations

import bisect
import contextlib
import ctypes
import dataclasses
import errno as E
import logging
import os
import select
import socket
import struct
import threading
import time
import weakref

from pyvfio import _ioctl, _mem
from pyvfio._uapi import vfio as v
from pyvfio.errors import (
    ClosedError,
    PermissionDeniedError,
    UnsupportedError,
    VfioError,
    VfioUserDisconnectedError,
    VfioUserError,
    VfioUserProtocolError,
    VfioUserRemoteError,
    VfioUserTimeoutError,
)
from pyvfio.info import DependentDevice, DeviceInfo, IrqInfo, RegionInfo
from pyvfio.vfio_user import SCHEME, is_vfio_user, socket_path
from pyvfio.vfio_user import protocol as p
from pyvfio.vfio_user.protocol import Command, Message

log = logging.getLogger("pyvfio.vfio_user")

#: Seconds a reply may take before the call gives up (a device reset may be slow).
DEFAULT_TIMEOUT = 10.0
#: The largest transfer this client accepts in one DMA_READ/WRITE request.
MAX_DATA_XFER_SIZE = p.DEFAULT_MAX_DATA_XFER_SIZE
#: What GET_REGION_INFO asks for first: the struct and room for a few capabilities.
_REGION_INFO_ARGSZ = 256
#: The largest region a server's fd is mapped for (address space: 128 TiB in all).
_MAX_REGION_MAPPING = 1 << 40

_ACCESS = struct.Struct("=QII")  # vfio_user_region_access: offset, region, count
_DMA_ACCESS = struct.Struct("=QQ")  # vfio_user_dma_region_access: addr, count
_READ, _WRITE = Command.VFIO_USER_REGION_READ, Command.VFIO_USER_REGION_WRITE
# Plain ints for the per-message tests: IntFlag arithmetic was a tenth of a round trip.
_TYPE, _REPLY = int(p.MessageFlag.VFIO_USER_TYPE), int(p.MessageFlag.VFIO_USER_REPLY)
_ERROR = int(p.MessageFlag.VFIO_USER_ERROR)


@dataclasses.dataclass(frozen=True)
class ServerCapabilities:
    """What the server answered in ``VFIO_USER_VERSION`` (the spec's defaults filled in)."""

    major: int
    minor: int
    max_msg_fds: int = p.DEFAULT_MAX_MSG_FDS
    max_data_xfer_size: int = p.DEFAULT_MAX_DATA_XFER_SIZE
    max_dma_maps: int = p.DEFAULT_MAX_DMA_MAPS
    pgsizes: int = p.DEFAULT_PGSIZES

    def __str__(self) -> str:
        return (
            f"vfio-user {self.major}.{self.minor}: {self.max_msg_fds} fd(s)/message, "
            f"{self.max_data_xfer_size} bytes/transfer, {self.max_dma_maps} DMA maps, "
            f"page sizes {self.pgsizes:#x}"
        )


@dataclasses.dataclass(frozen=True)
class _DmaWindow:
    """Our memory the server may reach at ``iova``: at ``vaddr``, ``size`` bytes."""

    iova: int
    size: int
    vaddr: int
    shared: bool  # passed as an fd (else served by DMA_READ/WRITE messages)


def _unsafe_region_fd(info: RegionInfo, fd: int) -> str:
    """Why the server's fd for a region must not be mapped ("" when it may): what
    Region.map would map must lie in the region and in a file the server cannot
    shrink, or the next access could kill this process with SIGBUS."""
    areas = info.mmap_areas()
    limit = _mem.round_up(info.size, _mem.PAGE_SIZE)
    for area in areas:
        if area.offset % _mem.PAGE_SIZE or area.offset + area.size > limit:
            return (
                f"its mmap area {area} is not page-aligned or leaves the region "
                f"({info.size:#x} bytes)"
            )
    end = max((area.offset + area.size for area in areas), default=0)
    if end > _MAX_REGION_MAPPING:
        # A sparse memfd costs the server nothing; our address space is finite.
        return f"the region is {end:#x} bytes, more than the 1 TiB this client maps"
    return _mem.unsafe_to_map(fd, info.offset, end) or ""


def _close_quietly(sock: socket.socket, fds: dict[int, int]) -> None:
    p.close_fds(fds.values())
    fds.clear()
    with contextlib.suppress(OSError):
        sock.close()


class VfioUserClient:
    """One connection to a vfio-user server: one device.

    ``VfioUserClient("/run/edu.sock")`` connects and negotiates the version; the
    `Device` built on it (``pyvfio.open("vfio-user:/run/edu.sock")``) is what code
    normally uses. ``close()`` is idempotent; so is the finalizer behind it.
    """

    def __init__(self, path: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.path = socket_path(path)
        self.address = SCHEME + self.path
        self.timeout = timeout
        self._send_lock = threading.Lock()
        self._recv_lock = threading.Lock()
        self._dma_lock = threading.Lock()
        self._next_id = 0
        self._pending: set[int] = set()
        self._replies: dict[int, Message] = {}
        self._broken: VfioUserError | None = None
        self._region_fds: dict[int, int] = {}
        self._windows: dict[int, _DmaWindow] = {}
        self._window_starts: list[int] = []
        self._servicer: threading.Thread | None = None
        self._wake = -1
        self._stopping = False
        #: DMA_READ/WRITE requests of the server this client answered (tests, benches).
        self.dma_requests_served = 0
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock = sock
        self._fd = sock.fileno()
        self._poller = select.poll()
        self._poller.register(self._fd, select.POLLIN)
        self._finalizer = weakref.finalize(self, _close_quietly, sock, self._region_fds)
        try:
            sock.settimeout(timeout)
            self._connect()
            self.server = self._negotiate()
            # Region transfers within both limits: the server's, and what we receive.
            self._chunk = min(self.server.max_data_xfer_size, MAX_DATA_XFER_SIZE)
        except BaseException:
            self._fd = -1
            self._finalizer()
            raise

    def __repr__(self) -> str:
        state = "closed" if self._fd < 0 else f"socket fd {self._fd}"
        return f"<VfioUserClient {self.path} ({state})>"

    # -- connection ---------------------------------------------------------------

    def _connect(self) -> None:
        try:
            self._sock.connect(self.path)
        except (FileNotFoundError, ConnectionRefusedError) as err:
            raise VfioUserDisconnectedError(
                f"no vfio-user server listens at {self.path} ({err.strerror}): start one "
                f"(pyvfio serve edu --socket {self.path})",
                errno=err.errno or E.ECONNREFUSED,
                device=self.address,
            ) from err
        except PermissionError as err:
            raise PermissionDeniedError(
                f"cannot connect to {self.path}: {err.strerror}; the socket's owner must "
                "let this user write to it",
                errno=err.errno or E.EACCES,
                device=self.address,
            ) from err
        except TimeoutError as err:
            raise VfioUserTimeoutError(
                f"connecting to {self.path} did not finish within {self.timeout} s",
                errno=E.ETIMEDOUT,
                device=self.address,
            ) from err

    def _negotiate(self) -> ServerCapabilities:
        """``VFIO_USER_VERSION``: propose 0.0 and our limits, check what comes back."""
        ours = {
            "max_msg_fds": p.MAX_MSG_FDS_LIMIT,
            "max_data_xfer_size": MAX_DATA_XFER_SIZE,
            "pgsizes": p.DEFAULT_PGSIZES,
        }
        request = p.vfio_user_version(major=p.VFIO_USER_MAJOR, minor=p.VFIO_USER_MINOR)
        name = "VFIO_USER_VERSION"
        reply = self._request(
            Command.VFIO_USER_VERSION, request.pack() + p.encode_capabilities(ours)
        )
        version = p.vfio_user_version.parse(reply.payload, command=name)
        if version.major != p.VFIO_USER_MAJOR or version.minor > p.VFIO_USER_MINOR:
            raise VfioUserProtocolError(
                f"the server at {self.path} answered vfio-user {version.major}."
                f"{version.minor} to our {p.VFIO_USER_MAJOR}.{p.VFIO_USER_MINOR}: "
                "it speaks another protocol version",
                errno=E.EPROTO,
                ioctl=name,
                device=self.address,
            )
        caps = p.decode_capabilities(reply.payload[4:])

        def number(key: str, default: int, low: int = 1) -> int:
            value = caps.get(key, default)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise VfioUserProtocolError(
                    f"the server's {key} capability is {value!r}, not a number >= {low}",
                    errno=E.EPROTO,
                    ioctl=name,
                    device=self.address,
                )
            return value

        return ServerCapabilities(
            version.major,
            version.minor,
            min(number("max_msg_fds", p.DEFAULT_MAX_MSG_FDS, 0), p.MAX_MSG_FDS_LIMIT),
            number("max_data_xfer_size", p.DEFAULT_MAX_DATA_XFER_SIZE),
            number("max_dma_maps", p.DEFAULT_MAX_DMA_MAPS, 0),
            number("pgsizes", p.DEFAULT_PGSIZES),
        )

    def fileno(self) -> int:
        return self._fd

    @property
    def closed(self) -> bool:
        return self._fd < 0

    # -- messages -------------------------------------------------------------------

    def _check_usable(self, name: str) -> None:
        if self._fd < 0:
            raise ClosedError(
                f"{name}: the vfio-user connection to {self.path} is closed",
                ioctl=name,
                device=self.address,
            )
        if self._broken is not None:
            raise VfioUserDisconnectedError(
                f"{name}: {self._broken}",
                errno=self._broken.errno or E.ECONNRESET,
                ioctl=name,
                device=self.address,
            )

    def _request(
        self,
        command: Command,
        payload: bytes | bytearray = b"",
        fds: list[int] | tuple[int, ...] = (),
    ) -> Message:
        """Send one command and wait for its reply; the reply (its fds are the caller's)."""
        name = command.name
        self._check_usable(name)
        with self._send_lock:
            msg_id = self._next_id
            self._next_id = (msg_id + 1) & 0xFFFF
            self._pending.add(msg_id)
            try:
                p.send_message(self._sock, msg_id, command, payload, fds=fds)
            except VfioUserDisconnectedError as err:
                self._pending.discard(msg_id)
                raise self._disconnected(name, err) from err
            except OSError as err:
                self._pending.discard(msg_id)
                if isinstance(err, TimeoutError):  # the server stopped reading
                    # Part of the message may have gone: the framing is lost.
                    self._broken = VfioUserDisconnectedError(
                        f"the vfio-user server at {self.path} stopped reading our messages",
                        errno=E.ETIMEDOUT,
                        device=self.address,
                    )
                    raise self._timeout(name) from err
                raise
        try:
            reply = self._await(msg_id, name)
        finally:
            self._pending.discard(msg_id)
        if reply.command != command:
            p.close_fds(reply.fds)
            raise VfioUserProtocolError(
                f"the server answered {name} (id {msg_id}) with a "
                f"{p.command_name(reply.command)} reply",
                errno=E.EPROTO,
                ioctl=name,
                device=self.address,
            )
        if reply.header.flags & _ERROR:
            p.close_fds(reply.fds)
            code = reply.header.error or E.EIO
            raise VfioUserRemoteError(
                f"{name} on {self.address} failed in the server: {os.strerror(code)} "
                f"(errno {code})",
                errno=code,
                ioctl=name,
                device=self.address,
            )
        return reply

    def _await(self, msg_id: int, name: str) -> Message:
        """Read messages until ``msg_id``'s reply; serve the server's requests meanwhile."""
        deadline = time.monotonic() + self.timeout
        poller = self._poller
        while True:
            with self._recv_lock:
                reply = self._replies.pop(msg_id, None)
                if reply is not None:
                    return reply
                self._check_usable(name)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self._timeout(name)
                try:
                    if not poller.poll(left * 1000):
                        continue
                except InterruptedError:
                    continue
                message = self._receive(name)
                header = message.header
                if header.flags & _TYPE == _REPLY and header.msg_id == msg_id:
                    return message
                self._dispatch(message)

    def _receive(self, name: str) -> Message:
        """One message (the receive lock held); a broken stream ends the connection."""
        limit = p.HEADER_SIZE + _DMA_ACCESS.size + MAX_DATA_XFER_SIZE + 4096
        try:
            return p.receive_message(self._sock, limit)
        except VfioUserDisconnectedError as err:
            raise self._disconnected(name, err) from err
        except VfioUserProtocolError as err:
            # The stream has lost its framing: nothing after this can be trusted.
            self._broken = VfioUserDisconnectedError(
                f"the vfio-user server at {self.path} sent a malformed message ({err})",
                errno=E.EPROTO,
                device=self.address,
            )
            raise
        except TimeoutError as err:  # the server stopped in the middle of a message
            self._broken = VfioUserDisconnectedError(
                f"the vfio-user server at {self.path} stopped in the middle of a message",
                errno=E.ETIMEDOUT,
                device=self.address,
            )
            raise self._timeout(name) from err

    def _dispatch(self, message: Message) -> None:
        """A message that is not the reply being awaited: a request, or another's reply."""
        header = message.header
        if header.is_reply:
            if header.msg_id in self._pending:
                self._replies[header.msg_id] = message
            else:  # a reply that came after its caller timed out
                p.close_fds(message.fds)
            return
        p.close_fds(message.fds)  # no server request of the spec carries fds
        try:
            reply = self._serve(message)
        except VfioUserError as err:
            reply, error = b"", err.errno or E.EINVAL
        else:
            error = 0
        if header.no_reply:
            return
        try:
            with self._send_lock:
                if error:
                    p.send_error(self._sock, header, error)
                else:
                    p.send_reply(self._sock, header, reply)
        except VfioUserDisconnectedError as err:
            self._disconnected(p.command_name(header.command), err)  # the next call says so

    def _disconnected(self, name: str, err: VfioUserError) -> VfioUserDisconnectedError:
        if self._broken is None:
            self._broken = VfioUserDisconnectedError(
                f"the vfio-user server at {self.path} closed the connection ({err}): the "
                "device is gone; open it again once the server is back",
                errno=err.errno or E.ECONNRESET,
                device=self.address,
            )
        return VfioUserDisconnectedError(
            f"{name}: {self._broken}",
            errno=self._broken.errno or E.ECONNRESET,
            ioctl=name,
            device=self.address,
        )

    def _timeout(self, name: str) -> VfioUserTimeoutError:
        return VfioUserTimeoutError(
            f"{name}: the vfio-user server at {self.path} did not answer within "
            f"{self.timeout} s (is it stuck? VfioUserClient(timeout=...) waits longer)",
            errno=E.ETIMEDOUT,
            ioctl=name,
            device=self.address,
        )

    # -- device ---------------------------------------------------------------------

    def device_info(self) -> DeviceInfo:
        name = "VFIO_USER_DEVICE_GET_INFO"
        request = p.vfio_user_device_info(argsz=ctypes.sizeof(p.vfio_user_device_info))
        reply = self._request(Command.VFIO_USER_DEVICE_GET_INFO, request.pack())
        p.close_fds(reply.fds)
        info = p.vfio_user_device_info.parse(reply.payload, command=name)
        return DeviceInfo(v.VfioDeviceFlag(info.flags), info.num_regions, info.num_irqs)

    def region_info(self, index: int) -> RegionInfo:
        name = "VFIO_USER_DEVICE_GET_REGION_INFO"
        argsz = _REGION_INFO_ARGSZ
        for _ in range(2):  # a second time when the capabilities need more room
            request = v.vfio_region_info(argsz=argsz, index=index)
            reply = self._request(Command.VFIO_USER_DEVICE_GET_REGION_INFO, bytes(request))
            head = p.parse_kernel_struct(v.vfio_region_info, reply.payload, command=name)
            if head.argsz <= argsz or head.argsz <= len(reply.payload):
                break
            p.close_fds(reply.fds)
            argsz = head.argsz
        try:
            info = _ioctl.region_info_from_buffer(index, bytes(reply.payload))
        except ValueError as err:  # a capability shorter than its struct
            p.close_fds(reply.fds)
            raise VfioUserProtocolError(
                f"{name} reply for region {index} has a malformed capability chain: {err}",
                errno=E.EPROTO,
                ioctl=name,
                device=self.address,
            ) from err
        fds = list(reply.fds)
        why = ""
        if info.mmap_allowed and fds:
            why = _unsafe_region_fd(info, fds[0])
            if not why:
                old = self._region_fds.pop(index, None)
                if old is not None:
                    p.close_fds([old])
                self._region_fds[index] = fds.pop(0)
        elif info.mmap_allowed:
            why = "the server sent no fd to map"
        if why:  # messages only
            if fds:  # a server that meant to share: say why we do not
                log.warning("region %d of %s is not mapped: %s", index, self.address, why)
            flags = info.flags & ~v.VfioRegionInfoFlag.VFIO_REGION_INFO_FLAG_MMAP
            info = dataclasses.replace(
                info, flags=v.VfioRegionInfoFlag(flags), no_mmap_reason=f"the server's fd: {why}"
            )
        p.close_fds(fds)
        return info

    def mmap_fd(self, info: RegionInfo) -> int:
        fd = self._region_fds.get(info.index, -1)
        if fd < 0:
            raise UnsupportedError(
                f"region {info.index} of {self.address}: the server gave no fd to map",
                device=self.address,
            )
        return fd

    def region_fd(self, info: RegionInfo) -> int:
        return -1  # a region is reached by VFIO_USER_REGION_READ/WRITE messages

    def region_read(self, info: RegionInfo, offset: int, length: int) -> bytes:
        chunk = self._chunk
        if length <= chunk:
            return self._read_chunk(info.index, offset, length)
        parts = [
            self._read_chunk(info.index, at, min(chunk, offset + length - at))
            for at in range(offset, offset + length, chunk)
        ]
        return b"".join(parts)

    def _read_chunk(self, index: int, offset: int, count: int) -> bytes:
        reply = self._request(_READ, _ACCESS.pack(offset, index, count))
        p.close_fds(reply.fds)
        payload = reply.payload
        if len(payload) < _ACCESS.size:
            raise self._short(_READ.name, len(payload))
        r_offset, r_region, r_count = _ACCESS.unpack_from(payload)
        data = payload[_ACCESS.size : _ACCESS.size + r_count]
        if (r_offset, r_region, r_count) != (offset, index, count) or len(data) != count:
            raise VfioUserProtocolError(
                f"VFIO_USER_REGION_READ of {count} bytes at {offset:#x} of region {index} "
                f"was answered with {len(data)} bytes at {r_offset:#x} of region {r_region}",
                errno=E.EIO,
                ioctl=_READ.name,
                device=self.address,
            )
        return data

    def region_write(self, info: RegionInfo, offset: int, data: bytes) -> int:
        chunk = self._chunk
        done = 0
        while done < len(data):
            piece = data[done : done + chunk]
            at = offset + done
            reply = self._request(_WRITE, _ACCESS.pack(at, info.index, len(piece)) + piece)
            p.close_fds(reply.fds)
            if len(reply.payload) < _ACCESS.size:
                raise self._short(_WRITE.name, len(reply.payload))
            if _ACCESS.unpack_from(reply.payload)[2] != len(piece):
                break  # a short write; Region says how short
            done += len(piece)
        return done

    def _short(self, name: str, got: int) -> VfioUserProtocolError:
        return VfioUserProtocolError(
            f"{name} reply is {got} bytes, shorter than its {_ACCESS.size}-byte header",
            errno=E.EPROTO,
            ioctl=name,
            device=self.address,
        )

    def irq_info(self, index: int) -> IrqInfo:
        name = "VFIO_USER_DEVICE_GET_IRQ_INFO"
        request = v.vfio_irq_info(argsz=ctypes.sizeof(v.vfio_irq_info), index=index)
        reply = self._request(Command.VFIO_USER_DEVICE_GET_IRQ_INFO, bytes(request))
        p.close_fds(reply.fds)
        info = p.parse_kernel_struct(v.vfio_irq_info, reply.payload, command=name)
        return IrqInfo(index, v.VfioIrqInfoFlag(info.flags), info.count)

    def set_irqs(
        self,
        index: int,
        start: int,
        flags: int,
        eventfds: list[int] | None = None,
        count: int | None = None,
    ) -> None:
        """``VFIO_USER_DEVICE_SET_IRQS``; eventfds go as SCM_RIGHTS, as many per message
        as the server takes (its ``max_msg_fds``)."""
        size = ctypes.sizeof(v.vfio_irq_set)
        command = Command.VFIO_USER_DEVICE_SET_IRQS
        if not eventfds:
            n = 0 if count is None else count
            request = v.vfio_irq_set(argsz=size, flags=flags, index=index, start=start, count=n)
            p.close_fds(self._request(command, bytes(request)).fds)
            return
        step = max(1, self.server.max_msg_fds)
        for first in range(0, len(eventfds), step):
            fds = eventfds[first : first + step]
            request = v.vfio_irq_set(
                argsz=size, flags=flags, index=index, start=start + first, count=len(fds)
            )
            p.close_fds(self._request(command, bytes(request), fds).fds)

    def reset(self) -> None:
        p.close_fds(self._request(Command.VFIO_USER_DEVICE_RESET).fds)

    def hot_reset_info(self) -> tuple[DependentDevice, ...]:
        raise UnsupportedError(
            f"{self.address} is a vfio-user device: it has no PCI bus to reset "
            "(use reset(), VFIO_USER_DEVICE_RESET)",
            errno=E.ENOTTY,
            device=self.address,
        )

    def hot_reset(self, group_fds: list[int]) -> None:
        self.hot_reset_info()

    # -- DMA --------------------------------------------------------------------------

    def dma_map(self, iova: int, size: int, vaddr: int, fd: int = -1, fd_offset: int = 0) -> None:
        """``VFIO_USER_DMA_MAP``: our memory at ``vaddr`` is the device's at ``iova``.

        With ``fd`` (the memory is ``fd`` mapped at ``fd_offset``) the server maps it;
        without, it asks for the bytes with DMA_READ/WRITE, served from ``vaddr``. An
        fd the server would refuse to map (`pyvfio._mem.unsafe_to_map`: not a memfd
        sealed against shrinking, too small) is not sent: messages then.
        """
        if fd >= 0 and (why := _mem.unsafe_to_map(fd, fd_offset, size)):
            # The server would not map it either (it is the same rule): by messages.
            log.info("DMA map at iova %#x goes by DMA_READ/WRITE: the fd %s", iova, why)
            fd = -1
        flags = p.DmaMapFlag.VFIO_USER_F_DMA_REGION_READ | p.DmaMapFlag.VFIO_USER_F_DMA_REGION_WRITE
        request = p.vfio_user_dma_map(
            argsz=ctypes.sizeof(p.vfio_user_dma_map),
            flags=flags,
            offset=fd_offset if fd >= 0 else 0,
            addr=iova,
            size=size,
        )
        window = _DmaWindow(iova, size, vaddr, fd >= 0)
        # Listed before the request: the server may DMA as soon as it has the map.
        self._add_window(window)
        try:
            reply = self._request(
                Command.VFIO_USER_DMA_MAP, request.pack(), [fd] if fd >= 0 else []
            )
        except BaseException:
            self._remove_window(iova)
            raise
        p.close_fds(reply.fds)

    def dma_unmap(self, iova: int, size: int) -> None:
        """``VFIO_USER_DMA_UNMAP``; a no-op once the server is gone (it dropped them)."""
        if iova not in self._windows:
            raise ValueError(f"{self.address} has no DMA mapping at iova {iova:#x}")
        try:
            if self._broken is None and self._fd >= 0:
                request = p.vfio_user_dma_unmap(
                    argsz=ctypes.sizeof(p.vfio_user_dma_unmap), flags=0, addr=iova, size=size
                )
                with contextlib.suppress(VfioUserDisconnectedError):
                    p.close_fds(self._request(Command.VFIO_USER_DMA_UNMAP, request.pack()).fds)
        finally:
            # Even when the server refused: the caller frees the memory next, and a
            # later DMA request for it must meet EFAULT, not freed memory.
            self._remove_window(iova)

    @property
    def dma_windows(self) -> int:
        return len(self._windows)

    def _add_window(self, window: _DmaWindow) -> None:
        with self._dma_lock:
            self._windows[window.iova] = window
            bisect.insort(self._window_starts, window.iova)
            served = any(not w.shared for w in self._windows.values())
        if served:
            self._start_servicer()

    def _remove_window(self, iova: int) -> None:
        with self._dma_lock:
            if self._windows.pop(iova, None) is not None:
                self._window_starts.remove(iova)
            served = any(not w.shared for w in self._windows.values())
        if not served:
            self._stop_servicer()

    def _window_for(self, iova: int, count: int, name: str) -> _DmaWindow:
        at = bisect.bisect_right(self._window_starts, iova) - 1
        window = self._windows.get(self._window_starts[at]) if at >= 0 else None
        if window is None or iova + count > window.iova + window.size:
            raise VfioUserProtocolError(
                f"{name} of {count} bytes at {iova:#x} is outside the DMA mappings",
                errno=E.EFAULT,
                ioctl=name,
                device=self.address,
            )
        return window

    def _serve(self, message: Message) -> bytes:
        """The reply payload to the server's DMA_READ or DMA_WRITE (the spec's only two)."""
        command = message.command
        name = p.command_name(command)
        if command not in (Command.VFIO_USER_DMA_READ, Command.VFIO_USER_DMA_WRITE):
            raise VfioUserProtocolError(
                f"the server sent {name}, which a client does not serve",
                errno=E.ENOSYS,
                ioctl=name,
            )
        if len(message.payload) < _DMA_ACCESS.size:
            raise VfioUserProtocolError(f"{name} payload is short", errno=E.EINVAL, ioctl=name)
        iova, count = _DMA_ACCESS.unpack_from(message.payload)
        if count > MAX_DATA_XFER_SIZE:
            raise VfioUserProtocolError(
                f"{name} of {count} bytes exceeds our max_data_xfer_size", errno=E.E2BIG, ioctl=name
            )
        with self._dma_lock:
            window = self._window_for(iova, count, name)
            self.dma_requests_served += 1
            address = window.vaddr + (iova - window.iova)
            if command == Command.VFIO_USER_DMA_READ:
                return _DMA_ACCESS.pack(iova, count) + ctypes.string_at(address, count)
            data = message.payload[_DMA_ACCESS.size : _DMA_ACCESS.size + count]
            if len(data) != count:
                raise VfioUserProtocolError(
                    f"{name} carries {len(data)} of its {count} bytes", errno=E.EINVAL, ioctl=name
                )
            ctypes.memmove(address, data, count)
            return _DMA_ACCESS.pack(iova, count)

    # The servicer: while the server may DMA through messages, a thread answers its
    # requests whenever no call is waiting on the socket (one that is serves them).

    def _start_servicer(self) -> None:
        if self._servicer is not None or self._fd < 0:
            return
        self._stopping = False
        self._wake = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._servicer = threading.Thread(
            target=self._serve_loop, name=f"vfio-user DMA {self.path}", daemon=True
        )
        self._servicer.start()

    def _stop_servicer(self) -> None:
        thread, self._servicer = self._servicer, None
        if thread is None:
            return
        self._stopping = True
        with contextlib.suppress(OSError):
            os.eventfd_write(self._wake, 1)
        if thread is not threading.current_thread():
            thread.join()
        wake, self._wake = self._wake, -1
        with contextlib.suppress(OSError):
            os.close(wake)

    def _serve_loop(self) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        poller.register(self._wake, select.POLLIN)
        now = select.poll()
        now.register(self._fd, select.POLLIN)
        while not self._stopping:
            try:
                events = poller.poll()
            except InterruptedError:
                continue
            if self._stopping or any(fd == self._wake for fd, _ in events):
                return
            with self._recv_lock:
                if self._stopping or self._broken is not None or self._fd < 0:
                    return
                if not now.poll(0):  # a waiting call read it first
                    continue
                try:
                    message = self._receive("DMA service")
                except VfioError:
                    return  # recorded in _broken: the next call reports it
                self._dispatch(message)

    # -- lifetime -------------------------------------------------------------------

    def close(self) -> None:
        """Close the socket and the region fds (idempotent); the server drops our DMA
        mappings and interrupt fds when it sees us go (spec: "Client Disconnection")."""
        if self._fd < 0:
            return
        try:
            self._stop_servicer()
        finally:
            self._fd = -1
            with self._dma_lock:
                self._windows.clear()
                self._window_starts.clear()
            self._finalizer()

    def __enter__(self) -> VfioUserClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = [
    "DEFAULT_TIMEOUT",
    "SCHEME",
    "ServerCapabilities",
    "VfioUserClient",
    "is_vfio_user",
    "socket_path",
]
