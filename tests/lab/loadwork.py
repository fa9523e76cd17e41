"""Load runs shared by the short CI tests (test_load.py) and the soak runs (test_soak.py).

Each run checks what it must (no leak, no lost interrupt, no mismatch) and returns
its figures, which the tests print: ``pytest -rP`` shows them, and the soak figures
go to docs/robustness.md.
"""

from __future__ import annotations

import ctypes
import hashlib
import mmap
import random
import time
from dataclasses import asdict, dataclass
from typing import Any

import pyvfio
from pyvfio import _ioctl
from pyvfio.drivers import edu as edu_mod
from pyvfio.drivers.edu import Edu
from pyvfio.drivers.nvme import Controller

PAGE = 4096


def _status_kib(field: str) -> int:
    """A ``VmLck:``/``VmPin:`` figure of /proc/self/status (the kernel's pin accounting)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"/proc/self/status has no {field}")


def _pinned_kib() -> int:
    # type1 accounts pinned pages in locked_vm (VmLck), iommufd in pinned_vm (VmPin),
    # unless it runs with CAP_SYS_RESOURCE, which it does not account at all.
    return _status_kib("VmLck") + _status_kib("VmPin")


def report(name: str, figures: Any) -> None:
    values = asdict(figures) if hasattr(figures, "__dataclass_fields__") else figures
    print(f"{name}: " + ", ".join(f"{k}={v}" for k, v in values.items()), flush=True)


@dataclass(frozen=True)
class MappingFigures:
    backend: str
    count: int
    map_s: float
    unmap_s: float
    dma_avail_start: int | None
    dma_avail_live: int | None
    dma_avail_end: int | None
    pinned_kib_start: int
    pinned_kib_live: int
    pinned_kib_end: int


def map_many_and_back(iommu: pyvfio.Iommu, count: int, seed: int = 1) -> MappingFigures:
    """``count`` live 4 KiB mappings at once, unmapped in random order; then every
    count (mappings, the kernel's DMA-available count, pinned memory, the IOVA
    allocator's free space, and on iommufd the IOAS itself) is back where it began."""
    start = iommu.info
    pinned0 = _pinned_kib()
    free0 = iommu._alloc().free_blocks()
    area = mmap.mmap(-1, count * PAGE)
    anchor = ctypes.c_char.from_buffer(area)
    base = ctypes.addressof(anchor)
    try:
        t0 = time.monotonic()
        mappings = [iommu.map(base + i * PAGE, PAGE) for i in range(count)]
        t1 = time.monotonic()
        assert len(iommu.mappings) == count
        live = iommu.info
        pinned_live = _pinned_kib()
        if start.dma_avail is not None:
            assert live.dma_avail == start.dma_avail - count
        random.Random(seed).shuffle(mappings)
        t2 = time.monotonic()
        for m in mappings:
            iommu.unmap(m)
        t3 = time.monotonic()
    finally:
        for m in iommu.mappings:
            if base <= m.vaddr < base + count * PAGE:
                iommu.unmap(m)
        del anchor
        area.close()
    end = iommu.info
    assert iommu.mappings == ()
    assert end.dma_avail == start.dma_avail
    assert _pinned_kib() == pinned0
    assert iommu._alloc().free_blocks() == free0
    if iommu.backend == "iommufd":  # unmap-all answers how many bytes were still mapped
        backend: Any = iommu._backend
        assert _ioctl.ioas_unmap(backend.fd, backend.ioas, 0, (1 << 64) - 1) == 0
    else:  # type1 accounts each pinned page while mapped
        assert pinned_live - pinned0 >= count * PAGE // 1024
    return MappingFigures(
        iommu.backend,
        count,
        round(t1 - t0, 2),
        round(t3 - t2, 2),
        start.dma_avail,
        live.dma_avail,
        end.dma_avail,
        pinned0,
        pinned_live,
        _pinned_kib(),
    )


@dataclass(frozen=True)
class InterruptFigures:
    raised: int
    counted: int
    waits: int
    seconds: float
    per_second: int


def interrupt_storm(edu: Edu, count: int) -> InterruptFigures:
    """Raise ``count`` MSIs one after the other, each awaited on its eventfd; the
    eventfd counts must add up to ``count`` and nothing may come after."""
    irq = edu.device.enable_irqs("msi")[0]
    edu.acknowledge(edu.interrupt_status)
    counted = waits = 0
    t0 = time.monotonic()
    for i in range(count):
        edu.raise_interrupt(1 << (i % 8))
        counted += irq.wait(timeout=10)
        waits += 1
        if i % 8 == 7:
            edu.acknowledge(0xFF)
    seconds = time.monotonic() - t0
    edu.acknowledge(edu.interrupt_status)
    assert counted == count, f"{count} interrupts raised, the eventfd counted {counted}"
    try:
        extra = irq.wait(timeout=0.2)
    except TimeoutError:
        extra = 0
    assert extra == 0, f"{extra} interrupt(s) more than were raised"
    edu.device.disable_irqs("msi")
    return InterruptFigures(count, counted, waits, round(seconds, 1), int(count / seconds))


@dataclass(frozen=True)
class SoakFigures:
    seconds: float
    writes: int
    bytes_written: int
    reads: int
    bytes_verified: int
    mismatches: int
    slots: int
    slot_bytes: int
    mib_per_s: float


def _block(seed: int, generation: int, size: int) -> bytes:
    """Bytes unique to a slot and its generation, so a stale or misplaced block fails."""
    return random.Random(seed * 1_000_003 + generation).randbytes(size)


def nvme_write_verify(ctrl: Controller, seconds: float, seed: int = 5) -> SoakFigures:
    """Write/read-verify for ``seconds``: the namespace is cut into slots, each write
    puts a new generation into a random slot (its SHA-256 kept) and reads it back;
    each round also re-reads an older random slot; at the end every slot written is
    read and checked once more. Mismatches are counted, not stopped at."""
    ns = ctrl.namespaces[1]
    rng = random.Random(seed)
    slot_bytes = 128 * 1024
    slots = min(ns.size_bytes // slot_bytes, 512)
    blocks = slot_bytes // ns.block_size
    digests: dict[int, bytes] = {}
    generation = writes = reads = written = verified = mismatches = 0

    def check(slot: int) -> None:
        nonlocal reads, verified, mismatches
        data = ctrl.read(slot * blocks, blocks)
        reads += 1
        verified += len(data)
        if hashlib.sha256(data).digest() != digests[slot]:
            mismatches += 1

    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        slot = rng.randrange(slots)
        generation += 1
        data = _block(slot, generation, slot_bytes)
        ctrl.write(slot * blocks, data)
        digests[slot] = hashlib.sha256(data).digest()
        writes += 1
        written += len(data)
        check(slot)
        check(rng.choice(list(digests)))
    for slot in sorted(digests):
        check(slot)
    elapsed = time.monotonic() - t0
    return SoakFigures(
        round(elapsed, 1),
        writes,
        written,
        reads,
        verified,
        mismatches,
        len(digests),
        slot_bytes,
        round((written + verified) / elapsed / (1 << 20), 2),
    )


__all__ = [
    "InterruptFigures",
    "MappingFigures",
    "SoakFigures",
    "edu_mod",
    "interrupt_storm",
    "map_many_and_back",
    "nvme_write_verify",
    "report",
]
