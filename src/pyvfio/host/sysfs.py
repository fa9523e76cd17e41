"""All of pyvfio's reads of sysfs, procfs and /dev go through one door.

A :class:`Sysfs` reads below a root that is ``/`` on a live host and a snapshot
folder in tests, so a recorded tree replays the same answers (psutil's PROCFS_PATH,
pyudev's Attributes).
"""

from __future__ import annotations

import os
from pathlib import Path

from pyvfio.errors import DeviceNotFoundError
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

    def write_attr(self, rel: str, value: str) -> None:
        """Write one sysfs attribute; OSError propagates for the caller to explain."""
        with open(self.path(rel), "w") as f:
            f.write(value)

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
