"""The ``pyvfio`` command: a thin shell over the library (typer + rich).

Exit status: 0 success, 1 a check or operation failed, 2 bad input.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from pyvfio.errors import (
    DeviceNotFoundError,
    InvalidAddressError,
    LabUnavailableError,
    PyvfioError,
)

app = typer.Typer(help="PCI passthrough and userspace PCI drivers on Linux VFIO.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
lab_app = typer.Typer(help="The VM lab: a real kernel with a virtual IOMMU, under QEMU.",
                      no_args_is_help=True)
app.add_typer(lab_app, name="lab")

err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])

#: Errors caused by what the user typed: exit status 2.
BAD_INPUT = (InvalidAddressError, DeviceNotFoundError, ValueError)


def fail(message: str, code: int) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False,
                      soft_wrap=True)
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


@app.command()
@handle_errors
def demo(
    here: Annotated[bool, typer.Option("--here", help="run on this kernel, not in the lab")]
    = False,
    kernel: Annotated[str | None, typer.Option(help="lab kernel: stock or a bzImage")] = None,
) -> None:
    """Boot the lab, list IOMMU groups, bind edu to vfio-pci, DMA through the IOMMU."""
    from pyvfio.cli.demo import main

    raise typer.Exit(main(here, kernel))


CLASS_FILTERS = {"gpu": (0x03,), "nvme": (0x01, 0x08), "net": (0x02,), "usb": (0x0C, 0x03),
                 "audio": (0x04,)}


@app.command("ls")
@handle_errors
def ls(
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    group: Annotated[int | None, typer.Option(help="only this IOMMU group")] = None,
    klass: Annotated[str | None, typer.Option("--class", help="gpu|nvme|net|usb|audio")]
    = None,
    vendor: Annotated[str | None, typer.Option(help="vendor ID in hex, e.g. 8086")] = None,
    root: Annotated[str, typer.Option(help="read a snapshot folder instead of /")] = "/",
) -> None:
    """IOMMU groups as a tree: each device, its driver, and the group's verdict."""
    from pyvfio.cli.render import groups_tree
    from pyvfio.host.inventory import iommu_groups
    from pyvfio.host.sysfs import Sysfs

    if klass is not None and klass not in CLASS_FILTERS:
        raise ValueError(f"unknown class {klass!r}: use one of {', '.join(CLASS_FILTERS)}")
    try:
        vendor_id = int(vendor, 16) if vendor is not None else None
    except ValueError:
        raise ValueError(f"vendor {vendor!r} is not a hex ID like 8086") from None
    groups = iommu_groups(Sysfs(root))
    if group is not None:
        groups = [g for g in groups if g.number == group]
    if klass is not None or vendor_id is not None:
        want = CLASS_FILTERS.get(klass or "", ())

        def match(code: int, vid: int) -> bool:
            parts = (code >> 16, (code >> 8) & 0xFF)
            return parts[: len(want)] == want and vendor_id in (None, vid)

        groups = [g for g in groups
                  if any(match(d.class_code, d.vendor_id) for d in g.devices)]
    if as_json:
        print_json({"groups": [g.to_json() for g in groups]})
    else:
        Console().print(groups_tree(groups))


@lab_app.command("run", context_settings={"allow_interspersed_args": False})
@handle_errors
def lab_run(
    command: Annotated[list[str], typer.Argument(help="command to run in the guest")],
    device: Annotated[list[str] | None, typer.Option(
        "--device", "-d", help="NAME[@PLACE]: edu|nvme|e1000e @ root|rootport|switch")] = None,
    kernel: Annotated[str | None, typer.Option(help="stock (default) or a bzImage")] = None,
    accel: Annotated[str | None, typer.Option(help="kvm or tcg (default: probe)")] = None,
    no_viommu: Annotated[bool, typer.Option("--no-viommu", help="no intel-iommu")] = False,
    no_iommu_cmdline: Annotated[bool, typer.Option(
        "--no-intel-iommu", help="boot without intel_iommu=on")] = False,
    timeout: Annotated[float, typer.Option(help="seconds before the guest is killed")] = 1800,
) -> None:
    """Boot the lab and run COMMAND as root inside: pyvfio lab run -d edu -- lspci -nn"""
    from pyvfio.lab.runner import run
    from pyvfio.lab.topology import Topology

    topology = Topology(devices=tuple(device or ("edu",)), viommu=not no_viommu,
                        iommu_cmdline=not no_iommu_cmdline)
    result = run(command, topology, kernel=kernel, accel=accel, timeout=timeout,
                 on_output=lambda line: print(line, flush=True))
    err_console.print(f"lab: {result}", highlight=False)
    raise typer.Exit(result.returncode)


@lab_app.command("shell")
@handle_errors
def lab_shell(
    device: Annotated[list[str] | None, typer.Option(
        "--device", "-d", help="NAME[@PLACE]: edu|nvme|e1000e @ root|rootport|switch")] = None,
    kernel: Annotated[str | None, typer.Option(help="stock (default) or a bzImage")] = None,
    accel: Annotated[str | None, typer.Option(help="kvm or tcg (default: probe)")] = None,
) -> None:
    """Boot the lab with an interactive root shell."""
    from pyvfio.lab.runner import shell
    from pyvfio.lab.topology import Topology

    raise typer.Exit(shell(Topology(devices=tuple(device or ("edu",))), kernel=kernel,
                           accel=accel))


@lab_app.command("accel")
@handle_errors
def lab_accel() -> None:
    """Say whether KVM works here or the lab falls back to TCG, and why."""
    from pyvfio.lab.accel import kvm_usable

    works, why = kvm_usable()
    print("kvm" if works else f"tcg ({why})")


def main() -> None:
    app()
