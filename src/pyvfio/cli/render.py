"""How the CLI draws things with rich; the library never imports this."""

from __future__ import annotations

from rich.text import Text
from rich.tree import Tree

from pyvfio.host.inventory import IommuGroup, PciDeviceInfo
from pyvfio.viability import is_vfio_driver


def device_line(dev: PciDeviceInfo) -> Text:
    name = " ".join(filter(None, (dev.vendor_name, dev.device_name))) or "unknown device"
    line = Text()
    line.append(dev.address, style="bold")
    line.append(f" [{dev.ids}] ")
    if dev.class_name:
        line.append(f"{dev.class_name}: ", style="dim")
    line.append(name)
    driver = dev.driver or "no driver"
    style = "green" if is_vfio_driver(dev.driver) else ("red" if dev.blocks_group else "yellow")
    line.append(f"  ({driver})", style=style)
    return line


def groups_tree(
    groups: list[IommuGroup],
    noiommu: frozenset[int] = frozenset(),
    unsafe: str = "",
    *,
    filtered: str = "",
) -> Tree:
    """The groups as a tree; ``filtered`` names the filter that chose them (none: all)."""
    tree = Tree(Text(f"IOMMU groups: {len(groups)}", style="bold"))
    if not groups and filtered:  # the host has groups, the filter chose none of them
        tree.add(
            Text(
                f"no group matches {filtered} ('pyvfio ls' with no filter lists them all)",
                style="yellow",
            )
        )
    elif not groups:
        tree.add(Text("none: the IOMMU is off (pyvfio doctor says why)", style="red"))
    for group in groups:
        verdict = Text(group.verdict, style="green" if group.viable else "red")
        if group.number in noiommu:
            verdict = Text(unsafe, style="bold red")
        branch = tree.add(Text.assemble((f"group {group.number}", "bold cyan"), "  ", verdict))
        for dev in group.devices:
            branch.add(device_line(dev))
    return tree
