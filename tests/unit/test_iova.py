"""pyvfio.iova: best-fit IOVA allocation, checked rule by rule and against a model."""

from __future__ import annotations

import random
from bisect import bisect_left
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import pairwise
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from pyvfio import iova as iova_module
from pyvfio.errors import IovaExhaustedError, VfioError
from pyvfio.iova import IovaAllocator

PAGE = 0x1000
MiB = 1 << 20
GiB = 1 << 30


def pages(n: int) -> int:
    return n * PAGE


# -- construction ---------------------------------------------------------------------


def test_zero_page_is_kept_out_by_default() -> None:
    a = IovaAllocator([(0, GiB - 1)])
    assert a.free_blocks() == [(PAGE, GiB - 1)]
    assert a.allocate(PAGE) == PAGE


def test_reserve_zero_false_hands_out_zero() -> None:
    a = IovaAllocator([(0, GiB - 1)], reserve_zero=False)
    assert a.free_blocks() == [(0, GiB - 1)]
    assert a.allocate(PAGE) == 0


def test_reserve_zero_is_harmless_when_zero_is_not_usable() -> None:
    a = IovaAllocator([(MiB, 2 * MiB - 1)])
    assert a.free_blocks() == [(MiB, 2 * MiB - 1)]


def test_ranges_are_trimmed_to_pages_sorted_and_merged() -> None:
    a = IovaAllocator(
        [(5 * MiB, 6 * MiB - 1), (MiB + 1, 2 * MiB + 10), (2 * MiB, 3 * MiB - 1)],
        reserve_zero=False,
    )
    # (MiB + 1, ...) starts inside a page; 2 MiB + 10 ends inside one; touching merge.
    assert a.ranges == ((MiB + PAGE, 3 * MiB - 1), (5 * MiB, 6 * MiB - 1))
    assert a.free_blocks() == [(MiB + PAGE, 3 * MiB - 1), (5 * MiB, 6 * MiB - 1)]


def test_reserved_ranges_are_widened_to_pages_and_kept_out() -> None:
    msi = (0xFEE00000, 0xFEEFFFFF)
    a = IovaAllocator([(0, (1 << 39) - 1)], reserved=[msi, (0x10010, 0x10020)])
    assert a.reserved == ((0, PAGE - 1), (0x10000, 0x10FFF), msi)
    assert a.free_blocks() == [
        (PAGE, 0xFFFF),
        (0x11000, 0xFEDFFFFF),
        (0xFEF00000, (1 << 39) - 1),
    ]


def test_ranges_may_be_objects_with_start_and_last() -> None:
    @dataclass(frozen=True)
    class Range:
        start: int
        last: int

    a = IovaAllocator([Range(0, MiB - 1)], reserved=[Range(PAGE, 2 * PAGE - 1)])
    assert a.free_blocks() == [(2 * PAGE, MiB - 1)]


@pytest.mark.parametrize(
    ("ranges", "kwargs", "match"),
    [
        ([(0, MiB - 1)], {"page_size": 3000}, "page_size 0xbb8 is not a power of two"),
        ([(10, 20)], {}, "no usable IOVA range holds a whole"),
        ([], {}, "no usable IOVA range"),
        ([(MiB, 0)], {}, "not an inclusive"),
        ([(-1, MiB)], {}, "not an inclusive"),
        ([(0, 1 << 64)], {}, "not an inclusive"),
    ],
)
def test_bad_construction(
    ranges: list[tuple[int, int]], kwargs: dict[str, int], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        IovaAllocator(ranges, **kwargs)  # type: ignore[arg-type]


def test_full_64_bit_space() -> None:
    top = (1 << 64) - 1
    a = IovaAllocator([(0, top)])
    assert a.free_blocks() == [(PAGE, top)]
    a.reserve(top + 1 - PAGE, PAGE)
    assert a.lookup(top) == (top + 1 - PAGE, PAGE)


# -- allocate: size, alignment, max_iova ----------------------------------------------


def test_size_is_rounded_up_to_pages() -> None:
    a = IovaAllocator([(0, MiB - 1)])
    iova = a.allocate(1)
    assert a.lookup(iova) == (iova, PAGE)
    assert a.allocate(PAGE + 1) == 2 * PAGE
    assert a.bytes_allocated == 3 * PAGE
    assert a.free(2 * PAGE) == 2 * PAGE


def test_larger_page_size() -> None:
    a = IovaAllocator([(0, GiB - 1)], page_size=64 * 1024)
    assert a.allocate(1) == 64 * 1024
    assert a.allocate(1) == 128 * 1024


def test_alignment_is_honoured_and_the_gap_stays_free() -> None:
    a = IovaAllocator([(0, 16 * MiB - 1)])
    iova = a.allocate(2 * MiB, align=2 * MiB)
    assert iova == 2 * MiB
    assert a.free_blocks() == [(PAGE, 2 * MiB - 1), (4 * MiB, 16 * MiB - 1)]
    # The hole under the aligned block is still used for small buffers.
    assert a.allocate(PAGE) == PAGE


def test_alignment_skips_a_block_big_enough_but_misaligned() -> None:
    a = IovaAllocator([(0, 8 * MiB - 1)], reserve_zero=False)
    a.reserve(0, PAGE)
    a.reserve(2 * MiB + PAGE, PAGE)  # free: [4K, 2M + 4K) and [2M + 8K, 8M)
    # The first block is smaller (best fit would pick it) but has no 2 MiB-aligned 2 MiB.
    assert a.allocate(2 * MiB, align=2 * MiB) == 4 * MiB


def test_max_iova_is_an_inclusive_bound_on_the_last_byte() -> None:
    a = IovaAllocator([(0, GiB - 1)])
    mask = (1 << 24) - 1
    a.reserve(PAGE, 16 * MiB - 2 * PAGE)  # leaves exactly the top page under the mask
    iova = a.allocate(PAGE, max_iova=mask)
    assert iova == 16 * MiB - PAGE
    assert iova + PAGE - 1 == mask
    with pytest.raises(IovaExhaustedError):
        a.allocate(PAGE, max_iova=mask)
    assert a.allocate(PAGE) == 16 * MiB


def test_max_iova_straddling_a_block_uses_its_low_part() -> None:
    a = IovaAllocator([(0, GiB - 1)])
    assert a.allocate(MiB, max_iova=(1 << 28) - 1) == PAGE


def test_max_iova_prefers_the_smallest_block_under_the_mask() -> None:
    a = IovaAllocator([(0, GiB - 1)])
    # Under 1 MiB: holes of 3 pages at 16K and of 2 pages at 64K; many small holes above.
    a.reserve(PAGE, pages(3))
    a.reserve(pages(7), pages(9))
    a.reserve(pages(18), MiB - pages(18))
    for i in range(50):  # 1-page holes above the mask, more than the holes below it
        a.reserve(MiB + pages(2 * i + 1), PAGE)
    assert a.allocate(pages(2), max_iova=MiB - 1) == pages(16)
    assert a.allocate(pages(2), max_iova=MiB - 1) == pages(4)
    with pytest.raises(IovaExhaustedError):
        a.allocate(pages(2), max_iova=MiB - 1)
    assert a.allocate(PAGE, max_iova=MiB - 1) == pages(6)


def test_max_iova_ties_go_to_the_lowest_address() -> None:
    a = IovaAllocator([(0, GiB - 1)])
    a.reserve(PAGE, pages(9))
    a.reserve(pages(12), pages(8))
    a.reserve(pages(22), MiB - pages(22))  # under 1 MiB: 2-page holes at pages 10 and 20
    for i in range(50):
        a.reserve(MiB + pages(3 * i + 2), PAGE)  # 2-page holes above it
    assert a.allocate(PAGE, max_iova=MiB - 1) == pages(10)
    assert a.allocate(pages(2), max_iova=MiB - 1) == pages(20)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"size": 0}, "size must be positive, not 0"),
        ({"size": -PAGE}, "size must be positive"),
        ({"size": PAGE, "align": 3 * PAGE}, "align 0x3000 is not a power of two"),
        ({"size": PAGE, "align": 0}, "not a power of two"),
        ({"size": PAGE, "align": 512}, "align 0x200 is below the IOMMU page size 0x1000"),
        ({"size": PAGE, "max_iova": MiB - 1}, "max_iova 0xfffff is below the lowest usable"),
    ],
)
def test_bad_allocate_arguments(kwargs: dict[str, int], match: str) -> None:
    a = IovaAllocator([(MiB, GiB - 1)])
    with pytest.raises(ValueError, match=match) as excinfo:
        a.allocate(**kwargs)
    assert "\n" not in str(excinfo.value)


# -- best fit -------------------------------------------------------------------------


def _holes(a: IovaAllocator, holes: list[tuple[int, int]]) -> None:
    """Reserve all of the single free block except ``holes`` (start, size)."""
    ((cursor, last),) = a.free_blocks()
    for h_start, h_size in sorted(holes):
        if h_start > cursor:
            a.reserve(cursor, h_start - cursor)
        cursor = h_start + h_size
    a.reserve(cursor, last + 1 - cursor)


def test_best_fit_chooses_the_smallest_suitable_hole() -> None:
    a = IovaAllocator([(0, MiB - 1)])
    _holes(a, [(pages(2), pages(8)), (pages(20), pages(3)), (pages(30), pages(2))])
    assert a.allocate(pages(3)) == pages(20)  # exact fit, not the first (8-page) hole
    assert a.allocate(pages(1)) == pages(30)  # smallest of what is left: 2 pages
    assert a.allocate(pages(2)) == pages(2)


def test_best_fit_breaks_ties_by_lowest_address() -> None:
    a = IovaAllocator([(0, MiB - 1)])
    _holes(a, [(pages(40), pages(2)), (pages(10), pages(2)), (pages(20), pages(2))])
    assert [a.allocate(PAGE) for _ in range(3)] == [pages(10), pages(11), pages(20)]


def test_allocation_is_at_the_low_end_of_the_chosen_block() -> None:
    a = IovaAllocator([(0, MiB - 1)])
    _holes(a, [(pages(10), pages(5))])
    assert a.allocate(pages(2)) == pages(10)
    assert a.free_blocks() == [(pages(12), pages(15) - 1)]


# -- free and coalescing --------------------------------------------------------------


def test_free_coalesces_with_both_neighbours() -> None:
    a = IovaAllocator([(0, MiB - 1)])
    x, y, z, w = (a.allocate(PAGE) for _ in range(4))
    assert a.free_blocks() == [(pages(5), MiB - 1)]
    assert a.free(x) == PAGE  # no free neighbour below (zero page is reserved)
    assert a.free_blocks() == [(PAGE, pages(2) - 1), (pages(5), MiB - 1)]
    assert a.free(z) == PAGE  # isolated
    assert a.free_blocks() == [(PAGE, pages(2) - 1), (pages(3), pages(4) - 1), (pages(5), MiB - 1)]
    a.free(y)  # joins below and above
    assert a.free_blocks() == [(PAGE, pages(4) - 1), (pages(5), MiB - 1)]
    a.free(w)
    assert a.free_blocks() == [(PAGE, MiB - 1)]
    assert a.allocated() == 0
    assert a.bytes_allocated == 0


def test_freed_space_does_not_join_across_reserved_ranges_or_gaps() -> None:
    a = IovaAllocator([(0, MiB - 1), (2 * MiB, 3 * MiB - 1)], reserved=[(pages(8), pages(9) - 1)])
    initial = a.free_blocks()
    assert initial == [(PAGE, pages(8) - 1), (pages(9), MiB - 1), (2 * MiB, 3 * MiB - 1)]
    for s, last in initial:
        a.reserve(s, last - s + 1)
    assert a.free_blocks() == []
    for s, _ in initial:
        a.free(s)
    assert a.free_blocks() == initial


def test_free_everything_restores_the_initial_state() -> None:
    a = IovaAllocator([(0, 64 * MiB - 1)], reserved=[(0x200000, 0x2FFFFF)])
    initial = a.free_blocks()
    live = [a.allocate(pages(1 + i % 5), align=PAGE << (i % 4)) for i in range(200)]
    live.append(a.allocate(2 * MiB, align=2 * MiB))
    for iova in live[::2] + live[1::2]:
        a.free(iova)
    assert a.free_blocks() == initial
    assert a.allocated() == 0
    assert a.largest_free_block() == (0x300000, 64 * MiB - 1)


def test_free_unknown_iova() -> None:
    a = IovaAllocator([(0, MiB - 1)])
    iova = a.allocate(pages(4))
    with pytest.raises(ValueError, match=r"no allocation starts at IOVA 0x3000: it lies inside "):
        a.free(iova + pages(2))
    with pytest.raises(ValueError, match=r"free it by its start 0x1000"):
        a.free(iova + pages(2))
    a.free(iova)
    with pytest.raises(ValueError, match=r"0x1000: it is not allocated \(freed twice\?\)"):
        a.free(iova)


# -- reserve --------------------------------------------------------------------------


def test_reserve_claims_a_fixed_range_and_allocate_avoids_it() -> None:
    a = IovaAllocator([(0, MiB - 1)])
    a.reserve(pages(1), pages(2))
    assert pages(1) in a
    assert a.allocate(PAGE) == pages(3)
    assert a.free(pages(1)) == pages(2)


def test_reserve_rounds_size_up() -> None:
    a = IovaAllocator([(0, MiB - 1)])
    a.reserve(pages(4), 1)
    assert a.lookup(pages(4)) == (pages(4), PAGE)


def test_reserve_conflict_names_the_allocation() -> None:
    a = IovaAllocator([(0, MiB - 1)])
    a.allocate(PAGE)
    iova = a.allocate(pages(2))
    with pytest.raises(ValueError, match=r"overlaps the live allocation \[0x2000, 0x3fff\]"):
        a.reserve(pages(3), pages(4))
    with pytest.raises(ValueError, match=r"overlaps the live allocation \[0x2000, 0x3fff\]"):
        a.reserve(pages(2), PAGE)  # starts exactly on it
    a.reserve(pages(8), PAGE)
    with pytest.raises(ValueError, match=r"overlaps the live reservation \[0x8000, 0x8fff\]"):
        a.reserve(pages(5), pages(10))
    assert a.free(iova) == pages(2)


def test_reserve_conflict_with_a_reserved_range() -> None:
    a = IovaAllocator([(0, MiB - 1)])
    with pytest.raises(ValueError, match=r"overlaps the reserved range \[0x0, 0xfff\]"):
        a.reserve(0, PAGE)


def test_reserve_outside_the_usable_ranges() -> None:
    a = IovaAllocator([(MiB, 2 * MiB - 1), (4 * MiB, 5 * MiB - 1)])
    match = r"not inside the usable IOVA ranges \[0x100000, 0x1fffff\], \[0x400000, 0x4fffff\]"
    with pytest.raises(ValueError, match=match):
        a.reserve(2 * MiB - PAGE, pages(2))  # runs off the end of the first range
    with pytest.raises(ValueError, match=match):
        a.reserve(3 * MiB, PAGE)
    assert a.free_blocks() == [(MiB, 2 * MiB - 1), (4 * MiB, 5 * MiB - 1)]


@pytest.mark.parametrize(
    ("iova", "size", "match"),
    [
        (pages(2) + 8, PAGE, "IOVA 0x2008 is not aligned to the IOMMU page size 0x1000"),
        (pages(2), 0, "reservation size must be positive"),
    ],
)
def test_bad_reserve_arguments(iova: int, size: int, match: str) -> None:
    a = IovaAllocator([(0, MiB - 1)])
    with pytest.raises(ValueError, match=match):
        a.reserve(iova, size)


# -- exhaustion -----------------------------------------------------------------------


def test_exhaustion_says_what_was_asked_what_is_free_and_what_to_do() -> None:
    a = IovaAllocator([(0, MiB - 1)])
    a.allocate(MiB - pages(3))  # leaves [0xfe000, 0xfffff]
    with pytest.raises(IovaExhaustedError) as excinfo:
        a.allocate(pages(3), align=pages(2), max_iova=(1 << 28) - 1)
    err = excinfo.value
    assert isinstance(err, VfioError)
    text = str(err)
    assert "0x3000 (12 KiB)" in text
    assert "aligned to 0x2000" in text
    assert "max_iova 0xfffffff" in text
    assert "largest free block is 0x2000 (8 KiB) at [0xfe000, 0xfffff]" in text
    assert "free DMA buffers" in text
    assert "raise max_iova" in text
    assert "smaller alignment" in text
    assert "\n" not in text


def test_exhaustion_with_no_free_space_at_all() -> None:
    a = IovaAllocator([(0, MiB - 1)])
    a.allocate(MiB - PAGE)
    with pytest.raises(IovaExhaustedError, match="no IOVA space is free") as excinfo:
        a.allocate(PAGE)
    assert "raise max_iova" not in str(excinfo.value)
    assert a.largest_free_block() is None


# -- introspection --------------------------------------------------------------------


def test_lookup_contains_and_counts() -> None:
    a = IovaAllocator([(0, MiB - 1)])
    x = a.allocate(pages(3))
    y = a.allocate(PAGE)
    assert a.allocated() == 2
    assert a.bytes_allocated == pages(4)
    assert a.allocations() == [(x, pages(3)), (y, PAGE)]
    assert a.lookup(x) == a.lookup(x + pages(3) - 1) == (x, pages(3))
    assert a.lookup(y + 5) == (y, PAGE)
    assert a.lookup(0) is None
    assert a.lookup(y + PAGE) is None
    assert x in a
    assert x + PAGE not in a  # inside, but not a start: lookup() answers that
    assert "2 allocated" in repr(a)


def test_largest_free_block_prefers_the_lowest_of_equals() -> None:
    a = IovaAllocator([(0, MiB - 1)])
    _holes(a, [(pages(30), pages(4)), (pages(10), pages(4)), (pages(20), pages(2))])
    assert a.largest_free_block() == (pages(10), pages(14) - 1)


# -- the ordered index --------------------------------------------------------------


@contextmanager
def small_sublists(load: int = 4) -> Iterator[None]:
    """Shrink the sublists of the ordered indexes so a few values split and merge them."""
    with mock.patch.object(iova_module, "_LOAD", load):
        yield


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 60)), max_size=150), st.integers(-1, 61))
def test_sorted_ints_against_a_sorted_list(ops: list[tuple[bool, int]], probe: int) -> None:
    with small_sublists():
        index = iova_module._SortedInts(range(0, 60, 5))
        model = list(range(0, 60, 5))
        for add, value in ops:
            if add and value not in model:
                index.add(value)
                model.append(value)
            elif not add and model:
                value = model[value % len(model)]  # remove only what is there
                index.remove(value)
                model.remove(value)
            model.sort()
            assert list(index) == model
            assert len(index) == len(model)
            assert all(2 <= len(sub) <= 8 for sub in index._lists) or len(index._lists) <= 1
            assert index._maxes == [sub[-1] for sub in index._lists]
        assert index.max() == (model[-1] if model else None)
        assert index.ceiling(probe) == next((v for v in model if v >= probe), None)
        assert index.floor(probe) == next((v for v in reversed(model) if v <= probe), None)
        assert index.rank(probe) == bisect_left(model, probe)
        assert list(index.iter_from(probe)) == [v for v in model if v >= probe]


def test_many_blocks_with_the_default_sublists() -> None:
    """Thousands of live allocations and holes; the answers are checked from scratch."""
    rng = random.Random(7)
    a = IovaAllocator([(0, 0xFEDFFFFF), (0xFEF00000, (1 << 40) - 1)])
    initial = a.free_blocks()
    pages_ = [a.allocate(PAGE) for _ in range(3000)]
    for iova in pages_[1::2]:
        a.free(iova)
    live = dict.fromkeys(pages_[::2], PAGE)
    assert len(a.free_blocks()) == 1500 + 1
    most_sublists = 0
    for step in range(6000):
        if rng.random() < 0.4:
            iova = rng.choice(list(live))
            assert a.free(iova) == live.pop(iova)
        else:
            size = PAGE * rng.choice([1, 1, 1, 2, 3, 16])
            align = PAGE * rng.choice([1, 1, 1, 4, 512])
            iova = a.allocate(size, align=align, max_iova=rng.choice([None, (1 << 32) - 1]))
            assert iova % align == 0
            live[iova] = size
        most_sublists = max(most_sublists, len(a._free_starts._lists))
        if step % 1000 == 999:
            spans = sorted(live.items())
            assert a.allocations() == spans
            for (s, n), (t, _) in pairwise(spans):
                assert s + n <= t
            free = a.free_blocks()
            assert sum(last - s + 1 for s, last in free) + sum(live.values()) == sum(
                last - s + 1 for s, last in initial
            )
            for (_, last), (t, _) in pairwise(free):
                assert last + 1 < t, "touching free blocks were not coalesced"
            assert all(a.lookup(s + n - 1) == (s, n) for s, n in spans)
    assert most_sublists > 1  # the index did split, and merged back below
    for iova in list(live):
        a.free(iova)
    assert a.free_blocks() == initial
    assert len(a._free_starts._lists) == len(a._by_size._lists) == 1


# -- property test: random operations against a reference model -----------------------

_P = 0x1000  # the model works in pages of this size


def _model_free(
    ranges: list[tuple[int, int]], holes: list[tuple[int, int]]
) -> list[tuple[int, int]]:
    """Usable ranges minus ``holes`` (inclusive), page by page: slow and obviously right."""
    taken = {p for s, last in holes for p in range(s // _P, last // _P + 1)}
    out: list[tuple[int, int]] = []
    for s, last in ranges:
        for p in range(s // _P, last // _P + 1):
            if p in taken:
                continue
            if out and out[-1][1] == p * _P - 1:
                out[-1] = (out[-1][0], p * _P + _P - 1)
            else:
                out.append((p * _P, p * _P + _P - 1))
    return out


@st.composite
def _layouts(draw: st.DrawFn) -> tuple[list[tuple[int, int]], list[tuple[int, int]], bool]:
    """1-3 usable ranges with gaps, 0-2 reserved ranges, reserve_zero; all in pages."""
    ranges: list[tuple[int, int]] = []
    cursor = draw(st.integers(0, 3))
    for _ in range(draw(st.integers(1, 3))):
        n = draw(st.integers(1, 48))
        ranges.append((cursor * _P, (cursor + n) * _P - 1))
        cursor += n + draw(st.integers(1, 8))
    reserved = []
    for _ in range(draw(st.integers(0, 2))):
        s = draw(st.integers(0, cursor))
        reserved.append((s * _P, (s + draw(st.integers(1, 4))) * _P - 1))
    return ranges, reserved, draw(st.booleans())


class AllocatorVersusModel(RuleBasedStateMachine):
    """The allocator must agree with a page-by-page model on every answer."""

    def __init__(self) -> None:
        super().__init__()
        # Tiny sublists, so the ~100 free blocks here split and merge them often.
        self.patch = mock.patch.object(iova_module, "_LOAD", 4)
        self.patch.start()
        self.ranges: list[tuple[int, int]] = []
        self.fixed_holes: list[tuple[int, int]] = []
        self.initial: list[tuple[int, int]] = []
        self.live: dict[int, tuple[int, int | None, int]] = {}  # start -> size, max, align
        self.alloc = IovaAllocator([(0, _P - 1)])

    @initialize(layout=_layouts())
    def build(self, layout: tuple[list[tuple[int, int]], list[tuple[int, int]], bool]) -> None:
        self.ranges, reserved, reserve_zero = layout
        self.fixed_holes = reserved + ([(0, _P - 1)] if reserve_zero else [])
        self.alloc = IovaAllocator(self.ranges, reserved=reserved, reserve_zero=reserve_zero)
        self.initial = _model_free(self.ranges, self.fixed_holes)
        assert self.alloc.free_blocks() == self.initial

    def model_free(self) -> list[tuple[int, int]]:
        live = [(s, s + size - 1) for s, (size, _, _) in self.live.items()]
        return _model_free(self.ranges, self.fixed_holes + live)

    @rule(
        n_pages=st.integers(1, 12),
        align_pages=st.sampled_from([1, 1, 2, 4, 8]),
        max_page=st.one_of(st.none(), st.integers(0, 160)),
    )
    def allocate(self, n_pages: int, align_pages: int, max_page: int | None) -> None:
        size, align = n_pages * _P, align_pages * _P
        max_iova = None if max_page is None else max_page * _P + _P - 1
        # What best fit must answer, found the slow way.
        fits = []
        for s, last in self.model_free():
            a = -(-s // align) * align
            if a + size - 1 <= last and (max_iova is None or a + size - 1 <= max_iova):
                fits.append((last - s + 1, s, a))
        expected = min(fits)[2] if fits else None
        try:
            iova = self.alloc.allocate(size, align=align, max_iova=max_iova)
        except IovaExhaustedError:
            assert expected is None
            return
        except ValueError:
            assert max_iova is not None and max_iova < self.initial[0][0]
            return
        assert iova == expected
        assert iova % align == 0
        assert max_iova is None or iova + size - 1 <= max_iova
        assert any(s <= iova and iova + size - 1 <= last for s, last in self.ranges)
        self.live[iova] = (size, max_iova, align)

    @rule(page=st.integers(0, 160), n_pages=st.integers(1, 6))
    def reserve(self, page: int, n_pages: int) -> None:
        iova, size = page * _P, n_pages * _P
        free_ok = any(s <= iova and iova + size - 1 <= last for s, last in self.model_free())
        try:
            self.alloc.reserve(iova, size)
        except ValueError:
            assert not free_ok
            return
        assert free_ok
        self.live[iova] = (size, None, _P)

    @precondition(lambda self: bool(self.live))
    @rule(data=st.data())
    def free(self, data: st.DataObject) -> None:
        iova = data.draw(st.sampled_from(sorted(self.live)))
        assert self.alloc.free(iova) == self.live.pop(iova)[0]

    @rule(page=st.integers(0, 160))
    def free_unknown(self, page: int) -> None:
        if page * _P not in self.live:
            with pytest.raises(ValueError, match="no allocation starts at"):
                self.alloc.free(page * _P)

    @invariant()
    def agrees_with_model(self) -> None:
        if not self.ranges:
            return
        starts = sorted(self.live)
        for left, right in pairwise(starts):
            assert left + self.live[left][0] <= right, "live allocations overlap"
        assert self.alloc.free_blocks() == self.model_free()
        assert self.alloc.allocations() == [(s, self.live[s][0]) for s in starts]
        assert self.alloc.bytes_allocated == sum(size for size, _, _ in self.live.values())
        for s in starts:
            assert self.alloc.lookup(s + self.live[s][0] - 1) == (s, self.live[s][0])

    def teardown(self) -> None:
        try:
            if not self.ranges:
                return
            for iova in list(self.live):
                self.alloc.free(iova)
            assert self.alloc.free_blocks() == self.initial  # full reuse after free
            assert self.alloc.allocated() == 0
        finally:
            self.patch.stop()


TestAllocatorVersusModel = AllocatorVersusModel.TestCase
TestAllocatorVersusModel.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None
)


# -- the cache of freed ranges (the kernel's IOVA rcache) -----------------------------


@contextmanager
def counted_index_updates() -> Iterator[list[int]]:
    """Count the updates of the ordered indexes (_SortedInts.add/remove) made inside."""
    counts = [0]
    add, remove = iova_module._SortedInts.add, iova_module._SortedInts.remove

    def counting_add(self: iova_module._SortedInts, value: int) -> None:
        counts[0] += 1
        add(self, value)

    def counting_remove(self: iova_module._SortedInts, value: int) -> None:
        counts[0] += 1
        remove(self, value)

    with (
        mock.patch.object(iova_module._SortedInts, "add", counting_add),
        mock.patch.object(iova_module._SortedInts, "remove", counting_remove),
    ):
        yield counts


@pytest.mark.parametrize("live", [1, 1_000, 30_000])
def test_allocate_free_pairs_touch_no_index_once_the_size_is_cached(live: int) -> None:
    """The common pair (a page, freed, a page again) is O(1) however many allocations
    are live: no update of the ordered indexes (each pair cost ten before the cache)."""
    a = IovaAllocator([(0, 0xFEDFFFFF), (0xFEF00000, (1 << 48) - 1)])
    held = [a.allocate(PAGE) for _ in range(live)]
    with counted_index_updates() as first:
        a.free(a.allocate(PAGE))  # the first pair of a size splits a block: the cache fills
        a.free(a.allocate(pages(2), align=PAGE))
    with counted_index_updates() as counts:
        for _ in range(100):
            a.free(a.allocate(PAGE))
            a.free(a.allocate(pages(2), align=PAGE))
    assert first[0] >= 2  # the counting sees the updates a split makes
    assert counts == [0]
    assert a.allocated() == live and a.allocations() == [(s, PAGE) for s in held]


def test_a_freed_range_is_reused_for_the_same_size() -> None:
    a = IovaAllocator([(0, GiB - 1)])
    x = a.allocate(pages(3))
    a.allocate(PAGE)
    assert a.free(x) == pages(3)
    assert a.cached == 1
    assert x not in a and a.lookup(x) is None and a.allocated() == 1
    assert a.bytes_allocated == PAGE
    assert a.allocate(pages(2)) != x  # another size: not from the 3-page stack
    assert a.allocate(pages(3)) == x  # the same size: the cached range
    assert a.cached == 0 and a.lookup(x + PAGE) == (x, pages(3))


def test_a_cached_range_is_handed_out_once() -> None:
    a = IovaAllocator([(0, GiB - 1)])
    first = [a.allocate(PAGE) for _ in range(4)]
    for iova in first[:2]:
        a.free(iova)
    again = [a.allocate(PAGE) for _ in range(4)]
    assert sorted(again[:2]) == sorted(first[:2])  # both cached ranges, once each
    assert len(set(again) | set(first[2:])) == 6  # the other two are new ranges
    spans = a.allocations()
    assert len(spans) == 6
    for (s, n), (t, _) in pairwise(spans):
        assert s + n <= t


def test_a_double_free_of_a_cached_range_is_refused() -> None:
    a = IovaAllocator([(0, GiB - 1)])
    x = a.allocate(PAGE)
    a.free(x)
    with pytest.raises(ValueError, match=r"it is not allocated \(freed twice\?\)"):
        a.free(x)
    assert a.cached == 1


def test_cached_ranges_keep_to_align_and_max_iova() -> None:
    a = IovaAllocator([(0, GiB - 1)])
    a.allocate(PAGE)  # the range at 0x1000, so the next is at 0x2000: not 16 KiB aligned
    high = a.allocate(pages(2))
    assert high == pages(2)
    a.free(high)
    assert a.allocate(pages(2), align=pages(4)) % pages(4) == 0  # not the cached 0x2000
    assert a.cached == 1
    assert a.allocate(pages(2), max_iova=pages(2) + pages(2) - 1) == high  # it fits under
    a.reserve(pages(64), pages(2))
    a.free(pages(64))  # a reservation is the caller's address: not cached
    assert a.cached == 0


def test_free_blocks_merge_the_cached_ranges_back() -> None:
    a = IovaAllocator([(0, MiB - 1)])
    initial = a.free_blocks()
    live = [a.allocate(pages(1 + i % 3)) for i in range(30)]
    for iova in live:
        a.free(iova)
    assert a.cached == 30 and a.allocated() == 0
    assert a.free_blocks() == initial  # flushed: one block again
    assert a.cached == 0


def test_the_cache_is_bounded_and_the_rest_merges_at_once() -> None:
    a = IovaAllocator([(0, GiB - 1)])
    small = [a.allocate(PAGE) for _ in range(iova_module._CACHE_DEPTH + 10)]
    big = a.allocate(pages(iova_module._CACHE_MAX_PAGES + 1))
    for iova in small:
        a.free(iova)
    assert a.cached == iova_module._CACHE_DEPTH
    a.free(big)  # above the largest cached size: merged at once
    assert a.cached == iova_module._CACHE_DEPTH
    # The ten that did not fit went back into the blocks, joined with the big range
    # and the space above (the cached ones hold the space below them).
    assert a._free[small[-10]] == GiB - 1
    a.flush_cache()
    assert a.cached == 0 and a.free_blocks() == [(PAGE, GiB - 1)]


def test_an_allocation_that_needs_the_cached_space_gets_it() -> None:
    """Fragmentation: four cached 1-page ranges are all the free space; a 4-page
    request merges them back rather than failing."""
    a = IovaAllocator([(0, pages(5) - 1)])
    singles = [a.allocate(PAGE) for _ in range(4)]
    with pytest.raises(IovaExhaustedError):
        a.allocate(PAGE)
    for iova in singles:
        a.free(iova)
    assert a.cached == 4
    assert a.allocate(pages(4)) == PAGE
    assert a.cached == 0
    with pytest.raises(IovaExhaustedError, match="no IOVA space is free"):
        a.allocate(PAGE)


def test_exhaustion_with_cached_ranges_reports_the_true_free_space() -> None:
    a = IovaAllocator([(0, pages(5) - 1)])
    singles = [a.allocate(PAGE) for _ in range(4)]
    a.free(singles[1])
    with pytest.raises(IovaExhaustedError, match=r"largest free block is 0x1000 \(4 KiB\)"):
        a.allocate(pages(2))


def test_reserve_over_a_cached_range_succeeds() -> None:
    a = IovaAllocator([(0, GiB - 1)])
    x = a.allocate(pages(2))
    a.free(x)
    a.reserve(x + PAGE, PAGE)  # inside the cached range: it goes back first
    assert a.lookup(x + PAGE) == (x + PAGE, PAGE)
    assert a.allocate(PAGE) == x
    with pytest.raises(ValueError, match=r"overlaps the live allocation \[0x1000, 0x1fff\]"):
        a.reserve(x, PAGE)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(1, 6), st.integers(0, 99)), max_size=120))
def test_cache_never_overlaps_and_everything_comes_back(ops: list[tuple[int, int, int]]) -> None:
    """Random allocate/free with no look at the free space in between (which would
    flush the cache): live ranges never overlap, keep to their bounds, and freeing
    everything gives back the space as built."""
    a = IovaAllocator([(0, pages(96) - 1)], reserved=[(pages(40), pages(41) - 1)])
    initial = a.free_blocks()
    live: dict[int, int] = {}
    for kind, n, pick in ops:
        if kind == 2 and live:
            iova = sorted(live)[pick % len(live)]
            assert a.free(iova) == live.pop(iova)
            continue
        max_iova = pages(48) - 1 if kind == 1 else None
        try:
            iova = a.allocate(pages(n), max_iova=max_iova)
        except IovaExhaustedError:
            continue
        assert max_iova is None or iova + pages(n) - 1 <= max_iova
        assert not iova <= pages(40) < iova + pages(n)  # never the reserved page
        live[iova] = pages(n)
        spans = sorted(live.items())
        for (s, size), (t, _) in pairwise(spans):
            assert s + size <= t
        assert a.allocations() == spans
    for iova in list(live):
        a.free(iova)
    assert a.free_blocks() == initial
