"""``pyvfio serve``: a Python PCI device on a vfio-user socket.

``pyvfio serve edu --socket /tmp/edu.sock`` serves the edu-compatible device until
Ctrl-C or SIGTERM, one client at a time, and removes its socket on the way out.
QEMU attaches it with ``-device '{"driver":"vfio-user-pci","socket":{"type":"unix",
"path":"/tmp/edu.sock"}}'``; pyvfio's own client with ``pyvfio.open("vfio-user:/tmp/edu.sock")``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from pyvfio.cli.common import app, handle_errors


def _mode(text: str) -> int:
    try:
        mode = int(text, 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o777:
        raise ValueError(f"--mode {text!r} is not octal permission bits (e.g. 600, 660)")
    return mode


@app.command("serve")
@handle_errors
def serve(
    device: Annotated[str, typer.Argument(metavar="DEVICE", help="the device to serve: edu")],
    socket_path: Annotated[
        Path, typer.Option("--socket", help="UNIX socket path to listen on", show_default=False)
    ],
    once: Annotated[
        bool, typer.Option("--once", help="stop when the first client disconnects")
    ] = False,
    mode: Annotated[
        str,
        typer.Option(
            "--mode", help="the socket's permission bits, octal (only this user may connect)"
        ),
    ] = "600",
    group: Annotated[
        str | None,
        typer.Option(
            "--group",
            help="give the socket to this group (with --mode 660 its members may connect)",
            show_default=False,
        ),
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="log connections and refused commands")
    ] = False,
) -> None:
    """Serve a Python PCI device over vfio-user (QEMU's vfio-user-pci, or pyvfio's client).

    Example: pyvfio serve edu --socket /tmp/edu.sock
    """
    import logging

    from pyvfio.server import DEVICES, Server

    factory = DEVICES.get(device)
    if factory is None:
        raise ValueError(f"no device {device!r} to serve; known: {', '.join(sorted(DEVICES))}")
    permissions = _mode(mode)
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="pyvfio serve: %(message)s",
        stream=sys.stderr,
    )
    instance = factory()
    server = None
    try:
        server = Server(instance, socket_path, mode=permissions, group=group)
        # SIGINT and SIGTERM stop the server from before its socket exists, even where
        # an inherited disposition ignored SIGINT (a shell's background job): no
        # KeyboardInterrupt is raised, every wait of the server watches for them.
        with server.stop_on_signals():
            server.listen()
            sys.stdout.write(
                f"serving {device} on {server.path} (vfio-user); "
                f"{'one client, then exit' if once else 'Ctrl-C stops'}\n"
            )
            sys.stdout.flush()
            server.serve_forever(once=once)
            if server.stopping:
                sys.stdout.write("stopping\n")
    finally:
        if server is not None:
            server.close()  # after the handlers are back: the wake pipe they write closes
        instance.close()
