"""pyvfio's vfio-user server under a real client: QEMU 11.1's ``vfio-user-pci``.

QEMU comes from the Debian sid chroot of `pyvfio.lab.sid_qemu` (built on first use,
about a minute; the tests fail, not skip, when it cannot be built). They run on the
host as root (chroot needs it), not in the lab guest: marked ``needs_root`` and
``sid_qemu``, they are skipped with the reason elsewhere, where the other vfio-user
tests, which need nothing, still run. Each test boots a q35 machine
under TCG with no disk: SeaBIOS enumerates PCI, sizes and assigns the BARs, enables
memory decoding, finds nothing to boot and idles, which takes a few seconds. The
monitor (QMP, and HMP through it) is the test's window into the guest.

Guest RAM is either plain (the server reaches it with ``VFIO_USER_DMA_READ/WRITE``
messages) or a shared memfd (QEMU passes the fds with ``VFIO_USER_DMA_MAP``; the
server mmaps them). What QEMU requires of a server is in docs/vfio-user-qemu.md.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from pyvfio._uapi.pci_regs import PCI_COMMAND, PCI_COMMAND_MASTER, PCI_COMMAND_MEMORY
from pyvfio.lab.sid_qemu import SidQemu, SidQemuError, ensure_chroot
from pyvfio.vm.qmp import GuestPciDevice, Monitor, walk_query_pci

pytestmark = [
    pytest.mark.needs_root("QEMU runs chrooted into the sid chroot"),
    pytest.mark.sid_qemu,
]

EDU_VENDOR = 0x1234
EDU_DEVICE = 0x11E8
EDU_CLASS = 0x00FF  # base class 0, subclass 0xff
EDU_ID = 0x010000ED  # register 0x00: major 1, minor 0, 0xed
EDU_BAR0_SIZE = 1 << 20
SLOT = 3  # the vfio-user-pci device's slot on bus 0
UNASSIGNED = (-1, 2**64 - 1)
BOOT_DEADLINE = 60.0  # seconds for SeaBIOS to assign the BAR: a bound, not a measurement


@pytest.fixture(scope="module")
def sid() -> SidQemu:
    try:
        return ensure_chroot(say=lambda line: print(line, file=sys.stderr, flush=True))
    except SidQemuError as err:
        pytest.fail(f"no QEMU with vfio-user to test against: {err}")


@pytest.fixture
def workdir(sid: SidQemu) -> Iterator[Path]:
    """A folder under the chroot, so both the server and the chrooted QEMU reach its sockets."""
    tmp = sid.root / "tmp"
    tmp.mkdir(exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="pyvfio-test-", dir=tmp))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class ChrootedQemu:
    """QEMU from the sid chroot with one vfio-user-pci device, and its monitor.

    ``chroot`` execs QEMU, so the process started is QEMU itself: `close` kills
    exactly that PID and nothing else.
    """

    def __init__(
        self,
        sid: SidQemu,
        workdir: Path,
        server_socket: Path,
        *,
        shared_memory: bool = False,
        kernel: bytes | None = None,
    ) -> None:
        self.log_path = workdir / "qemu.log"
        qmp = workdir / "qmp.sock"
        device = json.dumps(
            {
                "driver": "vfio-user-pci",
                "addr": f"{SLOT:#x}",
                "id": "edu",
                "socket": {"path": sid.inside_path(server_socket), "type": "unix"},
            }
        )
        machine = ["-machine", "q35"]
        if shared_memory:
            machine = [
                "-object", "memory-backend-memfd,id=ram,size=128M,share=on",
                "-machine", "q35,memory-backend=ram",
            ]  # fmt: skip
        args = [
            *machine,
            "-accel", "tcg",
            "-m", "128M",
            "-nographic",
            "-nodefaults",
            "-no-reboot",
            "-qmp", f"unix:{sid.inside_path(qmp)},server=on,wait=off",
            "-device", device,
        ]  # fmt: skip
        if kernel is not None:
            image = workdir / "kernel.bin"
            image.write_bytes(kernel)
            args += ["-kernel", sid.inside_path(image)]
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                sid.command(*args), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        try:
            self.monitor = Monitor(str(qmp), timeout=30, alive=self.alive)
        except BaseException:
            self.close()
            raise

    def alive(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def hmp(self, command: str) -> str:
        arguments: dict[str, Any] = {"command-line": command}
        answer = self.monitor.execute("human-monitor-command", **arguments)
        assert isinstance(answer, str)
        return answer

    def edu(self) -> GuestPciDevice:
        found = [d for d in walk_query_pci(self.monitor.execute("query-pci")) if d.qdev_id == "edu"]
        assert len(found) == 1, f"query-pci lists the vfio-user device once: {found}"
        return found[0]

    def wait_for_bar0(self) -> GuestPciDevice:
        """The device once firmware has assigned BAR0 and enabled memory decoding."""
        deadline = time.monotonic() + BOOT_DEADLINE
        while True:
            edu = self.edu()
            if edu.bars and edu.bars[0].address not in UNASSIGNED:
                return edu
            assert self.alive(), f"QEMU exited:\n{self.log()}"
            assert time.monotonic() < deadline, (
                f"firmware did not assign BAR0 in {BOOT_DEADLINE:.0f} s: {edu.bars}\n{self.log()}"
            )
            time.sleep(0.2)

    def read_phys(self, address: int, words: int = 1, *, width: str = "w") -> list[int]:
        """Guest-physical memory through HMP ``xp`` (``w``: 32-bit words, ``g``: 64-bit)."""
        answer = self.hmp(f"xp /{words}{width}x {address:#x}")
        values = [int(v, 16) for line in answer.splitlines() for v in line.split(":")[1].split()]
        assert len(values) == words, answer
        return values

    def config_write16(self, offset: int, value: int) -> None:
        """A 16-bit config write as a guest driver does it: port 0xcf8/0xcfc, mechanism #1."""
        self.hmp(f"o /w 0xcf8 {0x80000000 | SLOT << 11 | offset & 0xFC:#x}")
        self.hmp(f"o /h {0xCFC + (offset & 2):#x} {value:#x}")

    def config_read16(self, offset: int) -> int:
        self.hmp(f"o /w 0xcf8 {0x80000000 | SLOT << 11 | offset & 0xFC:#x}")
        answer = self.hmp(f"i /h {0xCFC + (offset & 2):#x}")
        return int(answer.split("=")[-1].strip(), 16)

    def __enter__(self) -> ChrootedQemu:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        monitor = getattr(self, "monitor", None)
        if monitor is not None:
            monitor.close()
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


# A guest driver for edu, small enough to read: a multiboot image that QEMU's -kernel
# loads at 1 MiB once SeaBIOS has enumerated PCI. It finds BAR0 where the firmware put
# it, turns on bus mastering, writes the liveness register, then has the device copy
# the 16-byte PATTERN from guest RAM into its buffer (DMA read) and back out to DST
# (DMA write), polling the DMA command register, and marks DST+16 with DONE_MARK.
# Assembled with `as --32` and `ld -m elf_i386 -Ttext=0x100000 --oformat=binary`:
#
#   start:  .long 0x1BADB002, 0x00010000, -(0x1BADB002 + 0x00010000)  # multiboot,
#           .long BASE, BASE, 0, 0, BASE + entry - start               # a.out kludge
#   entry:  mov $0x80001810, %eax ; mov $0xcf8, %dx ; out %eax, %dx  # slot 3 BAR0
#           mov $0xcfc, %dx ; in %dx, %eax ; and $0xfffffff0, %eax ; mov %eax, %ebx
#           mov $0x80001804, %eax ; mov $0xcf8, %dx ; out %eax, %dx  # command
#           mov $0xcfc, %dx ; mov $0x0107, %ax ; out %ax, %dx        # + bus master
#           movl $0x12345678, 4(%ebx)                                # liveness
#           movl $PATTERN, 0x80(%ebx) ; movl $0x40000, 0x88(%ebx)   # RAM -> buffer
#           movl $16, 0x90(%ebx) ; movl $1, 0x98(%ebx)
#   1:      testl $1, 0x98(%ebx) ; jnz 1b
#           movl $0x40000, 0x80(%ebx) ; movl $DST, 0x88(%ebx)       # buffer -> RAM
#           movl $3, 0x98(%ebx)
#   2:      testl $1, 0x98(%ebx) ; jnz 2b
#           movl $0x600d600d, DST + 16
#   3:      cli ; hlt ; jmp 3b
#           .align 16
#   pattern: .ascii "pyvfio edu DMA!\n"                              # at 0x1000c0
EDU_DRIVER = bytes.fromhex(
    "02b0ad1b00000100fe4f51e40000100000001000000000000000000020001000"
    "b81018008066baf80cef66bafc0ced83e0f089c3b80418008066baf80cef66ba"
    "fc0c66b8070166efc7430478563412c78380000000c0001000c7838800000000"
    "000400c7839000000010000000c7839800000001000000f78398000000010000"
    "0075f4c7838000000000000400c7838800000000003000c78398000000030000"
    "00f783980000000100000075f4c705100030000d600d60faf4ebfc8d74260090"
    "70797666696f2065647520444d41210a"
)
PATTERN = b"pyvfio edu DMA!\n"
PATTERN_ADDR = 0x1000C0
DST = 0x300000
DONE_MARK = 0x600D600D
LIVENESS_WRITTEN = 0x12345678


class ServedEdu(NamedTuple):
    socket: Path
    pid: int


@pytest.fixture
def edu(workdir: Path) -> Iterator[ServedEdu]:
    """``pyvfio serve edu`` in a process of its own, listening under the chroot."""
    socket_path = workdir / "edu.sock"
    log_path = workdir / "server.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "pyvfio", "serve", "edu", "--socket", str(socket_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + 30
        while not socket_path.exists():
            assert server.poll() is None, f"pyvfio serve edu exited:\n{log_path.read_text()}"
            assert time.monotonic() < deadline, "pyvfio serve edu did not listen in 30 s"
            time.sleep(0.05)
        yield ServedEdu(socket_path, server.pid)
    finally:
        if server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def test_qemu_attaches_and_lists_the_python_devices_ids_and_bar(
    sid: SidQemu, workdir: Path, edu: ServedEdu
) -> None:
    """query-pci: the identity and BAR0 pyvfio.server.edu declares (QEMU's edu's), at an
    address SeaBIOS assigned after sizing the BAR (QEMU emulates it from the region size)."""
    with ChrootedQemu(sid, workdir, edu.socket) as qemu:
        guest = qemu.wait_for_bar0()
        assert (guest.vendor_id, guest.device_id) == (EDU_VENDOR, EDU_DEVICE)
        bar0 = guest.bars[0]
        assert (bar0.index, bar0.kind, bar0.size) == (0, "memory", EDU_BAR0_SIZE)
        assert bar0.address % EDU_BAR0_SIZE == 0  # a BAR is aligned to its size
        assert 0x80000000 <= bar0.address < 1 << 32  # q35's 32-bit PCI hole
        raw = [
            dev
            for bus in qemu.monitor.execute("query-pci")
            for dev in bus["devices"]
            if dev.get("qdev_id") == "edu"
        ]
        assert raw[0]["class_info"]["class"] == EDU_CLASS
        assert raw[0]["id"]["subsystem-vendor"] == 0x1AF4
        # Firmware enabled memory decoding through the device's config space.
        assert qemu.config_read16(PCI_COMMAND) & PCI_COMMAND_MEMORY


def test_the_id_register_is_read_from_the_python_device_through_qemu(
    sid: SidQemu, workdir: Path, edu: ServedEdu
) -> None:
    """HMP xp at BAR0 becomes VFIO_USER_REGION_READs that the Python edu answers:
    the ID 0x010000ed as a 32-bit read, and edu's rule that registers below 0x80 take
    only 32-bit accesses (an 8-byte read answers all ones)."""
    with ChrootedQemu(sid, workdir, edu.socket) as qemu:
        bar0 = qemu.wait_for_bar0().bars[0].address
        assert qemu.read_phys(bar0) == [EDU_ID]
        assert qemu.read_phys(bar0, width="g") == [2**64 - 1]
        assert qemu.read_phys(bar0 + 4) == [0]  # liveness, never written


@pytest.mark.parametrize("shared_memory", [False, True], ids=["plain-ram", "memfd-ram"])
def test_a_guest_driver_drives_the_python_devices_dma_into_guest_ram(
    sid: SidQemu, workdir: Path, edu: ServedEdu, shared_memory: bool
) -> None:
    """A guest program (EDU_DRIVER, booted with -kernel) enables bus mastering, writes
    the liveness register and has the device copy PATTERN from guest RAM into its
    buffer and out again to DST; the monitor then reads DST back.

    With plain RAM QEMU gives the server no fds: the copy is VFIO_USER_DMA_READ and
    DMA_WRITE messages, which QEMU performs as the device (bus master required). With
    memfd RAM QEMU passes the fds in DMA_MAP and the server reads and writes the
    mmapped guest memory itself."""
    with ChrootedQemu(
        sid, workdir, edu.socket, shared_memory=shared_memory, kernel=EDU_DRIVER
    ) as qemu:
        bar0 = qemu.wait_for_bar0().bars[0].address
        deadline = time.monotonic() + BOOT_DEADLINE
        while qemu.read_phys(DST + len(PATTERN)) != [DONE_MARK]:
            assert qemu.alive(), f"QEMU exited:\n{qemu.log()}"
            assert time.monotonic() < deadline, (
                f"the guest driver did not finish in {BOOT_DEADLINE:.0f} s; "
                f"DMA command register: {qemu.read_phys(bar0 + 0x98)}\n{qemu.log()}"
            )
            time.sleep(0.2)
        words = qemu.read_phys(DST, len(PATTERN) // 4)
        assert b"".join(w.to_bytes(4, "little") for w in words) == PATTERN
        assert qemu.read_phys(bar0 + 4) == [~LIVENESS_WRITTEN & 0xFFFFFFFF]
        assert qemu.config_read16(PCI_COMMAND) & PCI_COMMAND_MASTER
        # Which path the data took: only with memfd RAM does the server map guest RAM.
        mapped = guest_ram_mapped_by(edu.pid)
        if shared_memory:
            assert any(start <= DST < start + size for start, size in mapped), mapped
        else:
            assert mapped == []


def guest_ram_mapped_by(pid: int) -> list[tuple[int, int]]:
    """(offset in guest RAM, length) of each mapping of QEMU's RAM memfd in ``pid``."""
    mapped = []
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[5].startswith("/memfd:memory-backend-memfd"):
            start, end = (int(part, 16) for part in fields[0].split("-"))
            mapped.append((int(fields[2], 16), end - start))
    return mapped
