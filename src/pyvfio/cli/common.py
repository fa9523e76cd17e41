"""What every ``pyvfio`` command shares: the typer apps, error handling, JSON output."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from pyvfio.errors import (
    DeviceNotFoundError,
    InvalidAddressError,
    LabUnavailableError,
    PyvfioError,
)

app = typer.Typer(
    help="PCI passthrough and userspace PCI drivers on Linux VFIO.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
lab_app = typer.Typer(
    help="The VM lab: a real kernel with a virtual IOMMU, under QEMU.", no_args_is_help=True
)
app.add_typer(lab_app, name="lab")

err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])

#: Errors caused by what the user typed: exit status 2.
BAD_INPUT = (InvalidAddressError, DeviceNotFoundError, ValueError)


def fail(message: str, code: int) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def handle_errors(func: F) -> F:
    """One line per error on stderr: exit 2 for bad input, 1 for everything else."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except BAD_INPUT as err:
            raise fail(str(err), 2) from None
        except LabUnavailableError as err:
            raise fail(str(err), 1) from None
        except PyvfioError as err:
            raise fail(str(err), 1) from None

    return wrapper  # type: ignore[return-value]


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")
