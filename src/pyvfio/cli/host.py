"""Host commands: see IOMMU groups (``pyvfio ls``)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from pyvfio.cli.common import app, handle_errors, print_json

CLASS_FILTERS = {
    "gpu": (0x03,),
    "nvme": (0x01, 0x08),
    "net": (0x02,),
    "usb": (0x0C, 0x03),
    "audio": (0x04,),
}


@app.command("ls")
@handle_errors
def ls(
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    group: Annotated[int | None, typer.Option(help="only this IOMMU group")] = None,
    klass: Annotated[str | None, typer.Option("--class", help="gpu|nvme|net|usb|audio")] = None,
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

        groups = [g for g in groups if any(match(d.class_code, d.vendor_id) for d in g.devices)]
    if as_json:
        print_json({"groups": [g.to_json() for g in groups]})
    else:
        Console().print(groups_tree(groups))
