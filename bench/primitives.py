"""Time VFIO primitives through pyvfio, plain Python and a C program, on one edu device.

Runs as root where an edu device (1234:11e8) is present: inside the lab guest (what
``bench/run_primitives.py`` does) or on a host with one. It binds the edu to vfio-pci
and, in turns, times each operation three ways, each side opening and closing the
device itself: through pyvfio's public API; through ``floor.py``, the least plain
Python that makes the same system calls (the floor any Python driver pays); and
through ``bench/c/vfio_prims.c`` (compiled with gcc into a temporary folder unless
``--c-binary`` names a build). It gives the device back and writes one JSON file with
the three measurements and the pyvfio/floor and pyvfio/C ratios of each operation.

The Python sides time the same way as the C program (see ``measure``): a batch size
calibrated to a fifth of the budget, five batches of it; the best and the median batch
give ns per op.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import json
import mmap
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import primitives_report as report
from floor import IOVA_EXTRA, FloorDevice

import pyvfio
from pyvfio.drivers import edu
from pyvfio.host import bind
from pyvfio.lab import guest

HERE = Path(__file__).resolve().parent
C_SOURCE = HERE / "c" / "vfio_prims.c"
CFLAGS = ("-O2", "-Wall")
ROUNDS = 5
PAGE = mmap.PAGESIZE

Op = Callable[[int], None]


def say(message: str) -> None:
    print(f"bench: {message}", flush=True)


def progress(result: dict[str, Any]) -> str:
    return (
        f"{result['best_ns_per_op']:,.0f} ns/op best, {result['ns_per_op']:,.0f} median "
        f"({result['iterations']} iterations)"
    )


def measure(op: Op, budget_ns: int, max_iters: int) -> dict[str, Any]:
    """ns per call of ``op(n)`` (which runs the operation n times), as vfio_prims.c does it.

    Batches double until one takes a fiftieth of the budget; the rounds' batch is then
    scaled from it to a fifth of the budget. A stall while calibrating (a shared,
    emulated machine has many) so shortens the rounds instead of ending calibration at
    a tiny batch.
    """
    op(1)  # warm up: lazy BAR mmap, page faults, first-use paths
    n = 1
    while True:
        t0 = time.perf_counter_ns()
        op(n)
        took = time.perf_counter_ns() - t0
        if took >= budget_ns // 50 or n >= max_iters:
            break
        n = min(n * 2, max_iters)
    n = max(1, min(max_iters, n * (budget_ns // ROUNDS) // max(took, 1)))
    per_op = []
    for _ in range(ROUNDS):
        t0 = time.perf_counter_ns()
        op(n)
        per_op.append((time.perf_counter_ns() - t0) / n)
    per_op.sort()
    return {
        "ns_per_op": round(per_op[ROUNDS // 2], 1),
        "best_ns_per_op": round(per_op[0], 1),
        "iterations": n * ROUNDS,
        "rounds": ROUNDS,
        "batch": n,
    }


@contextlib.contextmanager
def anonymous_pages(count: int) -> Iterator[tuple[mmap.mmap, int]]:
    """``count`` zeroed pages and their address; released afterwards."""
    mem = mmap.mmap(-1, count * PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    window = (ctypes.c_char * len(mem)).from_buffer(mem)
    try:
        yield mem, ctypes.addressof(window)
    finally:
        del window
        mem.close()


def pyvfio_ops(
    iommu: pyvfio.Iommu,
    dev: pyvfio.Device,
    irq: pyvfio.Interrupt,
    page: mmap.mmap,
    *,
    stand_in: bool = False,
) -> dict[str, Op]:
    """One loop per primitive through pyvfio's public API (``op(n)`` runs it n times).

    ``stand_in``: nothing raises the interrupt (bench/instructions.py's stub has no
    device), so the loop writes the eventfd itself after the raise, as the floor's does.
    """
    edu_dev = edu.Edu(dev)
    bar, config = dev.bar(0), dev.config
    efd = irq.fileno()

    def mmio_read32(n: int) -> None:
        for _ in range(n):
            bar.read32(edu.REG_ID)

    def mmio_write32(n: int) -> None:
        for i in range(n):
            bar.write32(edu.REG_LIVENESS, i)

    def config_read32(n: int) -> None:
        for _ in range(n):
            config.read32(0)

    def map_unmap(n: int) -> None:
        for _ in range(n):
            iommu.unmap(iommu.map(page))

    def irq_round_trip(n: int) -> None:
        for _ in range(n):
            edu_dev.raise_interrupt(1)
            irq.wait(timeout=5.0)
            edu_dev.acknowledge(1)

    def irq_round_trip_stand_in(n: int) -> None:
        for _ in range(n):
            edu_dev.raise_interrupt(1)
            os.eventfd_write(efd, 1)  # the device's MSI, which the stub cannot send
            irq.wait(timeout=5.0)
            edu_dev.acknowledge(1)

    return {
        "mmio_read32": mmio_read32,
        "mmio_write32": mmio_write32,
        "config_read32": config_read32,
        "dma_map_unmap_4k": map_unmap,
        "irq_round_trip": irq_round_trip_stand_in if stand_in else irq_round_trip,
    }


def bench_pyvfio(
    bdf: str, backend: str, budget_ns: int, max_iters: int, live_counts: list[int]
) -> dict[str, Any]:
    """Each operation through pyvfio's public API; the device is closed on return."""
    ops: dict[str, Any] = {}

    def run(name: str, op: Op) -> None:
        got = ops[name] = measure(op, budget_ns, max_iters)
        say(f"pyvfio {name}: {progress(got)}")

    with pyvfio.Iommu(backend=backend) as iommu:
        dev = iommu.open(bdf)
        (irq,) = dev.enable_irqs("msi")
        with anonymous_pages(1) as (page, _):
            loops = pyvfio_ops(iommu, dev, irq, page)
            for name, op in loops.items():
                run(name, op)
            map_unmap = loops["dma_map_unmap_4k"]

            for count in live_counts:
                with anonymous_pages(count) as (_, base):
                    t0 = time.monotonic()
                    live = [iommu.map(base + i * PAGE, PAGE) for i in range(count)]
                    setup = time.monotonic() - t0
                    say(f"pyvfio: {count:,} live mapping(s) made in {setup:.1f} s")
                    run(report.live_op(count), map_unmap)
                    ops[report.live_op(count)]["setup_seconds"] = round(setup, 2)
                    for mapping in live:
                        iommu.unmap(mapping)
                    del live
        dev.disable_irqs("msi")
    return ops


def bench_floor(
    bdf: str, backend: str, budget_ns: int, max_iters: int, live_counts: list[int]
) -> dict[str, Any]:
    """Each operation as plain Python's raw syscalls (floor.py); closed on return."""
    ops: dict[str, Any] = {}

    def run(name: str, op: Op) -> None:
        got = ops[name] = measure(op, budget_ns, max_iters)
        say(f"floor {name}: {progress(got)}")

    with FloorDevice(bdf, backend) as dev, anonymous_pages(2) as (_, pages):
        for name, op in dev.ops(pages).items():
            run(name, op)
        extra = dev.map_op(pages + PAGE, IOVA_EXTRA)
        for count in live_counts:
            with anonymous_pages(count) as (_, base):
                t0 = time.monotonic()
                with dev.live_mappings(base, count):
                    setup = time.monotonic() - t0
                    say(f"floor: {count:,} live mapping(s) made in {setup:.1f} s")
                    run(report.live_op(count), extra)
                    ops[report.live_op(count)]["setup_seconds"] = round(setup, 2)
    return ops


def compile_c(folder: Path) -> tuple[Path, str]:
    """Build vfio_prims in ``folder``; its path and the compiler line for the report."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise SystemExit("bench: no C compiler (gcc) on PATH: install gcc (apt-get install gcc)")
    binary = folder / "vfio_prims"
    subprocess.run([cc, *CFLAGS, "-o", str(binary), str(C_SOURCE)], check=True)
    return binary, compiler_line(cc)


def compiler_line(cc: str) -> str:
    version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout
    first = version.splitlines()[0] if version else Path(cc).name
    return f"{first} {' '.join(CFLAGS)}"


def bench_c(
    binary: Path, bdf: str, backend: str, budget_ns: int, max_iters: int, live_counts: list[int]
) -> dict[str, Any]:
    argv = [
        str(binary),
        "--backend",
        backend,
        "--budget-ms",
        str(budget_ns // 1_000_000),
        "--max-iters",
        str(max_iters),
        "--live",
        ",".join(map(str, live_counts)),
        bdf,
    ]
    say(f"C: {' '.join(argv)}")
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.stderr:
        print(done.stderr, end="", file=sys.stderr, flush=True)
    if done.returncode != 0:
        raise SystemExit(f"bench: vfio_prims failed with exit {done.returncode}")
    parsed = report.parse_c_output(done.stdout)
    for name, result in parsed["ops"].items():
        say(f"C {name}: {progress(result)}")
    return parsed


def where() -> tuple[str, str, str | None]:
    """accel (tcg/kvm from the lab manifest, 'host' outside the lab), kernel, image."""
    if guest.in_guest():
        m = guest.manifest()
        return m.accel, platform.release(), m.kernel
    return "host", platform.release(), None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="where to write the JSON")
    parser.add_argument("--device", help="the edu's address (default: the lab's edu)")
    parser.add_argument("--backend", default="type1", choices=("type1", "iommufd"))
    parser.add_argument("--budget-ms", type=int, default=2000, help="time per operation and side")
    parser.add_argument("--max-iters", type=int, default=10_000_000, help="cap on one batch")
    parser.add_argument("--live", default=",".join(map(str, report.LIVE_COUNTS)))
    parser.add_argument(
        "--repeat", type=int, default=2, help="alternate the three sides this many times"
    )
    parser.add_argument("--c-binary", type=Path, help="a built vfio_prims (default: build one)")
    parser.add_argument("--cc", help="how --c-binary was built, for the report")
    args = parser.parse_args(argv)
    live_counts = [int(n) for n in args.live.split(",")]
    budget_ns = args.budget_ms * 1_000_000
    bdf = args.device or guest.address("edu")
    accel, kernel, image = where()
    say(f"edu at {bdf}, {args.backend} backend, {accel.upper()}, kernel {kernel}")

    with tempfile.TemporaryDirectory(prefix="vfio-prims-") as tmp:
        if args.c_binary:
            binary, cc = args.c_binary, args.cc or "prebuilt"
        else:
            binary, cc = compile_c(Path(tmp))
            say(f"built {binary} with {cc}")
        original = bind.bind_vfio(bdf)
        mine_runs: list[dict[str, Any]] = []
        floor_runs: list[dict[str, Any]] = []
        c_runs: list[dict[str, Any]] = []
        try:
            # The sides take turns so that all sample the host's load over the whole run.
            for rep in range(1, args.repeat + 1):
                started = time.monotonic()
                mine_runs.append(
                    bench_pyvfio(bdf, args.backend, budget_ns, args.max_iters, live_counts)
                )
                say(f"pyvfio side {rep}/{args.repeat} took {time.monotonic() - started:.0f} s")
                started = time.monotonic()
                floor_runs.append(
                    bench_floor(bdf, args.backend, budget_ns, args.max_iters, live_counts)
                )
                say(f"floor side {rep}/{args.repeat} took {time.monotonic() - started:.0f} s")
                started = time.monotonic()
                c_runs.append(
                    bench_c(binary, bdf, args.backend, budget_ns, args.max_iters, live_counts)
                )
                say(f"C side {rep}/{args.repeat} took {time.monotonic() - started:.0f} s")
        finally:
            bind.give_back(bdf, original)
    mine = report.merge_repeats(mine_runs)
    base = report.merge_repeats(floor_runs)
    theirs = {**c_runs[-1], "ops": report.merge_repeats([run["ops"] for run in c_runs])}

    results = {
        "schema": report.SCHEMA,
        "backend": args.backend,
        "accel": accel,
        "kernel": kernel,
        "kernel_image": image,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "device": bdf,
        "edu_ident": theirs.get("edu_ident"),
        "python": platform.python_version(),
        "pyvfio": pyvfio.__version__,
        "cc": cc,
        "budget_ms": args.budget_ms,
        "rounds": ROUNDS,
        "repeats": args.repeat,
        "ops": report.combine(mine, base, theirs["ops"], report.op_names(live_counts)),
    }
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    say(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
