"""Iommu.map/unmap and the batched map_pages/unmap_pages through the real Iommu code,
over a stand-in backend that records what the kernel would be asked (the real
kernel's side is the edu and NVMe lab suites); the lock that makes an Iommu safe to
share between threads; what a map no longer does per call."""

from __future__ import annotations

import errno
import mmap
import resource
import threading
import time
from array import array
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from pyvfio import backends
from pyvfio import iommu as iommu_mod
from pyvfio.dma import DmaMapping
from pyvfio.errors import IovaExhaustedError, MemlockLimitError, VfioError
from pyvfio.info import IommuInfo, IovaRange
from pyvfio.iommu import Iommu

PAGE = mmap.PAGESIZE


class FakeBackend:
    """A kernel IOMMU as the Iommu sees it: maps recorded, a map refused on demand."""

    name = "type1"
    pins_memory = True
    share_memory = False

    def __init__(self, space: int = 1 << 39) -> None:
        self.space = space
        self.mapped: dict[int, tuple[int, int]] = {}  # iova -> (vaddr, size)
        self.calls: list[tuple[str, int, int]] = []
        self.refuse_map_at: int | None = None  # the nth map (from 0) fails with ENOSPC
        self.refuse_unmap: set[int] = set()
        self.inside = 0  # calls in progress: more than one means no lock held them apart
        self.most_inside = 0
        self.closed = False

    def fileno(self) -> int:
        return -1

    def attach(self, address: str, group: int | None) -> Any:
        raise AssertionError("no device is opened here")

    def detach(self, address: str) -> None:
        pass

    def group_fds(self) -> Mapping[int, int]:
        return {}

    def info(self) -> IommuInfo:
        return IommuInfo(PAGE, (IovaRange(0, self.space - 1),))

    def _enter(self) -> None:
        self.inside += 1
        self.most_inside = max(self.most_inside, self.inside)
        time.sleep(0)  # let another thread run here if nothing holds it out

    def map(self, vaddr: int, iova: int, size: int, fd: int = -1, fd_offset: int = 0) -> None:
        self._enter()
        try:
            n = sum(1 for call in self.calls if call[0] == "map")
            self.calls.append(("map", iova, size))
            if n == self.refuse_map_at:
                raise VfioError(
                    "VFIO_IOMMU_MAP_DMA failed: No space left on device (errno 28)",
                    errno=errno.ENOSPC,
                    ioctl="VFIO_IOMMU_MAP_DMA",
                )
            assert iova not in self.mapped
            self.mapped[iova] = (vaddr, size)
        finally:
            self.inside -= 1

    def unmap(self, iova: int, size: int) -> None:
        self._enter()
        try:
            self.calls.append(("unmap", iova, size))
            assert self.mapped.pop(iova)[1] == size
            if iova in self.refuse_unmap:
                raise VfioError("VFIO_IOMMU_UNMAP_DMA failed", errno=errno.EINVAL)
        finally:
            self.inside -= 1

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeBackend:
    backend = FakeBackend()
    monkeypatch.setattr(backends, "start", lambda name, sysfs, **kwargs: backend)
    return backend


@pytest.fixture
def iommu(fake: FakeBackend) -> Iterator[Iommu]:
    with Iommu("type1") as iommu:
        yield iommu


@pytest.fixture
def memory() -> Iterator[mmap.mmap]:
    area = mmap.mmap(-1, 16 * PAGE)
    yield area
    area.close()


def address_of(area: mmap.mmap) -> int:
    import ctypes

    window = ctypes.c_char.from_buffer(area)
    try:
        return ctypes.addressof(window)
    finally:
        del window


# -- map_pages / unmap_pages ------------------------------------------------------------


def test_map_pages_maps_each_page_alone_and_returns_their_iovas(
    iommu: Iommu, fake: FakeBackend, memory: mmap.mmap
) -> None:
    base = address_of(memory)
    iovas = iommu.map_pages(memory)
    assert isinstance(iovas, array) and iovas.typecode == "Q" and len(iovas) == 16
    assert len(set(iovas)) == 16 and all(i % PAGE == 0 for i in iovas)
    assert [fake.mapped[i] for i in iovas] == [(base + n * PAGE, PAGE) for n in range(16)]
    assert iommu.mappings == tuple(
        DmaMapping(i, PAGE, base + n * PAGE) for n, i in enumerate(iovas)
    )
    iommu.unmap_pages(iovas[::2])  # any of them, alone
    assert sorted(fake.mapped) == sorted(iovas[1::2])
    iommu.unmap(iovas[1])  # or one by one, like any mapping
    iommu.unmap_pages(iovas[3::2])
    assert fake.mapped == {} and iommu.mappings == ()
    assert iommu._alloc().allocated() == 0 and iommu._pinned == 0


def test_map_pages_by_address_with_a_larger_page(
    iommu: Iommu, fake: FakeBackend, memory: mmap.mmap
) -> None:
    base = address_of(memory)
    iovas = iommu.map_pages(base, 4 * PAGE, size=16 * PAGE, max_iova=(1 << 32) - 1)
    assert len(iovas) == 4
    assert [fake.mapped[i] for i in iovas] == [(base + n * 4 * PAGE, 4 * PAGE) for n in range(4)]
    assert all(i + 4 * PAGE - 1 <= (1 << 32) - 1 for i in iovas)
    iommu.unmap_pages(list(iovas))
    assert fake.mapped == {}


def test_map_pages_is_all_or_nothing(iommu: Iommu, fake: FakeBackend) -> None:
    """The fifth page is refused (type1's limit of mappings, say): the four mapped
    are unmapped, the books are as before, the buffer is released, the error is the
    backend's."""
    buf = bytearray(8 * PAGE + PAGE)  # a page more, so a page-aligned window fits
    view = memoryview(buf)
    start = -address_of_buffer(buf) % PAGE
    window = view[start : start + 8 * PAGE]
    fake.refuse_map_at = 4
    with pytest.raises(VfioError, match="No space left on device") as info:
        iommu.map_pages(window)
    assert info.value.errno == errno.ENOSPC
    maps = [c for c in fake.calls if c[0] == "map"]
    unmaps = [c for c in fake.calls if c[0] == "unmap"]
    assert len(maps) == 5 and sorted(unmaps) == sorted(("unmap", i, s) for _, i, s in maps[:4])
    assert fake.mapped == {} and iommu.mappings == () and iommu._pinned == 0
    assert iommu._alloc().allocated() == 0
    window.release()
    view.release()
    buf.append(0)  # no export is left behind: the bytearray may resize again


def address_of_buffer(buf: bytearray) -> int:
    import ctypes

    return ctypes.addressof(ctypes.c_char.from_buffer(buf))


def test_map_pages_keeps_the_buffer_exported_until_the_last_page_goes(iommu: Iommu) -> None:
    area = mmap.mmap(-1, 4 * PAGE)
    iovas = iommu.map_pages(area)
    iommu.unmap_pages(iovas[:3])
    with pytest.raises(BufferError):
        area.close()  # a page is still mapped: the memory must stay
    iommu.unmap_pages(iovas[3:])
    area.close()


def test_map_pages_refusals_map_nothing(iommu: Iommu, fake: FakeBackend, memory: mmap.mmap) -> None:
    base = address_of(memory)
    with pytest.raises(ValueError, match="page_size must be a positive multiple of the IOMMU"):
        iommu.map_pages(memory, PAGE + 1)
    with pytest.raises(ValueError, match="page_size must be a positive multiple"):
        iommu.map_pages(memory, 0)
    with pytest.raises(ValueError, match=r"size 0x3000 a positive multiple of page_size 0x2000"):
        iommu.map_pages(base, 2 * PAGE, size=3 * PAGE)
    with pytest.raises(ValueError, match="must be a multiple of"):
        iommu.map_pages(base + 8, size=PAGE)
    with pytest.raises(TypeError, match="the size is required with an address"):
        iommu.map_pages(base)
    with pytest.raises(TypeError, match="needs a writable, contiguous buffer"):
        iommu.map_pages(bytes(PAGE))  # type: ignore[arg-type]
    with pytest.raises(IovaExhaustedError, match="no free IOVA range fits"):
        iommu.map_pages(memory, max_iova=PAGE)  # the first page: nothing mapped yet
    assert fake.calls == [] and iommu.mappings == ()


def test_map_pages_out_of_iova_space_part_way_undoes_the_rest(
    monkeypatch: pytest.MonkeyPatch, memory: mmap.mmap
) -> None:
    small = FakeBackend(space=8 * PAGE)  # seven pages once the zero page is kept out
    monkeypatch.setattr(backends, "start", lambda name, sysfs, **kwargs: small)
    with Iommu("type1") as iommu:
        with pytest.raises(IovaExhaustedError):
            iommu.map_pages(memory)
        assert len([c for c in small.calls if c[0] == "map"]) == 7
        assert small.mapped == {} and iommu.mappings == ()
        assert iommu.map_pages(memory, size=7 * PAGE)  # the space is whole again


def test_unmap_pages_checks_every_iova_before_unmapping_any(
    iommu: Iommu, fake: FakeBackend, memory: mmap.mmap
) -> None:
    iovas = iommu.map_pages(memory)
    cases: list[tuple[list[Any], type[Exception], str]] = [
        ([iovas[0], iovas[1] + 1], ValueError, "no DMA mapping starts at iova"),
        ([iovas[0], iovas[0]], ValueError, "is listed twice"),
        ([iovas[0], "x"], TypeError, "takes the IOVAs map_pages"),
        ([iovas[0], True], TypeError, "takes the IOVAs map_pages"),
    ]
    for bad, error, match in cases:
        with pytest.raises(error, match=match):
            iommu.unmap_pages(bad)
    assert len(fake.mapped) == 16 and not [c for c in fake.calls if c[0] == "unmap"]
    iommu.unmap_pages([])  # nothing to do
    iommu.unmap_pages(iter(iovas))  # any iterable


def test_unmap_pages_unmaps_the_rest_when_one_fails(
    iommu: Iommu, fake: FakeBackend, memory: mmap.mmap
) -> None:
    iovas = iommu.map_pages(memory, size=4 * PAGE)
    fake.refuse_unmap = {iovas[1]}
    with pytest.raises(VfioError, match="VFIO_IOMMU_UNMAP_DMA failed"):
        iommu.unmap_pages(iovas)
    assert fake.mapped == {} and iommu.mappings == ()
    assert iommu._alloc().allocated() == 0


# -- the lock ---------------------------------------------------------------------------


def test_threads_sharing_an_iommu_map_and_unmap_one_at_a_time(
    iommu: Iommu, fake: FakeBackend
) -> None:
    """An Iommu's allocator, books and the backend's one argument struct are shared:
    map and unmap hold its lock, so the backend never sees two calls at once."""
    errors: list[BaseException] = []
    area = mmap.mmap(-1, 8 * PAGE)
    base = address_of(area)

    def work(k: int) -> None:
        try:
            for _ in range(150):
                m = iommu.map(base + k * PAGE, PAGE)
                iommu.unmap(m)
                iovas = iommu.map_pages(base + k * PAGE, size=PAGE)
                iommu.unmap_pages(iovas)
        except BaseException as err:  # reported below, with the thread's traceback
            errors.append(err)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    area.close()
    assert errors == []
    assert fake.most_inside == 1
    assert len(fake.calls) == 6 * 150 * 4
    assert fake.mapped == {} and iommu.mappings == () and iommu._alloc().allocated() == 0


# -- what a map no longer does per call ------------------------------------------------------


def test_the_capability_is_asked_only_when_the_memlock_limit_would_be_passed(
    iommu: Iommu, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[int] = []

    def has_cap() -> bool:
        asked.append(1)
        return False

    monkeypatch.setattr(iommu_mod, "_has_cap_ipc_lock", has_cap)
    soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    limit = 8 * PAGE
    if hard != resource.RLIM_INFINITY and hard < limit:
        pytest.skip(f"RLIMIT_MEMLOCK's hard limit {hard} is below {limit}")
    resource.setrlimit(resource.RLIMIT_MEMLOCK, (limit, hard))
    try:
        held = [iommu.map(PAGE * (16 + n), PAGE) for n in range(8)]  # up to the limit
        for _ in range(50):
            iommu.unmap(held.pop())
            held.append(iommu.map(PAGE * 40, PAGE))
        assert asked == []  # never over the limit: not asked once in 58 maps
        with pytest.raises(MemlockLimitError, match=f"RLIMIT_MEMLOCK of {limit} bytes") as info:
            iommu.map(PAGE * 50, PAGE)
        assert asked == [1]
        assert info.value.limit == limit and info.value.requested == PAGE
        with pytest.raises(MemlockLimitError):
            iommu.map_pages(PAGE * 64, size=2 * PAGE)
        assert len(iommu.mappings) == 8
    finally:
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (soft, hard))


def test_a_dma_buffer_makes_no_mapping_object(
    iommu: Iommu, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dma_alloc returns the DmaBuffer: no DmaMapping is made for it behind the scenes
    (one was made and dropped per buffer); mappings still lists it."""
    made: list[int] = []

    class Counted(DmaMapping):
        def __init__(self, iova: int, size: int, vaddr: int) -> None:
            made.append(iova)
            super().__init__(iova, size, vaddr)

    monkeypatch.setattr(iommu_mod, "DmaMapping", Counted)
    with iommu.dma_alloc(2 * PAGE) as buf:
        assert made == []
        assert [(m.iova, m.size, m.vaddr) for m in iommu.mappings] == [
            (buf.iova, 2 * PAGE, buf.address)
        ]
    assert iommu.mappings == ()
