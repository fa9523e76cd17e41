"""``pyvfio export nova`` checked by Nova's own code: every entry parses, and matches the host.

Nova runs in .venv-nova (scripts/setup.sh), through tests/unit/nova_check.py, once for
all the cases below: its ``Whitelist`` parses each ``device_spec`` line and assigns the
host's devices (dicts as Nova's libvirt driver builds them: address, IDs, parent, type),
its alias parser and schema read each ``alias`` line, and its Placement translator builds
the resource providers. Each export must be accepted, assign exactly the devices pyvfio
offers (never a companion, a VF through its PF, or a device of the same ID elsewhere),
and show in Placement the resource class and traits pyvfio reports.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from export_hosts import gpu_and_audio, lab_edu_bound, sriov_pf, sriov_vfs
from pyvfio.fleet import nova
from pyvfio.fleet.offer import Selection, plan
from pyvfio.host.inventory import devices
from pyvfio.sysfs import Sysfs

ROOT = Path(__file__).resolve().parents[2]
NOVA_PYTHON = Path(os.environ.get("PYVFIO_NOVA_PYTHON", ROOT / ".venv-nova/bin/python"))
CHECKER = Path(__file__).with_name("nova_check.py")
ALL = Selection(all_bound=True, text="--all-bound")
#: What a device_spec matches on, which Nova takes out of the tags.
IDS = ("address", "vendor_id", "product_id")
PLACEMENT = nova.NovaOptions(
    resource_class="CUSTOM_PASSTHROUGH",
    traits=("CUSTOM_PYVFIO", "HW_GPU_API_VULKAN"),
    numa_policy="preferred",
    managed=False,
)

#: name -> (host, selection, options)
SCENARIOS: dict[str, tuple[Callable[[Path], Sysfs], Selection, nova.NovaOptions]] = {
    "gpu-with-audio": (gpu_and_audio, ALL, nova.NovaOptions()),
    "gpu-placement": (gpu_and_audio, ALL, PLACEMENT),
    "vfs-and-switch-group": (sriov_vfs, ALL, nova.NovaOptions(numa_policy="required")),
    "vfs-placement": (sriov_vfs, ALL, PLACEMENT),
    "vfs-named": (
        sriov_vfs,
        Selection(devices=("00:02.1", "00:02.2")),
        nova.NovaOptions(names={(0x8086, 0x1520): "igb-vf"}),
    ),
    "pf": (sriov_pf, ALL, nova.NovaOptions()),
    "lab-edu": (lab_edu_bound, ALL, nova.NovaOptions(managed=True)),
}


def host_devices(sysfs: Sysfs) -> list[dict[str, Any]]:
    """Every PCI function of the host as Nova's libvirt driver reports it: a VF names its
    parent (libvirt's phys_function, from ``physfn``), a PF is a device with
    ``sriov_totalvfs`` > 0 (libvirt's virt_functions capability)."""
    out = []
    for d in devices(sysfs):
        rel = f"sys/bus/pci/devices/{d.address}"
        parent = sysfs.link_name(f"{rel}/physfn")
        total = sysfs.read_int(f"{rel}/sriov_totalvfs")
        out.append(
            {
                "address": d.address,
                "vendor_id": f"{d.vendor_id:04x}",
                "product_id": f"{d.device_id:04x}",
                "parent_addr": parent,
                "dev_type": "type-VF" if parent else "type-PF" if total else "type-PCI",
            }
        )
    return out


def _case(name: str, result: nova.NovaExport, sysfs: Sysfs) -> dict[str, Any]:
    lines = result.conf_lines()
    return {
        "name": name,
        "device_spec": [line.split(" = ", 1)[1] for line in lines if line.startswith("device_")],
        "alias": [line.split(" = ", 1)[1] for line in lines if line.startswith("alias")],
        "devices": host_devices(sysfs),
        "resource_class_of": {
            o.address: [result.options.resource_class, *o.device.ids.split(":")]
            for o in result.plan.offers
        },
        "traits_of": {"options": ",".join(result.options.traits)},
    }


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Sysfs]:
    return {name: make(tmp_path_factory.mktemp(name)) for name, (make, _, _) in SCENARIOS.items()}


@pytest.fixture(scope="module")
def exports(hosts: dict[str, Sysfs]) -> dict[str, nova.NovaExport]:
    return {
        name: nova.export(plan(selection, hosts[name]), options)
        for name, (_, selection, options) in SCENARIOS.items()
    }


def _negative_cases(sysfs: Sysfs) -> list[dict[str, Any]]:
    """Entries Nova must refuse or over-match, so the check above can fail."""
    pf = {"address": "0000:00:02.0"}
    vf = {"address": "0000:00:02.1", "vendor_id": "8086", "product_id": "1520"}
    base = {"devices": host_devices(sysfs), "alias": []}
    return [
        {**base, "name": "bad-vendor", "device_spec": [json.dumps({"vendor_id": "10de1"})]},
        {**base, "name": "pf-and-vf", "device_spec": [json.dumps(pf), json.dumps(vf)]},
        {**base, "name": "pf-by-address-only", "device_spec": [json.dumps(pf)]},
        {**base, "name": "bad-alias", "device_spec": [], "alias": ['{"name": "x", "y": 1}']},
    ]


@pytest.fixture(scope="module")
def verdicts(
    exports: dict[str, nova.NovaExport], hosts: dict[str, Sysfs]
) -> dict[str, dict[str, Any]]:
    if not NOVA_PYTHON.exists():
        pytest.skip(f"Nova is not installed at {NOVA_PYTHON}: bash scripts/setup.sh makes it")
    cases = [_case(name, result, hosts[name]) for name, result in exports.items()]
    cases += _negative_cases(hosts["pf"])
    done = subprocess.run(
        [str(NOVA_PYTHON), str(CHECKER)],
        input=json.dumps({"cases": cases}),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return {r["name"]: r for r in json.loads(done.stdout)["results"]}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_nova_accepts_every_entry_and_assigns_exactly_the_offered_devices(
    name: str, exports: dict[str, nova.NovaExport], verdicts: dict[str, dict[str, Any]]
) -> None:
    verdict, result = verdicts[name], exports[name]
    assert verdict["errors"] == []
    assert verdict["assignable"] == [o.address for o in result.plan.offers]
    # Nova keeps the tags as pyvfio wrote them, but for ``managed``: its documented
    # yes/no, which Nova stores as true/false.
    boolean = {"yes": "true", "no": "false"}
    written = [
        {k: boolean.get(v, v) if k == "managed" else v for k, v in spec.items() if k not in IDS}
        for spec in result.device_specs
    ]
    assert verdict["tags"] == written


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_nova_reads_each_alias_as_the_offered_ids_and_device_type(
    name: str, exports: dict[str, nova.NovaExport], verdicts: dict[str, dict[str, Any]]
) -> None:
    result = exports[name]
    expected: dict[str, Any] = {}
    for offer in result.plan.offers:
        spec = {
            "vendor_id": f"{offer.device.vendor_id:04x}",
            "product_id": f"{offer.device.device_id:04x}",
            "dev_type": nova.DEVICE_TYPES[offer.kind],
        }
        if result.options.resource_class:
            spec["resource_class"] = result.options.resource_class
        if result.options.traits:
            spec["traits"] = ",".join(result.options.traits)
        policy = result.options.numa_policy or "legacy"  # Nova's default
        expected[nova.alias_name(offer, result.options)] = {"numa_policy": policy, "specs": [spec]}
    assert verdicts[name]["aliases"] == expected


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_placement_shows_the_resource_class_and_traits_pyvfio_reports(
    name: str, exports: dict[str, nova.NovaExport], verdicts: dict[str, dict[str, Any]]
) -> None:
    verdict, result = verdicts[name], exports[name]
    traits = sorted({*result.options.traits, "COMPUTE_MANAGED_PCI_DEVICE"})
    by_device = {
        dev: (rp["resource_class"], rp["traits"])
        for rp in verdict["placement"].values()
        for dev in rp["devices"]
    }
    reported = result.to_json()["offers"]
    assert by_device == {o["address"]: (o["resource_class"], traits) for o in reported}
    # What pyvfio writes is already what Nova normalizes it to.
    assert verdict["resource_class_of"] == {o["address"]: o["resource_class"] for o in reported}
    assert verdict["traits_of"]["options"] == sorted(result.options.traits)


def test_the_vfs_parent_is_one_placement_provider(verdicts: dict[str, dict[str, Any]]) -> None:
    placement = verdicts["vfs-placement"]["placement"]
    assert placement["node_0000:00:02.0"]["devices"] == ["0000:00:02.1", "0000:00:02.2"]


def test_nova_refuses_what_pyvfio_refuses_and_over_matches_what_it_avoids(
    verdicts: dict[str, dict[str, Any]],
) -> None:
    assert verdicts["bad-vendor"]["errors"][0].startswith("device_spec: PciConfigInvalidSpec")
    assert "alias: PciInvalidAlias" in verdicts["bad-alias"]["errors"][0]
    # A PF with its VF: Placement refuses the pair, as nova.export does before it.
    (error,) = verdicts["pf-and-vf"]["errors"]
    assert error.startswith("placement: PlacementPciDependentDeviceException")
    # A PF named by address alone also takes its VFs: why pyvfio writes the IDs too.
    assert verdicts["pf-by-address-only"]["assignable"] == [
        "0000:00:02.0",
        "0000:00:02.1",
        "0000:00:02.2",
    ]
    assert verdicts["pf"]["assignable"] == ["0000:00:02.0"]


def test_the_conf_snippet_is_what_the_json_says(exports: dict[str, nova.NovaExport]) -> None:
    result = exports["vfs-placement"]
    text = str(result)
    data = result.to_json()
    assert [json.loads(line.split(" = ", 1)[1]) for line in result.conf_lines()] == [
        *data["device_spec"],
        *data["alias"],
    ]
    assert "[pci]\n" in text and text.count("device_spec = ") == 3
    assert '"managed": "no"' in text and "report_in_placement" in text
