"""Micro-benchmark of pyvfio.iova.IovaAllocator: microseconds per allocate+free pair.

Run: ``.venv/bin/python bench/bench_iova.py``. The IOVA space is what VT-d reports on
a typical x86 host: 48 bits with the MSI window at 0xfee00000 carved out. Nothing here
is asserted; the figures are for reading.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from pyvfio.iova import IovaAllocator

PAGE = 4096
MiB = 1 << 20
RANGES = [(0, 0xFEDFFFFF), (0xFEF00000, (1 << 48) - 1)]


def per_op_us(op: Callable[[], None], repeat: int) -> float:
    """Best of five runs of ``repeat`` calls, in microseconds per call."""
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter_ns()
        for _ in range(repeat):
            op()
        best = min(best, (time.perf_counter_ns() - t0) / repeat / 1000)
    return best


def packed(live: int) -> tuple[IovaAllocator, list[int]]:
    a = IovaAllocator(RANGES)
    return a, [a.allocate(PAGE) for _ in range(live)]


def fragmented(live: int, hole_pages: int = 1) -> tuple[IovaAllocator, list[int]]:
    """``live`` allocations of ``hole_pages`` pages with a hole of the same size after each."""
    a = IovaAllocator(RANGES)
    iovas = [a.allocate(hole_pages * PAGE) for _ in range(2 * live)]
    for iova in iovas[1::2]:
        a.free(iova)
    return a, iovas[0::2]


def pair(a: IovaAllocator, size: int, **kwargs: int) -> Callable[[], None]:
    def op() -> None:
        a.free(a.allocate(size, **kwargs))

    return op


def churn(a: IovaAllocator, live: list[int], seed: int = 1) -> Callable[[], None]:
    """Free a random live allocation, then allocate a page: the pattern of a busy driver."""
    rng = random.Random(seed)

    def op() -> None:
        i = rng.randrange(len(live))
        a.free(live[i])
        live[i] = a.allocate(PAGE)

    return op


def main() -> None:
    rows: list[tuple[str, float]] = []
    for n in (1, 1_000, 30_000):
        a, live = packed(n)
        rows.append((f"{n:>6} live, allocate(4K)+free", per_op_us(pair(a, PAGE), 20_000)))
        rows.append((f"{n:>6} live, free random + allocate(4K)", per_op_us(churn(a, live), 20_000)))

    a, live = fragmented(30_000)
    frag = f"{len(live)} live + {len(a.free_blocks()) - 2} 1-page holes"
    mask32 = (1 << 32) - 1
    rows += [
        (f"{frag}, allocate(4K)+free", per_op_us(pair(a, PAGE), 20_000)),
        (f"{frag}, allocate(64K)+free", per_op_us(pair(a, 16 * PAGE), 20_000)),
        (
            f"{frag}, allocate(2M, align=2M)+free",
            per_op_us(pair(a, 2 * MiB, align=2 * MiB), 20_000),
        ),
        (
            f"{frag}, allocate(4K, max_iova=4G-1)+free",
            per_op_us(pair(a, PAGE, max_iova=mask32), 20_000),
        ),
        (
            f"{frag}, allocate(8K, max_iova=4G-1)+free",
            per_op_us(pair(a, 2 * PAGE, max_iova=mask32), 2_000),
        ),
        (f"{frag}, free random + allocate(4K)", per_op_us(churn(a, live), 20_000)),
    ]

    # Worst case for best fit: every hole is big enough but misaligned, so the search
    # walks all of them before reaching a block that fits.
    a, live = fragmented(15_000, hole_pages=2)
    worst = f"{len(live)} live + {len(a.free_blocks()) - 2} 2-page holes at odd pages"
    rows.append(
        (f"{worst}, allocate(8K, align=8K)+free", per_op_us(pair(a, 2 * PAGE, align=2 * PAGE), 200))
    )

    width = max(len(name) for name, _ in rows)
    for name, us in rows:
        print(f"{name:<{width}}  {us:8.2f} us/op")


if __name__ == "__main__":
    main()
