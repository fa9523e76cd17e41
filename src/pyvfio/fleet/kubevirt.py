"""``pyvfio export kubevirt``: a node's offers as the KubeVirt CR's ``permittedHostDevices``.

KubeVirt permits PCI devices by vendor:device (``pciVendorSelector``), not by address:
virt-handler lower-cases the selector, walks ``/sys/bus/pci/devices``, and advertises
every function of that ID bound to vfio-pci under ``resourceName``, one device-plugin
device per IOMMU group (the group number is the device's ID). So one entry is written
per vendor:device offered, and a warning is given where KubeVirt would advertise more
than pyvfio offers (another device of the same ID on vfio-pci: a companion, or one in a
group that is not viable). When a VM gets the resource, the plugin sets
``PCI_RESOURCE_<NAME>`` to the BDFs it allocated (`resource_env`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pyvfio.fleet.offer import Offer, OfferPlan
from pyvfio.host.inventory import devices
from pyvfio.sysfs import LIVE, Sysfs

#: The one driver KubeVirt's device plugin takes (discoverPermittedHostPCIDevices: a
#: variant driver such as mlx5_vfio_pci is skipped; only NVIDIA's vGPU VFs are excepted).
KUBEVIRT_DRIVER = "vfio-pci"
#: KubeVirt's ``v1.PCIResourcePrefix``.
PCI_RESOURCE_PREFIX = "PCI_RESOURCE"
#: The domain a resource name starts with, by PCI vendor; other vendors get `DEFAULT_DOMAIN`.
VENDOR_DOMAINS = {
    0x1002: "amd.com",
    0x1022: "amd.com",
    0x10DE: "nvidia.com",
    0x15B3: "nvidia.com",  # Mellanox, now NVIDIA's networking
    0x8086: "intel.com",
    0x144D: "samsung.com",
    0x14E4: "broadcom.com",
    0x1AF4: "redhat.com",  # virtio
    0x1B36: "redhat.com",  # QEMU's own devices
}
DEFAULT_DOMAIN = "devices.pyvfio.io"
#: Kubernetes' extended resource name (IsExtendedResourceName -> IsQualifiedName): a
#: DNS-1123 subdomain, '/', and a name of at most 63 characters.
_DOMAIN = re.compile(
    r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_NAME = re.compile(r"^(?=.{1,63}$)[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


def check_resource_name(resource_name: str) -> str:
    """``resource_name`` if Kubernetes takes it as an extended resource; ValueError otherwise."""
    domain, slash, name = resource_name.partition("/")
    if (
        not slash
        or not _DOMAIN.match(domain)
        or not _NAME.match(name)
        or domain == "kubernetes.io"
        or domain.endswith(".kubernetes.io")
    ):
        raise ValueError(
            f"resource name {resource_name!r}: write DOMAIN/NAME, a DNS domain outside "
            "kubernetes.io, then up to 63 of A-Z a-z 0-9 - _ . (e.g. nvidia.com/GA102GL_A10)"
        )
    return resource_name


def resource_env(resource_name: str, addresses: Iterable[str]) -> tuple[str, str]:
    """The variable KubeVirt's device plugin sets in virt-launcher for a resource, and its
    value: ``PCI_RESOURCE_`` and the name upper-cased with '/' and '.' made '_'
    (KubeVirt's ``util.ResourceNameToEnvVar``, which keeps a '-'), set to the allocated
    BDFs joined by commas. ``("nvidia.com/GA102GL_A10", ["0000:65:00.0"])`` ->
    ``("PCI_RESOURCE_NVIDIA_COM_GA102GL_A10", "0000:65:00.0")``.
    """
    name = resource_name.upper().replace("/", "_").replace(".", "_")
    return f"{PCI_RESOURCE_PREFIX}_{name}", ",".join(addresses)


def selector(vendor: int, device: int) -> str:
    """``pciVendorSelector`` as KubeVirt's docs write it (it compares lower-cased)."""
    return f"{vendor:04X}:{device:04X}"


@dataclass(frozen=True)
class KubevirtOptions:
    """Resource names: one ``domain`` for all, and whole names by vendor:device."""

    domain: str | None = None
    names: Mapping[tuple[int, int], str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.domain is not None and not _DOMAIN.match(self.domain):
            raise ValueError(
                f"--domain {self.domain!r}: write a DNS domain in lower case, e.g. example.com"
            )
        for name in self.names.values():
            check_resource_name(name)


def resource_name(offer: Offer, options: KubevirtOptions) -> str:
    """``DOMAIN/PCI_VVVV_DDDD``: named by ID, so every node of a cluster names a kind of
    device the same (pci.ids names differ between releases); ``--name`` overrides."""
    vendor, device = offer.device.vendor_id, offer.device.device_id
    if (vendor, device) in options.names:
        return options.names[(vendor, device)]
    domain = options.domain or VENDOR_DOMAINS.get(vendor, DEFAULT_DOMAIN)
    return f"{domain}/PCI_{vendor:04X}_{device:04X}"


@dataclass(frozen=True)
class Resource:
    """One ``pciHostDevices`` entry and the devices of this node it stands for."""

    pci_vendor_selector: str
    resource_name: str
    addresses: tuple[str, ...]

    def entry(self) -> dict[str, Any]:
        return {
            "pciVendorSelector": self.pci_vendor_selector,
            "resourceName": self.resource_name,
            "externalResourceProvider": False,  # KubeVirt's own device plugin serves it
        }

    def to_json(self) -> dict[str, Any]:
        env, value = resource_env(self.resource_name, self.addresses)
        return {
            **self.entry(),
            "count": len(self.addresses),
            "devices": list(self.addresses),
            "env": {"name": env, "value_when_all_allocated": value},
        }


@dataclass(frozen=True)
class KubevirtExport:
    """The CR's ``permittedHostDevices.pciHostDevices`` for a plan, with the warnings."""

    plan: OfferPlan
    resources: tuple[Resource, ...]
    warnings: tuple[str, ...]

    def patch(self) -> dict[str, Any]:
        """A merge patch for the KubeVirt CR (``kubectl patch kubevirt ... --type merge``)."""
        entries = [r.entry() for r in self.resources]
        return {"spec": {"configuration": {"permittedHostDevices": {"pciHostDevices": entries}}}}

    def to_json(self) -> dict[str, Any]:
        return {
            "patch": self.patch(),
            "resources": [r.to_json() for r in self.resources],
            "offers": [o.to_json() for o in self.plan.offers],
            "skipped": [s.to_json() for s in self.plan.skipped],
            "warnings": list(self.warnings),
        }

    def to_yaml(self) -> str:
        """The merge patch as YAML, with what each entry stands for as comments.

        Written by hand (the library has no YAML dependency): every scalar is a JSON
        string or boolean, which YAML reads the same.
        """
        out = ["# pyvfio export kubevirt: one device per viable IOMMU group (docs/fleet.md)"]
        for r in self.resources:
            env, _ = resource_env(r.resource_name, r.addresses)
            out.append(
                f"# {r.resource_name}: {len(r.addresses)} on this node "
                f"({', '.join(r.addresses)}); virt-launcher gets {env}"
            )
        out.extend(f"# skipped {s}" for s in self.plan.skipped)
        out.extend(f"# warning: {w}" for w in self.warnings)
        out += ["spec:", "  configuration:", "    permittedHostDevices:", "      pciHostDevices:"]
        for r in self.resources:
            out += [
                f"      - pciVendorSelector: {json.dumps(r.pci_vendor_selector)}",
                f"        resourceName: {json.dumps(r.resource_name)}",
                "        externalResourceProvider: false",
            ]
        return "\n".join(out)


def export(
    plan: OfferPlan, options: KubevirtOptions | None = None, sysfs: Sysfs = LIVE
) -> KubevirtExport:
    """The ``pciHostDevices`` entries for ``plan``, one per vendor:device offered.

    ValueError when two kinds of device would share a resource name (KubeVirt keeps one
    name per selector, and a name for two kinds makes a VM's device a lottery).
    """
    options = options or KubevirtOptions()
    by_ids: dict[tuple[int, int], list[Offer]] = {}
    for offer in plan.offers:
        by_ids.setdefault((offer.device.vendor_id, offer.device.device_id), []).append(offer)
    resources = []
    named: dict[str, tuple[int, int]] = {}
    for ids, offers in sorted(by_ids.items()):
        name = resource_name(offers[0], options)
        if named.setdefault(name, ids) != ids:
            other = selector(*named[name])
            raise ValueError(
                f"resource {name} would stand for {other} and {selector(*ids)}: give each "
                "kind of device its own name (--name VVVV:DDDD=DOMAIN/NAME)"
            )
        addresses = tuple(sorted(o.address for o in offers))
        resources.append(Resource(selector(*ids), name, addresses))
    return KubevirtExport(plan, tuple(resources), tuple(_warnings(plan, by_ids, sysfs)))


def _warnings(
    plan: OfferPlan, by_ids: Mapping[tuple[int, int], list[Offer]], sysfs: Sysfs
) -> list[str]:
    """Where KubeVirt would advertise what pyvfio does not offer: any other function of an
    exported ID on vfio-pci, which virt-handler takes as well (it selects by ID)."""
    offered = {o.address for o in plan.offers}
    warnings = [
        f"{o.address} is on {o.device.driver}: KubeVirt's own device plugin takes only "
        "vfio-pci devices; bind it to vfio-pci, or serve it with a plugin of your own "
        "(externalResourceProvider: true)"
        for o in plan.offers
        if o.device.driver != KUBEVIRT_DRIVER
    ]
    for device in devices(sysfs):
        ids = (device.vendor_id, device.device_id)
        if ids in by_ids and device.address not in offered and device.driver == KUBEVIRT_DRIVER:
            warnings.append(
                f"{device.address} [{device.ids}] is on {device.driver} but not offered "
                f"(group {device.iommu_group}): KubeVirt advertises every {selector(*ids)} on "
                "vfio-pci, so it counts this one too; bind it back to its driver "
                f"(pyvfio restore {device.address}) or offer its group"
            )
    return warnings


__all__ = [
    "DEFAULT_DOMAIN",
    "KUBEVIRT_DRIVER",
    "PCI_RESOURCE_PREFIX",
    "VENDOR_DOMAINS",
    "KubevirtExport",
    "KubevirtOptions",
    "Resource",
    "check_resource_name",
    "export",
    "resource_env",
    "resource_name",
    "selector",
]
