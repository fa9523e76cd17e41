"""``pyvfio nvme``: the userspace NVMe driver from the command line.

Each command opens the controller through VFIO (the device must be on vfio-pci:
``pyvfio bind BDF``), does one thing, and shuts the controller down cleanly.
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pyvfio.cli.common import JsonOpt, app, handle_errors, output_file, print_json

if TYPE_CHECKING:
    from pyvfio.drivers.nvme import Controller

nvme_app = typer.Typer(
    help="NVMe controllers through pyvfio's userspace driver (device on vfio-pci).\n\n"
    "Example: pyvfio nvme identify 0000:00:11.0",
    no_args_is_help=True,
)
app.add_typer(nvme_app, name="nvme")

Address = Annotated[
    str, typer.Argument(metavar="BDF", help="PCI address of the controller, e.g. 0000:00:11.0")
]
NsidOpt = Annotated[int, typer.Option("--nsid", help="namespace ID")]


def identify_json(ctrl: Controller) -> dict[str, Any]:
    from pyvfio.drivers.nvme_spec import version_string

    info = ctrl.info
    return {
        "address": ctrl.device.bdf,
        "serial": info.serial,
        "model": info.model,
        "firmware": info.firmware,
        "version": version_string(info.version),
        "vendor_id": f"{info.vid:04x}",
        "max_transfer": ctrl.max_transfer,
        "io_queue_pairs": ctrl.max_queue_pairs,
        "namespaces": [
            {
                "nsid": ns.nsid,
                "blocks": ns.size,
                "block_size": ns.block_size,
                "bytes": ns.size_bytes,
            }
            for ns in ctrl.namespaces.values()
        ],
    }


@nvme_app.command("identify")
@handle_errors
def identify(address: Address, as_json: JsonOpt = False) -> None:
    """Serial, model, firmware and namespaces (Identify Controller / Namespace).

    Example: pyvfio nvme identify 0000:00:11.0 --json
    """
    from pyvfio.drivers.nvme import Controller

    with Controller.open(address, io_queues=0) as ctrl:
        data = identify_json(ctrl)
    if as_json:
        print_json(data)
        return
    out = typer.echo
    out(f"{data['address']}: {data['model']}")
    out(f"  serial    {data['serial']}")
    out(f"  firmware  {data['firmware']}  (NVMe {data['version']})")
    out(f"  queues    {data['io_queue_pairs']} I/O pairs, {data['max_transfer']} bytes max")
    for ns in data["namespaces"]:
        out(
            f"  ns {ns['nsid']}      {ns['blocks']} blocks x {ns['block_size']} bytes "
            f"= {ns['bytes'] / 2**20:.1f} MiB"
        )


@nvme_app.command("read")
@handle_errors
def read(
    address: Address,
    lba: Annotated[int, typer.Option("--lba", help="first logical block")],
    count: Annotated[int, typer.Option("--count", help="number of blocks")],
    output: Annotated[str, typer.Option("-o", "--output", help="file to write, - for stdout")],
    nsid: NsidOpt = 1,
) -> None:
    """Read COUNT blocks from LBA into a file.

    Example: pyvfio nvme read 0000:00:11.0 --lba 0 --count 8 -o first.bin
    """
    from pyvfio.drivers.nvme import Controller

    if count < 1 or lba < 0:
        raise ValueError(f"--lba must be >= 0 and --count >= 1 (got {lba}, {count})")
    with output_file(output) as out, Controller.open(address) as ctrl:  # bad -o: device untouched
        out.write(ctrl.read(lba, count, nsid=nsid))


@nvme_app.command("write")
@handle_errors
def write(
    address: Address,
    lba: Annotated[int, typer.Option("--lba", help="first logical block")],
    input_file: Annotated[str, typer.Option("-i", "--input", help="file to write, - for stdin")],
    nsid: NsidOpt = 1,
) -> None:
    """Write a file (a whole number of blocks) from LBA.

    Example: pyvfio nvme write 0000:00:11.0 --lba 0 -i first.bin
    """
    from pyvfio.drivers.nvme import Controller

    try:
        data = sys.stdin.buffer.read() if input_file == "-" else Path(input_file).read_bytes()
    except OSError as err:
        raise ValueError(f"cannot read {input_file}: {err.strerror}") from None
    if lba < 0:
        raise ValueError(f"--lba must be >= 0, not {lba}")
    with Controller.open(address) as ctrl:
        ctrl.write(lba, data, nsid=nsid)
        ctrl.flush(nsid=nsid)
    typer.echo(f"wrote {len(data)} bytes at LBA {lba}", err=True)


@nvme_app.command("smart")
@handle_errors
def smart(address: Address, as_json: JsonOpt = False) -> None:
    """SMART / health information (log page 02h).

    Example: pyvfio nvme smart 0000:00:11.0
    """
    from pyvfio.drivers.nvme import Controller

    with Controller.open(address, io_queues=0) as ctrl:
        log = ctrl.smart_log()
    data = {"address": address, **asdict(log), "temperature_celsius": log.temperature_celsius}
    if as_json:
        print_json(data)
        return
    for key, value in data.items():
        typer.echo(f"{key.replace('_', ' '):28} {value}")
