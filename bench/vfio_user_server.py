"""The vfio-user server's own copy paths, each against its floor, in one process and one run.

* **DMA through a shared memfd**: ``DmaSpace.read``/``write`` of 1 MiB (what a device's
  ``dma_read``/``dma_write`` costs when the client gave an fd) against a bare slice of,
  or store into, the same mmap: what the server adds to the copy itself.
* **One 1 MiB message**: ``protocol.send_message`` + ``receive_message`` over a socket
  pair (a sender thread) against ``socket.sendall`` + ``recv_into`` of the same bytes:
  what framing, header parsing and fd gathering add to moving the bytes.

Best of ``--rounds`` rounds of each, taking turns (pyvfio, floor, pyvfio, ...), so load
from other jobs hits both alike; the ratios are what to read.

    .venv/bin/python bench/vfio_user_server.py     # a few seconds; writes the results JSON
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pyvfio import _mem
from pyvfio.server.dma import DmaSpace
from pyvfio.vfio_user.protocol import (
    HEADER_SIZE,
    Command,
    receive_message,
    send_message,
    vfio_user_dma_map,
)

RESULTS = Path(__file__).resolve().parent / "results" / "vfio-user-server.json"
MIB = 1 << 20


def best_of(
    pairs: list[tuple[Callable[[], object], Callable[[], object]]], rounds: int
) -> list[tuple[float, float]]:
    """For each (pyvfio, floor) pair, the best seconds of each, measured in turns."""
    results = []
    for ours, floor in pairs:
        best_ours = best_floor = float("inf")
        for _ in range(rounds):
            start = time.perf_counter()
            ours()
            best_ours = min(best_ours, time.perf_counter() - start)
            start = time.perf_counter()
            floor()
            best_floor = min(best_floor, time.perf_counter() - start)
        results.append((best_ours, best_floor))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    memfd = _mem.sealed_memfd("bench-guest-ram", MIB)  # sealed: the server maps only such
    space = DmaSpace(lambda command, payload: b"", max_maps=1, max_xfer=MIB)
    space.map(vfio_user_dma_map(argsz=32, flags=3, offset=0, addr=0x100000, size=MIB), memfd)
    os.close(memfd)
    mapping = space.ranges[0].mapping
    assert mapping is not None, space.ranges[0].unmapped_because
    data = os.urandom(MIB)

    sender, receiver = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    raw = b"h" * HEADER_SIZE + data
    buffer = bytearray(len(raw))

    def message() -> None:
        thread = threading.Thread(
            target=send_message, args=(sender, 1, Command.VFIO_USER_REGION_WRITE, data)
        )
        thread.start()
        receive_message(receiver, MIB + HEADER_SIZE)
        thread.join()

    def raw_bytes() -> None:
        thread = threading.Thread(target=sender.sendall, args=(raw,))
        thread.start()
        view, got = memoryview(buffer), 0
        while got < len(buffer):
            got += receiver.recv_into(view[got:])
        thread.join()

    names = [
        ("DmaSpace.read of 1 MiB, memfd-shared", "bare mmap slice of 1 MiB"),
        ("DmaSpace.write of 1 MiB, memfd-shared", "bare mmap store of 1 MiB"),
        ("send_message + receive_message, 1 MiB", "sendall + recv_into of the same bytes"),
    ]
    timings = best_of(
        [
            (lambda: space.read(0x100000, MIB), lambda: bytes(mapping[0:MIB])),
            (lambda: space.write(0x100000, data), lambda: mapping.__setitem__(slice(0, MIB), data)),
            (message, raw_bytes),
        ],
        args.rounds,
    )
    rows = []
    for (ours_name, floor_name), (ours, floor) in zip(names, timings, strict=True):
        rows.append({"operation": ours_name, "pyvfio_us": round(ours * 1e6, 1),
                     "reference": floor_name, "reference_us": round(floor * 1e6, 1),
                     "ratio": round(ours / floor, 2)})  # fmt: skip
        print(f"{ours_name}: {ours * 1e6:.0f} us; {floor_name}: {floor * 1e6:.0f} us; "
              f"{ours / floor:.2f}x")  # fmt: skip
    space.unmap_all()
    sender.close()
    receiver.close()
    result = {
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg()[0],
        "rounds": args.rounds,
        "rows": rows,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
