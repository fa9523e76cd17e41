"""Interrupts delivered to eventfds: blocking ``wait`` here, asyncio beside it.

``VFIO_DEVICE_SET_IRQS`` with ``DATA_EVENTFD | ACTION_TRIGGER`` makes the kernel
signal one eventfd per vector; reading the eventfd returns (and clears) how many
times it fired since the last read.
"""

from __future__ import annotations

import contextlib
import os
import select
import time
import weakref
from typing import Protocol

from pyvfio.errors import ClosedError, UnsupportedError

#: Interrupt kinds and their vfio-pci index (VFIO_PCI_*_IRQ_INDEX).
IRQ_KINDS = {"intx": 0, "msi": 1, "msix": 2, "err": 3, "req": 4}


def _close_fd(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


class InterruptOwner(Protocol):
    """What an Interrupt needs of its device (a `~pyvfio.Device` is one): the address
    its errors name, and unmasking a vector, which only the device can ask of the
    kernel. The underscored member is the device's side for its interrupts, not for
    its callers."""

    @property
    def bdf(self) -> str: ...

    def _unmask_irq(self, irq: Interrupt) -> None: ...


class Interrupt:
    """One vector of one interrupt index, wired to an eventfd."""

    __slots__ = (
        "__weakref__",
        "_device",
        "_fd",
        "_finalizer",
        "_poller",
        "index",
        "kind",
        "vector",
    )

    def __init__(self, device: InterruptOwner, kind: str, vector: int) -> None:
        self._device = device
        self.kind = kind
        self.index = IRQ_KINDS[kind]
        self.vector = vector
        self._fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._finalizer = weakref.finalize(self, _close_fd, self._fd)
        # One poll object for every wait that has to block (it holds only the number).
        self._poller = select.poll()
        self._poller.register(self._fd, select.POLLIN)

    def __repr__(self) -> str:
        state = "closed" if self._fd < 0 else f"eventfd {self._fd}"
        return f"<Interrupt {self.kind}[{self.vector}] of {self._device.bdf} ({state})>"

    def fileno(self) -> int:
        if self._fd < 0:
            raise ClosedError(f"{self!r} is closed")
        return self._fd

    def poll(self) -> int:
        """The count since the last read, without blocking (0 if none)."""
        try:
            return os.eventfd_read(self.fileno())
        except BlockingIOError:
            return 0

    def wait(self, timeout: float | None = None) -> int:
        """Block until the interrupt fires; the eventfd's count. TimeoutError otherwise.

        An interrupt that has already fired is read at once, without a poll (a
        driver that raises one and then waits usually finds it pending). EINTR is
        retried with the time left (PEP 475 covers poll(); the deadline keeps a
        stream of signals from stretching the wait).
        """
        fd = self._fd
        if fd < 0:
            self.fileno()  # raises ClosedError
        try:
            return os.eventfd_read(fd)
        except BlockingIOError:
            pass
        deadline = None if timeout is None else time.monotonic() + timeout
        poll = self._poller.poll
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if left == 0.0:
                raise TimeoutError(
                    f"{self.kind}[{self.vector}] of {self._device.bdf} did not "
                    f"fire within {timeout} s"
                )
            with contextlib.suppress(InterruptedError):  # a signal: read, then the time left
                poll(None if left is None else left * 1000)
            try:
                return os.eventfd_read(fd)
            except BlockingIOError:
                continue

    async def wait_async(self, timeout: float | None = None) -> int:
        """``await`` the interrupt (``loop.add_reader`` on the eventfd)."""
        import asyncio  # here: a synchronous driver never pays for importing it

        fd = self.fileno()
        count = self.poll()
        if count:
            return count
        loop = asyncio.get_running_loop()
        fired: asyncio.Future[int] = loop.create_future()

        def readable() -> None:
            if fired.done():
                return
            try:
                got = os.eventfd_read(fd)
            except BlockingIOError:
                return
            except OSError as err:
                fired.set_exception(err)
                return
            fired.set_result(got)

        loop.add_reader(fd, readable)
        try:
            return await asyncio.wait_for(fired, timeout)
        except TimeoutError:
            raise TimeoutError(
                f"{self.kind}[{self.vector}] of {self._device.bdf} did not fire within {timeout} s"
            ) from None
        finally:
            loop.remove_reader(fd)

    def unmask(self) -> None:
        """Unmask a level-triggered (INTx) interrupt after handling it.

        UnsupportedError for any other kind: vfio-pci masks only INTx (it masks the line
        when it fires, until unmasked); it has no unmask for MSI, MSI-X, err or req
        vectors and answers ENOTTY, which would read as a kernel without the feature.
        """
        if self.kind != "intx":
            raise UnsupportedError(
                f"{self!r}: only INTx can be unmasked (vfio-pci masks an INTx line each time "
                f"it fires); it never masks {self.kind} vectors: wait() for the next one"
            )
        self._device._unmask_irq(self)

    def close(self) -> None:
        """Close the eventfd (idempotent). The device's disable_irqs() calls this."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            self._finalizer.detach()
            _close_fd(fd)

    def __enter__(self) -> Interrupt:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_kind(kind: str) -> int:
    """The vfio-pci index of an interrupt kind, or ValueError listing the kinds."""
    if not isinstance(kind, str) or kind not in IRQ_KINDS:
        raise ValueError(f"unknown interrupt kind {kind!r}: use one of {', '.join(IRQ_KINDS)}")
    return IRQ_KINDS[kind]


__all__ = ["IRQ_KINDS", "Interrupt", "InterruptOwner", "check_kind"]
