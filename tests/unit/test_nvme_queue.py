"""QueuePair without a device: SQ entries, PRP lists, doorbells, CIDs and phase tags.

A fake controller hands out plain memory as "DMA buffers" and a bytearray as BAR0; the
test plays the controller's part by reading SQ entries and posting CQ entries.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import pytest

from pyvfio.drivers import nvme_spec as spec
from pyvfio.drivers.nvme import PAGE_SIZE, QueuePair
from pyvfio.drivers.nvme_spec import NvmeError, NvmeStatusError


class FakeBuffer:
    def __init__(self, size: int, iova: int) -> None:
        self.size = size
        self.iova = iova
        self._mem = bytearray(size)
        self.view = memoryview(self._mem)

    def free(self) -> None:
        self.view.release()


@dataclass
class FakeDevice:
    bdf: str = "0000:00:11.0"
    next_iova: int = 0x100000
    buffers: list[FakeBuffer] = field(default_factory=list)

    def dma_alloc(self, size: int) -> FakeBuffer:
        buf = FakeBuffer(size, self.next_iova)
        self.next_iova += (size + PAGE_SIZE - 1) // PAGE_SIZE * PAGE_SIZE + PAGE_SIZE
        self.buffers.append(buf)
        return buf


@dataclass
class FakeCap:
    doorbell_stride: int = 4


class FakeController:
    def __init__(self) -> None:
        self.device = FakeDevice()
        self.cap = FakeCap()

    def check_fatal(self) -> None:
        pass


class Harness:
    """One queue pair and the controller side: fetch SQ entries, post completions."""

    def __init__(self, qid: int = 1, size: int = 8) -> None:
        self.ctrl = FakeController()
        self.bar = bytearray(0x2000)
        self.qp = QueuePair(self.ctrl, qid, size, memoryview(self.bar).cast("I"))  # type: ignore[arg-type]
        self.sq, self.cq, self.prp = self.ctrl.device.buffers
        self.sq_head = 0
        self.cq_tail = 0
        self.phase = 1

    def doorbell(self, offset: int) -> int:
        return int(struct.unpack_from("<I", self.bar, offset)[0])

    def fetch(self) -> tuple[int, ...]:
        entry = spec.SQE.unpack_from(self.sq.view, self.sq_head * 64)
        self.sq_head = (self.sq_head + 1) % self.qp.size
        return entry

    def post(self, cid: int, status: int = 0, dw0: int = 0) -> None:
        word = (status << 1) | self.phase
        spec.CQE.pack_into(self.cq.view, self.cq_tail * 16, dw0, 0, self.sq_head, 1, cid, word)
        self.cq_tail += 1
        if self.cq_tail == self.qp.size:
            self.cq_tail = 0
            self.phase ^= 1


def test_a_4k_read_uses_prp1_alone_and_rings_the_doorbell() -> None:
    h = Harness(qid=2)
    cid = h.qp.submit_io(spec.IoOpcode.READ, 1, 0x1_0000_0010, 8, 0x40000, 4096)
    opcode, _, got_cid, nsid, _, _, _, prp1, prp2, cdw10, cdw11, cdw12, *_ = h.fetch()
    assert (opcode, got_cid, nsid, prp1, prp2) == (0x02, cid, 1, 0x40000, 0)
    assert (cdw10, cdw11, cdw12) == (0x10, 1, 7)
    sq_db, _ = spec.doorbell_offsets(2, 4)
    assert h.doorbell(sq_db) == 1


def test_two_pages_use_prp2_and_more_use_a_list() -> None:
    h = Harness()
    h.qp.submit_io(spec.IoOpcode.WRITE, 1, 0, 16, 0x40000, 8192)
    assert h.fetch()[8] == 0x41000
    cid = h.qp.submit_io(spec.IoOpcode.WRITE, 1, 0, 128, 0x80200, 65536)
    entry = h.fetch()
    prp1, pages = spec.prp_pages(0x80200, 65536, PAGE_SIZE)
    assert entry[7] == prp1
    assert entry[8] == h.prp.iova + cid * PAGE_SIZE
    listed = struct.unpack_from(f"<{len(pages)}Q", h.prp.view, cid * PAGE_SIZE)
    assert list(listed) == pages and len(pages) == 16


def test_a_transfer_beyond_one_list_page_is_refused() -> None:
    h = Harness()
    with pytest.raises(ValueError, match="split the transfer"):
        h.qp.submit_io(spec.IoOpcode.READ, 1, 0, 8, 0x100000, 514 * PAGE_SIZE)
    assert h.qp.capacity == h.qp.size - 1  # the CID went back


def test_batched_submissions_ring_once() -> None:
    h = Harness()
    sq_db, _ = spec.doorbell_offsets(1, 4)
    for i in range(3):
        h.qp.submit_io(spec.IoOpcode.READ, 1, i * 8, 8, 0x40000, 4096, ring=False)
    assert h.doorbell(sq_db) == 0
    h.qp.ring()
    assert h.doorbell(sq_db) == 3


def test_phase_tags_across_several_wraps() -> None:
    """Three times round an 8-entry CQ: every completion found once, CIDs reused."""
    h = Harness(size=8)
    _, cq_db = spec.doorbell_offsets(1, 4)
    seen = 0
    for _round in range(6):
        cids = [h.qp.submit_io(spec.IoOpcode.READ, 1, 0, 8, 0x40000, 4096) for _ in range(4)]
        assert h.qp.reap() == []  # nothing posted yet: the old phase does not count
        for cid in cids:
            h.fetch()
            h.post(cid, dw0=cid + 100)
        done = h.qp.reap()
        assert sorted(c for c, _, _ in done) == sorted(cids)
        assert all(st == 0 and dw0 == cid + 100 for cid, st, dw0 in done)
        seen += len(done)
        assert h.doorbell(cq_db) == h.cq_tail
        assert h.qp.in_flight == 0
    assert seen == 24


def test_a_full_queue_is_an_error_before_the_sq_overflows() -> None:
    h = Harness(size=4)
    for _ in range(3):
        h.qp.submit_io(spec.IoOpcode.READ, 1, 0, 8, 0x40000, 4096)
    with pytest.raises(NvmeError, match="3 commands in flight"):
        h.qp.submit_io(spec.IoOpcode.READ, 1, 0, 8, 0x40000, 4096)


def test_an_error_status_is_decoded() -> None:
    h = Harness()
    cid = h.qp.submit_io(spec.IoOpcode.READ, 1, 1 << 40, 8, 0x40000, 4096)
    h.fetch()
    h.post(cid, status=(1 << 14) | 0x80)  # DNR, SCT 0, SC 0x80
    with pytest.raises(NvmeStatusError) as info:
        h.qp.wait(cid, timeout=1.0)
    assert (info.value.sct, info.value.sc, info.value.qid) == (0, 0x80, 1)
    assert str(info.value).startswith("read on queue 1 failed: LBA Out of Range")
    assert info.value.status.dnr


def test_wait_keeps_other_completions_for_reap() -> None:
    h = Harness()
    a = h.qp.submit(spec.flush(1))
    b = h.qp.submit(spec.flush(1))
    h.fetch(), h.fetch()
    h.post(b, dw0=2)
    h.post(a, dw0=1)
    assert h.qp.wait(a) == 1
    assert h.qp.reap() == [(b, 0, 2)]


def test_wait_times_out_with_the_command_named() -> None:
    h = Harness()
    cid = h.qp.submit(spec.flush(1))
    with pytest.raises(spec.NvmeTimeoutError, match="flush"):
        h.qp.wait(cid, timeout=0.05)


def test_free_memory_releases_the_buffers() -> None:
    h = Harness()
    h.qp._free_memory()
    assert all(_released(buf.view) for buf in (h.sq, h.cq, h.prp))
    h.qp._free_memory()  # twice is fine


def _released(view: memoryview) -> bool:
    try:
        len(view)
    except ValueError:
        return True
    return False
