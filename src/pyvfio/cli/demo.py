"""``pyvfio demo``: the whole path on a real kernel, in the lab guest.

On the host it boots the lab with an edu device and runs ``pyvfio demo --here``
inside; there it lists the IOMMU groups, binds edu to vfio-pci, reads its ID
register through VFIO, sends a message to the device and back by DMA through the
IOMMU, waits for the MSI that says each transfer ended, and gives the device back.
"""

from __future__ import annotations

import os
import platform
import sys
from typing import TYPE_CHECKING, Annotated

import typer

from pyvfio.cli.common import app, handle_errors

if TYPE_CHECKING:  # imported where used: ``pyvfio --help`` loads none of them
    from rich.console import Console

MESSAGE = b"hello from pyvfio, through the IOMMU and back"


def groups_table(console: Console) -> None:
    from pyvfio.cli.render import groups_tree
    from pyvfio.host import inventory

    console.print(groups_tree(inventory.iommu_groups()))


def here(console: Console) -> int:
    """The demo's steps on this kernel (the lab guest, or a host with an edu device)."""
    from pyvfio.drivers import edu as edu_driver
    from pyvfio.host import bind
    from pyvfio.lab import guest

    console.rule(f"pyvfio demo on Linux {platform.release()}")
    groups_table(console)
    address = guest.address("edu") if guest.in_guest() else _find_edu()
    console.print(f"\n[bold]1.[/] bind edu {address} to vfio-pci")
    original = bind.bind_vfio(address)
    console.print(f"   {address} was on {original or 'no driver'}, now on vfio-pci")
    try:
        with edu_driver.Edu.open(address) as edu:
            dev = edu.device
            console.print(
                f"[bold]2.[/] opened through VFIO ({dev.iommu.backend} backend, "
                f"IOMMU group {dev.group})"
            )
            major, minor = edu.version
            console.print(f"   BAR0 register 0x00 (ID) = {edu.ident:#010x}: edu v{major}.{minor}")
            irq = dev.enable_irqs("msi", count=1)[0]
            with (
                dev.dma_alloc(4096, max_iova=edu_driver.DMA_MASK) as out,
                dev.dma_alloc(4096, max_iova=edu_driver.DMA_MASK) as back,
            ):
                out.write(MESSAGE)
                console.print(
                    f"[bold]3.[/] DMA {len(MESSAGE)} bytes RAM -> device from IOVA "
                    f"{out.iova:#x}, waiting for the MSI"
                )
                edu.to_device(out, len(MESSAGE), irq=irq)
                console.print(f"   device -> RAM into IOVA {back.iova:#x}, waiting for the MSI")
                edu.from_device(back, len(MESSAGE), irq=irq)
                got = back.read(0, len(MESSAGE))
            ok = got == MESSAGE
            console.print(
                f"   read back: {got.decode(errors='replace')!r} "
                f"{'[green]matches[/]' if ok else '[red]DIFFERS[/]'}"
            )
    finally:
        bind.give_back(address, original)
        console.print(f"[bold]4.[/] {address} given back to {original or 'no driver'}")
    return 0 if ok else 1


def _find_edu() -> str:
    from pyvfio.drivers import edu as edu_driver
    from pyvfio.host import inventory

    for dev in inventory.devices():
        if (dev.vendor_id, dev.device_id) == (edu_driver.VENDOR_ID, edu_driver.DEVICE_ID):
            return dev.address
    raise SystemExit(
        "error: no edu device (1234:11e8) on this host: run 'pyvfio demo' "
        "without --here to use the lab"
    )


def in_lab(console: Console, kernel: str | None = None) -> int:
    """Boot the lab with an edu device and run the demo there."""
    from pyvfio.lab.runner import interrupt_on_sigterm, run
    from pyvfio.lab.topology import Topology

    argv = [sys.executable, "-m", "pyvfio", "demo", "--here"]
    with interrupt_on_sigterm():  # a SIGTERM stops the guest too, as Ctrl-C does
        result = run(
            argv,
            Topology(devices=("edu",)),
            kernel=kernel,
            on_output=lambda line: console.print(line, markup=False, highlight=False),
            on_progress=_progress,
            log_name="demo",
        )
    _progress(f"lab: {result.summary()}")
    return result.returncode


def _progress(line: str) -> None:
    # The boot's progress goes to stderr, apart from the demo's own output.
    print(line, file=sys.stderr, flush=True)


def main(here_only: bool, kernel: str | None = None) -> int:
    from rich.console import Console

    from pyvfio.lab import guest

    console = Console(force_terminal=None if sys.stdout.isatty() else False)
    if here_only or guest.in_guest():
        if os.geteuid() != 0:
            raise SystemExit("error: the demo binds a device: run it as root")
        return here(console)
    return in_lab(console, kernel)


@app.command()
@handle_errors
def demo(
    here: Annotated[
        bool, typer.Option("--here", help="run on this kernel, not in the lab")
    ] = False,
    kernel: Annotated[
        str | None, typer.Option(help="lab kernel: stock, iommufd or a bzImage")
    ] = None,
) -> None:
    """Boot the lab, list IOMMU groups, bind edu to vfio-pci, DMA through the IOMMU.

    Example: pyvfio demo --kernel iommufd
    """
    raise typer.Exit(main(here, kernel))
