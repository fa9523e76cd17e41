"""The backends through the real Iommu and Device code, over a simulated sysfs and a
stand-in for the ioctl layer (every `pyvfio._ioctl` call the open and the bus reset
make answers as the kernel would, and is recorded); the real kernel's side is
tests/lab/test_noiommu.py and the edu suites."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pyvfio import _ioctl, viability
from pyvfio._uapi import vfio as v
from pyvfio._uapi.pci_regs import PCI_EXP_LNKCAP, PCI_EXP_LNKCAP_SLS, PCI_EXP_LNKSTA
from pyvfio._uapi.pci_regs import PCI_EXP_LNKCAP_DLLLARC as DLLLARC
from pyvfio._uapi.pci_regs import PCI_EXP_LNKSTA_DLLLA as DLLLA
from pyvfio.errors import UnsupportedError
from pyvfio.host import details
from pyvfio.host.synthetic import SimulatedKernel, q35_lab
from pyvfio.info import DependentDevice, DeviceInfo
from pyvfio.iommu import Iommu
from pyvfio.pci.config import parse_config

EDU, EDU_GROUP = "0000:00:10.0", 2
EDU_DEVFN = 0x10 << 3


class FakeKernel:
    """What the open and the bus reset ask of the ioctl layer; nodes are /dev/null."""

    def __init__(self) -> None:
        self.opened: dict[str, int] = {}  # node -> fd
        self.reset_with: list[list[int]] = []
        #: The devices a bus reset takes along, or the errno GET_PCI_HOT_RESET_INFO fails with.
        self.dependents: tuple[DependentDevice, ...] | int = (
            DependentDevice(0, 0, EDU_DEVFN, group_id=EDU_GROUP),
        )
        #: The errno VFIO_DEVICE_PCI_HOT_RESET fails with (None: it works).
        self.hot_reset_errno: int | None = None

    def hot_reset_info(self, device: int, address: Any = None) -> tuple[DependentDevice, ...]:
        if isinstance(self.dependents, int):
            raise _ioctl._error(self.dependents, "VFIO_DEVICE_GET_PCI_HOT_RESET_INFO", address)
        return self.dependents

    def open_node(self, path: str, flags: int = 0) -> int:
        fd = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        self.opened[path] = fd
        return fd

    def group_get_device_fd(self, group: int, address: str) -> int:
        return self.open_node(f"device {address}")

    def device_pci_hot_reset(self, device: int, group_fds: list[int], address: Any = None) -> None:
        if self.hot_reset_errno is not None:
            raise _ioctl._error(self.hot_reset_errno, "VFIO_DEVICE_PCI_HOT_RESET", address)
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
            "device_get_pci_hot_reset_info": self.hot_reset_info,
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


# -- bus resets: when they cannot work, and the kernel's reason ----------------------------

NIC, NIC_GROUP, PORT = "0000:01:00.0", 5, "0000:00:18.0"


def port_link(kernel: SimulatedKernel, port: str, *, gts16: bool, reports: bool, up: bool) -> None:
    """Give ``port``'s PCIe capability a link of 16 GT/s (else 2.5), Link Active
    reporting, and Link Active as asked, as QEMU's pcie-root-port shows them."""
    path = kernel.host.path(f"{kernel.host.real[port]}/config")
    data = bytearray(path.read_bytes())
    express = parse_config(data).express
    assert express is not None
    cap, sta = express.offset + PCI_EXP_LNKCAP, express.offset + PCI_EXP_LNKSTA
    lnkcap = int.from_bytes(data[cap : cap + 4], "little") & ~(PCI_EXP_LNKCAP_SLS | DLLLARC)
    lnkcap |= (4 if gts16 else 1) | (DLLLARC if reports else 0)
    lnksta = int.from_bytes(data[sta : sta + 2], "little") & ~DLLLA | (DLLLA if up else 0)
    data[cap : cap + 4] = lnkcap.to_bytes(4, "little")
    data[sta : sta + 2] = lnksta.to_bytes(2, "little")
    path.write_bytes(bytes(data))


@pytest.fixture
def nic_kernel(tmp_path: Path) -> SimulatedKernel:
    """The lab's e1000e below its root port, on vfio-pci; the port as QEMU 7.2 makes it
    at its default speed: 16 GT/s, Link Active reporting, the link reported down."""
    kernel = q35_lab(tmp_path / "root")
    kernel.host.bind(NIC, "vfio-pci")
    port_link(kernel, PORT, gts16=True, reports=True, up=False)
    return kernel


@pytest.mark.parametrize(
    ("gts16", "reports", "up", "gives_up"),
    [
        (True, True, False, True),  # QEMU 7.2's pcie-root-port at x-speed=16
        (True, True, True, False),  # a real Gen4 port with its link up
        (True, False, False, False),  # no reporting: the kernel sleeps 1 s and goes on
        (False, True, False, False),  # 2.5 GT/s: the kernel polls the device instead
    ],
)
def test_the_kernel_gives_up_after_a_bus_reset_only_where_the_port_says_the_link_is_down(
    tmp_path: Path, gts16: bool, reports: bool, up: bool, gives_up: bool
) -> None:
    kernel = q35_lab(tmp_path / "root")
    port_link(kernel, PORT, gts16=gts16, reports=reports, up=up)
    express = parse_config(kernel.read_bytes(f"{kernel.device_dir(PORT)}/config") or b"").express
    assert express is not None and express.bus_reset_gives_up is gives_up
    why = viability.bus_reset_blocker(NIC, kernel)
    assert (why is not None) is gives_up
    if why is not None:
        assert PORT in why and "x-speed=2_5" in why
    assert "root bus" in (viability.bus_reset_blocker(EDU, kernel) or "")


def test_a_failed_bus_reset_says_the_port_never_reported_the_link_up(
    fake: FakeKernel, nic_kernel: SimulatedKernel
) -> None:
    """What nvme and e1000e below the lab's root ports answered (issue 19): ENOTTY
    after the reset, from the kernel's wait for the link (on main: 'this kernel or
    device does not support it')."""
    fake.dependents = (DependentDevice(0, 1, 0, group_id=NIC_GROUP),)
    fake.hot_reset_errno = errno.ENOTTY
    with Iommu("type1", sysfs=nic_kernel) as iommu:
        dev = iommu.open(NIC)
        with pytest.raises(UnsupportedError) as caught:
            dev.hot_reset()
    message = str(caught.value)
    assert caught.value.errno == errno.ENOTTY and "\n" not in message
    assert f"the kernel reset the bus of {NIC} but gave up on it" in message
    assert f"its port {PORT}" in message and "x-speed=2_5" in message


def test_reset_suggests_a_bus_reset_only_where_one_can_work(
    fake: FakeKernel, nic_kernel: SimulatedKernel
) -> None:
    """edu has no function reset; on the root bus the kernel's probe says ENODEV, below
    the QEMU port the reset would give up: reset() suggests hot_reset() in neither case
    (on main it did in both), and does where the port's link is up."""
    nic_kernel.host.bind(EDU, "vfio-pci")
    fake.dependents = errno.ENODEV
    with Iommu("type1", sysfs=nic_kernel) as iommu:
        edu = iommu.open(EDU)
        assert not edu.info.reset_works
        with pytest.raises(UnsupportedError) as caught:
            edu.reset()
        assert "try hot_reset()" not in str(caught.value)
        assert "root bus" in str(caught.value)
        with pytest.raises(UnsupportedError, match=f"{EDU} cannot be bus-reset: .*root bus"):
            edu.hot_reset()
        fake.dependents = (DependentDevice(0, 1, 0, group_id=NIC_GROUP),)
        nic = iommu.open(NIC)
        with pytest.raises(UnsupportedError) as caught:
            nic.reset()
        assert "try hot_reset()" not in str(caught.value) and PORT in str(caught.value)
        port_link(nic_kernel, PORT, gts16=True, reports=True, up=True)
        with pytest.raises(UnsupportedError, match=r"try hot_reset\(\) for a bus reset"):
            nic.reset()
        nic.hot_reset()
        assert fake.reset_with == [[fake.opened[f"/dev/vfio/{NIC_GROUP}"]]]


def test_show_says_where_the_kernels_bus_reset_fails(nic_kernel: SimulatedKernel) -> None:
    """`pyvfio show` printed "kernel offers: flr bus" for nvme and e1000e below the lab's
    ports, where every bus reset failed: it says so now, and confirms no bus reset."""
    reset = details.describe(NIC, nic_kernel).reset
    assert reset.kernel == ("flr", "bus") and not reset.bus
    assert f"but a bus reset fails here: its port {PORT}" in str(reset)
    port_link(nic_kernel, PORT, gts16=True, reports=True, up=True)
    reset = details.describe(NIC, nic_kernel).reset
    assert reset.bus and reset.bus_blocked is None and "fails here" not in str(reset)
