"""``pyvfio export nova`` / ``kubevirt``: what this node offers, in each engine's format.

A few lines over :mod:`pyvfio.fleet`; both take ``--root`` (a snapshot) and ``--json``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from pyvfio.cli.common import JsonOpt, RootOpt, app, err_console, handle_errors, print_json
from pyvfio.cli.plain import CLASS_FILTERS

if TYPE_CHECKING:
    from pyvfio.fleet.offer import Selection

export_app = typer.Typer(
    help="What this node can offer a cluster engine, in the engine's own format.\n\n"
    "Example: pyvfio export nova --class gpu",
    no_args_is_help=True,
)
app.add_typer(export_app, name="export")

DeviceOpt = Annotated[
    list[str] | None, typer.Option("--device", metavar="BDF", help="this device (repeatable)")
]
GroupOpt = Annotated[
    list[int] | None, typer.Option("--group", metavar="N", help="this IOMMU group (repeatable)")
]
IdsOpt = Annotated[
    list[str] | None,
    typer.Option("--ids", metavar="VVVV:DDDD", help="vendor:device in hex (repeatable)"),
]
VendorOpt = Annotated[str | None, typer.Option(help="vendor ID in hex, e.g. 10de")]
ClassOpt = Annotated[
    list[str] | None,
    typer.Option("--class", metavar="CLASS", help="gpu|nvme|net|usb|audio (repeatable)"),
]
AllBoundOpt = Annotated[
    bool, typer.Option("--all-bound", help="every device on vfio-pci in a viable group")
]


def _hex_id(text: str, what: str) -> int:
    try:
        value = int(text, 16)
    except ValueError:
        value = -1
    if not 0 <= value <= 0xFFFF or not 1 <= len(text) <= 4:
        raise ValueError(f"{what} {text!r} is not a hex ID like 10de (at most 4 hex digits)")
    return value


def _ids(text: str, flag: str) -> tuple[int, int]:
    vendor, colon, device = text.partition(":")
    if not colon:
        raise ValueError(f"{flag} {text!r}: write VENDOR:DEVICE in hex, e.g. 10de:1b80")
    return _hex_id(vendor, f"{flag} vendor"), _hex_id(device, f"{flag} device")


def _names(values: list[str] | None) -> dict[tuple[int, int], str]:
    names = {}
    for text in values or ():
        ids, equals, name = text.partition("=")
        if not equals or not name:
            raise ValueError(f"--name {text!r}: write VENDOR:DEVICE=NAME, e.g. 10de:2236=gpu-a10")
        names[_ids(ids, "--name")] = name
    return names


def _selection(
    devices: list[str] | None,
    groups: list[int] | None,
    ids: list[str] | None,
    vendor: str | None,
    classes: list[str] | None,
    all_bound: bool,
) -> Selection:
    from pyvfio.fleet.offer import Selection

    for klass in classes or ():
        if klass not in CLASS_FILTERS:
            raise ValueError(f"unknown class {klass!r}: use one of {', '.join(CLASS_FILTERS)}")
    for group in groups or ():
        if group < 0:
            raise ValueError(f"--group {group}: IOMMU groups count from 0 (pyvfio ls lists them)")
    pairs: list[tuple[int, int | None]] = [_ids(t, "--ids") for t in ids or ()]
    if vendor is not None:
        pairs.append((_hex_id(vendor, "--vendor"), None))
    text = " ".join(
        [f"--device {d}" for d in devices or ()]
        + [f"--group {g}" for g in groups or ()]
        + [f"--ids {i}" for i in ids or ()]
        + ([f"--vendor {vendor}"] if vendor else [])
        + [f"--class {c}" for c in classes or ()]
        + (["--all-bound"] if all_bound else [])
    )
    return Selection(
        devices=tuple(devices or ()),
        ids=tuple(pairs),
        classes=tuple(CLASS_FILTERS[c] for c in classes or ()),
        groups=tuple(groups or ()),
        all_bound=all_bound,
        text=text,
    )


@export_app.command("nova")
@handle_errors
def nova(
    device: DeviceOpt = None,
    group: GroupOpt = None,
    ids: IdsOpt = None,
    vendor: VendorOpt = None,
    klass: ClassOpt = None,
    all_bound: AllBoundOpt = False,
    resource_class: Annotated[
        str | None,
        typer.Option(metavar="CUSTOM_NAME", help="Placement resource class, e.g. CUSTOM_GPU"),
    ] = None,
    trait: Annotated[
        list[str] | None,
        typer.Option("--trait", metavar="TRAIT", help="Placement trait (repeatable)"),
    ] = None,
    numa_policy: Annotated[
        str | None, typer.Option(help="the aliases' NUMA policy: required|legacy|preferred|socket")
    ] = None,
    managed: Annotated[
        bool | None,
        typer.Option(
            "--managed/--unmanaged",
            help="libvirt binds the devices itself (managed) or finds them on vfio-pci",
        ),
    ] = None,
    name: Annotated[
        list[str] | None,
        typer.Option("--name", metavar="VVVV:DDDD=ALIAS", help="alias name for an ID (repeatable)"),
    ] = None,
    as_json: JsonOpt = False,
    root: RootOpt = "/",
) -> None:
    """nova.conf's device_spec and alias entries (section pci): one device per viable group.

    Example: pyvfio export nova --class gpu --resource-class CUSTOM_GPU
    """
    from pyvfio.fleet import nova as n
    from pyvfio.fleet.offer import plan
    from pyvfio.host.snapshot import open_root

    selection = _selection(device, group, ids, vendor, klass, all_bound)
    options = n.NovaOptions(
        resource_class=resource_class,
        traits=tuple(trait or ()),
        numa_policy=numa_policy,
        managed=managed,
        names=_names(name),
    )
    result = n.export(plan(selection, open_root(root)), options)
    if as_json:
        print_json(result.to_json())
    else:
        typer.echo(str(result))
    for skipped in result.plan.skipped:
        err_console.print(f"skipped {skipped}", highlight=False, soft_wrap=True)


@export_app.command("kubevirt")
@handle_errors
def kubevirt(
    device: DeviceOpt = None,
    group: GroupOpt = None,
    ids: IdsOpt = None,
    vendor: VendorOpt = None,
    klass: ClassOpt = None,
    all_bound: AllBoundOpt = False,
    domain: Annotated[
        str | None,
        typer.Option(help="resource names' domain (default: the vendor's, e.g. nvidia.com)"),
    ] = None,
    name: Annotated[
        list[str] | None,
        typer.Option(
            "--name", metavar="VVVV:DDDD=DOMAIN/NAME", help="resource name for an ID (repeatable)"
        ),
    ] = None,
    as_json: JsonOpt = False,
    root: RootOpt = "/",
) -> None:
    """permittedHostDevices.pciHostDevices for the KubeVirt CR, as a merge patch (YAML).

    Example: pyvfio export kubevirt --class gpu > patch.yaml
    """
    from pyvfio.fleet import kubevirt as k
    from pyvfio.fleet.offer import plan
    from pyvfio.host.snapshot import open_root

    selection = _selection(device, group, ids, vendor, klass, all_bound)
    options = k.KubevirtOptions(domain=domain, names=_names(name))
    sysfs = open_root(root)
    result = k.export(plan(selection, sysfs), options, sysfs)
    if as_json:
        print_json(result.to_json())
    else:
        typer.echo(result.to_yaml())
    for skipped in result.plan.skipped:
        err_console.print(f"skipped {skipped}", highlight=False, soft_wrap=True)
    for warning in result.warnings:
        err_console.print(f"warning: {warning}", highlight=False, soft_wrap=True)
