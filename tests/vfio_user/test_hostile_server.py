"""A hostile vfio-user server against pyvfio's client: what it must never achieve.

A server hands the client fds to map (a region's shared memory) and receives the
client's (DMA memory). A mapping of a file the other side can truncate is a SIGBUS
waiting for the next access, so the client maps a server's fd only when it is a memfd
sealed against shrinking that holds what the region info says (anything else: the
region is reached by messages, and ``map()`` says why), and the memfds it hands out
are sealed against resizing. The server here is `rawserver.FakeDevice`, lying as each
case asks; where a failure would kill the process, the client runs in a child.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from rawserver import FakeDevice, FakeRegion, Peer, answer_device_info, answer_version, receive

import pyvfio
from pyvfio.errors import UnsupportedError
from pyvfio.vfio_user import protocol as p
from pyvfio.vfio_user.protocol import Command

PAGE = 4096
SIZE = 4 * PAGE  # BAR0 of the fake device
HANG_GUARD = 60.0  # seconds: a bound for a broken test, not a measurement


def memfd(size: int, seals: int = 0) -> int:
    fd = os.memfd_create("hostile", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    os.ftruncate(fd, size)
    if seals:
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
    return fd


def sealed(size: int) -> Callable[[], int]:
    return lambda: memfd(size, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW)


def tmpfile() -> int:
    fd = os.open("/tmp", os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC)
    os.ftruncate(fd, SIZE)
    return fd


def shm_file() -> int:
    fd = os.open("/dev/shm", os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC)
    os.ftruncate(fd, SIZE)
    return fd


def pipe() -> int:
    r, w = os.pipe()
    os.close(w)
    return r


# (what the server lies about, the region it describes, what the refusal says)
UNSAFE_REGIONS = [
    ("unsealed memfd", FakeRegion(SIZE, lambda: memfd(SIZE)), "not sealed against shrinking"),
    # A file on tmpfs (often /tmp) is a shmem file: it answers F_GET_SEALS with no shrink
    # seal; on a disk file system the seal query itself fails. Refused either way.
    ("regular file", FakeRegion(SIZE, tmpfile), "not a memfd|not sealed against shrinking"),
    ("regular file on tmpfs", FakeRegion(SIZE, shm_file), "not sealed against shrinking"),
    ("pipe", FakeRegion(SIZE, pipe), "not a memfd"),
    ("sealed memfd smaller than the region", FakeRegion(SIZE, sealed(PAGE)), "holds 0x1000"),
    ("region offset past the memfd's end",
     FakeRegion(SIZE, sealed(SIZE), offset=1 << 40), "holds 0x4000"),
    ("sparse area leaving the region",
     FakeRegion(SIZE, sealed(1 << 30), sparse=[(0, 1 << 30)]), "leaves the region"),
    ("sparse area not page-aligned",
     FakeRegion(SIZE, sealed(SIZE), sparse=[(100, PAGE)]), "not page-aligned"),
    ("2 TiB region of a sparse sealed memfd",  # would take our address space
     FakeRegion(2 << 40, sealed(2 << 40)), "more than the 1 TiB"),
]  # fmt: skip


@pytest.fixture
def sock_path(tmp_path: Path) -> Path:
    return tmp_path / "hostile.sock"


@pytest.fixture
def peers() -> Iterator[list[Peer]]:
    started: list[Peer] = []
    yield started
    for peer in started:
        peer.finish()


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize(
    ("region", "refusal"), [c[1:] for c in UNSAFE_REGIONS], ids=[c[0] for c in UNSAFE_REGIONS]
)
def test_a_region_fd_that_could_shrink_or_lies_is_not_mapped(
    sock_path: Path, region: FakeRegion, refusal: str
) -> None:
    region.memory[8:12] = (0xFEEDC0DE).to_bytes(4, "little")
    server = FakeDevice({0: region})
    before = open_fds()
    peer = Peer(sock_path, server)
    with pyvfio.open(f"vfio-user:{sock_path}") as dev:
        bar = dev.bar(0)
        assert not bar.info.mmap_allowed
        # The device still works: its registers go by message.
        assert bar.read32(8) == 0xFEEDC0DE
        bar.write32(12, 0x1234)
        assert region.memory[12:16] == (0x1234).to_bytes(4, "little")
        assert not bar.mapped and Command.VFIO_USER_REGION_READ in server.seen
        # Asked for the mapping, it says which region and why not.
        with pytest.raises(UnsupportedError, match=f"BAR0 of .* cannot be mmap'd .*(?:{refusal})"):
            bar.map()
    peer.finish()  # the peer's sockets closed too
    assert open_fds() == before  # the refused fd was closed, not kept


def test_a_sealed_region_fd_of_the_right_size_is_mapped(sock_path: Path, peers: list[Peer]) -> None:
    """The control: the same server handing out an fd it cannot shrink is mapped."""
    fd = memfd(SIZE, fcntl.F_SEAL_SHRINK)
    try:
        os.pwrite(fd, (0xFEEDC0DE).to_bytes(4, "little"), 8)
        server = FakeDevice({0: FakeRegion(SIZE, lambda: os.dup(fd))})
        peers.append(Peer(sock_path, server))
        with pyvfio.open(f"vfio-user:{sock_path}") as dev:
            bar = dev.bar(0)
            assert bar.read32(8) == 0xFEEDC0DE and bar.mapped
            assert Command.VFIO_USER_REGION_READ not in server.seen  # a load, no message
    finally:
        os.close(fd)


# The client in a child process: on the old behaviour it dies of SIGBUS, and the test
# should fail, not the test run.
CLIENT = textwrap.dedent(
    """
    import sys
    import pyvfio

    with pyvfio.open("vfio-user:" + sys.argv[1]) as dev:
        bar = dev.bar(0)
        first = bar.read32(8)
        dev._transport.reset()  # the server truncates its fd now
        again = bar.read32(8)
        print(f"{first:#x} {again:#x} mapped={bar.mapped}", flush=True)
    """
)


def test_a_server_that_truncates_its_region_fd_cannot_kill_the_client(
    sock_path: Path, peers: list[Peer]
) -> None:
    fd = memfd(SIZE)  # the server keeps its end, to truncate it
    try:
        region = FakeRegion(SIZE, lambda: os.dup(fd))
        region.memory[8:12] = (0xFEEDC0DE).to_bytes(4, "little")
        os.pwrite(fd, bytes(region.memory), 0)
        server = FakeDevice({0: region}, on_reset=lambda: os.ftruncate(fd, 0))
        peers.append(Peer(sock_path, server))
        child = subprocess.run(
            [sys.executable, "-c", CLIENT, str(sock_path)],
            capture_output=True,
            text=True,
            timeout=HANG_GUARD,
            check=False,
        )
    finally:
        os.close(fd)
    assert child.returncode == 0, f"the client died ({child.returncode}): {child.stderr}"
    assert child.stdout.split() == ["0xfeedc0de", "0xfeedc0de", "mapped=False"]
    assert Command.VFIO_USER_DEVICE_RESET in server.seen


def test_the_clients_dma_memfd_cannot_be_resized_by_the_server(
    sock_path: Path, peers: list[Peer]
) -> None:
    """The memory a vfio-user Iommu shares is sealed: a server holding its fd can
    neither truncate it under the client's mapping nor grow it, nor add a seal
    (F_SEAL_WRITE would make the client's own stores fault)."""
    tried: dict[str, int] = {}
    done = threading.Event()

    def attempt(name: str, action: Callable[[], object]) -> None:
        try:
            action()
            tried[name] = 0
        except OSError as err:
            tried[name] = err.errno or -1

    def script(conn: socket.socket) -> None:
        answer_version(conn)
        answer_device_info(conn)
        msg = receive(conn)
        assert msg.command == Command.VFIO_USER_DMA_MAP and len(msg.fds) == 1
        fd = msg.fds[0]

        def shrink() -> None:
            # Had the shrink worked, the size is put back: the test should fail, not crash.
            os.ftruncate(fd, 0)
            os.ftruncate(fd, PAGE)

        attempt("shrink", shrink)
        attempt("grow", lambda: os.ftruncate(fd, 1 << 30))
        attempt("seal", lambda: fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE))
        os.close(fd)
        p.send_reply(conn, msg.header)
        done.set()
        while True:  # answer the unmap, then wait for the close
            try:
                msg = receive(conn)
            except Exception:
                return
            p.send_reply(conn, msg.header, msg.payload)

    peers.append(Peer(sock_path, script))
    with pyvfio.open(f"vfio-user:{sock_path}") as dev, dev.dma_alloc(PAGE) as buf:
        assert done.wait(HANG_GUARD)
        buf.write(b"still mine")  # no SIGBUS: the pages are all there
        assert buf.read(0, 10) == b"still mine"
    assert tried == {"shrink": errno.EPERM, "grow": errno.EPERM, "seal": errno.EPERM}
