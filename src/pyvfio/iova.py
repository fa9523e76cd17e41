"""IOVA allocation: where in a device's DMA address space each buffer gets mapped.

An :class:`IovaAllocator` hands out ranges of the IOVA space an IOMMU (VFIO type1
container or iommufd IOAS) accepts. It is built from the usable ranges the kernel
reports (``struct vfio_iova_range`` / ``struct iommu_iova_range``, both ends inclusive)
and the IOMMU's smallest page size; every range it hands out is page-aligned and a
whole number of pages, because ``VFIO_IOMMU_MAP_DMA`` and ``IOMMU_IOAS_MAP`` fail with
EINVAL otherwise.

Placement is best fit: of the free blocks that can hold the request (size, alignment,
and the device's DMA mask as ``max_iova``), the smallest wins, the lowest address
breaking ties, and the allocation sits at the lowest suitable address in it. Best fit
keeps the large blocks whole for the large buffers (2 MiB-aligned hugepages) that
need them.

Free blocks are indexed three ways: dicts from start to last and last to start (so
a freed range finds its neighbours in O(1)), starts in address order (for
fixed-address reservations and ``max_iova`` searches) and ``(size, start)`` keys in
order (for best fit). The common request, page-aligned with no ``max_iova``, is the
first key at or above the size asked for. The ordered indexes are blocked sorted
lists, so inserting and deleting cost O(log n) comparisons plus a memmove of at
most 2 x 512 entries, however many blocks there are: a flat list moves 30,000
entries when a busy, fragmented space changes at its low end.

In front of the blocks sits a cache of recently freed ranges, by size (the kernel's
IOVA "rcache", drivers/iommu/iova.c, does the same for its DMA API): a freed range of
up to ``_CACHE_MAX_PAGES`` pages that :meth:`~IovaAllocator.allocate` handed out is
kept whole on a per-size stack, and the next allocation of that size takes it back,
so a driver that maps and unmaps buffers of a few sizes pays two dict operations per
allocate + free instead of the ten index updates of a split and a merge, however many
mappings are live. Cached ranges are free: they are never handed out twice, never
counted as allocated, and they go back into the blocks (merged with their
neighbours) when a request cannot be met without them (an exhausted space, a fixed
:meth:`~IovaAllocator.reserve` over one) and before the free space is shown
(:meth:`~IovaAllocator.free_blocks`, :meth:`~IovaAllocator.largest_free_block`); a
range freed when its size's stack is full goes straight back. So a cache hit may
return a range other than the best fit; every other guarantee (page alignment,
``align``, ``max_iova``, the usable and reserved ranges, the exhaustion error) is the
same with or without it.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterable, Iterator
from itertools import chain, islice
from typing import Protocol

from pyvfio._sizes import size_text
from pyvfio.errors import IovaExhaustedError

__all__ = ["IovaAllocator"]

_IOVA_LIMIT = (1 << 64) - 1  # IOVAs are __u64 in vfio.h and iommufd.h
_DEFAULT_PAGE_SIZE = 4096
# A free block's best-fit key is size << 64 | start: one int compares faster than a
# (size, start) tuple and sorts the same way.
_KEY_SHIFT = 64
_LOAD = 512  # sublists of _SortedInts hold _LOAD // 2 .. 2 * _LOAD values
# The cache of freed ranges: sizes of up to 32 pages (the kernel's
# IOVA_RANGE_CACHE_MAX_SIZE of 6 orders: 1 to 32 pages), at most 4096 ranges of each
# (its depot holds 32 magazines of 127), so a driver that unmaps a batch of a few
# thousand pages and maps it again finds them all. Bounded: 32 stacks of 4096 ints.
_CACHE_MAX_PAGES = 32
_CACHE_DEPTH = 4096


def _size_key(start: int, last: int) -> int:
    return (last - start + 1) << _KEY_SHIFT | start


class IovaRangeLike(Protocol):
    """Anything with inclusive ``start`` and ``last``, e.g. :class:`pyvfio.info.IovaRange`."""

    @property
    def start(self) -> int: ...

    @property
    def last(self) -> int: ...


def _is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def _size_text(n: int) -> str:
    """``0x200000 (2 MiB)``: hex for comparing with IOVAs, binary units for reading."""
    return f"{n:#x} ({n} bytes)" if n < 1024 else f"{n:#x} ({size_text(n, exact=False)})"


def _span_text(start: int, size: int) -> str:
    return f"[{start:#x}, {start + size - 1:#x}]"


def _as_pair(r: tuple[int, int] | IovaRangeLike) -> tuple[int, int]:
    if isinstance(r, tuple) and len(r) == 2:
        start, last = r
    elif hasattr(r, "start") and hasattr(r, "last"):
        start, last = r.start, r.last
    else:
        raise TypeError(f"an IOVA range is a (start, last) pair of ints, not {r!r}")
    _check_int(start, "an IOVA range's start")
    _check_int(last, "an IOVA range's last")
    return start, last


def _check_int(value: object, what: str) -> None:
    """TypeError naming the argument, instead of a comparison failing deep inside."""
    if not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__} {value!r}")


def _union(pairs: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sort inclusive ranges and merge those that overlap or touch."""
    merged: list[tuple[int, int]] = []
    for start, last in sorted(pairs):
        if merged and start <= merged[-1][1] + 1:
            if last > merged[-1][1]:
                merged[-1] = (merged[-1][0], last)
        else:
            merged.append((start, last))
    return merged


def _subtract(ranges: list[tuple[int, int]], holes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Inclusive ``ranges`` minus inclusive ``holes``; both sorted and disjoint."""
    out: list[tuple[int, int]] = []
    for start, last in ranges:
        cur = start
        for h_start, h_last in holes:
            if h_last < cur or h_start > last:
                continue
            if h_start > cur:
                out.append((cur, h_start - 1))
            cur = h_last + 1
            if cur > last:
                break
        if cur <= last:
            out.append((cur, last))
    return out


def _check_range(start: int, last: int, what: str) -> None:
    if not 0 <= start <= last <= _IOVA_LIMIT:
        raise ValueError(
            f"{what} ({start:#x}, {last:#x}) is not an inclusive (start, last) pair "
            f"with 0 <= start <= last <= {_IOVA_LIMIT:#x}"
        )


class _SortedInts:
    """A sorted set of ints kept as a list of sorted sublists, with each sublist's max.

    Finding a value bisects the maxes, then one sublist; inserting or deleting moves
    at most 2 * _LOAD entries. Each sublist holds _LOAD // 2 to 2 * _LOAD values
    (fewer only when it is the only one). Values must be added once and removed only
    if present.
    """

    __slots__ = ("_len", "_lists", "_maxes")

    def __init__(self, values: Iterable[int] = ()) -> None:
        ordered = sorted(values)
        self._lists = [ordered[i : i + _LOAD] for i in range(0, len(ordered), _LOAD)]
        if len(self._lists) > 1 and len(self._lists[-1]) < _LOAD // 2:
            self._lists[-2].extend(self._lists.pop())  # no short sublist at the end
        self._maxes = [sub[-1] for sub in self._lists]
        self._len = len(ordered)

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[int]:
        return chain.from_iterable(self._lists)

    def add(self, value: int) -> None:
        lists, maxes = self._lists, self._maxes
        self._len += 1
        if not maxes:
            lists.append([value])
            maxes.append(value)
            return
        i = bisect_left(maxes, value)
        if i == len(maxes):
            i -= 1
            lists[i].append(value)
            maxes[i] = value
        else:
            insort(lists[i], value)
        if len(lists[i]) > 2 * _LOAD:
            self._split(i)

    def remove(self, value: int) -> None:
        lists, maxes = self._lists, self._maxes
        i = bisect_left(maxes, value)
        sub = lists[i]
        del sub[bisect_left(sub, value)]
        self._len -= 1
        if not sub:
            del lists[i]
            del maxes[i]
            return
        maxes[i] = sub[-1]
        if len(sub) < _LOAD // 2 and len(lists) > 1:
            # Join the short sublist to a neighbour so the sublists stay few.
            if i == 0:
                i = 1
            lists[i - 1].extend(lists[i])
            maxes[i - 1] = maxes[i]
            del lists[i]
            del maxes[i]
            if len(lists[i - 1]) > 2 * _LOAD:
                self._split(i - 1)

    def _split(self, i: int) -> None:
        sub = self._lists[i]
        upper = sub[_LOAD:]
        del sub[_LOAD:]
        self._lists.insert(i + 1, upper)
        self._maxes[i] = sub[-1]
        self._maxes.insert(i + 1, upper[-1])

    def ceiling(self, value: int) -> int | None:
        """The smallest value >= ``value``, or None."""
        i = bisect_left(self._maxes, value)
        if i == len(self._maxes):
            return None
        sub = self._lists[i]
        return sub[bisect_left(sub, value)]

    def floor(self, value: int) -> int | None:
        """The largest value <= ``value``, or None."""
        i = bisect_right(self._maxes, value)
        if i < len(self._lists):
            sub = self._lists[i]
            j = bisect_right(sub, value)
            if j:
                return sub[j - 1]
        return self._maxes[i - 1] if i else None

    def max(self) -> int | None:
        return self._maxes[-1] if self._maxes else None

    def rank(self, value: int) -> int:
        """How many values are < ``value``."""
        i = bisect_left(self._maxes, value)
        below = sum(map(len, self._lists[:i]))
        return below + (bisect_left(self._lists[i], value) if i < len(self._lists) else 0)

    def iter_from(self, value: int) -> Iterator[int]:
        """The values >= ``value`` in order; the set must not change meanwhile."""
        i = bisect_left(self._maxes, value)
        if i == len(self._maxes):
            return iter(())
        sub = self._lists[i]
        rest = chain.from_iterable(self._lists[i + 1 :])
        return chain(islice(sub, bisect_left(sub, value), None), rest)


class IovaAllocator:
    """Best-fit allocator over an IOMMU's usable IOVA ranges.

    ``ranges`` are the usable ranges, inclusive ``(start, last)`` pairs (or objects
    with ``.start``/``.last``, such as :attr:`pyvfio.info.IommuInfo.iova_ranges`);
    they are trimmed inward to ``page_size`` boundaries and overlapping or touching
    ranges are merged. ``reserved`` ranges (inclusive, widened outward to whole pages)
    are never handed out, e.g. a platform's MSI window. ``reserve_zero`` keeps the
    page at IOVA 0 out, so that a zero IOVA, which device code often means as
    "unset", is never a live DMA address.

    Not thread-safe: the `~pyvfio.Iommu` that owns an allocator serialises its calls
    (its lock).
    """

    __slots__ = (
        "_alloc_sizes",
        "_alloc_starts",
        "_by_size",
        "_bytes_allocated",
        "_cache",
        "_cache_max",
        "_cached",
        "_fixed",
        "_free",
        "_free_ends",
        "_free_starts",
        "_initial",
        "_page_mask",
        "_page_size",
        "_ranges",
        "_reserved",
    )

    def __init__(
        self,
        ranges: Iterable[tuple[int, int] | IovaRangeLike],
        *,
        page_size: int = _DEFAULT_PAGE_SIZE,
        reserve_zero: bool = True,
        reserved: Iterable[tuple[int, int] | IovaRangeLike] = (),
    ) -> None:
        if not _is_power_of_two(page_size):
            raise ValueError(f"page_size {page_size:#x} is not a power of two")
        self._page_size = page_size
        self._page_mask = page_size - 1
        mask = self._page_mask

        usable: list[tuple[int, int]] = []
        for r in ranges:
            start, last = _as_pair(r)
            _check_range(start, last, "IOVA range")
            start = (start + mask) & ~mask  # trim inward: a partial page cannot be mapped
            last = ((last + 1) & ~mask) - 1
            if start <= last:
                usable.append((start, last))
        self._ranges: tuple[tuple[int, int], ...] = tuple(_union(usable))
        if not self._ranges:
            raise ValueError(
                f"no usable IOVA range holds a whole {page_size:#x}-byte page; "
                "pass the ranges the IOMMU reports (IommuInfo.iova_ranges)"
            )

        holes: list[tuple[int, int]] = []
        for r in reserved:
            start, last = _as_pair(r)
            _check_range(start, last, "reserved range")
            holes.append((start & ~mask, last | mask))  # widen outward to whole pages
        if reserve_zero:
            holes.append((0, mask))
        self._reserved: tuple[tuple[int, int], ...] = tuple(_union(holes))

        self._initial: tuple[tuple[int, int], ...] = tuple(
            _subtract(list(self._ranges), list(self._reserved))
        )
        # Free blocks, inclusive: start -> last, last -> start, starts in order, and
        # best-fit keys in order.
        self._free: dict[int, int] = dict(self._initial)
        self._free_ends: dict[int, int] = {last: s for s, last in self._initial}
        self._free_starts = _SortedInts(self._free)
        self._by_size = _SortedInts(_size_key(s, last) for s, last in self._initial)
        # Live allocations and reservations: start -> size; the starts in order, with
        # those of cached ranges (which the blocks count as taken) among them.
        self._alloc_sizes: dict[int, int] = {}
        self._alloc_starts = _SortedInts()
        # Freed ranges kept whole for reuse: size -> starts (a stack), and how many.
        self._cache: dict[int, list[int]] = {}
        self._cache_max = _CACHE_MAX_PAGES * page_size
        self._cached = 0
        self._fixed: set[int] = set()  # starts of reserve() ranges, for messages
        self._bytes_allocated = 0

    # -- introspection --------------------------------------------------------------

    @property
    def page_size(self) -> int:
        """The granule every allocation is aligned and rounded to."""
        return self._page_size

    @property
    def ranges(self) -> tuple[tuple[int, int], ...]:
        """The usable ranges after page trimming and merging (reserved ones included)."""
        return self._ranges

    @property
    def reserved(self) -> tuple[tuple[int, int], ...]:
        """The ranges kept out from the start (``reserved`` and the zero page)."""
        return self._reserved

    @property
    def bytes_allocated(self) -> int:
        """Bytes held by live allocations and reservations (whole pages)."""
        return self._bytes_allocated

    def allocated(self) -> int:
        """Number of live allocations and reservations."""
        return len(self._alloc_sizes)

    def allocations(self) -> list[tuple[int, int]]:
        """Live ``(start, size)`` pairs by address, e.g. to unmap everything on close."""
        sizes = self._alloc_sizes
        return [(s, sizes[s]) for s in self._alloc_starts if s in sizes]

    def free_blocks(self) -> list[tuple[int, int]]:
        """Free space as inclusive ``(start, last)`` pairs by address (cached ranges
        merged back in first)."""
        self.flush_cache()
        free = self._free
        return [(s, free[s]) for s in self._free_starts]

    def largest_free_block(self) -> tuple[int, int] | None:
        """The largest free block as inclusive ``(start, last)`` (lowest if tied), or None."""
        self.flush_cache()
        top = self._by_size.max()
        if top is None:
            return None
        size = top >> _KEY_SHIFT
        key = self._by_size.ceiling(size << _KEY_SHIFT)
        assert key is not None  # top itself qualifies
        start = key & _IOVA_LIMIT
        return start, start + size - 1

    def __contains__(self, iova: object) -> bool:
        """``iova in allocator``: an allocation or reservation starts at ``iova``.

        That is what :meth:`free` takes; :meth:`lookup` finds addresses inside one.
        """
        return iova in self._alloc_sizes

    def lookup(self, iova: int) -> tuple[int, int] | None:
        """The ``(start, size)`` of the allocation holding ``iova``, or None."""
        start = self._alloc_starts.floor(iova)
        if start is None:
            return None
        # A cached range's start has no size: it is free, and since ranges are
        # disjoint, no live allocation can hold an ``iova`` at or above it either.
        size = self._alloc_sizes.get(start)
        return (start, size) if size is not None and iova < start + size else None

    @property
    def cached(self) -> int:
        """How many freed ranges the cache holds for reuse (they count as free)."""
        return self._cached

    def flush_cache(self) -> None:
        """Put every cached range back into the free blocks, merged with its neighbours."""
        if not self._cached:
            return
        for size, starts in self._cache.items():
            for start in starts:
                self._release(start, size)
            starts.clear()
        self._cached = 0

    def __repr__(self) -> str:
        return (
            f"<IovaAllocator {len(self._alloc_sizes)} allocated, "
            f"{self._bytes_allocated:#x} bytes, {len(self._free)} free blocks>"
        )

    # -- allocation -----------------------------------------------------------------

    def allocate(self, size: int, *, align: int | None = None, max_iova: int | None = None) -> int:
        """Claim ``size`` bytes (rounded up to whole pages) and return the IOVA.

        ``align`` is a power of two no smaller than the page size (default: the page
        size), e.g. ``2 << 20`` so a hugepage-backed buffer maps with 2 MiB IOPTEs.
        ``max_iova`` is the highest byte the allocation may reach, inclusive: the
        device's DMA mask, e.g. ``(1 << 32) - 1`` for a 32-bit device.

        Raises ValueError for impossible arguments and IovaExhaustedError when no free
        block fits.
        """
        page_mask = self._page_mask
        if align is None and max_iova is None and type(size) is int and size > 0:
            # The common request: any page-aligned range. A cached one of this size, if
            # there is one: a pop and a dict store, whatever the state of the blocks.
            size = (size + page_mask) & ~page_mask
            starts = self._cache.get(size)
            if starts:
                iova = starts.pop()
                self._cached -= 1
                self._alloc_sizes[iova] = size
                self._bytes_allocated += size
                return iova
        _check_int(size, "size")
        if align is not None:
            _check_int(align, "align")
        if max_iova is not None:
            _check_int(max_iova, "max_iova")
        if size <= 0:
            raise ValueError(f"allocation size must be positive, not {size}")
        size = (size + page_mask) & ~page_mask
        if align is None:
            align = self._page_size
        elif not _is_power_of_two(align):
            raise ValueError(f"align {align:#x} is not a power of two")
        elif align < self._page_size:
            raise ValueError(
                f"align {align:#x} is below the IOMMU page size {self._page_size:#x}; "
                "every IOVA is page-aligned already, so leave align out"
            )
        if max_iova is not None and self._initial and max_iova < self._initial[0][0]:
            raise ValueError(
                f"max_iova {max_iova:#x} is below the lowest usable IOVA "
                f"{self._initial[0][0]:#x}; nothing could ever be allocated under it"
            )

        starts = self._cache.get(size)
        if starts:
            iova = starts[-1]
            if not iova & (align - 1) and (max_iova is None or iova + size - 1 <= max_iova):
                starts.pop()
                self._cached -= 1
                self._alloc_sizes[iova] = size
                self._bytes_allocated += size
                return iova

        block_start = self._best_fit(size, align, max_iova)
        if block_start is None and self._cached:
            self.flush_cache()  # what the cache holds may be what is missing
            block_start = self._best_fit(size, align, max_iova)
        if block_start is None:
            raise IovaExhaustedError(self._exhausted_message(size, align, max_iova))
        iova = (block_start + align - 1) & -align
        self._take(block_start, self._free[block_start], iova, size)
        return iova

    def _best_fit(self, size: int, align: int, max_iova: int | None) -> int | None:
        """The start of the smallest free block that fits, the lowest if tied."""
        by_size = self._by_size
        first_key = size << _KEY_SHIFT
        if align == self._page_size and max_iova is None:
            # Every free block is page-aligned and whole pages: the first one fits.
            key = by_size.ceiling(first_key)
            return None if key is None else key & _IOVA_LIMIT

        a_mask = align - 1
        limit = _IOVA_LIMIT if max_iova is None else max_iova
        free = self._free
        if max_iova is not None:
            # Only blocks starting at or below max_iova - size + 1 can fit. When they are
            # fewer than the candidates by size (a low DMA mask over a large, fragmented
            # space), scan those by address instead, keeping the smallest that fits.
            bound = max_iova - size + 1
            n_low = self._free_starts.rank(bound + 1) if bound >= 0 else 0
            if n_low < len(by_size) - by_size.rank(first_key):
                best_size, best_start = _IOVA_LIMIT + 2, None
                for start in self._free_starts:
                    if start > bound:
                        break
                    last = free[start]
                    block = last - start + 1
                    if block < size or block >= best_size:
                        continue
                    if ((start + a_mask) & ~a_mask) + size - 1 <= min(last, limit):
                        best_size, best_start = block, start
                        if block == size:  # an exact fit at the lowest address: unbeatable
                            break
                return best_start

        for key in by_size.iter_from(first_key):
            start = key & _IOVA_LIMIT
            if ((start + a_mask) & ~a_mask) + size - 1 <= min(free[start], limit):
                return start
        return None

    def reserve(self, iova: int, size: int) -> None:
        """Claim ``[iova, iova + size)`` (rounded up to whole pages) at a fixed address.

        For mappings at an IOVA the caller chose. ``iova`` must be page-aligned, as the
        kernel requires. Raises ValueError naming the live allocation in the way, or
        saying that the range is not inside the usable IOVA ranges.
        """
        page_mask = self._page_mask
        _check_int(iova, "iova")
        _check_int(size, "size")
        if size <= 0:
            raise ValueError(f"reservation size must be positive, not {size}")
        if iova < 0 or iova & page_mask:
            raise ValueError(
                f"IOVA {iova:#x} is not aligned to the IOMMU page size {self._page_size:#x}"
            )
        size = (size + page_mask) & ~page_mask
        if self._take_fixed(iova, size):
            return
        if self._cached:
            self.flush_cache()  # a cached range may lie where the caller wants to be
            if self._take_fixed(iova, size):
                return
        raise ValueError(self._not_free_message(iova, size))

    def _take_fixed(self, iova: int, size: int) -> bool:
        block_start = self._free_starts.floor(iova)
        if block_start is not None:
            block_last = self._free[block_start]
            if block_last >= iova + size - 1:
                self._take(block_start, block_last, iova, size)
                self._fixed.add(iova)
                return True
        return False

    def _take(self, block_start: int, block_last: int, iova: int, size: int) -> None:
        """Carve ``[iova, iova + size)`` out of the free block and record it as live."""
        free, free_ends, by_size = self._free, self._free_ends, self._by_size
        last = iova + size - 1
        by_size.remove(_size_key(block_start, block_last))
        del free_ends[block_last]
        # The block becomes up to two: what is left below the allocation and above it.
        if iova > block_start:
            free[block_start] = iova - 1
            free_ends[iova - 1] = block_start
            by_size.add(_size_key(block_start, iova - 1))
        else:
            del free[block_start]
            self._free_starts.remove(block_start)
        if last < block_last:
            free[last + 1] = block_last
            free_ends[block_last] = last + 1
            self._free_starts.add(last + 1)
            by_size.add(_size_key(last + 1, block_last))
        self._alloc_sizes[iova] = size
        self._alloc_starts.add(iova)
        self._bytes_allocated += size

    def free(self, iova: int) -> int:
        """Release the allocation or reservation starting at ``iova``; return its size.

        The space joins its free neighbours, so freeing everything brings the allocator
        back to :meth:`free_blocks` as it was built. A range :meth:`allocate` handed out
        of up to 32 pages waits whole in the cache for the next allocation of its size
        (it joins its neighbours when the cache is flushed).
        """
        size = self._alloc_sizes.pop(iova, None)
        if size is None:
            raise ValueError(self._not_allocated_message(iova))
        self._bytes_allocated -= size
        if size <= self._cache_max and iova not in self._fixed:
            starts = self._cache.get(size)
            if starts is None:
                starts = self._cache[size] = []
            if len(starts) < _CACHE_DEPTH:
                starts.append(iova)
                self._cached += 1
                return size
        self._release(iova, size)
        return size

    def _release(self, iova: int, size: int) -> None:
        """Give ``[iova, iova + size)`` back to the free blocks, joining its neighbours."""
        self._alloc_starts.remove(iova)
        self._fixed.discard(iova)
        free, free_ends, by_size = self._free, self._free_ends, self._by_size
        start, last = iova, iova + size - 1
        below = free_ends.pop(start - 1, None)  # a free block ending right below
        if below is None:
            self._free_starts.add(start)
        else:
            by_size.remove(_size_key(below, start - 1))
            start = below
        above_last = free.pop(last + 1, None)  # a free block starting right above
        if above_last is not None:
            by_size.remove(_size_key(last + 1, above_last))
            self._free_starts.remove(last + 1)
            del free_ends[above_last]
            last = above_last
        free[start] = last
        free_ends[last] = start
        by_size.add(_size_key(start, last))

    # -- messages -------------------------------------------------------------------

    def _exhausted_message(self, size: int, align: int, max_iova: int | None) -> str:
        asked = f"{_size_text(size)} aligned to {align:#x}"
        if max_iova is not None:
            asked += f" at or below max_iova {max_iova:#x}"
        largest = self.largest_free_block()
        if largest is None:
            have = "no IOVA space is free"
        else:
            start, last = largest
            have = (
                f"the largest free block is {_size_text(last - start + 1)} "
                f"at {_span_text(start, last - start + 1)}"
            )
        fixes = ["free DMA buffers that are no longer needed"]
        if max_iova is not None:
            fixes.append("raise max_iova if the device can address more (its DMA mask)")
        if align > self._page_size:
            fixes.append("ask for a smaller alignment")
        return (
            f"no free IOVA range fits {asked}: {have} "
            f"({len(self._alloc_sizes)} live allocations hold "
            f"{_size_text(self._bytes_allocated)}); " + ", or ".join(fixes)
        )

    def _not_free_message(self, iova: int, size: int) -> str:
        last = iova + size - 1
        wanted = f"cannot reserve IOVA {_span_text(iova, size)}"
        start = self._alloc_starts.floor(last)
        if start is not None:
            other = self._alloc_sizes[start]
            if start + other - 1 >= iova:
                # The highest live range starting at or below our last byte overlaps
                # when it reaches past our first byte; ranges are disjoint, so any
                # overlapping one is found this way.
                kind = "reservation" if start in self._fixed else "allocation"
                return (
                    f"{wanted}: it overlaps the live {kind} {_span_text(start, other)}; "
                    "free that first or choose another IOVA"
                )
        for r_start, r_last in self._reserved:
            if r_start <= last and r_last >= iova:
                return (
                    f"{wanted}: it overlaps the reserved range [{r_start:#x}, {r_last:#x}]"
                    " that is never handed out"
                )
        usable = ", ".join(f"[{s:#x}, {e:#x}]" for s, e in self._ranges[:8])
        if len(self._ranges) > 8:
            usable += f", ... ({len(self._ranges)} ranges)"
        return f"{wanted}: it is not inside the usable IOVA ranges {usable}"

    def _not_allocated_message(self, iova: int) -> str:
        if not isinstance(iova, int):
            return f"IOVA must be an int, not {type(iova).__name__}"
        found = self.lookup(iova)
        if found is not None:
            start, size = found
            return (
                f"no allocation starts at IOVA {iova:#x}: it lies inside "
                f"{_span_text(start, size)}; free it by its start {start:#x}"
            )
        return f"no allocation starts at IOVA {iova:#x}: it is not allocated (freed twice?)"
