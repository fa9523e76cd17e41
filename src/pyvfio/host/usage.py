"""Is the host using this device? Mounted filesystems, live network links, the console.

Taking such a device away from its driver pulls the floor from under the host: the
lab's root filesystem is a 9p share on a virtio-pci device, a laptop's root is on its
NVMe, an SSH session runs over the NIC. :func:`device_users` names every such use it
finds so ``pyvfio bind`` can refuse with the reason (``--force`` overrides).

Everything is found through sysfs class links that lead below the device's own sysfs
folder, and procfs tables, all read through :class:`~pyvfio.host.sysfs.Sysfs`.
"""

from __future__ import annotations

from collections.abc import Iterable

from pyvfio.host.sysfs import LIVE, Sysfs
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
