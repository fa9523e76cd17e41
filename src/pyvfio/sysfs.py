"""All of pyvfio's reads of sysfs, procfs and /dev go through one door.

A :class:`Sysfs` reads below a root that is ``/`` on a live host and a snapshot
folder in tests, so a recorded tree replays the same answers (psutil's PROCFS_PATH,
pyudev's Attributes).

The VFIO core (`pyvfio.iommu`, its backends) and the host tools (`pyvfio.host`) both
read through it, so it sits below both; ``pyvfio.host.sysfs`` is the same module's
names under their older path.

Writes that may wait in the kernel (a driver's unbind waits, uninterruptibly, until
every user has closed the device) run in a child process with a deadline: see
:meth:`Sysfs.write_attr`.

A snapshot is somebody else's data: below any root but ``/`` every path is resolved
inside the root first (:func:`resolve_inside`), its links followed by reading their
text, and a path that leads out (a ``..`` above the root, an absolute link) reads as
absent, so a recorded ``proc -> ../../proc`` can never make a replay answer from the
live host. The live host keeps the plain joins: ``ls`` walks thousands of devices.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import time
from collections.abc import Callable
from pathlib import Path

from pyvfio.errors import DeviceNotFoundError, HostError
from pyvfio.pci.address import normalize

PCI_DEVICES = "sys/bus/pci/devices"
IOMMU_GROUPS = "sys/kernel/iommu_groups"

#: Symlinks followed in one lookup before it counts as a loop (the kernel's MAXSYMLINKS).
MAX_LINK_HOPS = 40
#: Components walked in one lookup, links' included: a sysfs lookup takes a few dozen;
#: the cap keeps a snapshot's 40 hops of 2,000-component links from costing minutes.
MAX_LOOKUP_STEPS = 256


def resolve_inside(rel: str, readlink: Callable[[str], str | None]) -> str | None:
    """Where ``rel`` leads in a tree once its symlinks are followed: a path relative to
    the tree's top ("" is the top itself), or None where it would leave the tree.

    ``readlink(path)`` gives the text of the symlink at ``path`` (relative to the top,
    with every folder before its last component already resolved), or None where there
    is no link. Only link texts are read, and ``..`` is taken off the resolved path, as
    the kernel does: a ``..`` above the top or an absolute link is refused where it
    appears, so a link that climbs out and comes back in is refused as well, and so is a
    loop (more than :data:`MAX_LINK_HOPS` links or :data:`MAX_LOOKUP_STEPS` components).
    A missing component is kept as a name: the lookup fails there, inside the tree.
    """
    pending = rel.split("/")[::-1]
    done: list[str] = []
    hops = steps = 0
    while pending:
        steps += 1
        if steps > MAX_LOOKUP_STEPS:
            return None
        part = pending.pop()
        if part in ("", "."):
            continue
        if part == "..":
            if not done:
                return None
            done.pop()
            continue
        done.append(part)
        target = readlink("/".join(done))
        if target is None:
            continue
        hops += 1
        if hops > MAX_LINK_HOPS or target.startswith("/"):
            return None
        done.pop()
        pending += target.split("/")[::-1]
    return "/".join(done)


class Sysfs:
    """Reads below ``root`` (``/`` on a live host; anywhere else, only inside ``root``)."""

    __slots__ = ("_confined", "_nofollow", "_prefix", "root")

    def __init__(self, root: str | os.PathLike[str] = "/", *, confined: bool | None = None) -> None:
        """``confined``: resolve every path inside ``root`` (the default for any root but
        ``/``); False only for a tree its maker trusts, such as the tests' simulated
        kernel, whose ``proc`` links into this machine's ``/proc`` on purpose."""
        self.root = Path(root)
        # Plain strings on the hot path: pathlib's joins cost more than the reads
        # when ``ls`` walks thousands of devices.
        self._prefix = os.path.join(os.fspath(self.root), "")
        self._confined = not self.is_live if confined is None else confined
        # A resolved path's last component is no link; O_NOFOLLOW keeps it so.
        self._nofollow = os.O_NOFOLLOW if self._confined else 0

    def path(self, rel: str) -> Path:
        """The plain join below the root (for the live host's writers; reads resolve)."""
        return self.root / rel.lstrip("/")

    def resolve(self, rel: str) -> str | None:
        """Where ``rel`` leads inside the root after its links (see :func:`resolve_inside`),
        whether it exists or not; None where it leads out of the root."""
        return resolve_inside(rel, self._readlink_below)

    def _readlink_below(self, rel: str) -> str | None:
        try:
            return os.readlink(self._prefix + rel)
        except OSError:
            return None

    def _os_path(self, rel: str, *, follow: bool = True) -> str | None:
        """What to open for ``rel``: on the live host the plain join; below any other root
        the place ``rel`` leads inside it (``follow=False``: the link itself, its folder
        resolved), or None where it leads out."""
        if not self._confined:
            return self._prefix + rel.lstrip("/")
        if not follow:
            head, _, leaf = rel.strip("/").rpartition("/")
            if leaf not in ("", ".", ".."):
                folder = self.resolve(head)
                if folder is None:
                    return None
                return self._prefix + (f"{folder}/{leaf}" if folder else leaf)
        inside = self.resolve(rel)
        return None if inside is None else self._prefix + inside

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
        path = self._os_path(rel)
        if path is None:
            return None
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | self._nofollow)
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

    def readlink(self, rel: str) -> str | None:
        """The text of the symlink at ``rel`` as recorded (sysfs's are relative), or None.

        Only the link's folder is resolved: the text is what is asked for, wherever it
        points (the snapshot recorder copies it as it is).
        """
        path = self._os_path(rel, follow=False)
        if path is None:
            return None
        try:
            return os.readlink(path)
        except OSError:
            return None

    def link_name(self, rel: str) -> str | None:
        """The last component of a symlink's target (a driver's or group's name)."""
        target = self.readlink(rel)
        return None if target is None else os.path.basename(target)

    def listdir(self, rel: str) -> list[str]:
        path = self._os_path(rel)
        if path is None:
            return []
        try:
            if not self._confined:
                return sorted(os.listdir(path))
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW)
            try:
                return sorted(os.listdir(fd))
            finally:
                os.close(fd)
        except OSError:
            return []

    def write_attr(self, rel: str, value: str, *, timeout: float | None = None) -> None:
        """Write one sysfs attribute; OSError propagates for the caller to explain.

        With ``timeout`` the write is done by a child process and given that many
        seconds: a driver's remove may wait for the device's users forever, and a thread
        stuck in a write cannot be cancelled, nor can its process exit. If the write has
        not returned by then, :class:`WriteTimeoutError` names the child, which goes on
        waiting (the kernel finishes the write when the users let go), on its own.
        """
        path = self._os_path(rel)
        if path is None:
            raise FileNotFoundError(errno.ENOENT, f"{rel} leads out of {self.root}")
        if timeout is not None:
            _write_in_child(path, value.encode(), timeout)
            return
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | self._nofollow
        with open(os.open(path, flags, 0o644), "w") as f:
            f.write(value)

    def exists(self, rel: str) -> bool:
        path = self._os_path(rel)
        if path is None:
            return False
        # Resolved, the path's last component is no link: lexists does not follow one.
        return os.path.lexists(path) if self._confined else os.path.exists(path)

    def read_lines(self, rel: str) -> list[str]:
        """The lines of a text file (procfs tables), empty where it is absent."""
        text = self.read_attr(rel)
        return text.splitlines() if text else []

    def realpath(self, rel: str) -> str | None:
        """Where ``rel`` leads after symlinks, relative to the root (None: outside or absent).

        sysfs links are relative (``../../devices/pci0000:00/...``), so a recorded tree
        resolves inside its own folder.
        """
        if self._confined:
            inside = self.resolve(rel)
            if inside is None or not os.path.lexists(self._prefix + inside):
                return None
            return inside or "."
        try:
            real = Path(os.path.realpath(self.path(rel), strict=True))
            return str(real.relative_to(self.root.resolve()))
        except (OSError, ValueError):
            return None

    def stat(self, rel: str) -> os.stat_result | None:
        path = self._os_path(rel)
        if path is None:
            return None
        try:
            return os.stat(path, follow_symlinks=not self._confined)
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

    def numa_node(self, address: str) -> int | None:
        """The NUMA node the device is attached to; None where the kernel says -1 (no
        NUMA, or firmware that does not tell) or shows no ``numa_node``."""
        node = self.read_int(f"{self.device_dir(address)}/numa_node")
        return None if node is None or node < 0 else node

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
