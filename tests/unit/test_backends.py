"""The backends through the real Iommu and Device code, over a simulated sysfs and a
stand-in for the ioctl layer (every `pyvfio._ioctl` call the open and the bus reset
make answers as the kernel would, and is recorded); the real kernel's side is
tests/lab/test_noiommu.py and the edu suites."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pyvfio import _ioctl
from pyvfio._uapi import vfio as v
from pyvfio.host.synthetic import SimulatedKernel, q35_lab
from pyvfio.info import DependentDevice, DeviceInfo
from pyvfio.iommu import Iommu

EDU, EDU_GROUP = "0000:00:10.0", 2
EDU_DEVFN = 0x10 << 3


class FakeKernel:
    """What the open and the bus reset ask of the ioctl layer; nodes are /dev/null."""

    def __init__(self) -> None:
        self.opened: dict[str, int] = {}  # node -> fd
        self.reset_with: list[list[int]] = []

    def open_node(self, path: str, flags: int = 0) -> int:
        fd = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        self.opened[path] = fd
        return fd

    def group_get_device_fd(self, group: int, address: str) -> int:
        return self.open_node(f"device {address}")

    def device_pci_hot_reset(self, device: int, group_fds: list[int], address: Any = None) -> None:
        self.reset_with.append(list(group_fds))

    def answers(self) -> dict[str, Callable[..., Any]]:
        quiet: Callable[..., None] = lambda *args, **kwargs: None  # noqa: E731
        return {
            "open_node": self.open_node,
            "get_api_version": lambda fd: v.VFIO_API_VERSION,
            "check_extension": lambda fd, extension: True,
            "group_get_status": lambda fd, device=None: v.VfioGroupFlag.VFIO_GROUP_FLAGS_VIABLE,
            "group_set_container": quiet,
            "group_unset_container": quiet,
            "set_iommu": quiet,
            "group_get_device_fd": self.group_get_device_fd,
            "device_get_info": lambda fd, address=None: DeviceInfo(
                v.VfioDeviceFlag.VFIO_DEVICE_FLAGS_PCI, 9, 5
            ),
            "device_get_pci_hot_reset_info": lambda fd, address=None: (
                DependentDevice(0, 0, EDU_DEVFN, group_id=EDU_GROUP),
            ),
            "device_pci_hot_reset": self.device_pci_hot_reset,
        }


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKernel]:
    kernel = FakeKernel()
    for name, answer in kernel.answers().items():
        monkeypatch.setattr(_ioctl, name, answer)
    exists = os.path.exists
    monkeypatch.setattr(os.path, "exists", lambda p: str(p).startswith("/dev/vfio/") or exists(p))
    yield kernel


@pytest.fixture
def noiommu_kernel(tmp_path: Path) -> SimulatedKernel:
    """edu on vfio-pci in a group vfio made for VFIO's no-IOMMU mode."""
    kernel = q35_lab(tmp_path / "root")
    kernel.host.bind(EDU, "vfio-pci")
    kernel.host.write(f"sys/kernel/iommu_groups/{EDU_GROUP}/name", "vfio-noiommu\n")
    return kernel


def test_a_bus_reset_in_no_iommu_mode_names_the_no_iommu_group_fd(
    fake: FakeKernel, noiommu_kernel: SimulatedKernel
) -> None:
    """The no-IOMMU backend's groups are what type1's are: the reset gets their fds
    (it raised AttributeError when they were kept as tuples)."""
    with Iommu("unsafe-noiommu", sysfs=noiommu_kernel) as iommu:
        dev = iommu.open(EDU)
        assert iommu.backend == "unsafe-noiommu"
        dev.hot_reset()
        node = f"/dev/vfio/noiommu-{EDU_GROUP}"
        assert fake.reset_with == [[fake.opened[node]]]
    assert sorted(fake.opened) == ["/dev/vfio/noiommu-2", "/dev/vfio/vfio", f"device {EDU}"]
    for fd in fake.opened.values():  # the device, the group and the container: all closed
        with pytest.raises(OSError):
            os.fstat(fd)
