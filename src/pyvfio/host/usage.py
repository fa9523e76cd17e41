"""Is the host using this device? Mounted filesystems, live network links, the console;
and which processes hold it open through VFIO.

Taking such a device away from its driver pulls the floor from under the host: the
lab's root filesystem is a 9p share on a virtio-pci device, a laptop's root is on its
NVMe, an SSH session runs over the NIC. :func:`device_users` names every such use it
finds so ``pyvfio bind`` can refuse with the reason (``--force`` overrides).

A device on vfio-pci is used by whoever holds it open (:func:`device_holders`): vfio-pci
lets go of it only when the last user has closed it (the kernel's unbind waits for that),
and an open file descriptor keeps working whatever the node's owner or ACL says later.

Everything is found through sysfs class links that lead below the device's own sysfs
folder, and procfs tables, all read through :class:`~pyvfio.host.sysfs.Sysfs`.
"""

from __future__ import annotations

import os
import pwd
import select
import signal
import stat
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pyvfio.host.sysfs import LIVE, Sysfs, process_start
from pyvfio.pci.address import normalize

IFF_UP = 0x1
IPV6_LINK_LOCAL_SCOPE = 0x20


def device_path(address: str, sysfs: Sysfs = LIVE) -> str | None:
    """The device's real sysfs folder (``sys/devices/pci0000:00/...``)."""
    return sysfs.realpath(sysfs.device_dir(address))


def _below(sysfs: Sysfs, class_dir: str, device: str) -> list[str]:
    """Names in a /sys/class folder whose device sits at or below ``device``."""
    found = []
    for name in sysfs.listdir(class_dir):
        real = sysfs.realpath(f"{class_dir}/{name}")
        if real is not None and real.startswith(device + "/"):
            found.append(name)
    return found


def mounts(sysfs: Sysfs = LIVE) -> list[tuple[str, str, str]]:
    """(source, mount point, type) of every mount in ``/proc/mounts``."""
    out = []
    for line in sysfs.read_lines("proc/mounts"):
        parts = line.split()
        if len(parts) >= 3:
            point = parts[1].replace("\\040", " ")
            out.append((parts[0], point, parts[2]))
    return out


def _block_users(sysfs: Sysfs, device: str) -> list[str]:
    disks = _below(sysfs, "sys/class/block", device)
    # Partitions, then what is stacked on top (dm-crypt, LVM, md) through holders/.
    names: list[str] = []
    todo = list(disks)
    while todo:
        name = todo.pop()
        if name in names:
            continue
        names.append(name)
        todo += sysfs.listdir(f"sys/class/block/{name}/holders")
    aliases = {f"/dev/{n}": n for n in names}
    for n in names:
        dm_name = sysfs.read_attr(f"sys/class/block/{n}/dm/name")
        if dm_name:
            aliases[f"/dev/mapper/{dm_name}"] = n
    users = [f"{src} is mounted on {point}" for src, point, _ in mounts(sysfs) if src in aliases]
    for line in sysfs.read_lines("proc/swaps")[1:]:
        src = line.split()[0] if line.split() else ""
        if src in aliases:
            users.append(f"{src} is in use as swap")
    return users


def _virtio_users(sysfs: Sysfs, device: str) -> list[str]:
    users = []
    for child in sysfs.listdir(device):
        if not child.startswith("virtio"):
            continue
        # 9p's mount_tag attribute ends in the tag's NUL (net/9p/trans_virtio.c).
        tag = (sysfs.read_attr(f"{device}/{child}/mount_tag") or "").rstrip("\0")
        if not tag:
            continue
        for src, point, fstype in mounts(sysfs):
            if fstype == "9p" and src == tag:
                users.append(f"its {child} carries the 9p filesystem '{tag}' mounted on {point}")
    return users


def _net_users(sysfs: Sysfs, device: str) -> list[str]:
    users = []
    routes: dict[str, int] = {}
    for line in sysfs.read_lines("proc/net/route")[1:]:
        parts = line.split()
        if parts:
            routes[parts[0]] = routes.get(parts[0], 0) + 1
    addrs: dict[str, int] = {}
    for line in sysfs.read_lines("proc/net/if_inet6"):
        parts = line.split()
        if len(parts) >= 6 and int(parts[3], 16) != IPV6_LINK_LOCAL_SCOPE:
            addrs[parts[5]] = addrs.get(parts[5], 0) + 1
    for iface in _below(sysfs, "sys/class/net", device):
        flags = sysfs.read_int(f"sys/class/net/{iface}/flags", 16) or 0
        if not flags & IFF_UP:
            continue
        what = []
        if routes.get(iface):
            what.append(f"{routes[iface]} IPv4 route(s)")
        if addrs.get(iface):
            what.append(f"{addrs[iface]} IPv6 address(es)")
        if what:
            users.append(f"network interface {iface} is up with {' and '.join(what)}")
    return users


def _framebuffer_users(sysfs: Sysfs, device: str) -> list[str]:
    return [
        f"it drives the console framebuffer {fb}"
        for fb in _below(sysfs, "sys/class/graphics", device)
        if fb.startswith("fb")
    ]


def device_users(address: str, sysfs: Sysfs = LIVE) -> tuple[str, ...]:
    """Why the host needs ``address`` right now (empty: nothing found)."""
    addr = normalize(address)
    device = device_path(addr, sysfs)
    if device is None:
        return ()
    found: list[str] = []
    for finder in (_block_users, _virtio_users, _net_users, _framebuffer_users):
        found += finder(sysfs, device)
    found += boot_framebuffer_users(addr, sysfs)
    return tuple(dict.fromkeys(found))


# -- The boot framebuffer (/proc/iomem) ------------------------------------------------------

#: /proc/iomem names of firmware framebuffers that keep a GPU's BAR busy after boot.
BOOT_FRAMEBUFFERS = ("BOOTFB", "efifb", "vesafb", "simple-framebuffer", "simplefb")


def iomem_line(line: str) -> tuple[int, int, str] | None:
    """(start, end, name) of one /proc/iomem line (``  fe000000-fe0fffff : 0000:04:00.0``),
    None for a line that is not one."""
    span, _, name = line.strip().partition(" : ")
    start, _, end = span.partition("-")
    try:
        return int(start, 16), int(end, 16), name.strip()
    except ValueError:
        return None


def iomem_ranges(sysfs: Sysfs = LIVE) -> list[tuple[int, int, str]]:
    """(start, end, name) of every /proc/iomem line (all zero when read as non-root)."""
    return [r for r in map(iomem_line, sysfs.read_lines("proc/iomem")) if r is not None]


def bar_ranges(address: str, sysfs: Sysfs = LIVE) -> list[tuple[int, int, int]]:
    """(index, start, end) of each assigned resource in the device's ``resource`` file."""
    out = []
    rel = sysfs.device_dir(address)
    for index, line in enumerate(sysfs.read_lines(f"{rel}/resource")):
        parts = line.split()
        if len(parts) >= 3:
            start, end = int(parts[0], 16), int(parts[1], 16)
            if end > start:
                out.append((index, start, end))
    return out


def boot_framebuffer_users(address: str, sysfs: Sysfs = LIVE) -> list[str]:
    users = []
    ranges = _overlapping(bar_ranges(address, sysfs), iomem_ranges(sysfs))
    for index, name in ranges:
        users.append(f"the boot framebuffer '{name}' sits in its BAR {index}")
    return users


def _overlapping(
    bars: Iterable[tuple[int, int, int]], iomem: list[tuple[int, int, str]]
) -> list[tuple[int, str]]:
    hits = []
    for index, start, end in bars:
        for lo, hi, name in iomem:
            if hi > 0 and lo <= end and hi >= start and name in BOOT_FRAMEBUFFERS:
                hits.append((index, name))
    return hits


# -- Processes holding VFIO nodes open (/proc/PID/fd) ------------------------------------------

#: How /proc/PID/fd shows a VFIO device fd got through VFIO_GROUP_GET_DEVICE_FD: an
#: anonymous inode, which names no device. Linux 6.18 adds the device's sysfs path to
#: its /proc/PID/fdinfo (``vfio-device-syspath:``); before that only "some device" is known.
VFIO_DEVICE_FD = "anon_inode:[vfio-device]"
FDINFO_SYSPATH = "vfio-device-syspath:"
#: What a holder of a VFIO device fd whose device the kernel does not name is said to hold.
SOME_VFIO_DEVICE = "a VFIO device fd (which device, this kernel does not say)"


@dataclass(frozen=True)
class Holder:
    """A process holding a VFIO node or device open."""

    pid: int
    uid: int  # the real uid
    user: str
    command: str
    #: What it holds: node paths, "VFIO device ADDR", or SOME_VFIO_DEVICE.
    holds: tuple[str, ...]
    #: False when all it holds is a VFIO device fd whose device the kernel does not name.
    certain: bool = True
    start: int = 0  # /proc/PID/stat start time: tells a reused pid apart
    uids: tuple[int, ...] = ()  # real, effective, saved, filesystem

    def __str__(self) -> str:
        return f"pid {self.pid} ({self.user}: {self.command}) holding {', '.join(self.holds)}"

    def to_json(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "uid": self.uid,
            "user": self.user,
            "command": self.command,
            "holds": list(self.holds),
            "certain": self.certain,
        }


def _identity(st: os.stat_result) -> tuple[int, ...]:
    """What makes two opens the same node: the device number of a character device
    (however it was reached: another node, a bind mount), else the inode."""
    if stat.S_ISCHR(st.st_mode):
        return (0, st.st_rdev)
    return (1, st.st_dev, st.st_ino)


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _process(pid: str, sysfs: Sysfs) -> tuple[str, tuple[int, ...]]:
    """The command line and the uids (real, effective, saved, fs) of a process."""
    raw = sysfs.read_bytes(f"proc/{pid}/cmdline") or b""
    command = raw.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")
    if not command:
        command = f"[{sysfs.read_attr(f'proc/{pid}/comm') or '?'}]"
    if len(command) > 80:
        command = command[:77] + "..."
    uids: tuple[int, ...] = ()
    for line in sysfs.read_lines(f"proc/{pid}/status"):
        if line.startswith("Uid:"):
            uids = tuple(int(n) for n in line.split()[1:5])
    return command, uids


def holders(
    nodes: Sequence[str | os.PathLike[str]],
    *,
    device: str | None = None,
    sysfs: Sysfs = LIVE,
) -> list[Holder]:
    """Processes holding any of ``nodes`` (real paths) open, and with ``device`` (a PCI
    address) those holding that device's VFIO device fd. A VFIO device fd whose device the
    kernel does not name counts, as an uncertain holder, only when ``device`` is given.

    Reads /proc/PID/fd of every process (all of them only as root); a process that ends
    meanwhile is skipped. ``/dev/vfio/vfio`` (a type1 container) alone gives no device: the
    group node or a device fd holds the group, and those are what is looked for.
    """
    wanted: dict[tuple[int, ...], str] = {}
    for node in nodes:
        try:
            wanted[_identity(os.stat(node))] = os.fspath(node)
        except OSError:
            continue
    found = []
    for pid in sysfs.listdir("proc"):
        if not pid.isdigit():
            continue
        held: list[str] = []
        unnamed = False
        for fd in sysfs.listdir(f"proc/{pid}/fd"):
            rel = f"proc/{pid}/fd/{fd}"
            target = sysfs.readlink(rel)
            if target is None:
                continue
            if target == VFIO_DEVICE_FD and device is not None:
                named = _fdinfo_syspath(sysfs, f"proc/{pid}/fdinfo/{fd}")
                if named is None:
                    unnamed = True
                elif os.path.basename(named) == device:
                    held.append(f"VFIO device {device}")
                continue
            if not target.startswith("/") or not wanted:
                continue
            st = sysfs.stat(rel)  # follows the link to the open file itself
            if st is not None and _identity(st) in wanted:
                held.append(wanted[_identity(st)])
        if not held and not unnamed:
            continue
        command, uids = _process(pid, sysfs)
        if not uids:  # ended meanwhile
            continue
        found.append(
            Holder(
                pid=int(pid),
                uid=uids[0],
                user=_user_name(uids[0]),
                command=command,
                holds=tuple(dict.fromkeys(held)) if held else (SOME_VFIO_DEVICE,),
                certain=bool(held),
                start=process_start(int(pid), sysfs) or 0,
                uids=uids,
            )
        )
    return found


def _fdinfo_syspath(sysfs: Sysfs, rel: str) -> str | None:
    for line in sysfs.read_lines(rel):
        if line.startswith(FDINFO_SYSPATH):
            return line[len(FDINFO_SYSPATH) :].strip()
    return None


def vfio_nodes(address: str, group: int, sysfs: Sysfs = LIVE) -> list[str]:
    """The device's own VFIO nodes (relative to the root): its group node, and its cdev
    where the kernel offers iommufd."""
    nodes = [f"dev/vfio/{group}"]
    for name in sysfs.listdir(f"{sysfs.device_dir(address)}/vfio-dev"):
        if sysfs.exists(f"dev/vfio/devices/{name}"):
            nodes.append(f"dev/vfio/devices/{name}")
    return nodes


def device_holders(address: str, sysfs: Sysfs = LIVE) -> list[Holder]:
    """Processes holding ``address`` open through VFIO: its group node (which opens every
    device of the group), its cdev, or its device fd."""
    addr = normalize(address)
    group = sysfs.iommu_group(addr)
    rels = vfio_nodes(addr, group, sysfs) if group is not None else []
    return holders([sysfs.path(rel) for rel in rels], device=addr, sysfs=sysfs)


def describe_holders(found: Sequence[Holder], limit: int = 3) -> str:
    """``pid 1234 (nobody: python3 x.py) holding /dev/vfio/2, ...`` for one line."""
    text = "; ".join(str(h) for h in found[:limit])
    if len(found) > limit:
        text += f"; and {len(found) - limit} more"
    return text


# -- Ending them -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Ended:
    """What became of one holder asked to end."""

    pid: int
    outcome: str  # "ended by SIGTERM", "ended by SIGKILL", "had ended already", "still running"

    @property
    def gone(self) -> bool:
        return self.outcome != "still running"

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "outcome": self.outcome}


def end_processes(found: Sequence[Holder], grace: float = 5.0) -> list[Ended]:
    """SIGTERM each holder, SIGKILL those still there ``grace`` seconds later, and say what
    happened to each. Signals go through a pidfd opened after checking the start time,
    so a pid reused since the scan is never signalled."""
    outcome: dict[int, str] = {}
    fds: dict[int, int] = {}
    try:
        for holder in found:
            try:
                fd = os.pidfd_open(holder.pid)
            except ProcessLookupError:
                outcome[holder.pid] = "had ended already"
                continue
            if holder.start and process_start(holder.pid) != holder.start:
                os.close(fd)  # the pid is another process's now
                outcome[holder.pid] = "had ended already"
                continue
            fds[holder.pid] = fd
        for sig, name in ((signal.SIGTERM, "SIGTERM"), (signal.SIGKILL, "SIGKILL")):
            live = {pid: fd for pid, fd in fds.items() if pid not in outcome}
            for pid, fd in live.items():
                try:
                    signal.pidfd_send_signal(fd, sig)
                except ProcessLookupError:
                    outcome[pid] = "had ended already"
            for pid in _wait_exit({p: f for p, f in live.items() if p not in outcome}, grace):
                outcome[pid] = f"ended by {name}"
        return [Ended(h.pid, outcome.get(h.pid, "still running")) for h in found]
    finally:
        for fd in fds.values():
            os.close(fd)


def _wait_exit(fds: dict[int, int], timeout: float) -> list[int]:
    """The pids (of ``fds``, pidfds) that exit within ``timeout`` seconds: a pidfd turns
    readable when its process has exited."""
    deadline = time.monotonic() + timeout
    done: list[int] = []
    while len(done) < len(fds):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select([f for p, f in fds.items() if p not in done], [], [], left)
        done += [p for p, f in fds.items() if f in ready]
    return done
