"""What every ``pyvfio`` command shares: the typer apps, error handling, JSON output."""

from __future__ import annotations

import contextlib
import functools
import os
import stat
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, BinaryIO, TypeVar

import typer
from typer.core import TyperArgument, TyperGroup, TyperOption

from pyvfio.cli.plain import print_json as print_json  # one writer for every command
from pyvfio.errors import (
    DeviceNotFoundError,
    InvalidAddressError,
    LabUnavailableError,
    PyvfioError,
)

if TYPE_CHECKING:
    from rich.console import Console

#: The options every reading command spells the same way.
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output")]
RootOpt = Annotated[
    str,
    typer.Option(
        metavar="SNAPSHOT", help="read a snapshot (folder or .tar.gz) instead of this host"
    ),
]


def _is(err: BaseException, name: str) -> bool:
    """Whether ``err`` is click's ``name`` exception (typer may ship its own copy of click)."""
    return any(cls.__name__ == name for cls in type(err).__mro__)


#: click's names for the values of options whose type is all there is to say.
_TYPE_METAVARS = {"str": "TEXT", "int": "INTEGER", "float": "FLOAT", "Path": "PATH"}


class _HelpOption(TyperOption):
    """An option as click shows one: a flag takes no value, so it shows none (typer
    shows ``<bool>``); a value shows its metavar, or click's name for its type (TEXT)."""

    __slots__ = ()  # the instance's class is swapped: the layout must stay typer's

    def display_type(self, ctx: Any) -> str:
        if self.is_flag or self.count:
            return ""
        if self.metavar is not None:
            return self.metavar
        bare = self.bare_type()
        return _TYPE_METAVARS.get(bare, bare.upper())

    def display_type_rich(self, ctx: Any) -> str | None:
        return self.display_type(ctx) or None


class _HelpArgument(TyperArgument):
    """An argument as click shows one: its metavar (BDF), ``[BDF]`` when optional,
    ``BDF...`` when it takes many; typer writes ``{address}`` and a ``<str>`` tag."""

    __slots__ = ()

    def display_type(self, ctx: Any) -> str:
        return ""

    def display_type_rich(self, ctx: Any) -> str | None:
        return None

    def _usage_display_name(self) -> str:
        name = self.display_name_raw.upper()
        if not self.required:
            name = f"[{name}]"
        return name + ("..." if self.nargs != 1 else "")


def _clean_help(command: Any) -> None:
    """Every parameter of ``command`` and of the commands below it shown the click way.

    typer builds the parameters from the annotations, so their classes are swapped for
    the subclasses above, which change only how help shows them (``__slots__ = ()``
    keeps the layout). click makes --help's option on first use and keeps it: it is
    made here (a bare Context is all it reads) to be swapped too.
    """
    params = [*command.params, command.get_help_option(typer.Context(command))]
    for param in params:
        if type(param) is TyperOption:
            param.__class__ = _HelpOption
        elif type(param) is TyperArgument:
            param.__class__ = _HelpArgument
    for sub in getattr(command, "commands", {}).values():
        _clean_help(sub)


class _OneLineErrors(TyperGroup):
    """Usage errors (a missing argument, an option that does not parse) as one line on
    stderr, like every other error of pyvfio, instead of click's boxed usage panel; and
    help the click way for every command (see :func:`_clean_help`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _clean_help(self)

    def main(self, *args: Any, **kwargs: Any) -> Any:
        _clean_help(self)  # again: typer adds the completion options after __init__
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
    help="PCI passthrough and userspace PCI drivers on Linux VFIO.\n\n"
    "Example: pyvfio doctor 0000:01:00.0",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
lab_app = typer.Typer(
    help="The VM lab: a real kernel with a virtual IOMMU, under QEMU.\n\n"
    "Example: pyvfio lab run -d edu -- lspci -nn",
    no_args_is_help=True,
)
app.add_typer(lab_app, name="lab")


def _print_version(wanted: bool) -> None:
    if wanted:
        from importlib.metadata import version

        typer.echo(f"pyvfio {version('pyvfio')}")
        raise typer.Exit()


@app.callback()
def _options(
    _version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="print the version and exit"
        ),
    ] = False,
) -> None:
    """PCI passthrough and userspace PCI drivers on Linux VFIO.

    Example: pyvfio doctor 0000:01:00.0
    """


class _StderrConsole:
    """rich's Console on stderr, made when first used: importing rich costs as much as
    typer, and most commands never print an error (``pyvfio --help`` loads rich's
    help renderer only)."""

    __slots__ = ("_console",)

    def __init__(self) -> None:
        self._console: Console | None = None

    @property
    def console(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=True)
        return self._console

    def print(self, *objects: Any, **kwargs: Any) -> None:
        self.console.print(*objects, **kwargs)


err_console = _StderrConsole()
F = TypeVar("F", bound=Callable[..., Any])

#: Errors caused by what the user typed: exit status 2.
BAD_INPUT = (InvalidAddressError, DeviceNotFoundError, ValueError)


def fail(message: str, code: int) -> typer.Exit:
    from rich.markup import escape

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
