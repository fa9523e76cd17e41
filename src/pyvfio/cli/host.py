"""Host commands: ls, show, doctor, bind, unbind, restore, sriov, snapshot, reset-method, rom.

Each is a few lines over :mod:`pyvfio.host`; read-only ones take ``--root`` (a snapshot
folder or tarball) and give the same answers there as on the live host.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated

import typer

from pyvfio._sizes import parse_size
from pyvfio.cli.common import JsonOpt, RootOpt, app, handle_errors, print_json
from pyvfio.cli.plain import UNSAFE_VERDICT

if TYPE_CHECKING:
    from pyvfio.host.bind import Restored
    from pyvfio.host.sriov import SriovRestored

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
    from pyvfio.cli.plain import listing

    result = listing(group=group, klass=klass, vendor=vendor, root=root)
    if as_json:
        print_json(result.to_json())
    else:
        from rich.console import Console

        from pyvfio.cli.render import groups_tree

        chosen_by = " ".join(
            f"{flag} {value}"
            for flag, value in (("--group", group), ("--class", klass), ("--vendor", vendor))
            if value is not None
        )
        filtered = chosen_by if result.host_has_groups else ""
        Console().print(
            groups_tree(result.groups, result.unsafe, UNSAFE_VERDICT, filtered=filtered)
        )
        for addr, rel in result.vf_relations.items():
            if "sriov" in rel:
                pf = rel["sriov"]
                vfs = ", ".join(
                    f"{vf['address']} ({vf['driver'] or 'no driver'})" for vf in pf["vfs"]
                )
                typer.echo(
                    f"SR-IOV: {addr} has {pf['num_vfs']} of {pf['total_vfs']} VFs"
                    + (f": {vfs}" if vfs else "")
                )
        for entry in result.journal.values():
            typer.echo(f"journal: {entry}" + ("" if entry.done else "; pyvfio restore --all"))
        for vf_entry in result.vf_journal.values():
            typer.echo(f"journal: {vf_entry}" + ("" if vf_entry.done else "; pyvfio restore --all"))
    if result.damaged is not None:
        raise result.damaged


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
    from pyvfio.host import sriov
    from pyvfio.host.bind import restore as do_restore

    _check_timeout(timeout)
    results = do_restore(addresses or (), all_devices=all_devices, timeout=timeout)
    # VF counts after drivers: a PF given back to its own driver takes its original count.
    vfs = sriov.restore(addresses or (), all_devices=all_devices, progress=_progress)
    _report(results, as_json, vfs)


def _progress(message: str) -> None:
    typer.echo(message, err=True)  # stderr: --json keeps stdout to itself


def _report(results: Sequence[Restored], as_json: bool, vfs: Sequence[SriovRestored] = ()) -> None:
    if as_json:
        print_json({"devices": [r.to_json() for r in results], "sriov": [v.to_json() for v in vfs]})
        return
    for r in results:
        typer.echo(str(r))
    for v in vfs:
        typer.echo(str(v))
    if not results and not vfs:
        typer.echo("nothing to restore: the journal is empty")


@app.command("sriov")
@handle_errors
def sriov_command(
    address: Annotated[str, typer.Argument(metavar="BDF", help="the PF, e.g. 0000:01:00.0")],
    vfs: Annotated[
        int | None, typer.Option("--vfs", help="the number of VFs to have (0 removes them)")
    ] = None,
    enable_sriov: Annotated[
        bool,
        typer.Option("--enable-sriov", help="set vfio-pci's enable_sriov for a PF on vfio-pci"),
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="remove VFs the host uses too")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Show or set a PF's VF count through sriov_numvfs, journaled so restore can undo it.

    Example: pyvfio sriov 0000:01:00.0 --vfs 2
    """
    from pyvfio.host import sriov

    if vfs is None:
        now = sriov.state(address)
        if as_json:
            print_json(now.to_json())
        else:
            typer.echo(str(now))
        return
    change = sriov.set_num_vfs(
        address, vfs, force=force, enable_sriov=enable_sriov, progress=_progress
    )
    if as_json:
        print_json(change.to_json())
        return
    typer.echo(str(change))
    if change.changed:
        typer.echo("'pyvfio restore' puts the VF count back")


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
