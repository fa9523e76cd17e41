"""Micro-benchmark of pyvfio.iova.IovaAllocator: microseconds per allocate+free pair.

Run: ``.venv/bin/python bench/bench_iova.py``. The IOVA space is what VT-d reports on
a typical x86 host: 48 bits with the MSI window at 0xfee00000 carved out. Nothing here
is asserted; the figures are for reading.

``--baseline REV`` also loads the allocator as it is at git revision ``REV`` (``git
show REV:src/pyvfio/iova.py``) and measures both in the same run, scenario by
scenario, one right after the other, so a loaded machine slows both alike; the
ratio baseline / current is what to compare between runs. ``--json PATH`` writes the
figures (``bench/results/iova.json`` is the committed run).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pyvfio.iova import IovaAllocator

PAGE = 4096
MiB = 1 << 20
RANGES = [(0, 0xFEDFFFFF), (0xFEF00000, (1 << 48) - 1)]
MASK32 = (1 << 32) - 1

Op = Callable[[], None]
#: A scenario: its name, how many calls per timed run, and what builds the operation
#: for an allocator class (a fresh allocator in the scenario's state).
Scenario = tuple[str, int, Callable[[Any], Op]]


ROUNDS = 9


def run_us(op: Op, repeat: int) -> float:
    """One run of ``repeat`` calls, in microseconds per call."""
    t0 = time.perf_counter_ns()
    for _ in range(repeat):
        op()
    return (time.perf_counter_ns() - t0) / repeat / 1000


def best_us(ops: list[Op], repeat: int) -> list[float]:
    """Best of ``ROUNDS`` runs of each op, the ops taking turns run by run, so that a
    burst of load elsewhere falls on all of them alike."""
    best = [float("inf")] * len(ops)
    for _ in range(ROUNDS):
        for i, op in enumerate(ops):
            best[i] = min(best[i], run_us(op, repeat))
    return best


def packed(cls: Any, live: int) -> tuple[Any, list[int]]:
    a = cls(RANGES)
    return a, [a.allocate(PAGE) for _ in range(live)]


def fragmented(cls: Any, live: int, hole_pages: int = 1) -> tuple[Any, list[int]]:
    """``live`` allocations of ``hole_pages`` pages with a hole of the same size after each."""
    a = cls(RANGES)
    iovas = [a.allocate(hole_pages * PAGE) for _ in range(2 * live)]
    for iova in iovas[1::2]:
        a.free(iova)
    return a, iovas[0::2]


def pair(a: Any, size: int, **kwargs: int) -> Op:
    def op() -> None:
        a.free(a.allocate(size, **kwargs))

    return op


def churn(a: Any, live: list[int], seed: int = 1) -> Op:
    """Free a random live allocation, then allocate a page: the pattern of a busy driver."""
    rng = random.Random(seed)

    def op() -> None:
        i = rng.randrange(len(live))
        a.free(live[i])
        live[i] = a.allocate(PAGE)

    return op


def packed_pair(live: int) -> Callable[[Any], Op]:
    return lambda cls: pair(packed(cls, live)[0], PAGE)


def packed_churn(live: int) -> Callable[[Any], Op]:
    return lambda cls: churn(*packed(cls, live))


def scenarios() -> list[Scenario]:
    out: list[Scenario] = []
    for n in (1, 1_000, 30_000):
        out.append((f"{n:>6} live, allocate(4K)+free", 20_000, packed_pair(n)))
        out.append((f"{n:>6} live, free random + allocate(4K)", 20_000, packed_churn(n)))
    frag = "30000 live + 29999 1-page holes"
    out += [
        (f"{frag}, allocate(4K)+free", 20_000, lambda c: pair(fragmented(c, 30_000)[0], PAGE)),
        (
            f"{frag}, allocate(64K)+free",
            20_000,
            lambda c: pair(fragmented(c, 30_000)[0], 16 * PAGE),
        ),
        (
            f"{frag}, allocate(2M, align=2M)+free",
            20_000,
            lambda c: pair(fragmented(c, 30_000)[0], 2 * MiB, align=2 * MiB),
        ),
        (
            f"{frag}, allocate(4K, max_iova=4G-1)+free",
            20_000,
            lambda c: pair(fragmented(c, 30_000)[0], PAGE, max_iova=MASK32),
        ),
        (
            f"{frag}, allocate(8K, max_iova=4G-1)+free",
            2_000,
            lambda c: pair(fragmented(c, 30_000)[0], 2 * PAGE, max_iova=MASK32),
        ),
        (f"{frag}, free random + allocate(4K)", 20_000, lambda c: churn(*fragmented(c, 30_000))),
        # Worst case for best fit: every hole is big enough but misaligned, so the
        # search walks all of them before reaching a block that fits.
        (
            "15000 live + 14999 2-page holes at odd pages, allocate(8K, align=8K)+free",
            200,
            lambda c: pair(fragmented(c, 15_000, hole_pages=2)[0], 2 * PAGE, align=2 * PAGE),
        ),
    ]
    return out


def load_allocator(rev: str) -> Any:
    """``IovaAllocator`` as it is at git revision ``rev``, loaded beside today's."""
    source = subprocess.run(
        ["git", "show", f"{rev}:src/pyvfio/iova.py"], capture_output=True, text=True, check=True
    ).stdout
    spec = importlib.util.spec_from_loader(f"iova_at_{abs(hash(rev))}", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    exec(compile(source, f"{rev}:src/pyvfio/iova.py", "exec"), module.__dict__)
    return module.IovaAllocator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", metavar="REV", help="also measure the allocator at REV")
    parser.add_argument("--json", metavar="PATH", type=Path, help="write the figures here")
    args = parser.parse_args()
    classes: list[tuple[str, Any]] = []
    if args.baseline:
        classes.append((args.baseline, load_allocator(args.baseline)))
    classes.append(("current", IovaAllocator))

    load_before = os.getloadavg()
    rows: list[dict[str, Any]] = []
    for name, repeat, build in scenarios():
        row: dict[str, Any] = {"scenario": name}
        timed = best_us([build(cls) for _, cls in classes], repeat)
        for (label, _), us in zip(classes, timed, strict=True):
            row[label] = round(us, 3)
        if args.baseline:
            row["ratio"] = round(row[args.baseline] / row["current"], 2)
        rows.append(row)
        figures = "  ".join(f"{row[label]:10.2f}" for label, _ in classes)
        ratio = f"  {row['ratio']:7.2f}x" if args.baseline else ""
        print(f"{name:<75}{figures} us/op{ratio}", flush=True)

    if args.json:
        result = {
            "schema": 1,
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "python": platform.python_version(),
            "machine": f"{os.cpu_count()} CPUs, {platform.machine()}",
            "load_average_before_after": [list(load_before), list(os.getloadavg())],
            "unit": f"microseconds per operation, best of {ROUNDS} runs taken in turns",
            "columns": [label for label, _ in classes],
            "ratio": f"{args.baseline} / current" if args.baseline else None,
            "rows": rows,
        }
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
