"""``pyvfio export nova``: a node's offers as OpenStack Nova's ``[pci] device_spec`` and ``alias``.

Each offered device gets one ``device_spec`` line that names it by address *and* by
vendor and product (an address alone, on a PF, would also match its VFs: Nova's
``WhitelistPciAddress`` matches a VF through its parent), so Nova tracks exactly the
devices pyvfio offers; each kind of device gets one ``alias`` a flavor requests
(``pci_passthrough:alias=NAME:COUNT``). The values are written as Nova keeps them
(lower-case hex IDs, resource classes and traits already normalized), so what Placement
shows is what pyvfio printed; tests/unit/test_export_nova.py runs every line through
Nova's own parser, alias schema and Placement translator.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pyvfio.fleet.offer import Offer, OfferPlan

#: Nova's names for the kinds of device (``nova.objects.fields.PciDeviceType``).
DEVICE_TYPES = {"pci": "type-PCI", "pf": "type-PF", "vf": "type-VF"}
#: ``nova.objects.fields.PCINUMAAffinityPolicy.ALL``.
NUMA_POLICIES = ("required", "legacy", "preferred", "socket")
#: A Placement custom resource class or trait as Placement keeps it (os-resource-classes,
#: os-traits: ``CUSTOM_`` then A-Z, 0-9 and _); a standard trait is the same without
#: the prefix. Nova normalizes anything else, so pyvfio takes only what it keeps as is.
_CUSTOM_NAME = re.compile(r"^CUSTOM_[A-Z0-9_]+$")
_TRAIT = re.compile(r"^[A-Z][A-Z0-9_]*$")
#: A flavor names aliases as ``NAME:COUNT,NAME:COUNT``: a name holds neither separator.
_ALIAS_NAME = re.compile(r"^[^:,\s]{1,256}$")


@dataclass(frozen=True)
class NovaOptions:
    """What the user adds to the entries: Placement's resource class and traits (read
    when ``[pci] report_in_placement`` is on), the alias's NUMA policy, libvirt's
    ``managed`` flag, and alias names by vendor:device (``{(0x10de, 0x1b80): "gpu"}``)."""

    resource_class: str | None = None
    traits: tuple[str, ...] = ()
    numa_policy: str | None = None
    managed: bool | None = None
    names: Mapping[tuple[int, int], str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        rc = self.resource_class
        if rc is not None and not _CUSTOM_NAME.match(rc):
            raise ValueError(
                f"--resource-class {rc!r}: write a Placement custom resource class, "
                "CUSTOM_ then A-Z, 0-9 and _, e.g. CUSTOM_GPU_A10"
            )
        for trait in self.traits:
            if not _TRAIT.match(trait):
                raise ValueError(
                    f"--trait {trait!r}: write a Placement trait in capitals, A-Z, 0-9 and _, "
                    "e.g. CUSTOM_PASSTHROUGH or HW_GPU_API_VULKAN"
                )
        if self.numa_policy is not None and self.numa_policy not in NUMA_POLICIES:
            raise ValueError(
                f"--numa-policy {self.numa_policy!r}: use one of {', '.join(NUMA_POLICIES)}"
            )
        for name in self.names.values():
            if not _ALIAS_NAME.match(name):
                raise ValueError(
                    f"alias name {name!r}: a flavor writes NAME:COUNT,..., so a name has no "
                    "':', ',' or space, e.g. gpu-a10"
                )


def resource_class(offer: Offer, options: NovaOptions) -> str:
    """The resource class Placement shows for ``offer``: the one given, else Nova's own
    ``CUSTOM_PCI_<VENDOR>_<PRODUCT>`` (pci_placement_translator.get_resource_class)."""
    if options.resource_class:
        return options.resource_class
    return f"CUSTOM_PCI_{offer.device.vendor_id:04X}_{offer.device.device_id:04X}"


def _ids(offer: Offer) -> dict[str, str]:
    return {
        "vendor_id": f"{offer.device.vendor_id:04x}",
        "product_id": f"{offer.device.device_id:04x}",
    }


def alias_name(offer: Offer, options: NovaOptions) -> str:
    """The alias a flavor requests ``offer``'s kind of device by (one per vendor:device)."""
    key = (offer.device.vendor_id, offer.device.device_id)
    if key in options.names:
        return options.names[key]
    suffix = "" if offer.kind == "pci" else f"-{offer.kind}"
    return f"pci-{key[0]:04x}-{key[1]:04x}{suffix}"


def device_spec(offer: Offer, options: NovaOptions) -> dict[str, str]:
    """One ``[pci] device_spec`` entry: the device by address, vendor and product."""
    spec = {"address": offer.address, **_ids(offer)}
    if options.resource_class:
        spec["resource_class"] = options.resource_class
    if options.traits:
        spec["traits"] = ",".join(options.traits)
    if options.managed is not None:
        spec["managed"] = "yes" if options.managed else "no"
    return spec


def alias(offer: Offer, options: NovaOptions) -> dict[str, str]:
    """One ``[pci] alias`` entry for ``offer``'s kind of device."""
    entry = {
        "name": alias_name(offer, options),
        **_ids(offer),
        "device_type": DEVICE_TYPES[offer.kind],
    }
    if options.numa_policy:
        entry["numa_policy"] = options.numa_policy
    if options.resource_class:
        entry["resource_class"] = options.resource_class
    if options.traits:
        entry["traits"] = ",".join(options.traits)
    return entry


def _check_pf_and_vf(offers: Sequence[Offer]) -> None:
    """Nova tracks a PF or its VFs, never both: allocating one makes the others
    unavailable, and Placement refuses the pair (PlacementPciDependentDeviceException)."""
    offered = {o.address for o in offers}
    for offer in offers:
        if offer.kind == "vf" and offer.physical_function in offered:
            raise ValueError(
                f"{offer.physical_function} is selected with its VF {offer.address}: Nova "
                "offers a PF or its VFs, not both; select the PF or the VFs "
                "(e.g. --device for each VF)"
            )


@dataclass(frozen=True)
class NovaExport:
    """The ``[pci]`` entries for a plan, and what each stands for."""

    plan: OfferPlan
    options: NovaOptions
    device_specs: tuple[dict[str, str], ...]
    aliases: tuple[dict[str, str], ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "device_spec": list(self.device_specs),
            "alias": list(self.aliases),
            "offers": [
                {
                    **o.to_json(),
                    "device_type": DEVICE_TYPES[o.kind],
                    "alias": alias_name(o, self.options),
                    "resource_class": resource_class(o, self.options),
                }
                for o in self.plan.offers
            ],
            "skipped": [s.to_json() for s in self.plan.skipped],
        }

    def conf_lines(self) -> list[str]:
        """The ``[pci]`` section, one JSON object per line as nova.conf takes them."""
        return [
            *(f"device_spec = {_line(s)}" for s in self.device_specs),
            *(f"alias = {_line(a)}" for a in self.aliases),
        ]

    def __str__(self) -> str:
        out = ["# pyvfio export nova: one device per viable IOMMU group (docs/fleet.md)"]
        for o in self.plan.offers:
            with_ = f", with {', '.join(o.companions)} (never offered apart)"
            node = "none" if o.numa_node is None else str(o.numa_node)
            out.append(
                f"# {o.address} [{o.device.ids}] group {o.group}, {DEVICE_TYPES[o.kind]}, "
                f"NUMA node {node}{with_ if o.companions else ''}"
            )
        out.extend(f"# skipped {s}" for s in self.plan.skipped)
        if self.options.resource_class or self.options.traits:
            out.append(
                "# resource_class and traits need [pci] report_in_placement = true here and "
                "[filter_scheduler] pci_in_placement = true on the scheduler"
            )
        out.append("[pci]")
        out.extend(self.conf_lines())
        requests = ",".join(f"{a['name']}:1" for a in self.aliases)
        out.append(
            "# a flavor asks for them: openstack flavor set FLAVOR "
            f'--property "pci_passthrough:alias"="{requests}"'
        )
        return "\n".join(out)


def _line(entry: Mapping[str, str]) -> str:
    return json.dumps(dict(entry), sort_keys=True)


def export(plan: OfferPlan, options: NovaOptions | None = None) -> NovaExport:
    """Nova's entries for ``plan``: a device_spec per offer, an alias per kind of device.

    ValueError when the plan offers a PF with one of its VFs, or when two kinds of device
    were given one alias name with different device types (Nova refuses both).
    """
    options = options or NovaOptions()
    _check_pf_and_vf(plan.offers)
    specs = tuple(device_spec(o, options) for o in plan.offers)
    aliases: dict[tuple[str, str, str], dict[str, str]] = {}
    types: dict[str, str] = {}
    for offer in plan.offers:
        entry = alias(offer, options)
        if types.setdefault(entry["name"], entry["device_type"]) != entry["device_type"]:
            raise ValueError(
                f"alias {entry['name']!r} would stand for a {types[entry['name']]} and a "
                f"{entry['device_type']} device: Nova needs one device type per alias name"
            )
        aliases[(entry["name"], entry["vendor_id"], entry["product_id"])] = entry
    return NovaExport(plan, options, specs, tuple(aliases[k] for k in sorted(aliases)))


__all__ = [
    "DEVICE_TYPES",
    "NUMA_POLICIES",
    "NovaExport",
    "NovaOptions",
    "alias",
    "alias_name",
    "device_spec",
    "export",
    "resource_class",
]
