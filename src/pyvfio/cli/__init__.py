"""The ``pyvfio`` command: a thin shell over the library (typer + rich).

Exit status: 0 success, 1 a check or operation failed, 2 bad input. Each module
registers its commands on the apps in :mod:`pyvfio.cli.common`; ``app`` (the typer
application, for typer's CliRunner and embedding) imports them when first asked for,
so that :func:`main` can answer ``pyvfio ls --json`` before typer is imported
(:func:`pyvfio.cli.plain.fast_ls_json`).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyvfio.cli.common import app

__all__ = ["app", "main"]


def _typer_app() -> Any:
    # Each command module registers its commands on common's apps when imported; this
    # order is the order of ``pyvfio --help``.
    from pyvfio.cli import demo, fleet, grant, host, kernel, lab, nvme, serve, vm  # noqa: F401
    from pyvfio.cli.common import app

    return app


def __getattr__(name: str) -> Any:
    if name == "app":
        return _typer_app()
    raise AttributeError(f"module 'pyvfio.cli' has no attribute {name!r}")


def main() -> None:
    from pyvfio.cli.plain import fast_ls_json

    if fast_ls_json(sys.argv[1:]):
        return
    _typer_app()()
