"""Interrupt waits on a bare eventfd: counts, timeouts, EINTR, asyncio, close."""

from __future__ import annotations

import asyncio
import os
import select
import signal
import threading
import time
from collections.abc import Iterator

import pytest

from pyvfio.errors import ClosedError
from pyvfio.interrupt import Interrupt, check_kind


class _Dev:
    bdf = "0000:00:10.0"

    def __init__(self) -> None:
        self.unmasked: list[int] = []

    def _unmask_irq(self, irq: Interrupt) -> None:
        self.unmasked.append(irq.vector)


@pytest.fixture
def irq() -> Iterator[Interrupt]:
    i = Interrupt(_Dev(), "msi", 0)
    yield i
    i.close()


def _fire_later(irq: Interrupt, delay: float, times: int = 1) -> threading.Thread:
    def fire() -> None:
        time.sleep(delay)
        for _ in range(times):
            os.eventfd_write(irq.fileno(), 1)

    t = threading.Thread(target=fire)
    t.start()
    return t


def test_wait_returns_the_count_and_times_out(irq: Interrupt) -> None:
    with pytest.raises(TimeoutError, match=r"did not fire within 0\.05 s"):
        irq.wait(0.05)
    os.eventfd_write(irq.fileno(), 1)
    os.eventfd_write(irq.fileno(), 1)
    assert irq.wait(1) == 2  # two signals since the last read, counted once
    assert irq.poll() == 0


def test_wait_survives_signals(irq: Interrupt) -> None:
    ticks = []
    old = signal.signal(signal.SIGALRM, lambda *a: ticks.append(1))
    signal.setitimer(signal.ITIMER_REAL, 0.02, 0.02)
    try:
        t = _fire_later(irq, 0.3)
        assert irq.wait(5) == 1
        t.join()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert len(ticks) >= 3, "the wait was interrupted by signals and went on"


def test_wait_async(irq: Interrupt) -> None:
    async def main() -> int:
        t = _fire_later(irq, 0.1, times=3)
        got = await irq.wait_async(timeout=5)
        t.join()
        irq.poll()  # the wait may have woken after the first of the three writes
        return got

    assert asyncio.run(main()) >= 1

    async def never() -> int:
        return await irq.wait_async(timeout=0.05)

    with pytest.raises(TimeoutError):
        asyncio.run(never())


def test_close_is_idempotent_and_use_after_close_is_clear(irq: Interrupt) -> None:
    fd = irq.fileno()
    irq.close()
    irq.close()
    with pytest.raises(ClosedError, match="closed"):
        irq.wait(0)
    with pytest.raises(OSError):
        os.fstat(fd)  # the eventfd really is closed


def test_unmask_goes_to_the_device() -> None:
    dev = _Dev()
    with Interrupt(dev, "intx", 0) as irq:  # only INTx is unmasked (test_messages.py: others)
        irq.unmask()
    assert dev.unmasked == [0]


def test_kinds() -> None:
    assert check_kind("msix") == 2
    with pytest.raises(ValueError, match="intx, msi, msix"):
        check_kind("msi-x")


class _RemovableDev(_Dev):
    def __init__(self) -> None:
        super().__init__()
        self._removal_requested = False


@pytest.mark.parametrize("how", ["poll", "wait", "wait_async"])
def test_a_removal_request_is_remembered_whoever_consumes_it(how: str) -> None:
    from pyvfio.device import RemovalRequest

    dev = _RemovableDev()
    with RemovalRequest(dev, "req", 0) as req:
        assert req.poll() == 0 and not dev._removal_requested
        os.eventfd_write(req.fileno(), 1)
        if how == "poll":
            assert req.poll() == 1
        elif how == "wait":
            assert req.wait(1) == 1
        else:
            assert asyncio.run(req.wait_async(1)) == 1
        assert dev._removal_requested
        assert req.poll() == 0  # the count was consumed, the request is not forgotten
        assert dev._removal_requested


class _CountingPoll:
    """select.poll, counting the poll objects made and the polls that blocked."""

    made = 0
    polls = 0

    def __init__(self) -> None:
        type(self).made += 1
        self._poll = _real_poll()

    def register(self, fd: int, mask: int) -> None:
        self._poll.register(fd, mask)

    def poll(self, timeout: float | None = None) -> list[tuple[int, int]]:
        type(self).polls += 1
        return self._poll.poll(timeout)


_real_poll = select.poll


def test_a_pending_interrupt_is_read_without_a_poll_and_one_poll_object_serves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The round trip's wait (issue 16): an interrupt already pending is read at once,
    and waits that must block reuse one poll object instead of making one each."""
    monkeypatch.setattr(select, "poll", _CountingPoll)
    monkeypatch.setattr(_CountingPoll, "made", 0)
    monkeypatch.setattr(_CountingPoll, "polls", 0)
    with Interrupt(_Dev(), "msi", 0) as irq:
        for _ in range(3):
            os.eventfd_write(irq.fileno(), 1)
            assert irq.wait(1) == 1
        assert _CountingPoll.polls == 0, "a pending interrupt was polled for"
        for _ in range(2):
            t = _fire_later(irq, 0.05)
            assert irq.wait(5) == 1
            t.join()
        with pytest.raises(TimeoutError):
            irq.wait(0.01)
        assert _CountingPoll.polls >= 3  # the blocking waits did poll
    assert _CountingPoll.made <= 1, f"{_CountingPoll.made} poll objects for one interrupt"
