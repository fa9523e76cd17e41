"""A blocking QMP client over ``qemu.qmp``, and what ``query-pci`` says of a device.

``qemu.qmp`` is asyncio only; :class:`Monitor` runs it on a private event loop so the
rest of pyvfio stays synchronous (the same shape as ``qemu.qmp.legacy``, with a
timeout on the connection: under nested TCG QEMU answers its greeting only after
every device is realized).
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from qemu.qmp import QMPClient

from pyvfio.errors import PyvfioError

T = TypeVar("T")


class QmpError(PyvfioError):
    """QEMU's monitor did not answer, or answered with an error."""


class Monitor:
    """One QMP connection to a QEMU listening on a unix socket."""

    def __init__(
        self, path: str, *, timeout: float = 60.0, alive: Callable[[], bool] | None = None
    ) -> None:
        self.path = path
        self._loop: asyncio.AbstractEventLoop | None = asyncio.new_event_loop()
        self._client = QMPClient("pyvfio")
        self._finalizer = weakref.finalize(self, self._loop.close)
        try:
            self._connect(timeout, alive or (lambda: True))
        except BaseException:
            self.close()
            raise

    def _connect(self, timeout: float, alive: Callable[[], bool]) -> None:
        # The socket file appears at bind(), a moment before listen(): ECONNREFUSED
        # then means "not yet", so try again until the deadline.
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._run(self._client.connect(self.path), max(deadline - time.monotonic(), 1))
                return
            except QmpError as err:
                cause = getattr(err.__cause__, "exc", err.__cause__)  # qemu.qmp's ConnectError
                if not isinstance(cause, ConnectionRefusedError | FileNotFoundError):
                    raise
                if time.monotonic() > deadline or not alive():
                    raise
            time.sleep(0.1)
            self._client = QMPClient("pyvfio")

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None) -> T:
        if self._loop is None:
            coro.close()
            raise QmpError("the QMP connection is closed")
        try:
            return self._loop.run_until_complete(asyncio.wait_for(coro, timeout))
        except TimeoutError as err:
            raise QmpError(
                f"QEMU's monitor at {self.path} did not answer in {timeout:.0f} s"
            ) from err
        except (OSError, EOFError) as err:
            raise QmpError(f"QEMU's monitor at {self.path} closed: {err}") from err
        except Exception as err:
            if isinstance(err, QmpError):
                raise
            raise QmpError(f"QMP at {self.path}: {err}") from err

    def execute(self, command: str, timeout: float = 30.0, **arguments: Any) -> Any:
        return self._run(self._client.execute(command, arguments or None), timeout)

    def close(self) -> None:
        loop, self._loop = self._loop, None
        if loop is None:
            return
        try:
            loop.run_until_complete(asyncio.wait_for(self._client.disconnect(), 5))
        except Exception:  # QEMU may be gone already: closing stays quiet
            pass
        finally:
            loop.close()
            self._finalizer.detach()

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class GuestBar:
    """A BAR as the guest's PCI model has it (the address is -1 before firmware runs)."""

    index: int
    kind: str  # "io" | "memory"
    size: int
    address: int

    def __str__(self) -> str:
        where = "unassigned" if self.address in (-1, 2**64 - 1) else f"at {self.address:#x}"
        return f"BAR {self.index}: {self.kind} {self.size:#x} bytes {where}"


@dataclass(frozen=True)
class GuestPciDevice:
    """One function of ``query-pci``'s answer."""

    bus: int
    slot: int
    function: int
    vendor_id: int
    device_id: int
    qdev_id: str
    bars: tuple[GuestBar, ...]

    @property
    def ids(self) -> str:
        return f"{self.vendor_id:04x}:{self.device_id:04x}"

    def __str__(self) -> str:
        return f"{self.bus:02x}:{self.slot:02x}.{self.function} [{self.ids}] {self.qdev_id}"


def walk_query_pci(answer: Any) -> Iterator[GuestPciDevice]:
    """Every function of a ``query-pci`` answer, bridges' secondary buses included."""

    def devices(bus: int, items: Any) -> Iterator[GuestPciDevice]:
        for dev in items or ():
            bars = tuple(
                GuestBar(r["bar"], r["type"], r["size"], r["address"])
                for r in dev.get("regions", ())
            )
            yield GuestPciDevice(
                bus=dev.get("bus", bus),
                slot=dev["slot"],
                function=dev["function"],
                vendor_id=dev["id"]["vendor"],
                device_id=dev["id"]["device"],
                qdev_id=dev.get("qdev_id", ""),
                bars=bars,
            )
            bridge = dev.get("pci_bridge")
            if bridge:
                yield from devices(bridge["bus"]["secondary"], bridge.get("devices"))

    for bus in answer or ():
        yield from devices(bus["bus"], bus.get("devices"))
