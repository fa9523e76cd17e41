"""The ``pyvfio`` command: a thin shell over the library (typer + rich).

Exit status: 0 success, 1 a check or operation failed, 2 bad input. Each module
registers its commands on the apps in :mod:`pyvfio.cli.common`.
"""

from pyvfio.cli import demo, fleet, grant, host, kernel, lab, nvme, serve, vm  # noqa: F401 - they register
from pyvfio.cli.common import app

__all__ = ["app", "main"]  # app: the typer application, for typer's CliRunner and embedding


def main() -> None:
    app()
