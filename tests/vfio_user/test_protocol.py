"""The vfio-user wire format: layouts against the spec's tables, whole messages over a
socketpair with fds, and every way a message can be broken."""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct
import threading
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyvfio.errors import VfioUserDisconnectedError, VfioUserError, VfioUserProtocolError
from pyvfio.vfio_user.protocol import (
    HEADER_SIZE,
    MAX_MSG_FDS_LIMIT,
    Command,
    Header,
    MessageFlag,
    WireStruct,
    command_name,
    decode_capabilities,
    encode_capabilities,
    receive_message,
    send_error,
    send_message,
    send_reply,
    vfio_user_device_info,
    vfio_user_dma_map,
    vfio_user_dma_region_access,
    vfio_user_dma_unmap,
    vfio_user_region_access,
    vfio_user_version,
    vfio_user_wr_one,
)


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    yield a, b
    a.close()
    b.close()


def open_fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_command_ids_are_the_specs() -> None:
    spec = {
        "VFIO_USER_VERSION": 1, "VFIO_USER_DMA_MAP": 2, "VFIO_USER_DMA_UNMAP": 3,
        "VFIO_USER_DEVICE_GET_INFO": 4, "VFIO_USER_DEVICE_GET_REGION_INFO": 5,
        "VFIO_USER_DEVICE_GET_REGION_IO_FDS": 6, "VFIO_USER_DEVICE_GET_IRQ_INFO": 7,
        "VFIO_USER_DEVICE_SET_IRQS": 8, "VFIO_USER_REGION_READ": 9, "VFIO_USER_REGION_WRITE": 10,
        "VFIO_USER_DMA_READ": 11, "VFIO_USER_DMA_WRITE": 12, "VFIO_USER_DEVICE_RESET": 13,
        "VFIO_USER_REGION_WRITE_MULTI": 15, "VFIO_USER_DEVICE_FEATURE": 16,
        "VFIO_USER_MIG_DATA_READ": 17, "VFIO_USER_MIG_DATA_WRITE": 18,
    }  # fmt: skip
    assert {c.name: c.value for c in Command} == spec
    assert command_name(9) == "VFIO_USER_REGION_READ"
    assert command_name(99) == "command 99"


@pytest.mark.parametrize(
    ("struct_type", "layout"),
    [
        (vfio_user_version, {"major": 0, "minor": 2}),
        (vfio_user_dma_map, {"argsz": 0, "flags": 4, "offset": 8, "addr": 16, "size": 24}),
        (vfio_user_dma_unmap, {"argsz": 0, "flags": 4, "addr": 8, "size": 16}),
        (vfio_user_device_info, {"argsz": 0, "flags": 4, "num_regions": 8, "num_irqs": 12}),
        (vfio_user_region_access, {"offset": 0, "region": 8, "count": 12}),
        (vfio_user_dma_region_access, {"addr": 0, "count": 8}),
        (vfio_user_wr_one, {"offset": 0, "region": 8, "count": 12, "data": 16}),
    ],
)
def test_payload_layouts_are_the_specs_tables(
    struct_type: type[WireStruct], layout: dict[str, int]
) -> None:
    assert {name: getattr(struct_type, name).offset for name in layout} == layout
    sizes = {vfio_user_version: 4, vfio_user_dma_map: 32, vfio_user_dma_unmap: 24,
             vfio_user_device_info: 16, vfio_user_region_access: 16,
             vfio_user_dma_region_access: 16, vfio_user_wr_one: 24}  # fmt: skip
    assert ctypes.sizeof(struct_type) == sizes[struct_type]


@given(
    st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1),
)  # fmt: skip
def test_header_round_trip(msg_id: int, command: int, size: int, flags: int, error: int) -> None:
    header = Header(msg_id, command, size, flags, error)
    raw = header.pack()
    assert len(raw) == HEADER_SIZE
    assert raw == struct.pack("<HHIII", msg_id, command, size, flags, error)
    assert Header.unpack(raw) == header


def test_header_flags() -> None:
    reply = Header(1, 2, 16, MessageFlag.VFIO_USER_REPLY | MessageFlag.VFIO_USER_ERROR, 22)
    assert reply.is_reply and reply.is_error and not reply.is_command
    command = Header(1, 2, 16, MessageFlag.VFIO_USER_NO_REPLY)
    assert command.is_command and command.no_reply and not command.is_error
    assert str(reply) == "VFIO_USER_DMA_MAP reply id 1 size 16 error 22"
    with pytest.raises(VfioUserProtocolError, match="16 bytes, got 3"):
        Header.unpack(b"abc")


def test_message_with_fds_round_trip(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    r, w = os.pipe()
    try:
        request = vfio_user_dma_map(argsz=32, flags=3, offset=0, addr=0x10000, size=0x2000)
        sent = send_message(a, 0x1_0007, Command.VFIO_USER_DMA_MAP, request.pack(), fds=[r, w])
        assert sent.msg_id == 7 and sent.size == 48  # ids wrap at 16 bits
        message = receive_message(b, 4096)
        assert message.header == sent
        assert vfio_user_dma_map.parse(message.payload).addr == 0x10000
        assert len(message.fds) == 2 and set(message.fds).isdisjoint({r, w})
        os.write(message.fds[1], b"through the passed fd")  # really the pipe's write end
        assert os.read(r, 100) == b"through the passed fd"
        for fd in message.fds:
            os.close(fd)
    finally:
        os.close(r)
        os.close(w)


def test_reply_and_error_reply(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    request = send_message(a, 5, Command.VFIO_USER_REGION_READ, b"x" * 16)
    send_reply(b, request, b"y" * 20)
    reply = receive_message(a, 4096)
    assert reply.header.is_reply and reply.header.msg_id == 5 and reply.payload == b"y" * 20
    send_error(b, request, errno.EFAULT)
    error = receive_message(a, 4096)
    assert error.header.is_error and error.header.error == errno.EFAULT and error.payload == b""


def test_large_message_arrives_whole(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    payload = os.urandom(1 << 20)
    a.setblocking(True)
    sender = threading.Thread(
        target=send_message, args=(a, 1, Command.VFIO_USER_REGION_WRITE, payload)
    )
    sender.start()
    message = receive_message(b, (1 << 20) + HEADER_SIZE)
    sender.join()
    assert message.payload == payload


def test_peer_closing_between_and_in_messages(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    a.sendall(Header(1, 4, 32).pack() + b"12345")  # promises 16 payload bytes, sends 5
    a.shutdown(socket.SHUT_WR)
    with pytest.raises(VfioUserDisconnectedError, match="5 bytes into the 16-byte payload"):
        receive_message(b, 4096)
    with pytest.raises(VfioUserDisconnectedError, match="closed the socket"):
        receive_message(b, 4096)


def test_truncated_header(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    a.sendall(b"\x01\x00\x04")
    a.shutdown(socket.SHUT_WR)
    with pytest.raises(VfioUserDisconnectedError, match="after 3 bytes of a header"):
        receive_message(b, 4096)


def test_size_below_header_and_above_limit(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    a.sendall(Header(3, 4, 8).pack())
    with pytest.raises(VfioUserProtocolError) as small:
        receive_message(b, 4096)
    assert small.value.errno == errno.EINVAL and small.value.header == Header(3, 4, 8)
    a.sendall(Header(4, 10, 1 << 30).pack())
    with pytest.raises(VfioUserProtocolError, match="exceeds the 4096-byte limit") as big:
        receive_message(b, 4096)
    assert big.value.errno == errno.E2BIG and isinstance(big.value, VfioUserError)


def test_too_many_fds_are_all_closed(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    fds = [os.open("/dev/null", os.O_RDONLY) for _ in range(MAX_MSG_FDS_LIMIT + 4)]
    before = open_fd_count()
    try:
        send_message(a, 1, Command.VFIO_USER_DMA_MAP, b"z" * 32, fds=fds)
        with pytest.raises(VfioUserProtocolError, match="more than 16 file descriptors"):
            receive_message(b, 4096)
        assert open_fd_count() == before  # none of the received copies leaked
    finally:
        for fd in fds:
            os.close(fd)


def test_fds_of_a_rejected_message_are_closed(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    r, w = os.pipe()
    before = open_fd_count()
    send_message(a, 1, Command.VFIO_USER_DMA_MAP, b"z" * 5000, fds=[r])
    with pytest.raises(VfioUserProtocolError):
        receive_message(b, 4096)
    assert open_fd_count() == before
    os.close(r)
    os.close(w)


def test_send_to_a_closed_peer(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    b.close()
    with pytest.raises(VfioUserDisconnectedError, match="while VFIO_USER_VERSION was sent"):
        send_message(a, 1, Command.VFIO_USER_VERSION, b"\0" * 4)


def test_capabilities_json() -> None:
    data = encode_capabilities({"max_msg_fds": 8, "max_data_xfer_size": 1 << 20})
    assert data.endswith(b"\0") and b'"capabilities"' in data
    assert decode_capabilities(data) == {"max_msg_fds": 8, "max_data_xfer_size": 1 << 20}
    assert decode_capabilities(b"") == {}
    assert decode_capabilities(b"{}\0") == {}
    for bad, reason in (
        (b'{"capabilities": {}}', "NUL-terminated"),
        (b"{nope\0", "not JSON"),
        (b"\xff\xfe\0", "not JSON"),
        (b"[1, 2]\0", "not a JSON object"),
        (b'{"capabilities": 3}\0', "not an object"),
    ):
        with pytest.raises(VfioUserProtocolError, match=reason):
            decode_capabilities(bad)


def test_short_payload_names_the_struct() -> None:
    with pytest.raises(VfioUserProtocolError, match="vfio_user_dma_map needs 32") as info:
        vfio_user_dma_map.parse(b"\0" * 31, command="VFIO_USER_DMA_MAP")
    assert info.value.errno == errno.EINVAL
