"""``pyvfio serve``: a Python PCI device on a vfio-user socket.

``pyvfio serve edu --socket /tmp/edu.sock`` serves the edu-compatible device until
Ctrl-C or SIGTERM, one client at a time, and removes its socket on the way out.
QEMU attaches it with ``-device '{"driver":"vfio-user-pci","socket":{"type":"unix",
"path":"/tmp/edu.sock"}}'``; pyvfio's own client with ``pyvfio.open("vfio-user:/tmp/edu.sock")``.
"""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from pyvfio.cli.common import app, handle_errors


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@app.command("serve")
@handle_errors
def serve(
    device: Annotated[str, typer.Argument(help="the device to serve: edu")],
    socket_path: Annotated[
        Path, typer.Option("--socket", help="UNIX socket path to listen on", show_default=False)
    ],
    once: Annotated[
        bool, typer.Option("--once", help="stop when the first client disconnects")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="log connections and refused commands")
    ] = False,
) -> None:
    """Serve a Python PCI device over vfio-user (QEMU's vfio-user-pci, or pyvfio's client)."""
    from pyvfio.server import DEVICES, Server

    factory = DEVICES.get(device)
    if factory is None:
        raise ValueError(f"no device {device!r} to serve; known: {', '.join(sorted(DEVICES))}")
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="pyvfio serve: %(message)s",
        stream=sys.stderr,
    )
    instance = factory()
    server = Server(instance, socket_path)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.listen()
        thread = server.start(once=once)
        sys.stdout.write(
            f"serving {device} on {server.path} (vfio-user); "
            f"{'one client, then exit' if once else 'Ctrl-C stops'}\n"
        )
        sys.stdout.flush()
        try:
            while thread.is_alive():
                thread.join(0.5)
        except KeyboardInterrupt:
            sys.stdout.write("stopping\n")
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.close()
        instance.close()
