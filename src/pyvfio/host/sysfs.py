"""All of pyvfio's reads of sysfs, procfs and /dev go through one door.

A :class:`Sysfs` reads below a root that is ``/`` on a live host and a snapshot
folder in tests, so a recorded tree replays the same answers (psutil's PROCFS_PATH,
pyudev's Attributes).

Writes that may wait in the kernel (a driver's unbind waits, uninterruptibly, until
every user has closed the device) run in a child process with a deadline: see
:meth:`Sysfs.write_attr`.
"""

from __future__ import annotations

import contextlib
import os
import select
import time
from pathlib import Path

from pyvfio.errors import DeviceNotFoundError, HostError
from pyvfio.pci.address import normalize

PCI_DEVICES = "sys/bus/pci/devices"
IOMMU_GROUPS = "sys/kernel/iommu_groups"


class Sysfs:
    """Reads below ``root`` (``/`` on a live host)."""

    __slots__ = ("_prefix", "root")

    def __init__(self, root: str | os.PathLike[str] = "/") -> None:
        self.root = Path(root)
        # Plain strings on the hot path: pathlib's joins cost more than the reads
        # when ``ls`` walks thousands of devices.
        self._prefix = os.path.join(os.fspath(self.root), "")

    def path(self, rel: str) -> Path:
        return self.root / rel.lstrip("/")

    def _os_path(self, rel: str) -> str:
        return self._prefix + rel.lstrip("/")

    def read_attr(self, rel: str) -> str | None:
        """The stripped text of a file, or None where it is absent or unreadable."""
        data = self.read_bytes(rel)
        return None if data is None else data.decode(errors="replace").strip()

    def read_int(self, rel: str, base: int = 0) -> int | None:
        text = self.read_attr(rel)
        if text is None or text == "":
            return None
        try:
            return int(text, base)
        except ValueError:
            return None

    def read_bytes(self, rel: str) -> bytes | None:
        """The bytes of a file, or None where it is absent or unreadable.

        Raw ``os.read`` calls: sysfs attributes are a page at most, and buffered text
        files cost more than the read when ``ls`` walks thousands of devices.
        """
        try:
            fd = os.open(self._os_path(rel), os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            chunks = []
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
            return b"".join(chunks)
        except OSError:
            return None
        finally:
            os.close(fd)

    def link_name(self, rel: str) -> str | None:
        """The last component of a symlink's target (a driver's or group's name)."""
        try:
            return os.path.basename(os.readlink(self._os_path(rel)))
        except OSError:
            return None

    def listdir(self, rel: str) -> list[str]:
        try:
            return sorted(os.listdir(self._os_path(rel)))
        except OSError:
            return []

    def readlink(self, rel: str) -> str | None:
        """A symlink's target as the kernel shows it (``/proc/PID/fd/N``: the path opened,
        or ``anon_inode:[vfio-device]``), None where it is absent or unreadable."""
        try:
            return os.readlink(self._os_path(rel))
        except OSError:
            return None

    def write_attr(self, rel: str, value: str, *, timeout: float | None = None) -> None:
        """Write one sysfs attribute; OSError propagates for the caller to explain.

        With ``timeout`` the write is done by a child process and given that many
        seconds: a driver's remove may wait for the device's users forever, and a thread
        stuck in a write cannot be cancelled, nor can its process exit. If the write has
        not returned by then, :class:`WriteTimeoutError` names the child, which goes on
        waiting (the kernel finishes the write when the users let go), on its own.
        """
        if timeout is None:
            with open(self.path(rel), "w") as f:
                f.write(value)
            return
        _write_in_child(self._os_path(rel), value.encode(), timeout)

    def exists(self, rel: str) -> bool:
        return os.path.exists(self._os_path(rel))

    def read_lines(self, rel: str) -> list[str]:
        """The lines of a text file (procfs tables), empty where it is absent."""
        text = self.read_attr(rel)
        return text.splitlines() if text else []

    def realpath(self, rel: str) -> str | None:
        """Where ``rel`` leads after symlinks, relative to the root (None: outside or absent).

        sysfs links are relative (``../../devices/pci0000:00/...``), so a recorded tree
        resolves inside its own folder.
        """
        try:
            real = Path(os.path.realpath(self.path(rel), strict=True))
            return str(real.relative_to(self.root.resolve()))
        except (OSError, ValueError):
            return None

    def stat(self, rel: str) -> os.stat_result | None:
        try:
            return os.stat(self.path(rel))
        except OSError:
            return None

    @property
    def is_live(self) -> bool:
        """True for the running host (root ``/``), False for a recorded snapshot."""
        return self.root == Path("/")

    # -- PCI devices ------------------------------------------------------------

    def device_dir(self, address: str) -> str:
        """``sys/bus/pci/devices/ADDR`` for an existing device, or DeviceNotFoundError."""
        addr = normalize(address)
        rel = f"{PCI_DEVICES}/{addr}"
        if not self.exists(rel):
            raise DeviceNotFoundError(
                f"no PCI device {addr} on this host (lspci -D lists the devices)"
            )
        return rel

    def driver(self, address: str) -> str | None:
        return self.link_name(f"{self.device_dir(address)}/driver")

    def iommu_group(self, address: str) -> int | None:
        name = self.link_name(f"{self.device_dir(address)}/iommu_group")
        return int(name) if name is not None and name.isdigit() else None

    def group_devices(self, group: int) -> list[str]:
        return self.listdir(f"{IOMMU_GROUPS}/{group}/devices")

    def iommu_groups(self) -> dict[int, list[str]]:
        return {
            int(g): self.group_devices(int(g)) for g in self.listdir(IOMMU_GROUPS) if g.isdigit()
        }

    def pci_devices(self) -> list[str]:
        return self.listdir(PCI_DEVICES)


#: The live host.
LIVE = Sysfs("/")


class WriteTimeoutError(HostError):
    """A sysfs write did not return in time; process ``pid`` (start time ``start`` in
    /proc/PID/stat) still waits in the kernel and finishes the write by itself."""

    def __init__(self, path: str, timeout: float, pid: int, start: int) -> None:
        super().__init__(
            f"writing {path} did not return in {timeout:g} s: the kernel is still at it "
            f"(process {pid} waits for it)"
        )
        self.path = path
        self.timeout = timeout
        self.pid = pid
        self.start = start


def process_start(pid: int, sysfs: Sysfs = LIVE) -> int | None:
    """A process's start time (field 22 of /proc/PID/stat, clock ticks since boot): with
    the pid it names one process, where a pid alone may be reused. None: no such
    process, or one that has ended and waits to be reaped (a zombie)."""
    text = sysfs.read_attr(f"proc/{pid}/stat")
    if not text or ")" not in text:
        return None
    fields = text.rsplit(")", 1)[1].split()  # the command in (...) may hold spaces
    try:
        return None if fields[0] in ("Z", "X") else int(fields[19])
    except (IndexError, ValueError):
        return None


def _write_in_child(path: str, data: bytes, timeout: float) -> None:
    """Write ``data`` to ``path`` in a grandchild: it sends back its pid and start time,
    then the write's errno (0: done); the child between exits at once, so the
    grandchild is init's to reap whenever its write returns, never this process's zombie.
    No exec: the writer needs no Python start-up, and closes every inherited fd first
    (a flock travels with an inherited fd: the journal's lock must not)."""
    report_r, report_w = os.pipe()  # both O_CLOEXEC: a concurrent exec elsewhere drops them
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child, which leaves by os._exit
        try:
            if os.fork() == 0:
                _writer(path, data, report_w)
        finally:
            os._exit(0)
    os.close(report_w)
    try:
        os.waitpid(child, 0)
        lines, finished = _read_report(report_r, timeout)
    finally:
        os.close(report_r)
    pid, start = (int(n) for n in lines[0].split()) if lines else (0, 0)
    if not finished:
        raise WriteTimeoutError(path, timeout, pid, start)
    if len(lines) < 2:  # the pipe closed early: the writer was killed
        raise HostError(f"the process writing {path} died before the write returned")
    if int(lines[1]):
        raise OSError(int(lines[1]), os.strerror(int(lines[1])), path)


def _read_report(fd: int, timeout: float) -> tuple[list[str], bool]:
    """The writer's lines, and whether it finished (False: ``timeout`` seconds passed)."""
    deadline = time.monotonic() + timeout
    got = b""
    while got.count(b"\n") < 2:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return got.decode().splitlines()[:1], False
        chunk = os.read(fd, 64)
        if not chunk:
            break
        got += chunk
    return got.decode().splitlines(), True


def _writer(path: str, data: bytes, report: int) -> None:  # pragma: no cover - the writer
    code = 1
    try:
        os.dup2(report, 3, inheritable=False)
        null = os.open(os.devnull, os.O_RDWR)
        for std in (0, 1, 2):  # a pipe the caller reads (| cat) must not wait on us
            os.dup2(null, std)
        os.closerange(4, 1 << 20)
        with contextlib.suppress(OSError):  # what ps shows while the kernel makes it wait
            comm = os.open("/proc/self/comm", os.O_WRONLY)
            os.write(comm, b"pyvfio-sysfs-wr")
            os.close(comm)
        pid = os.getpid()
        os.write(3, f"{pid} {process_start(pid) or 0}\n".encode())
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
            errno_ = 0
        except OSError as err:
            errno_ = err.errno or 5
        os.write(3, f"{errno_}\n".encode())
        code = 0
    finally:
        os._exit(code)
