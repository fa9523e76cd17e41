"""dma_alloc(numa_node=): the buffer's pages bound to a node, seen in /proc/self/numa_maps,
and every bad node refused before anything is mapped (a guest with two nodes is
tests/lab/test_numa.py)."""

from __future__ import annotations

import errno
import mmap
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from pyvfio import _mem, backends
from pyvfio.errors import UnsupportedError
from pyvfio.info import IommuInfo, IovaRange
from pyvfio.iommu import Iommu
from pyvfio.sysfs import Sysfs
from pyvfio.testing.sysfs import SyntheticHost

PAGE = mmap.PAGESIZE


class Recorder:
    """A kernel IOMMU that records the mappings asked of it."""

    name = "type1"
    pins_memory = True
    share_memory = False

    def __init__(self) -> None:
        self.mapped: dict[int, tuple[int, int]] = {}

    def fileno(self) -> int:
        return -1

    def attach(self, address: str, group: int | None) -> Any:
        raise AssertionError("no device is opened here")

    def detach(self, address: str) -> None:
        pass

    def group_fds(self) -> Mapping[int, int]:
        return {}

    def info(self) -> IommuInfo:
        return IommuInfo(PAGE, (IovaRange(0, (1 << 39) - 1),))

    def map(self, vaddr: int, iova: int, size: int, fd: int = -1, fd_offset: int = 0) -> None:
        self.mapped[iova] = (vaddr, size)

    def unmap(self, iova: int, size: int) -> None:
        del self.mapped[iova]

    def close(self) -> None:
        pass


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    backend = Recorder()
    monkeypatch.setattr(backends, "start", lambda name, sysfs, **kwargs: backend)
    return backend


@pytest.fixture
def iommu(recorder: Recorder) -> Iterator[Iommu]:
    with Iommu("type1") as iommu:
        yield iommu


def numa_maps_line(address: int) -> str:
    """The line of /proc/self/numa_maps for the mapping that holds ``address``: the one
    with the highest start at or below it (numa_maps gives starts only, in order, and
    the kernel may merge a buffer's mapping with a neighbour of the same policy, so it
    need not start at the buffer)."""
    lines = Path("/proc/self/numa_maps").read_text().splitlines()
    holding = [line for line in lines if int(line.split()[0], 16) <= address]
    if not holding:
        raise AssertionError(f"no mapping holds {address:#x} in /proc/self/numa_maps")
    return max(holding, key=lambda line: int(line.split()[0], 16))


def test_a_buffer_on_node_0_is_bound_there_and_faulted_in(iommu: Iommu) -> None:
    with iommu.dma_alloc(4 * PAGE, numa_node=0) as buf:
        assert buf.numa_node == 0
        fields = numa_maps_line(buf.address).split()
        assert "bind:0" in fields  # the policy MPOL_BIND on node 0
        assert f"N0={4}" in fields  # all four pages there already, before any touch
        assert buf.read(0, 16) == bytes(16)  # zeroed all the same


def test_without_numa_node_the_policy_is_the_default(iommu: Iommu) -> None:
    with iommu.dma_alloc(PAGE) as buf:
        assert buf.numa_node is None
        assert numa_maps_line(buf.address).split()[1] == "default"


@pytest.mark.parametrize(
    ("node", "error", "says"),
    [
        (True, TypeError, "numa_node must be an int or None, not bool"),
        ("0", TypeError, "numa_node must be an int or None, not str"),
        (-1, ValueError, "numa_node -1 is not a NUMA node number"),
        (1 << 20, ValueError, "is not a NUMA node number"),
        (1000, ValueError, "NUMA node 1000 has no memory on this host"),
    ],
)
def test_a_bad_node_is_refused_and_nothing_is_mapped(
    iommu: Iommu, recorder: Recorder, node: object, error: type[Exception], says: str
) -> None:
    with pytest.raises(error) as caught:
        iommu.dma_alloc(PAGE, numa_node=node)  # type: ignore[arg-type]
    assert says in str(caught.value)
    assert recorder.mapped == {} and iommu.mappings == ()


def test_a_kernel_without_numa_says_so(
    iommu: Iommu, recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_numa(address: int, length: int, node: int) -> None:
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(_mem, "bind_to_node", no_numa)
    with pytest.raises(UnsupportedError, match="no NUMA support"):
        iommu.dma_alloc(PAGE, numa_node=0)
    assert recorder.mapped == {}


def test_a_device_numa_node_comes_from_sysfs(tmp_path: Path) -> None:
    host = SyntheticHost(tmp_path)
    host.add_device("0000:00:10.0", 0x1234, 0x11E8, 0x00FF00, numa_node=1)
    host.add_device("0000:00:11.0", 0x1234, 0x11E8, 0x00FF00, numa_node=-1)
    sysfs = Sysfs(tmp_path)
    assert sysfs.numa_node("00:10.0") == 1
    assert sysfs.numa_node("00:11.0") is None  # -1: the firmware does not say
