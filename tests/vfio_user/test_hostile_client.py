"""A hostile vfio-user client against the server: what it must never achieve.

Whatever a client sends, the server must not crash (SIGBUS through memory it maps or
shares), hang (an interrupt fd that blocks, a client stalled in any state, a signal
it must obey) or bloat (commands queued while it waits, mappings, fds). The client is
`rawclient.RawClient`, sending what no VMM would. Where a failure would kill or wedge
the server, it runs as ``pyvfio serve`` in a child process and is watched from
outside: its exit status, and its memory and fds in /proc.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from rawclient import RawClient, fired, guest_ram, pending, served

from pyvfio._uapi.vfio import VfioIrqSetFlag
from pyvfio.drivers import edu as edu_driver
from pyvfio.errors import VfioUserDisconnectedError
from pyvfio.server import EduDevice, MmapArea, PciDevice
from pyvfio.server.dma import MAX_MAPPED, MAX_MAPPED_BYTES, DmaSpace
from pyvfio.server.edu import DMA_BUFFER_ADDR
from pyvfio.vfio_user.protocol import Command, Header, MessageFlag, vfio_user_dma_map

PAGE = 4096
MIB = 1 << 20
MSI = 1
TRIGGER_EVENTFD = (
    VfioIrqSetFlag.VFIO_IRQ_SET_DATA_EVENTFD | VfioIrqSetFlag.VFIO_IRQ_SET_ACTION_TRIGGER
)
HANG_GUARD = 30.0  # seconds: a bound so a wedged server fails the test, not a measurement


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def start_edu_dma(client: RawClient, ram: int, count: int = 16) -> None:
    """Start a DMA from client memory into the edu buffer; the server asks for the bytes
    with DMA_READ right after it answers the command write."""
    client.write64(edu_driver.REG_DMA_SRC, ram)
    client.write64(edu_driver.REG_DMA_DST, DMA_BUFFER_ADDR)
    client.write64(edu_driver.REG_DMA_COUNT, count)
    client.write32(edu_driver.REG_DMA_CMD, edu_driver.DMA_START)


def finish_edu_dma(client: RawClient) -> None:
    for _ in range(1000):  # region reads are served while the server waits for DMA
        if client.read32(edu_driver.REG_DMA_CMD) & edu_driver.DMA_START == 0:
            return
    raise AssertionError("the edu DMA never finished")


# ---- the server as a process ------------------------------------------------------------


@dataclass
class ServeProcess:
    """``pyvfio serve edu`` in a child: its socket, its log, its /proc entries."""

    proc: subprocess.Popen[str]
    path: Path

    def connect(self) -> RawClient:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(self.path))
        return RawClient(sock)

    def status_kib(self, field: str) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise AssertionError(f"no {field} in /proc/{self.proc.pid}/status")

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def mappings(self) -> int:
        return len(Path(f"/proc/{self.proc.pid}/maps").read_text().splitlines())

    def alive(self) -> bool:
        return self.proc.poll() is None

    def settles(self, condition: Callable[[], bool]) -> bool:
        """Whether ``condition`` comes true before the hang guard (a session's cleanup
        runs after the client sees the socket close)."""
        deadline = time.monotonic() + HANG_GUARD
        while not condition():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def stop(self, how: int = signal.SIGTERM) -> float:
        """Send ``how``; the seconds until the process was gone (the hang guard fails it)."""
        start = time.monotonic()
        self.proc.send_signal(how)
        code = self.proc.wait(timeout=HANG_GUARD)
        took = time.monotonic() - start
        assert code == 0, f"pyvfio serve exited {code}"
        return took


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., ServeProcess]]:
    started: list[ServeProcess] = []

    def start(*extra: str, sigint: object = signal.SIG_DFL) -> ServeProcess:
        path = tmp_path / f"edu{len(started)}.sock"
        log = (tmp_path / f"serve{len(started)}.log").open("w")  # a pipe nobody reads could fill

        def child_setup() -> None:
            signal.signal(signal.SIGINT, sigint)  # type: ignore[arg-type]

        proc = subprocess.Popen(
            [sys.executable, "-m", "pyvfio", "serve", "edu", "--socket", str(path), *extra],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            preexec_fn=child_setup,
        )
        log.close()
        server = ServeProcess(proc, path)
        started.append(server)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith(f"serving edu on {path}"), line
        return server

    yield start
    for server in started:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()
        assert server.proc.stdout is not None
        server.proc.stdout.close()


# ---- DMA memory the client could take away ----------------------------------------------


def _unsealed() -> tuple[int, int]:
    return guest_ram(2 * PAGE, seals=0), 0


def _too_small() -> tuple[int, int]:
    return guest_ram(PAGE), 0


def _past_the_end() -> tuple[int, int]:
    return guest_ram(2 * PAGE), PAGE


def _unaligned_offset() -> tuple[int, int]:
    return guest_ram(4 * PAGE), 100


def _tmpfile() -> tuple[int, int]:
    fd = os.open("/tmp", os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC)
    os.ftruncate(fd, 2 * PAGE)
    return fd, 0


def _pipe() -> tuple[int, int]:
    r, w = os.pipe()
    os.close(w)
    return r, 0


def _socket() -> tuple[int, int]:
    a, b = socket.socketpair()
    b.close()
    return a.detach(), 0


def _dev_zero() -> tuple[int, int]:
    return os.open("/dev/zero", os.O_RDWR | os.O_CLOEXEC), 0


UNSAFE_DMA_FDS = [
    ("unsealed memfd", _unsealed),
    ("sealed memfd smaller than the map", _too_small),
    ("map past the end of a sealed memfd", _past_the_end),
    ("offset not page-aligned", _unaligned_offset),
    ("regular file", _tmpfile),
    ("pipe", _pipe),
    ("socket", _socket),
    ("/dev/zero", _dev_zero),
]


@pytest.mark.parametrize("make", [c[1] for c in UNSAFE_DMA_FDS], ids=[c[0] for c in UNSAFE_DMA_FDS])
def test_dma_memory_the_client_could_take_away_is_reached_by_messages(
    make: Callable[[], tuple[int, int]],
) -> None:
    """The server maps a client's DMA fd only when it is a memfd sealed against
    shrinking that holds the whole range; any other is served by DMA_READ/WRITE, as
    if no fd had come, and not kept."""
    device = EduDevice()
    fd, offset = make()
    try:
        with served(device) as s:
            client = s.client
            client.negotiate()
            client.enable_bus_master()
            client.memory[0x100000] = bytearray(b"M" * 2 * PAGE)
            before = open_fds()
            reply = client.dma_map(0x100000, 2 * PAGE, fd=fd, offset=offset)
            assert not reply.header.is_error
            assert open_fds() == before  # the server's copy of the fd is closed
            start_edu_dma(client, 0x100000 + 8)
            finish_edu_dma(client)
            assert [h.command for h in client.dma_requests] == [Command.VFIO_USER_DMA_READ]
            assert bytes(device.buffer[:16]) == b"M" * 16
    finally:
        os.close(fd)
        device.close()


def test_mapped_client_memory_is_bounded_in_bytes() -> None:
    """A sparse sealed memfd costs the client nothing; mapping tens of TiB of it
    would leave the server no address space. Past MAX_MAPPED_BYTES: messages."""
    space = DmaSpace(lambda command, payload: b"", max_maps=16, max_xfer=MIB)
    fd = guest_ram(MAX_MAPPED_BYTES + PAGE)  # sparse: no memory behind it
    try:
        whole = vfio_user_dma_map(argsz=32, flags=3, offset=0, addr=0, size=MAX_MAPPED_BYTES + PAGE)
        assert space.map(whole, fd).mapping is None
        small = vfio_user_dma_map(argsz=32, flags=3, offset=0, addr=1 << 50, size=1 << 30)
        assert space.map(small, fd).mapping is not None
        rest = vfio_user_dma_map(
            argsz=32, flags=3, offset=0, addr=1 << 51, size=MAX_MAPPED_BYTES - (1 << 30) + PAGE
        )
        entry = space.map(rest, fd)
        assert entry.mapping is None and "16 TiB" in entry.unmapped_because
    finally:
        space.unmap_all()
        os.close(fd)


def test_a_client_shrinking_its_dma_memory_cannot_kill_the_server(
    serve: Callable[..., ServeProcess],
) -> None:
    server = serve()
    client = server.connect()
    client.negotiate()
    client.enable_bus_master()
    fd = guest_ram(2 * PAGE, seals=0)  # unsealed: the server must not map it
    try:
        client.memory[0x100000] = bytearray(b"M" * 2 * PAGE)
        assert not client.dma_map(0x100000, 2 * PAGE, fd=fd).header.is_error
        os.ftruncate(fd, 0)  # take the memory away under a mapping, were there one
        start_edu_dma(client, 0x100000 + PAGE)
        finish_edu_dma(client)
        assert client.read32(edu_driver.REG_ID) == 0x010000ED
        assert server.alive()
        assert [h.command for h in client.dma_requests] == [Command.VFIO_USER_DMA_READ]
    finally:
        os.close(fd)
    client.sock.close()
    server.stop()


class Shared(PciDevice):
    """A BAR2 of 16 KiB, all of it shared memory (a memfd the client maps)."""

    def __init__(self) -> None:
        super().__init__(vendor_id=0x1234, device_id=0x0002, name="shared")
        self.bar2 = self.add_bar(2, 4 * PAGE, mmap_areas=[MmapArea(0, 4 * PAGE)])


def test_the_servers_shared_memory_cannot_be_resized_by_the_client() -> None:
    """The BAR memfd outlives every session: were it truncated, the next access of
    this or any later session would kill the server. It is sealed to its size."""
    device = Shared()
    try:
        with served(device) as s:
            client = s.client
            client.negotiate()
            _, reply = client.region_info(2)
            assert len(reply.fds) == 1
            fd = reply.fds[0]

            def shrink() -> None:  # put back at once had it worked: fail, not crash
                os.ftruncate(fd, 0)
                os.ftruncate(fd, 4 * PAGE)

            actions: list[tuple[str, Callable[[], object]]] = [
                ("shrink", shrink),
                ("grow", lambda: os.ftruncate(fd, 1 << 30)),
                ("seal", lambda: fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE)),
            ]
            try:
                for name, action in actions:
                    with pytest.raises(PermissionError):
                        action()
                        pytest.fail(f"the client could {name} the BAR memfd")
                os.pwrite(fd, b"\x5a" * 4, 0x3FFC)  # sharing it is the point
            finally:
                os.close(fd)
            assert client.read(2, 0x3FFC, 4) == b"\x5a" * 4  # the server's view, intact
    finally:
        device.close()


# ---- interrupt fds ----------------------------------------------------------------------


def _pipe_write_end() -> int:
    r, w = os.pipe()
    os.close(r)
    return w


def _memfd() -> int:
    return guest_ram(PAGE)


def _dev_null() -> int:
    return os.open("/dev/null", os.O_WRONLY | os.O_CLOEXEC)


NOT_EVENTFDS = [
    ("pipe", _pipe_write_end),
    ("regular file", lambda: _tmpfile()[0]),
    ("socket", lambda: _socket()[0]),
    ("memfd", _memfd),
    ("/dev/null", _dev_null),
]


@pytest.mark.parametrize("make", [c[1] for c in NOT_EVENTFDS], ids=[c[0] for c in NOT_EVENTFDS])
def test_an_interrupt_fd_that_is_not_an_eventfd_is_refused(make: Callable[[], int]) -> None:
    device = EduDevice()
    fd = make()
    try:
        with served(device) as s:
            client = s.client
            client.negotiate()
            before = open_fds()
            reply = client.set_irqs(TRIGGER_EVENTFD, MSI, 0, 1, fds=[fd])
            assert reply.header.error == errno.EINVAL
            assert open_fds() == before and not device.interrupts.active(MSI)
            assert client.read32(edu_driver.REG_ID) == 0x010000ED
    finally:
        os.close(fd)
        device.close()


def test_a_full_eventfd_does_not_block_the_server() -> None:
    """An eventfd at its maximum count would block a writer: the server writes it
    non-blocking and drops the signal (the eventfd is readable already)."""
    device = EduDevice()
    irq = os.eventfd(0, os.EFD_CLOEXEC)  # blocking, as a careless client makes it
    try:
        with served(device) as s:
            client = s.client
            client.negotiate()
            client.ok(
                Command.VFIO_USER_DEVICE_SET_IRQS,
                struct.pack("=5I", 20, TRIGGER_EVENTFD, MSI, 0, 1),
                fds=[irq],
            )
            assert not os.get_blocking(irq)  # the server made the shared file non-blocking
            os.eventfd_write(irq, 2**64 - 2)  # the most an eventfd holds
            client.write(7, 0x40 + 2, (1).to_bytes(2, "little"))  # MSI enable
            client.write32(edu_driver.REG_IRQ_RAISE, 0x8)  # would block the server's write
            assert client.read32(edu_driver.REG_ID) == 0x010000ED  # it answers
            assert device.interrupts.dropped == 1
            assert os.eventfd_read(irq) == 2**64 - 2
            client.write32(edu_driver.REG_IRQ_ACK, 0x8)
            client.write32(edu_driver.REG_IRQ_RAISE, 0x8)
            assert fired(irq) == 1  # delivered again once there is room
    finally:
        os.close(irq)
        device.close()


def test_a_pipe_as_interrupt_fd_cannot_wedge_the_server(
    serve: Callable[..., ServeProcess],
) -> None:
    """A pipe holds 8192 signals; the 8193rd write would block the server's thread for
    good (and with it every stop). The pipe is refused; the interrupts go nowhere."""
    server = serve()
    client = server.connect()
    client.negotiate()
    r, w = os.pipe()
    try:
        reply = client.set_irqs(TRIGGER_EVENTFD, MSI, 0, 1, fds=[w])
        client.write(7, 0x40 + 2, (1).to_bytes(2, "little"))  # MSI enable
        raise_irq = struct.pack("=QII", edu_driver.REG_IRQ_RAISE, 0, 4) + (8).to_bytes(4, "little")
        ack = struct.pack("=QII", edu_driver.REG_IRQ_ACK, 0, 4) + (8).to_bytes(4, "little")
        for _ in range(8200):
            client.send(Command.VFIO_USER_REGION_WRITE, ack, flags=MessageFlag.VFIO_USER_NO_REPLY)
            client.send(
                Command.VFIO_USER_REGION_WRITE, raise_irq, flags=MessageFlag.VFIO_USER_NO_REPLY
            )
        assert client.read32(edu_driver.REG_ID) == 0x010000ED  # the server got through them
        assert reply.header.error == errno.EINVAL
        assert not pending(r)
    finally:
        os.close(r)
        os.close(w)
    server.stop()
    assert not server.path.exists()


# ---- bloat --------------------------------------------------------------------------------


def test_commands_queued_during_a_dma_are_bounded_by_bytes(
    serve: Callable[..., ServeProcess],
) -> None:
    """While the server waits for its DMA_READ reply it queues what it cannot serve
    then; 1024 commands of 1 MiB were 1 GiB. Past 16 MiB the session ends."""
    server = serve()
    idle_fds = server.fds()
    client = server.connect()
    client.negotiate()
    client.enable_bus_master()
    client.dma_map(0x100000, PAGE)  # no fd: the server asks by message
    peak = server.status_kib("VmHWM")
    start_edu_dma(client, 0x100000)
    request = client.receive()  # the server's DMA_READ, never answered
    assert request.header.command == Command.VFIO_USER_DMA_READ
    junk = struct.pack("=4I", 16, 0, 0, 0) + bytes(MIB)  # DEVICE_GET_INFO: queued, not served
    sent = 0
    try:
        for _ in range(256):  # 256 MiB offered
            client.send(Command.VFIO_USER_DEVICE_GET_INFO, junk)
            sent += 1
    except VfioUserDisconnectedError:
        pass
    assert sent < 256  # the server hung up on the flood
    grown_mib = (server.status_kib("VmHWM") - peak) / 1024
    print(f"server peak RSS grew {grown_mib:.1f} MiB for {sent} MiB offered")
    assert grown_mib < 64
    client.sock.close()
    assert server.settles(lambda: server.fds() == idle_fds)  # nothing of the session left
    again = server.connect()  # the server goes on: the next client is served
    again.negotiate()
    assert again.read32(edu_driver.REG_ID) == 0x010000ED
    again.sock.close()
    server.stop()


def test_dma_maps_do_not_hold_fds_or_unbounded_mappings(
    serve: Callable[..., ServeProcess],
) -> None:
    maps = MAX_MAPPED + 300
    server = serve()
    client = server.connect()
    client.negotiate()
    fds, vmas = server.fds(), server.mappings()
    ram = guest_ram(maps * PAGE)
    try:
        for i in range(maps):
            reply = client.dma_map(0x100000 + i * PAGE, PAGE, fd=ram, offset=i * PAGE)
            assert not reply.header.is_error
        print(f"{maps} DMA maps: fds {fds} -> {server.fds()}, VMAs {vmas} -> {server.mappings()}")
        assert server.fds() == fds  # a mapping keeps no fd open
        assert server.mappings() <= vmas + MAX_MAPPED + 16  # the rest go by message
    finally:
        os.close(ram)
    client.sock.close()
    assert server.settles(lambda: server.mappings() <= vmas)  # all unmapped with the client
    server.stop()


# ---- stopping, whatever the client does ---------------------------------------------------


def _idle(server: ServeProcess) -> list[object]:
    client = server.connect()
    client.negotiate()
    return [client]


def _mid_message(server: ServeProcess) -> list[object]:
    client = server.connect()
    client.negotiate()
    client.sock.sendall(Header(9, Command.VFIO_USER_REGION_WRITE, 64 * 1024).pack() + b"\0" * 7)
    return [client]


def _never_answers_dma(server: ServeProcess) -> list[object]:
    client = server.connect()
    client.negotiate()
    client.enable_bus_master()
    client.dma_map(0x100000, PAGE)
    start_edu_dma(client, 0x100000)
    assert client.receive().header.command == Command.VFIO_USER_DMA_READ
    return [client]


def _stops_reading(server: ServeProcess) -> list[object]:
    client = server.connect()
    client.negotiate()
    client.sock.setblocking(False)
    read = struct.pack("=QII", 0, 0, MIB)
    try:
        for _ in range(64):  # 64 MiB of replies it never takes
            client.send(Command.VFIO_USER_REGION_READ, read)
    except BlockingIOError:
        pass  # the server stopped reading too: it is stuck sending
    return [client]


def _second_client_waiting(server: ServeProcess) -> list[object]:
    first = _idle(server)
    second = server.connect()
    return [*first, second]


def _flooding(server: ServeProcess) -> list[object]:
    client = server.connect()
    client.negotiate()
    stop = threading.Event()
    ident = struct.pack("=QII", edu_driver.REG_ID, 0, 4)

    def flood() -> None:
        try:
            while not stop.is_set():
                client.send(Command.VFIO_USER_REGION_READ, ident)
        except (OSError, VfioUserDisconnectedError):
            pass

    thread = threading.Thread(target=flood, daemon=True)
    thread.start()
    time.sleep(0.2)
    return [client, stop]


HOSTILE_STATES = [
    ("idle", _idle),
    ("mid-message", _mid_message),
    ("never answers a DMA", _never_answers_dma),
    ("stops reading", _stops_reading),
    ("second client waiting", _second_client_waiting),
    ("flooding", _flooding),
]


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("hold", [c[1] for c in HOSTILE_STATES], ids=[c[0] for c in HOSTILE_STATES])
def test_a_signal_stops_the_server_whatever_the_client_does(
    serve: Callable[..., ServeProcess],
    hold: Callable[[ServeProcess], list[object]],
    how: int,
) -> None:
    server = serve()
    held = hold(server)
    took = server.stop(how)  # exit 0 within the hang guard
    print(f"stopped in {took:.3f} s")
    assert not server.path.exists()
    for thing in held:
        if isinstance(thing, threading.Event):
            thing.set()
        elif isinstance(thing, RawClient):
            thing.sock.close()
