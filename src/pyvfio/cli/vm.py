"""VM commands: ``pyvfio vm qemu``, ``pyvfio vm libvirt`` and ``pyvfio persist``.

Each is a few lines over :mod:`pyvfio.vm`.
"""

from __future__ import annotations

import typer

from pyvfio.cli.common import app

vm_app = typer.Typer(help="Pass devices through to a VM: QEMU and libvirt.", no_args_is_help=True)
app.add_typer(vm_app, name="vm")
