"""``pyvfio nvme``: the userspace NVMe driver from the command line."""

from __future__ import annotations

import typer

from pyvfio.cli.common import app

nvme_app = typer.Typer(
    help="NVMe controllers through pyvfio's userspace driver (device on vfio-pci).",
    no_args_is_help=True,
)
app.add_typer(nvme_app, name="nvme")
