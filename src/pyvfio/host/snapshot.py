"""Record what pyvfio reads of a host into a tarball, and read such a tarball back.

``pyvfio snapshot OUT.tar.gz`` keeps the sysfs and procfs files the host tools read,
with sysfs's relative symlinks as they are, so ``--root OUT.tar.gz`` (or the folder it
unpacks to) gives every read-only command the same answers as the live host. Nothing
private goes in: configuration space is cut to the standard header and the bytes of the
capabilities pyvfio decodes (a Device Serial Number is zeroed), the kernel log to the
IOMMU, interrupt-remapping and VFIO lines, ``/proc/iomem`` to the lines over PCI
resources (its "Kernel code" lines would give away where the kernel sits in physical
memory), and device nodes to their modes and owners.

A snapshot read back is somebody else's data, opened by root. :func:`open_root` unpacks
it by hand, the same way on every Python (``tarfile``'s extraction filters arrived in
3.11.4; Debian 12 has 3.11.2): folders and regular files first, each created below the
folder without following a link, with fixed modes and the reader as owner; symlinks
last, each refused if it is absolute or leads out, then all of them checked again once
they all exist (a link can be made to lead out by one created after it); nothing else
(hard links, devices, FIFOs); and limits on members and sizes checked before anything
is written. The :class:`~pyvfio.host.sysfs.Sysfs` it returns then resolves every read
inside the folder.
"""

from __future__ import annotations

import atexit
import bisect
import bz2
import contextlib
import errno
import gzip
import io
import json
import lzma
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from pyvfio.errors import HostError
from pyvfio.host.details import IORESOURCE_MEM
from pyvfio.host.durable import Replacement
from pyvfio.host.iommus import ACPI_TABLES
from pyvfio.host.journal import SNAPSHOT_JOURNAL, state_dir
from pyvfio.host.sysfs import IOMMU_GROUPS, LIVE, PCI_DEVICES, Sysfs
from pyvfio.host.usage import iomem_line
from pyvfio.pci.capabilities import (
    AF_LAYOUT,
    EXP_LAYOUT,
    MSI_LAYOUT,
    MSIX_LAYOUT,
    PM_LAYOUT,
    SSVID_LAYOUT,
)
from pyvfio.pci.config import parse_config
from pyvfio.pci.extended import (
    ACS_LAYOUT,
    AER_LAYOUT,
    ARI_LAYOUT,
    ATS_LAYOUT,
    PASID_LAYOUT,
    PRI_LAYOUT,
    REBAR_LAYOUT,
    SRIOV_LAYOUT,
)

#: Written into every snapshot: what it is, for whoever opens the tarball.
META = "pyvfio/snapshot.json"
#: The kernel log lines a snapshot keeps, and the device nodes' modes and owners.
KERNEL_LOG = "pyvfio/dmesg.txt"
NODES = "pyvfio/nodes.json"

_LOG_KEEP = re.compile(
    r"DMAR|IOMMU|iommu|AMD-Vi|VIOT|remapping|x2apic|vfio|VFIO|IVRS|efifb|simplefb"
)

#: Per-device attributes that are kept (no ``rom``, no BAR ``resourceN`` files).
DEVICE_FILES = (
    "vendor",
    "device",
    "class",
    "revision",
    "subsystem_vendor",
    "subsystem_device",
    "numa_node",
    "driver_override",
    "reset_method",
    "resource",
    "irq",
    "enable",
    "boot_vga",
    "sriov_totalvfs",
    "sriov_numvfs",
    "sriov_drivers_autoprobe",
    "d3cold_allowed",
    "power_state",
    "current_link_speed",
    "current_link_width",
    "max_link_speed",
    "max_link_width",
    "local_cpulist",
)
DEVICE_LINKS = ("driver", "iommu_group", "iommu", "physfn")

#: Bytes kept of each standard capability, by ID: all of it (its size in the register
#: tables) for the ones the spec defines whole; others keep their 2-byte header only.
_CAP_LENGTH: dict[int, int] = {
    layout.id: layout.size
    for layout in (PM_LAYOUT, MSI_LAYOUT, MSIX_LAYOUT, EXP_LAYOUT, AF_LAYOUT, SSVID_LAYOUT)
}
#: The same for extended capabilities (others, the serial number and vendor-specific
#: ones among them, keep the 4-byte header only).
_EXT_LENGTH: dict[int, int] = {
    layout.id: layout.size
    for layout in (
        AER_LAYOUT,
        ACS_LAYOUT,
        ARI_LAYOUT,
        ATS_LAYOUT,
        SRIOV_LAYOUT,
        REBAR_LAYOUT,
        PASID_LAYOUT,
        PRI_LAYOUT,
    )
}


#: Limits on a snapshot being unpacked, far above what a big host records and checked
#: before anything is written, so a bomb stops early. The lab's main topology (21
#: devices) records 634 members, 64 KiB in files and a 580 KiB tar stream: about 30
#: members, 3 KiB of files and 28 KiB of stream per device, so each limit leaves room
#: for more than 5,000 devices (a big host with SR-IOV VFs has a few thousand).
MAX_MEMBERS = 200_000
MAX_FILE_BYTES = 128 << 20
MAX_STREAM_BYTES = 256 << 20
#: Components in a member's name: sysfs nests a folder per bridge, a few dozen at most.
MAX_DEPTH = 64

#: How each compressed format the tar module reads starts, and what decompresses it.
_DECOMPRESS = (
    (b"\x1f\x8b", gzip.open),
    (b"BZh", bz2.open),
    (b"\xfd7zXZ\x00", lzma.open),
)
_DAMAGED = (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError)


class SnapshotError(HostError, ValueError):
    """``--root`` names no snapshot, or one that cannot be trusted (bad input: exit 2)."""


def scrub_config(data: bytes) -> bytes:
    """Configuration space with only the header and the decoded capabilities kept."""
    # An SR-IOV VF's ID registers read all ones; its capabilities are there all the same.
    vf = data[:4] == b"\xff\xff\xff\xff"
    space = parse_config(bytes(4) + data[4:] if vf else data)
    out = bytearray(len(data))
    out[:64] = data[:64]
    for cap in space.capabilities:
        length = _CAP_LENGTH.get(cap.id, 2)
        out[cap.offset : cap.offset + length] = data[cap.offset : cap.offset + length]
    for ext in space.extended_capabilities:
        length = _EXT_LENGTH.get(ext.id, 4)
        out[ext.offset : ext.offset + length] = data[ext.offset : ext.offset + length]
    return bytes(out)


class _Recorder:
    """Collects files into a tar archive, with paths relative to the root."""

    def __init__(self, tar: tarfile.TarFile, sysfs: Sysfs) -> None:
        self.tar = tar
        self.sysfs = sysfs
        self.seen: set[str] = set()

    def _dirs(self, rel: str) -> None:
        parts = rel.split("/")[:-1]
        for n in range(1, len(parts) + 1):
            d = "/".join(parts[:n])
            if d not in self.seen:
                self.seen.add(d)
                info = tarfile.TarInfo(d)
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                self.tar.addfile(info)

    def data(self, rel: str, payload: bytes) -> None:
        if rel in self.seen:
            return
        self._dirs(rel)
        self.seen.add(rel)
        info = tarfile.TarInfo(rel)
        info.size = len(payload)
        info.mode = 0o644
        info.mtime = int(time.time())
        self.tar.addfile(info, io.BytesIO(payload))

    def file(self, rel: str) -> None:
        payload = self.sysfs.read_bytes(rel)
        if payload is not None:
            self.data(rel, payload)

    def dir(self, rel: str) -> None:
        self._dirs(rel + "/x")

    def link(self, rel: str) -> None:
        if rel in self.seen:
            return
        target = self.sysfs.readlink(rel)
        if target is None:
            return
        self._dirs(rel)
        self.seen.add(rel)
        info = tarfile.TarInfo(rel)
        info.type = tarfile.SYMTYPE
        info.linkname = target
        self.tar.addfile(info)

    def listed(self, rel: str) -> Iterable[str]:
        return self.sysfs.listdir(rel)


def _record_device(rec: _Recorder, sysfs: Sysfs, addr: str) -> None:
    link = f"{PCI_DEVICES}/{addr}"
    rec.link(link)
    real = sysfs.realpath(link)
    if real is None:
        return
    # The folders from the host bridge down (bridges above are devices too, recorded
    # on their own turn); the device's own attributes and links.
    for name in DEVICE_FILES:
        rec.file(f"{real}/{name}")
    for name in DEVICE_LINKS:
        rec.link(f"{real}/{name}")
    for name in rec.listed(real):
        if name.startswith("virtfn"):
            rec.link(f"{real}/{name}")
    config = sysfs.read_bytes(f"{real}/config")
    if config:
        rec.data(f"{real}/config", scrub_config(config))
    rec.dir(real)
    _record_children(rec, sysfs, real)


def _record_children(rec: _Recorder, sysfs: Sysfs, real: str) -> None:
    """virtio children (9p mount tags) of a device: what usage checks look at."""
    for name in rec.listed(real):
        if name.startswith("virtio"):
            rec.file(f"{real}/{name}/mount_tag")


def _record_class(rec: _Recorder, sysfs: Sysfs, cls: str, files: Iterable[str]) -> None:
    for name in rec.listed(f"sys/class/{cls}"):
        rel = f"sys/class/{cls}/{name}"
        rec.link(rel)
        real = sysfs.realpath(rel)
        if real is None:
            continue
        rec.dir(real)
        for f in files:
            rec.file(f"{real}/{f}")
        for holder in rec.listed(f"{real}/holders"):
            rec.link(f"{real}/holders/{holder}")


def _kernel_log(sysfs: Sysfs) -> str:
    recorded = sysfs.read_attr(KERNEL_LOG)
    if recorded is not None or not sysfs.is_live:
        return recorded or ""
    try:
        done = subprocess.run(["dmesg"], capture_output=True, text=True, check=False, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout


def kernel_log(sysfs: Sysfs = LIVE) -> str:
    """The kernel log (live: ``dmesg``, needs root on most hosts; snapshot: its copy)."""
    return _kernel_log(sysfs)


def euid_of(sysfs: Sysfs = LIVE) -> int:
    """Who runs pyvfio: this process's effective uid, or the one of whoever recorded the
    snapshot (root where it does not say)."""
    if sysfs.is_live:
        return os.geteuid()
    meta = sysfs.read_attr(META)
    return int(json.loads(meta).get("euid", 0)) if meta else 0


def device_nodes(sysfs: Sysfs = LIVE) -> dict[str, dict[str, int]]:
    """Mode, owner and group of /dev/kvm, /dev/iommu and every /dev/vfio node."""
    recorded = sysfs.read_attr(NODES)
    if recorded is not None:
        nodes: dict[str, dict[str, int]] = json.loads(recorded)
        return nodes
    if not sysfs.is_live:
        return {}
    names = ["dev/kvm", "dev/iommu"] + [f"dev/vfio/{n}" for n in sysfs.listdir("dev/vfio")]
    out = {}
    for rel in names:
        st = sysfs.stat(rel)
        if st is not None:
            out[rel] = {"mode": st.st_mode, "uid": st.st_uid, "gid": st.st_gid}
    return out


def record(out: str | os.PathLike[str], sysfs: Sysfs = LIVE) -> int:
    """Write the snapshot tarball to ``out``; return how many devices it holds.

    The tarball is written to a new file beside ``out`` (created, never opened through
    a link), fsynced, and renamed over ``out``: a rename replaces a symlink at ``out``
    instead of writing where it points, and a snapshot cut short by an error is removed
    before it ever has the name. SnapshotError when ``out`` cannot be written.
    """
    name = os.fspath(out)
    if not name:
        raise SnapshotError("name the tarball to write, e.g. host.tar.gz")
    if os.path.isdir(name) and not os.path.islink(name):
        raise SnapshotError(f"{name} is a folder: name the tarball, e.g. {name}/host.tar.gz")

    def unwritable(err: OSError) -> SnapshotError:
        return SnapshotError(
            f"cannot write {name}: {err.strerror}; name a file in a folder you can write"
        )

    try:
        new = Replacement(Path(os.path.abspath(name)), mode=0o644)
    except OSError as err:
        raise unwritable(err) from err
    with new:
        with tarfile.open(fileobj=new.file, mode="w:gz") as tar:
            count = _record(tar, sysfs)
        try:
            new.commit()
        except OSError as err:
            raise unwritable(err) from err
    return count


def pci_iomem(iomem: Iterable[str], resources: Iterable[tuple[int, int]]) -> list[str]:
    """The /proc/iomem lines whose range overlaps a PCI resource (BARs, ROMs, bridge
    windows: what the host tools look at, e.g. a boot framebuffer over a GPU's BAR).

    The rest goes: "Kernel code", "System RAM" and the like would tell whoever reads a
    bug report where the kernel sits in physical memory (physical KASLR). Lines read as
    non-root are all zero and overlap nothing.
    """
    merged: list[list[int]] = []
    for start, end in sorted(r for r in resources if r[1] > r[0]):
        if merged and start <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    starts = [m[0] for m in merged]
    kept = []
    for line in iomem:
        parsed = iomem_line(line)
        if parsed is None or parsed[1] <= 0:
            continue
        lo, hi, _ = parsed
        at = bisect.bisect_right(starts, hi) - 1  # the last merged range starting <= hi
        if at >= 0 and merged[at][1] >= lo:
            kept.append(line)
    return kept


def _memory_resources(sysfs: Sysfs, addresses: Iterable[str]) -> list[tuple[int, int]]:
    """(start, end) of every memory line of every device's ``resource`` file (BARs, ROM,
    SR-IOV BARs, bridge windows). I/O port ranges are left out: port 0xc000 is no
    address in /proc/iomem, where it would land in System RAM."""
    out = []
    for addr in addresses:
        for line in sysfs.read_lines(f"{PCI_DEVICES}/{addr}/resource"):
            with contextlib.suppress(ValueError):
                start, end, flags = (int(p, 16) for p in line.split()[:3])
                if flags & IORESOURCE_MEM:
                    out.append((start, end))
    return out


def _record(tar: tarfile.TarFile, sysfs: Sysfs) -> int:
    addresses = sysfs.listdir(PCI_DEVICES)
    rec = _Recorder(tar, sysfs)
    for addr in addresses:
        _record_device(rec, sysfs, addr)
    for group in rec.listed(IOMMU_GROUPS):
        for addr in rec.listed(f"{IOMMU_GROUPS}/{group}/devices"):
            rec.link(f"{IOMMU_GROUPS}/{group}/devices/{addr}")
    rec.dir(IOMMU_GROUPS)
    for drv in rec.listed("sys/bus/pci/drivers"):
        rec.dir(f"sys/bus/pci/drivers/{drv}")
    for unit in rec.listed("sys/class/iommu"):
        rel = f"sys/class/iommu/{unit}"
        rec.link(rel)
        real = sysfs.realpath(rel)
        if real:
            for f in ("intel-iommu/cap", "intel-iommu/ecap", "intel-iommu/version"):
                rec.file(f"{real}/{f}")
            for f in ("amd-iommu/cap", "amd-iommu/features"):
                rec.file(f"{real}/{f}")
            rec.dir(real)
    rec.dir("sys/class/iommu")
    for table in ACPI_TABLES:
        if sysfs.exists(f"sys/firmware/acpi/tables/{table}"):
            rec.data(f"sys/firmware/acpi/tables/{table}", b"")
    for mod in rec.listed("sys/module"):
        if mod.startswith(("vfio", "kvm", "pci_stub", "iommufd")):
            rec.dir(f"sys/module/{mod}")
            for param in rec.listed(f"sys/module/{mod}/parameters"):
                rec.file(f"sys/module/{mod}/parameters/{param}")
    _record_class(rec, sysfs, "block", ("dev", "dm/name"))
    _record_class(rec, sysfs, "net", ("flags", "operstate"))
    _record_class(rec, sysfs, "graphics", ("name",))
    for size in rec.listed("sys/kernel/mm/hugepages"):
        rec.file(f"sys/kernel/mm/hugepages/{size}/nr_hugepages")
    for rel in (
        "proc/cmdline",
        "proc/mounts",
        "proc/swaps",
        "proc/meminfo",
        "proc/net/route",
        "proc/net/if_inet6",
        "proc/sys/kernel/osrelease",
        "proc/self/limits",
    ):
        rec.file(rel)
    iomem = pci_iomem(sysfs.read_lines("proc/iomem"), _memory_resources(sysfs, addresses))
    rec.data("proc/iomem", "".join(f"{line}\n" for line in iomem).encode())
    cpuinfo = sysfs.read_attr("proc/cpuinfo") or ""
    first = cpuinfo.split("\n\n", 1)[0]  # one CPU is enough: flags, vendor
    rec.data("proc/cpuinfo", (first + "\n").encode())
    release = sysfs.read_attr("proc/sys/kernel/osrelease") or ""
    for name in ("modules.dep", "modules.builtin"):
        lines = sysfs.read_lines(f"lib/modules/{release}/{name}")
        keep = [ln for ln in lines if re.search(r"/(vfio|pci-stub|pci_stub|kvm)[^/]*\.ko", ln)]
        rec.data(f"lib/modules/{release}/{name}", ("\n".join(keep) + "\n").encode())
    config = sysfs.read_lines(f"boot/config-{release}")
    iommu = [ln for ln in config if "IOMMU" in ln or ln.startswith("CONFIG_VFIO")]
    if iommu:
        rec.data(f"boot/config-{release}", ("\n".join(iommu) + "\n").encode())
    log = [ln for ln in _kernel_log(sysfs).splitlines() if _LOG_KEEP.search(ln)]
    rec.data(KERNEL_LOG, ("\n".join(log) + "\n").encode())
    rec.data(NODES, json.dumps(device_nodes(sysfs), indent=1).encode())
    journal = state_dir() / "journal.json"
    if sysfs.is_live and journal.exists():
        rec.data(SNAPSHOT_JOURNAL, journal.read_bytes())
    meta = {
        "format": 1,
        "devices": len(addresses),
        "kernel": release,
        "euid": os.geteuid(),
        "recorded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    rec.data(META, json.dumps(meta, indent=1).encode())
    return len(addresses)


def open_root(root: str | os.PathLike[str]) -> Sysfs:
    """A Sysfs for ``--root``: ``/``, a snapshot folder, or a snapshot tarball (unpacked
    to a private temporary folder removed at exit; SnapshotError, with nothing left
    behind, for one that is not safe to unpack)."""
    path = Path(root)
    if path == Path("/") or path.is_dir():
        return Sysfs(path)
    if not path.exists():
        raise SnapshotError(f"no snapshot at {path}: give a folder or a .tar.gz")
    # Nothing is read before these: a FIFO would block for ever, and tarfile's xz probe
    # reads zeros without end (/dev/zero, or a sparse file of a terabyte).
    if not path.is_file():
        raise SnapshotError(f"{path} is not a snapshot: pyvfio snapshot writes a .tar.gz")
    size = path.stat().st_size
    if size > MAX_STREAM_BYTES:
        raise SnapshotError(
            f"{path} is {size >> 20} MiB: not a snapshot pyvfio wrote (a real one is a few MiB)"
        )
    try:
        is_tar = tarfile.is_tarfile(path)
    except OSError as err:
        raise SnapshotError(f"cannot read {path}: {err.strerror}") from err
    if not is_tar:
        raise SnapshotError(f"{path} is not a snapshot: pyvfio snapshot writes a .tar.gz")
    where = Path(tempfile.mkdtemp(prefix="pyvfio-root-"))  # 0700: nobody else gets in
    try:
        _extract_safely(path, where)
    except BaseException:
        shutil.rmtree(where, ignore_errors=True)
        raise
    atexit.register(shutil.rmtree, where, True)
    return Sysfs(where)


def _extract_safely(path: Path, where: Path) -> None:
    """Unpack the tarball at ``path`` into the empty folder ``where``, or SnapshotError.

    Written by hand and used on every Python: see the module's docstring. Where
    ``tarfile.data_filter`` exists it is asked as well, after these checks, as a second
    opinion (its refusals are SnapshotErrors too).
    """
    try:
        with _decompressed(path) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            unpacker = _Unpacker(path, where)
            try:
                unpacker.unpack(tar)
            finally:
                unpacker.close()
    except SnapshotError:
        raise
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise SnapshotError(f"cannot unpack {path} into {where}: {err.strerror}") from err
        raise SnapshotError(f"{path} is damaged or not a snapshot: {err}") from err
    except _DAMAGED as err:
        raise SnapshotError(f"{path} is damaged or not a snapshot: {err}") from err


@contextlib.contextmanager
def _decompressed(path: Path) -> Iterator[io.BufferedReader]:
    """The tar stream inside ``path`` (gzip, bzip2, xz or none), cut off with a
    SnapshotError past MAX_STREAM_BYTES (a small bomb inflates to fill any disk)."""
    with open(path, "rb") as raw:
        magic = raw.read(6)
        raw.seek(0)
        opener = next((o for m, o in _DECOMPRESS if magic.startswith(m)), None)
        inner: io.BufferedIOBase = opener(raw) if opener is not None else raw
        try:
            yield io.BufferedReader(_Capped(inner, path))
        finally:
            inner.close()


class _Capped(io.RawIOBase):
    """Reads a stream until MAX_STREAM_BYTES, then refuses it."""

    def __init__(self, inner: io.BufferedIOBase, path: Path) -> None:
        super().__init__()
        self.inner, self.path, self.count = inner, path, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self.inner.read(len(buffer))
        self.count += len(data)
        if self.count > MAX_STREAM_BYTES:
            raise SnapshotError(
                f"{self.path} unpacks to more than {MAX_STREAM_BYTES >> 20} MiB: "
                "not a snapshot pyvfio wrote (a real one is a few MiB)"
            )
        buffer[: len(data)] = data
        return len(data)


_KINDS = {
    tarfile.LNKTYPE: "a hard link",
    tarfile.CHRTYPE: "a character device",
    tarfile.BLKTYPE: "a block device",
    tarfile.FIFOTYPE: "a FIFO",
    tarfile.CONTTYPE: "a contiguous file",
    tarfile.GNUTYPE_SPARSE: "a sparse file",
}
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class _Unpacker:
    """Creates members below one folder, each reached from the folder's own fd one
    component at a time with O_NOFOLLOW, so no name can pass through a link."""

    def __init__(self, path: Path, where: Path) -> None:
        self.path = path
        self.where = where
        self.top = os.open(where, _DIR_FLAGS)
        self.cached: tuple[tuple[str, ...], int] | None = None  # the last folder reached
        self.members = 0
        self.entries = 0
        self.file_bytes = 0
        self.links: list[tuple[str, tuple[str, ...], str]] = []
        self.tree = Sysfs(where)
        self.data_filter = getattr(tarfile, "data_filter", None)

    def close(self) -> None:
        if self.cached is not None:
            os.close(self.cached[1])
            self.cached = None
        if self.top >= 0:
            os.close(self.top)
            self.top = -1

    def refuse(self, name: str, why: str) -> SnapshotError:
        return SnapshotError(
            f"{self.path} has an unsafe member {name!r}: {why}; not a snapshot pyvfio wrote"
        )

    def unpack(self, tar: tarfile.TarFile) -> None:
        for member in tar:
            self.members += 1
            if self.members > MAX_MEMBERS:
                raise self.refuse(member.name, f"more than {MAX_MEMBERS} members")
            parts = self.parts(member)
            if member.issym():
                self.leads_inside(member.name, parts, member.linkname)
            if self.data_filter is not None:
                self.second_opinion(member)
            if member.isdir():
                self.folder(member.name, parts)
            elif member.type in (tarfile.REGTYPE, tarfile.AREGTYPE):
                self.file(member, parts, tar)
            else:  # symlinks: validated now, made once every folder and file is there
                self.links.append((member.name, parts, member.linkname))
        for name, parts, target in self.links:
            self.link(name, parts, target)
        for name, parts, target in self.links:
            if self.tree.resolve("/".join(parts)) is None:
                raise self.refuse(name, f"the link to {target!r} leads out once all links exist")

    def parts(self, member: tarfile.TarInfo) -> tuple[str, ...]:
        """The member's name as components, or SnapshotError for anything unsafe in it."""
        name = member.name
        if member.type == tarfile.SYMTYPE:
            if not member.linkname or member.linkname.startswith("/"):
                why = "an absolute link" if member.linkname else "an empty link"
                raise self.refuse(name, f"{why} {member.linkname!r} (it would lead to this host)")
        elif member.type in _KINDS:
            raise self.refuse(name, f"{_KINDS[member.type]}: snapshots hold files, folders, links")
        elif not (member.isdir() or member.type in (tarfile.REGTYPE, tarfile.AREGTYPE)):
            raise self.refuse(name, f"an entry of type {member.type!r}")
        if name.startswith("/"):
            raise self.refuse(name, "an absolute name")
        parts = tuple(p for p in name.split("/") if p not in ("", "."))
        if ".." in parts:
            raise self.refuse(name, "a name that climbs out with '..'")
        if len(parts) > MAX_DEPTH:
            raise self.refuse(name, f"more than {MAX_DEPTH} folders deep")
        if not parts and not member.isdir():
            raise self.refuse(name, "an empty name")
        return parts

    def leads_inside(self, name: str, parts: tuple[str, ...], target: str) -> None:
        """Refuse a link that leads out through the tree as it is now (no links yet, so
        by its text alone); where a later link changes that, :meth:`unpack` finds it."""
        if self.tree.resolve("/".join((*parts[:-1], target))) is None:
            raise self.refuse(name, f"the link to {target!r} leads out of the snapshot (or loops)")

    def second_opinion(self, member: tarfile.TarInfo) -> None:
        """tarfile's own "data" filter, where this Python has it: an extra layer only."""
        assert self.data_filter is not None
        try:
            self.data_filter(member, os.fspath(self.where))
        except tarfile.TarError as err:
            raise self.refuse(member.name, f"tarfile's data filter refuses it ({err})") from err

    def reach(self, name: str, parts: tuple[str, ...]) -> int:
        """An fd of the folder ``parts`` (made 0755 where missing), never through a link."""
        if self.cached is not None and self.cached[0] == parts:
            return self.cached[1]
        fd = os.dup(self.top)
        try:
            for part in parts:
                try:
                    os.mkdir(part, 0o755, dir_fd=fd)
                    made = True
                    self.count(name)
                except FileExistsError:
                    made = False
                try:
                    child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as err:  # ELOOP (a link) or ENOTDIR (a file)
                    raise self.refuse(name, f"{part!r} on its way is not a folder") from err
                os.close(fd)
                fd = child
                if made:
                    os.fchmod(fd, 0o755)  # whatever the umask
        except BaseException:
            os.close(fd)
            raise
        if self.cached is not None:
            os.close(self.cached[1])
        self.cached = (parts, fd)
        return fd

    def count(self, name: str) -> None:
        """One more folder, file or link made: the folders a name implies count too."""
        self.entries += 1
        if self.entries > MAX_MEMBERS:
            raise self.refuse(name, f"more than {MAX_MEMBERS} files, folders and links")

    def folder(self, name: str, parts: tuple[str, ...]) -> None:
        if parts:
            self.reach(name, parts)

    def file(self, member: tarfile.TarInfo, parts: tuple[str, ...], tar: tarfile.TarFile) -> None:
        self.file_bytes += member.size
        if self.file_bytes > MAX_FILE_BYTES:
            raise self.refuse(
                member.name, f"its {member.size} bytes pass {MAX_FILE_BYTES >> 20} MiB in all"
            )
        parent = self.reach(member.name, parts[:-1])
        self.count(member.name)
        try:
            fd = os.open(parts[-1], _FILE_FLAGS, 0o644, dir_fd=parent)
        except FileExistsError as err:
            raise self.refuse(member.name, "a second entry of that name") from err
        try:
            os.fchmod(fd, 0o644)  # no setuid, setgid or sticky bit, whatever the member says
            source = tar.extractfile(member)
            assert source is not None  # a regular member has data
            while chunk := source.read(1 << 16):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
        finally:
            os.close(fd)

    def link(self, name: str, parts: tuple[str, ...], target: str) -> None:
        parent = self.reach(name, parts[:-1])
        self.count(name)
        try:
            os.symlink(target, parts[-1], dir_fd=parent)
        except FileExistsError as err:
            raise self.refuse(name, "a second entry of that name") from err
        self.leads_inside(name, parts, target)
