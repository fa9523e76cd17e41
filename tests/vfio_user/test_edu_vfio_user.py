"""pyvfio's edu driver, unchanged, on pyvfio's edu server over vfio-user: no root, no IOMMU.

The driver-level tests of the lab's edu suite (tests/edu_driver_suite.py) run here, in
`TestEduDriver`, twice: on a device from ``pyvfio.open("vfio-user:PATH")``, whose DMA
buffers are memfds the server maps, and in an Iommu that shares no memory, where the
server's every DMA access is a DMA_READ/WRITE message the client answers. The server runs in
a thread of the test process, on a socket in the test's temporary folder.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import pyvfio
from edu_driver_suite import EduDriverSuite
from pyvfio.drivers import edu as edu_mod
from pyvfio.drivers.edu import Edu
from pyvfio.errors import VfioUserDisconnectedError
from pyvfio.pci.config import CapId
from pyvfio.server import EduDevice, Server, running
from pyvfio.vfio_user.client import VfioUserClient

#: How a test's device shares DMA memory with the server.
SHARING = ("memfd", "messages")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    with running(EduDevice(), tmp_path / "edu.sock") as srv:
        yield srv


@pytest.fixture(params=SHARING)
def sharing(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def open_edu(server: Server, sharing: str) -> pyvfio.Device:
    address = f"vfio-user:{server.path}"
    if sharing == "memfd":
        return pyvfio.open(address)
    iommu = pyvfio.Iommu(backend="vfio-user", share_memory=False)
    dev = iommu.open(address)
    dev._owns_iommu = True  # closed with the device, as pyvfio.open's is
    return dev


@pytest.fixture
def edu_dev(server: Server, sharing: str) -> Iterator[pyvfio.Device]:
    with open_edu(server, sharing) as dev:
        yield dev


@pytest.fixture
def edu(edu_dev: pyvfio.Device) -> Edu:
    return Edu(edu_dev)


class TestEduDriver(EduDriverSuite):
    """The driver-level tests (tests/edu_driver_suite.py), on this module's ``edu``."""


def client_of(dev: pyvfio.Device) -> VfioUserClient:
    transport = dev._transport
    assert isinstance(transport, VfioUserClient)
    return transport


def test_identity_and_liveness(edu: Edu, edu_dev: pyvfio.Device) -> None:
    assert edu_dev.iommu.backend == "vfio-user"
    assert edu_dev.group is None and edu_dev.bdf.startswith("vfio-user:/")
    assert edu.ident == 0x010000ED and edu.version == (1, 0)
    assert edu.is_alive()
    for value in (0, 0x12345678, 0xFFFFFFFF):
        assert edu.liveness(value) == value ^ 0xFFFFFFFF
    edu.bar0.write64(edu_mod.REG_DMA_SRC, 0x1122334455667788)
    assert edu.bar0.read64(edu_mod.REG_DMA_SRC) == 0x1122334455667788


def test_registers_go_by_message_where_nothing_may_be_mapped(edu: Edu) -> None:
    assert not edu.bar0.info.mmap_allowed
    with pytest.raises(pyvfio.UnsupportedError, match="cannot be mmap'd"):
        edu.bar0.map()
    assert not edu.bar0.mapped


def test_config_space_is_the_servers(edu_dev: pyvfio.Device) -> None:
    cfg = edu_dev.config
    assert (cfg.read16(0), cfg.read16(2)) == (0x1234, 0x11E8)
    space = cfg.capabilities
    assert not space.problems
    msi = space.find(CapId.MSI)
    assert msi is not None and msi.offset == 0x40
    info = edu_dev.irq_info("msi")
    assert info.count == 1 and info.eventfd


def test_dma_goes_the_way_the_memory_is_shared(edu: Edu, sharing: str) -> None:
    dev = edu.device
    client = client_of(dev)
    payload = os.urandom(64)
    with dev.dma_alloc(4096, max_iova=edu_mod.DMA_MASK) as buf:
        buf.write(payload)
        before = client.dma_requests_served
        edu.to_device(buf, 64)
        edu.from_device(buf, 64, offset=2048)
        assert buf.read(2048, 64) == payload
        served = client.dma_requests_served - before
    if sharing == "memfd":
        assert served == 0  # the server reached the memfd directly
    else:
        assert served == 2  # one DMA_READ, one DMA_WRITE


def test_dma_by_messages_while_the_caller_sleeps_on_the_interrupt(edu: Edu, sharing: str) -> None:
    """The server's DMA_READ comes while no call waits on the socket: the client's
    service thread answers it, then the completion MSI wakes the caller."""
    dev = edu.device
    irq = dev.enable_irqs("msi")[0]
    with dev.dma_alloc(4096, max_iova=edu_mod.DMA_MASK) as buf:
        buf.write(b"sleeping caller")
        edu.to_device(buf, 15, irq=irq)
        edu.from_device(buf, 15, offset=100, irq=irq)
        assert buf.read(100, 15) == b"sleeping caller"


def test_reset_clears_the_device(edu: Edu, edu_dev: pyvfio.Device) -> None:
    assert edu_dev.info.reset_works
    edu.bar0.write64(edu_mod.REG_DMA_SRC, 0xABCD000)
    edu.liveness(0x1234)
    edu_dev.reset()
    assert edu.bar0.read64(edu_mod.REG_DMA_SRC) == 0
    assert edu.bar0.read32(edu_mod.REG_LIVENESS) == 0  # it held ~0x1234 before
    assert edu.factorial(5) == 120  # and it works on
    with pytest.raises(pyvfio.UnsupportedError, match="bus-reset"):
        edu_dev.hot_reset()


def closed_fd(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return True
    return False


def test_close_releases_everything_and_later_use_is_refused(server: Server, sharing: str) -> None:
    dev = open_edu(server, sharing)
    iommu = dev.iommu
    bufs = [dev.dma_alloc(4096) for _ in range(4)]
    irqs = dev.enable_irqs("msi")
    assert len(iommu.mappings) == 4 and Edu(dev).is_alive()
    # The client's own fds: the socket, the eventfds and (shared) the memfds. The
    # server, a thread of this process, closes its copies when it sees us go.
    ours = [dev.fileno(), *(i.fileno() for i in irqs), *(b._memfd for b in bufs if b._memfd >= 0)]
    assert len(ours) == (6 if sharing == "memfd" else 2)
    dev.close()
    dev.close()  # twice is fine
    assert dev.closed and iommu.closed and all(b.freed for b in bufs)
    assert all(closed_fd(fd) for fd in ours)
    with pytest.raises(pyvfio.ClosedError):
        dev.bar(0).read32(0)
    with pytest.raises(pyvfio.ClosedError):
        irqs[0].wait(0)
    with pytest.raises(pyvfio.ClosedError):
        iommu.dma_alloc(4096)


def test_server_going_away_is_a_clear_error(server: Server, sharing: str) -> None:
    dev = open_edu(server, sharing)
    edu = Edu(dev)
    assert edu.is_alive()
    server.stop()
    with pytest.raises(VfioUserDisconnectedError, match="closed the connection") as info:
        edu.ident  # noqa: B018 - the register read is the point
    assert "VFIO_USER_REGION_READ" in str(info.value)
    assert "open it again once the server is back" in str(info.value)
    with pytest.raises(VfioUserDisconnectedError):
        edu.liveness(1)
    dev.close()  # closing a device whose server is gone frees what it holds
    assert dev.closed and dev.iommu.closed


def test_one_iommu_two_servers_and_mappings_replayed(tmp_path: Path) -> None:
    """A buffer mapped before the second device opens reaches it too."""
    with (
        running(EduDevice(), tmp_path / "a.sock") as first,
        running(EduDevice(), tmp_path / "b.sock") as second,
        pyvfio.Iommu(backend="vfio-user") as iommu,
    ):
        buf = iommu.dma_alloc(4096, max_iova=edu_mod.DMA_MASK)
        buf.write(b"shared by two")
        a = Edu(iommu.open(f"vfio-user:{first.path}"))
        b = Edu(iommu.open(f"vfio-user:{second.path}"))
        assert {d.bdf for d in iommu.devices} == {a.device.bdf, b.device.bdf}
        a.to_device(buf, 13)
        a.from_device(buf, 13, offset=1024)
        b.to_device(buf, 13, offset=1024)
        b.from_device(buf, 13, offset=2048)
        assert buf.read(2048, 13) == b"shared by two"
        with pytest.raises(pyvfio.VfioError, match="already open"):
            iommu.open(f"vfio-user:{first.path}")


def test_a_vfio_user_iommu_opens_only_vfio_user_devices(server: Server) -> None:
    with pyvfio.Iommu(backend="vfio-user") as iommu:
        with pytest.raises(pyvfio.UnsupportedError, match="serves vfio-user devices"):
            iommu.open("0000:00:10.0")
        assert iommu.open(f"vfio-user:{server.path}").info.reset_works


def test_the_driver_opens_a_vfio_user_address_itself(server: Server) -> None:
    with Edu.open(f"vfio-user:{server.path}") as edu:
        assert edu.factorial(12) == 479001600
        assert edu.device.iommu.backend == "vfio-user"
    assert edu.device.closed and edu.device.iommu.closed
