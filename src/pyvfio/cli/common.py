"""What every ``pyvfio`` command shares: the typer apps, error handling, JSON output."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import stat
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, BinaryIO, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from pyvfio.errors import (
    DeviceNotFoundError,
    InvalidAddressError,
    LabUnavailableError,
    PyvfioError,
)

#: The options every reading command spells the same way.
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output")]
RootOpt = Annotated[
    str, typer.Option(help="read a snapshot (folder or .tar.gz) instead of this host")
]


def _is(err: BaseException, name: str) -> bool:
    """Whether ``err`` is click's ``name`` exception (typer may ship its own copy of click)."""
    return any(cls.__name__ == name for cls in type(err).__mro__)


class _OneLineErrors(TyperGroup):
    """Usage errors (a missing argument, an option that does not parse) as one line on
    stderr, like every other error of pyvfio, instead of click's boxed usage panel."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        standalone = kwargs.get("standalone_mode", True)
        kwargs["standalone_mode"] = False
        if not standalone:
            return super().main(*args, **kwargs)
        try:
            code = super().main(*args, **kwargs)
        except Exception as err:
            if _is(err, "NoArgsIsHelpError"):  # the help is printed already
                sys.exit(2)
            if _is(err, "ClickException"):
                ctx = getattr(err, "ctx", None)
                hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
                exit_code: int = getattr(err, "exit_code", 2)
                fail(f"{getattr(err, 'format_message', err.__str__)()}{hint}", exit_code)
                sys.exit(exit_code)
            if _is(err, "Abort"):
                err_console.print("aborted", highlight=False)
                sys.exit(1)
            raise
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=_OneLineErrors,
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


@contextlib.contextmanager
def output_file(name: str) -> Iterator[BinaryIO]:
    """The file a command writes its result to (``-``: stdout), opened before the command
    touches a device, so a path that cannot be written is one line of bad input (exit 2).

    A regular file is written as a new one beside it and renamed over it when the block
    ends without error: a command that fails half-way leaves the old file as it was. A
    FIFO or a device node (``/dev/null``, a pipe from the shell) is written in place.
    """
    from pyvfio.host.durable import Replacement

    if name == "-":
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    try:
        mode = os.stat(name).st_mode
    except FileNotFoundError:
        mode = stat.S_IFREG
    except OSError as err:
        raise ValueError(f"cannot write {name}: {err.strerror}") from None
    if stat.S_ISDIR(mode):
        raise ValueError(f"{name} is a folder: name a file to write, e.g. {name}/out.bin")
    try:
        if stat.S_ISREG(mode):
            new = Replacement(Path(os.path.abspath(name)), mode=0o666)
        else:
            special = open(name, "wb")  # noqa: SIM115 - closed in the finally below
    except OSError as err:
        raise ValueError(
            f"cannot write {name}: {err.strerror}; name a file in a folder you can write"
        ) from None
    if stat.S_ISREG(mode):
        with new:
            yield new.file
        return
    try:
        yield special
    finally:
        special.close()
