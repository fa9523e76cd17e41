"""Host commands: ls, show, doctor, bind, unbind, restore, snapshot, reset-method, rom.

Each is a few lines over :mod:`pyvfio.host`; read-only ones take ``--root`` (a snapshot
folder or tarball) and give the same answers there as on the live host.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from pyvfio._sizes import parse_size
from pyvfio.cli.common import JsonOpt, RootOpt, app, handle_errors, print_json

if TYPE_CHECKING:
    from pyvfio.host.bind import Restored

CLASS_FILTERS = {
    "gpu": (0x03,),
    "nvme": (0x01, 0x08),
    "net": (0x02,),
    "usb": (0x0C, 0x03),
    "audio": (0x04,),
}

UNSAFE_VERDICT = "UNSAFE no-IOMMU group: nothing confines its DMA (backend='unsafe-noiommu')"
Addresses = Annotated[
    list[str], typer.Argument(metavar="BDF", help="PCI addresses, e.g. 0000:00:1f.2")
]
TimeoutOpt = Annotated[
    float,
    typer.Option(
        "--timeout",
        help="seconds a sysfs write may wait in the kernel (vfio-pci waits for a device's "
        "users to close it) before pyvfio stops waiting and says who holds it",
    ),
]


def _check_timeout(timeout: float) -> float:
    if not 0 < timeout < 1e6:  # also NaN
        raise ValueError(f"--timeout {timeout}: give the seconds to wait, more than 0")
    return timeout


@app.command("ls")
@handle_errors
def ls(
    as_json: JsonOpt = False,
    group: Annotated[int | None, typer.Option(help="only this IOMMU group")] = None,
    klass: Annotated[str | None, typer.Option("--class", help="gpu|nvme|net|usb|audio")] = None,
    vendor: Annotated[str | None, typer.Option(help="vendor ID in hex, e.g. 8086")] = None,
    root: RootOpt = "/",
) -> None:
    """IOMMU groups as a tree: each device, its driver, and the group's verdict.

    Example: pyvfio ls --class gpu
    """
    from pyvfio.cli.render import groups_tree
    from pyvfio.host.inventory import iommu_groups, listing_json
    from pyvfio.host.journal import JournalError, journal_of
    from pyvfio.host.snapshot import open_root
    from pyvfio.noiommu import noiommu_groups

    if klass is not None and klass not in CLASS_FILTERS:
        raise ValueError(f"unknown class {klass!r}: use one of {', '.join(CLASS_FILTERS)}")
    try:
        vendor_id = int(vendor, 16) if vendor is not None else None
    except ValueError:
        vendor_id = -1
    if vendor_id is not None and not 0 <= vendor_id <= 0xFFFF:
        raise ValueError(f"vendor {vendor!r} is not a hex ID like 8086 (at most 4 hex digits)")
    if group is not None and group < 0:
        raise ValueError(f"--group {group}: IOMMU groups count from 0 (pyvfio ls lists them)")
    sysfs = open_root(root)
    groups = iommu_groups(sysfs)
    host_has_groups = bool(groups)
    damaged: JournalError | None = None
    try:
        journal = journal_of(sysfs)
    except JournalError as err:  # the groups are still worth showing; then exit 2
        journal, damaged = {}, err
    if group is not None:
        groups = [g for g in groups if g.number == group]
    if klass is not None or vendor_id is not None:
        want = CLASS_FILTERS.get(klass or "", ())

        def match(code: int, vid: int) -> bool:
            parts = (code >> 16, (code >> 8) & 0xFF)
            return parts[: len(want)] == want and vendor_id in (None, vid)

        groups = [g for g in groups if any(match(d.class_code, d.vendor_id) for d in g.devices)]
    unsafe = frozenset(noiommu_groups(sysfs))
    if as_json:
        data = listing_json(groups, journal)
        for entry in data["groups"]:
            if entry["group"] in unsafe:  # only there, so the schema stays as it was
                entry["noiommu"] = True
                entry["verdict"] = UNSAFE_VERDICT
        if damaged is not None:  # only then, so the schema stays as it was
            data["journal_error"] = str(damaged)
        print_json(data)
    else:
        chosen_by = " ".join(
            f"{flag} {value}"
            for flag, value in (("--group", group), ("--class", klass), ("--vendor", vendor))
            if value is not None
        )
        Console().print(
            groups_tree(
                groups, unsafe, UNSAFE_VERDICT, filtered=chosen_by if host_has_groups else ""
            )
        )
        for entry in journal.values():
            typer.echo(f"journal: {entry}" + ("" if entry.done else "; pyvfio restore --all"))
    if damaged is not None:
        raise damaged


@app.command("bind")
@handle_errors
def bind(
    addresses: Addresses,
    group: Annotated[bool, typer.Option("--group", help="also the group's endpoints")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="say what, change nothing")] = False,
    force: Annotated[bool, typer.Option("--force", help="take devices in use too")] = False,
    driver: Annotated[str, typer.Option(help="the driver to bind to")] = "vfio-pci",
    timeout: TimeoutOpt = 30.0,
    as_json: JsonOpt = False,
) -> None:
    """Bind devices to vfio-pci by driver_override, journaled so restore can undo it.

    Example: pyvfio bind 0000:01:00.0 --dry-run
    """
    from pyvfio.host import bind as b

    _check_timeout(timeout)
    plan = b.plan_bind(addresses, group=group, target=driver)
    changed = [] if dry_run else b.bind_devices(plan, force=force, timeout=timeout)
    if as_json:
        print_json({"dry_run": dry_run, **plan.to_json(), "changed": [a.address for a in changed]})
        return
    typer.echo(str(plan))  # each device's line says "nothing to do" where that is so
    if dry_run:
        typer.echo("dry run: nothing was changed")
    elif changed:
        typer.echo(f"bound {len(changed)} device(s) to {driver}; 'pyvfio restore' undoes it")


@app.command("unbind")
@handle_errors
def unbind(addresses: Addresses, timeout: TimeoutOpt = 30.0, as_json: JsonOpt = False) -> None:
    """Take devices off vfio-pci, back to the driver they had before pyvfio.

    Example: pyvfio unbind 0000:01:00.0
    """
    from pyvfio.host.bind import unbind_devices

    _report(unbind_devices(addresses, timeout=_check_timeout(timeout)), as_json)


@app.command("restore")
@handle_errors
def restore(
    addresses: Annotated[
        list[str] | None, typer.Argument(metavar="BDF", help="PCI addresses")
    ] = None,
    all_devices: Annotated[bool, typer.Option("--all", help="every journaled device")] = False,
    timeout: TimeoutOpt = 30.0,
    as_json: JsonOpt = False,
) -> None:
    """Give devices back to their original driver and clear the override (journal).

    Example: pyvfio restore --all
    """
    from pyvfio.host.bind import restore as do_restore

    _check_timeout(timeout)
    _report(do_restore(addresses or (), all_devices=all_devices, timeout=timeout), as_json)


def _report(results: Sequence[Restored], as_json: bool) -> None:
    if as_json:
        print_json({"devices": [r.to_json() for r in results]})
        return
    for r in results:
        typer.echo(str(r))
    if not results:
        typer.echo("nothing to restore: the journal is empty")


@app.command("show")
@handle_errors
def show(
    address: Annotated[str, typer.Argument(metavar="BDF", help="PCI address, e.g. 0000:00:1f.2")],
    as_json: JsonOpt = False,
    root: RootOpt = "/",
) -> None:
    """Everything a passthrough decision needs about one device.

    Example: pyvfio show 0000:01:00.0 --json
    """
    from pyvfio.host.details import describe
    from pyvfio.host.snapshot import open_root

    details = describe(address, open_root(root))
    if as_json:
        print_json(details.to_json())
    else:
        typer.echo(str(details))


@app.command("reset-method")
@handle_errors
def reset_method(
    address: Annotated[str, typer.Argument(metavar="BDF", help="PCI address, e.g. 0000:01:00.0")],
    methods: Annotated[
        list[str],
        typer.Argument(
            metavar="METHOD", help="reset methods to keep, in order (e.g. flr bus), or 'default'"
        ),
    ],
    as_json: JsonOpt = False,
) -> None:
    """Choose the resets the kernel may use for a device, journaled so restore can undo it.

    Example: pyvfio reset-method 0000:01:00.0 bus
    """
    from pyvfio.host.resetmethod import set_reset_method

    change = set_reset_method(address, methods)
    if as_json:
        print_json(change.to_json())
    else:
        typer.echo(str(change))


@app.command("rom")
@handle_errors
def rom(
    address: Annotated[str, typer.Argument(metavar="BDF", help="PCI address, e.g. 0000:01:00.0")],
    out: Annotated[str, typer.Option("--out", metavar="FILE", help="the file to write")],
    force: Annotated[bool, typer.Option("--force", help="replace FILE if it exists")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Dump a device's option ROM through sysfs, for QEMU's romfile=.

    Example: pyvfio rom 0000:01:00.0 --out gpu.rom
    """
    from pyvfio.host.rom import dump_rom

    dump = dump_rom(address, out, force=force)
    if as_json:
        print_json(dump.to_json())
    else:
        typer.echo(str(dump))


def _parse_size(text: str) -> int:
    size = parse_size(text, examples="512M or 16G")
    if not 0 <= size < 1 << 64:
        raise ValueError(f"{text!r}: the memory to pin is between 0 and 16E, like 512M or 16G")
    return size


@app.command("doctor")
@handle_errors
def doctor(
    addresses: Annotated[
        list[str] | None, typer.Argument(metavar="BDF", help="devices to check too")
    ] = None,
    memlock: Annotated[
        str, typer.Option(help="memory you plan to pin (a VM's RAM), e.g. 16G")
    ] = "64M",
    as_json: JsonOpt = False,
    root: RootOpt = "/",
) -> None:
    """PASS/WARN/FAIL for everything VFIO needs, with a hint each; exit 1 on a FAIL.

    Example: pyvfio doctor 0000:01:00.0 --memlock 16G
    """
    from pyvfio.host import doctor as d
    from pyvfio.host.snapshot import open_root

    results = d.run(addresses or (), memlock_need=_parse_size(memlock), sysfs=open_root(root))
    failed = any(r.failed for r in results)
    if as_json:
        print_json({"ok": not failed, "checks": [r.to_json() for r in results]})
    else:
        for r in results:
            typer.echo(str(r))
    if failed:
        raise typer.Exit(1)


@app.command("snapshot")
@handle_errors
def snapshot(
    out: Annotated[
        str, typer.Argument(metavar="TARBALL", help="the tarball to write, e.g. host.tar.gz")
    ],
) -> None:
    """Record what pyvfio reads of this host (for --root, or a bug report).

    Example: pyvfio snapshot host.tar.gz
    """
    from pyvfio.host.snapshot import record

    count = record(out)
    typer.echo(f"wrote {out}: {count} PCI devices; any read-only command takes --root {out}")
