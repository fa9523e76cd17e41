"""Record what pyvfio reads of a host into a tarball, and read such a tarball back.

``pyvfio snapshot OUT.tar.gz`` keeps the sysfs and procfs files the host tools read,
with sysfs's relative symlinks as they are, so ``--root OUT.tar.gz`` (or the folder it
unpacks to) gives every read-only command the same answers as the live host. Nothing
private goes in: configuration space is cut to the standard header and the bytes of the
capabilities pyvfio decodes (a Device Serial Number is zeroed), the kernel log to the
IOMMU, interrupt-remapping and VFIO lines, and device nodes to their modes and owners.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from pyvfio.errors import HostError
from pyvfio.host.journal import state_dir
from pyvfio.host.sysfs import IOMMU_GROUPS, LIVE, PCI_DEVICES, Sysfs
from pyvfio.pci.config import CapId, ExtCapId, parse_config

#: Written into every snapshot: what it is, for whoever opens the tarball.
META = "pyvfio/snapshot.json"
#: The kernel log lines a snapshot keeps, and the device nodes' modes and owners.
KERNEL_LOG = "pyvfio/dmesg.txt"
NODES = "pyvfio/nodes.json"

_LOG_KEEP = re.compile(r"DMAR|IOMMU|iommu|AMD-Vi|remapping|x2apic|vfio|VFIO|IVRS|efifb|simplefb")

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
DEVICE_LINKS = ("driver", "iommu_group", "physfn")

#: Bytes kept of each standard capability (after its 2-byte header), by ID.
_CAP_LENGTH: dict[int, int] = {
    CapId.PM: 8,
    CapId.MSI: 24,
    CapId.MSIX: 12,
    CapId.EXP: 60,
    CapId.AF: 6,
    CapId.SSVID: 8,
}
#: Bytes kept of each extended capability, by ID (others: the 4-byte header only).
_EXT_LENGTH: dict[int, int] = {
    ExtCapId.ERR: 0x48,
    ExtCapId.ACS: 8,
    ExtCapId.ARI: 8,
    ExtCapId.ATS: 8,
    ExtCapId.SRIOV: 0x40,
    ExtCapId.REBAR: 0x34,
    ExtCapId.PASID: 8,
    ExtCapId.PRI: 0x10,
}


class SnapshotError(HostError, ValueError):
    """``--root`` names no snapshot (bad input: exit 2)."""


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
        try:
            target = os.readlink(self.sysfs.path(rel))
        except OSError:
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

    SnapshotError when ``out`` cannot be written; a tarball cut short by an error is
    removed, so a half-written snapshot is never left behind.
    """
    if not os.fspath(out):
        raise SnapshotError("name the tarball to write, e.g. host.tar.gz")
    try:
        tar = tarfile.open(out, "w:gz")  # noqa: SIM115 - closed below, removed if cut short
    except OSError as err:
        raise SnapshotError(
            f"cannot write {os.fspath(out)}: {err.strerror}; name a file in a folder you can write"
        ) from err
    try:
        with tar:
            return _record(tar, sysfs)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(out)
        raise


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
    for table in ("DMAR", "IVRS"):
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
        "proc/iomem",
        "proc/meminfo",
        "proc/net/route",
        "proc/net/if_inet6",
        "proc/sys/kernel/osrelease",
        "proc/self/limits",
    ):
        rec.file(rel)
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
        rec.data("run/pyvfio/journal.json", journal.read_bytes())
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
    to a temporary folder removed at exit)."""
    path = Path(root)
    if path == Path("/") or path.is_dir():
        return Sysfs(path)
    if not path.exists():
        raise SnapshotError(f"no snapshot at {path}: give a folder or a .tar.gz")
    if not tarfile.is_tarfile(path):
        raise SnapshotError(f"{path} is not a snapshot: pyvfio snapshot writes a .tar.gz")
    where = Path(tempfile.mkdtemp(prefix="pyvfio-root-"))
    atexit.register(shutil.rmtree, where, True)
    with tarfile.open(path) as tar:
        _extract_safely(tar, where, path)
    return Sysfs(where)


def _extract_safely(tar: tarfile.TarFile, where: Path, path: Path) -> None:
    """Unpack a snapshot without letting a member escape ``where``.

    Python 3.11.4+ has the "data" filter for this; Debian 12's 3.11.2 does not, so
    there the same rules are checked by hand: plain files, folders and symlinks
    only, no absolute names or "..", links that stay inside.
    """
    if hasattr(tarfile, "data_filter"):
        tar.extractall(where, filter="data")
        return
    root = where.resolve()
    for member in tar.getmembers():
        target = (root / member.name).resolve()
        link_ok = True
        if member.issym():
            link_ok = (target.parent / member.linkname).resolve().is_relative_to(root)
        if (
            member.name.startswith("/")
            or not target.is_relative_to(root)
            or not link_ok
            or not (member.isfile() or member.isdir() or member.issym())
        ):
            raise SnapshotError(
                f"{path} has an unsafe member {member.name!r}: not a snapshot pyvfio wrote"
            )
    tar.extractall(where)  # every member was checked above
