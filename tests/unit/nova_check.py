"""Run pyvfio's Nova entries through Nova's own code; run by .venv-nova's Python, not pytest.

    .venv-nova/bin/python tests/unit/nova_check.py < cases.json > results.json

Nova (PyPI ``nova``, the ``nova`` extra of pyproject.toml) lives in a virtual environment
of its own (scripts/setup.sh makes it): it brings some 140 packages, eventlet among them,
that pyvfio's tests should not import. Input: ``{"cases": [{"name", "device_spec": [line],
"alias": [line], "devices": [{"address", "vendor_id", "product_id", "parent_addr",
"dev_type"}]}]}``, the lines exactly as nova.conf holds them and the devices as the
host shows them (the dicts Nova's libvirt driver builds). Output, per case: what Nova
made of each line (``Whitelist``, which builds a ``PciDeviceSpec`` per line; the
``[pci] alias`` schema and checks of ``get_alias_from_config``, with
``[filter_scheduler] pci_in_placement`` on), which of the host's devices Nova's matcher
assigns, and Placement's view of them (``PlacementView``, ``[pci] report_in_placement``
on: resource classes, traits, and the PF/VF and mixed-class refusals).
"""

from __future__ import annotations

import json
import sys
import warnings
from typing import Any

warnings.simplefilter("ignore")  # eventlet's deprecation notice, on import

import nova.conf  # noqa: E402
from nova import exception, objects  # noqa: E402
from nova.compute import pci_placement_translator as translator  # noqa: E402
from nova.pci import request, utils, whitelist  # noqa: E402

CONF = nova.conf.CONF


def _alias_parser() -> Any:
    """Nova's alias parser: ``get_alias_from_config`` (2024.1 on), ``_get_alias_...`` before."""
    return getattr(request, "get_alias_from_config", None) or request._get_alias_from_config


def run_case(case: dict[str, Any]) -> dict[str, Any]:
    devices = case["devices"]
    pfs = {d["address"] for d in devices if d["dev_type"] == "type-PF"}

    # Nova asks sysfs whether an address is a PF (sriov_totalvfs > 0); this host is the
    # recorded one, not the machine the test runs on.
    def is_physical_function(domain: str, bus: str, slot: str, function: str) -> bool:
        return f"{domain}:{bus}:{slot}.{function}" in pfs

    utils.is_physical_function = is_physical_function
    out: dict[str, Any] = {"name": case["name"], "errors": []}
    try:
        specs = whitelist.Whitelist(case["device_spec"])
    except exception.NovaException as err:
        out["errors"].append(f"device_spec: {type(err).__name__}: {err}")
        return out
    out["tags"] = [dict(s.get_tags()) for s in specs.specs]
    matched = {}
    for dev in devices:
        spec = specs.device_assignable(
            {k: dev[k] for k in ("address", "vendor_id", "product_id", "parent_addr")}
        )
        if spec is not None:
            matched[dev["address"]] = spec
    out["assignable"] = sorted(matched)

    CONF.set_override("alias", case["alias"], group="pci")
    CONF.set_override("pci_in_placement", True, group="filter_scheduler")
    parser = _alias_parser()
    cache_clear = getattr(parser, "cache_clear", None)
    if cache_clear is not None:
        cache_clear()
    try:
        aliases = parser()
    except exception.NovaException as err:
        out["errors"].append(f"alias: {type(err).__name__}: {err}")
        aliases = {}
    out["aliases"] = {name: {"numa_policy": p, "specs": s} for name, (p, s) in aliases.items()}

    view = translator.PlacementView("node", [])
    try:
        for dev in devices:
            if dev["address"] not in matched:
                continue
            obj = objects.PciDevice(
                address=dev["address"],
                vendor_id=dev["vendor_id"],
                product_id=dev["product_id"],
                dev_type=dev["dev_type"],
                parent_addr=dev["parent_addr"],
                status="available",
                instance_uuid=None,
            )
            view.process_dev(obj, matched[dev["address"]])
    except exception.NovaException as err:
        out["errors"].append(f"placement: {type(err).__name__}: {err}")
    out["placement"] = {
        name: {
            "resource_class": rp.resource_class,
            "traits": sorted(rp.traits or ()),
            "devices": sorted(d.address for d in rp.devs),
        }
        for name, rp in sorted(view.rps.items())
    }
    out["resource_class_of"] = {
        name: translator.get_resource_class(rc, vendor, product)
        for name, (rc, vendor, product) in case.get("resource_class_of", {}).items()
    }
    out["traits_of"] = {
        name: sorted(translator.get_traits(text))
        for name, text in case.get("traits_of", {}).items()
    }
    return out


def main() -> None:
    CONF([], project="nova", default_config_files=[])
    CONF.set_override("report_in_placement", True, group="pci")
    objects.register_all()
    cases = json.load(sys.stdin)["cases"]
    json.dump({"results": [run_case(c) for c in cases]}, sys.stdout)


if __name__ == "__main__":
    main()
