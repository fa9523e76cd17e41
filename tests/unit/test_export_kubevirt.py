"""``pyvfio export kubevirt``: the CR patch against KubeVirt's schema; PCI_RESOURCE_ variables.

The schema (tests/data/kubevirt/permitted-host-devices.schema.json) is the part of
KubeVirt's CRD that the export writes, with a few stricter rules that each say why;
no KubeVirt runs here, so the API server's and virt-handler's own checks are not run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from export_hosts import gpu_and_audio, lab_edu_bound, sriov_vfs
from pyvfio.cli import app
from pyvfio.fleet import kubevirt
from pyvfio.fleet.offer import Selection, plan

runner = CliRunner()
SCHEMA = json.loads(
    (Path(__file__).parents[1] / "data/kubevirt/permitted-host-devices.schema.json").read_text()
)
ALL = Selection(all_bound=True, text="--all-bound")


def validate(patch: Any) -> None:
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    jsonschema.validate(patch, SCHEMA, cls=jsonschema.Draft7Validator)


def cli(*args: str) -> Any:
    done = runner.invoke(app, ["export", "kubevirt", *args])
    assert done.exit_code == 0, done.stderr
    return done


@pytest.mark.parametrize("make", [gpu_and_audio, sriov_vfs, lab_edu_bound])
def test_every_patch_is_valid_against_kubevirts_schema(make: Any, tmp_path: Path) -> None:
    host = make(tmp_path)
    as_json = json.loads(cli("--all-bound", "--json", "--root", str(host.root)).stdout)
    as_yaml = yaml.safe_load(cli("--all-bound", "--root", str(host.root)).stdout)
    assert as_yaml == as_json["patch"]  # the YAML says the same as the JSON
    validate(as_json["patch"])
    entries = as_json["patch"]["spec"]["configuration"]["permittedHostDevices"]["pciHostDevices"]
    assert entries == sorted(entries, key=lambda e: e["pciVendorSelector"])


def test_the_schema_can_refuse() -> None:
    good = {"pciVendorSelector": "10DE:1B80", "resourceName": "nvidia.com/PCI_10DE_1B80"}
    validate({"spec": {"configuration": {"permittedHostDevices": {"pciHostDevices": [good]}}}})
    for bad in (
        {"resourceName": "nvidia.com/X"},  # no selector: the CRD requires one
        {**good, "externalResourceProvider": "false"},  # a string, not a boolean
        {**good, "pciVendorSelector": "10de-1b80"},
        {**good, "resourceName": "GPU"},  # no domain: not an extended resource
        {**good, "resourcename": "x"},  # a typo the API server would drop in silence
    ):
        patch = {"spec": {"configuration": {"permittedHostDevices": {"pciHostDevices": [bad]}}}}
        with pytest.raises(jsonschema.ValidationError):
            validate(patch)


def test_one_entry_per_vendor_device_with_this_nodes_devices(tmp_path: Path) -> None:
    host = sriov_vfs(tmp_path)
    result = kubevirt.export(plan(ALL, host), sysfs=host)
    assert [(r.pci_vendor_selector, r.resource_name, r.addresses) for r in result.resources] == [
        ("144D:A808", "samsung.com/PCI_144D_A808", ("0000:03:00.0",)),
        ("8086:1520", "intel.com/PCI_8086_1520", ("0000:00:02.1", "0000:00:02.2")),
    ]
    # 04:00.0 [8086:1533] rides with 03:00.0 (one group): no entry, so nothing to warn of.
    assert result.warnings == ()


def test_kubevirt_would_count_a_device_of_the_same_id_that_is_not_offered(tmp_path: Path) -> None:
    host = sriov_vfs(tmp_path)
    result = kubevirt.export(plan(Selection(devices=("00:02.1",)), host), sysfs=host)
    (warning,) = result.warnings
    assert warning.startswith(
        "0000:00:02.2 [8086:1520] is on vfio-pci but not offered (group 6): KubeVirt "
        "advertises every 8086:1520 on vfio-pci"
    )
    done = runner.invoke(
        app, ["export", "kubevirt", "--device", "00:02.1", "--root", str(host.root)]
    )
    assert done.exit_code == 0 and f"# warning: {warning}" in done.stdout
    assert f"warning: {warning}" in done.stderr


def test_a_variant_driver_is_not_kubevirts(tmp_path: Path) -> None:
    host = sriov_vfs(tmp_path)
    host.host.bind("0000:00:02.1", "mlx5_vfio_pci")
    result = kubevirt.export(plan(Selection(devices=("00:02.1",)), host), sysfs=host)
    assert result.warnings[0].startswith(
        "0000:00:02.1 is on mlx5_vfio_pci: KubeVirt's own device plugin takes only vfio-pci"
    )


def test_the_pci_resource_variable_is_kubevirts() -> None:
    """KubeVirt's util.ResourceNameToEnvVar: upper case, '/' and '.' made '_', '-' kept
    (its own tests use example.org/fake-device1); the value is the BDFs, comma-separated."""
    assert kubevirt.resource_env("nvidia.com/GP104GL_TESLA_P4", ["0000:65:00.0"]) == (
        "PCI_RESOURCE_NVIDIA_COM_GP104GL_TESLA_P4",
        "0000:65:00.0",
    )
    assert kubevirt.resource_env("example.org/fake-device1", ["0000:81:01.0", "0000:81:01.1"]) == (
        "PCI_RESOURCE_EXAMPLE_ORG_FAKE-DEVICE1",
        "0000:81:01.0,0000:81:01.1",
    )
    assert kubevirt.resource_env("intel.com/PCI_8086_1520", []) == (
        "PCI_RESOURCE_INTEL_COM_PCI_8086_1520",
        "",
    )


def test_names_and_domains(tmp_path: Path) -> None:
    host = gpu_and_audio(tmp_path)
    data = json.loads(
        cli(
            "--all-bound",
            "--json",
            "--name",
            "10de:1b80=example.com/gtx1080",
            "--root",
            str(host.root),
        ).stdout
    )
    (resource,) = data["resources"]
    assert resource["resourceName"] == "example.com/gtx1080"
    assert resource["env"] == {
        "name": "PCI_RESOURCE_EXAMPLE_COM_GTX1080",
        "value_when_all_allocated": "0000:0a:00.0",
    }
    data = json.loads(
        cli("--all-bound", "--json", "--domain", "gpu.example.org", "--root", str(host.root)).stdout
    )
    assert data["resources"][0]["resourceName"] == "gpu.example.org/PCI_10DE_1B80"
    for args, start in {
        ("--name", "10de:1b80=gtx"): "error: resource name 'gtx': write DOMAIN/NAME",
        ("--name", "10de:1b80=kubernetes.io/gpu"): "error: resource name 'kubernetes.io/gpu'",
        ("--name", "10de=x.com/y"): "error: --name '10de': write VENDOR:DEVICE in hex",
        ("--domain", "Example.COM"): "error: --domain 'Example.COM': write a DNS domain",
    }.items():
        done = runner.invoke(
            app, ["export", "kubevirt", "--all-bound", *args, "--root", str(host.root)]
        )
        assert done.exit_code == 2 and done.stdout == ""
        assert done.stderr.startswith(start) and len(done.stderr.strip().splitlines()) == 1


def test_two_kinds_of_device_never_share_a_resource_name(tmp_path: Path) -> None:
    host = sriov_vfs(tmp_path)
    names = {(0x8086, 0x1520): "intel.com/nic", (0x144D, 0xA808): "intel.com/nic"}
    with pytest.raises(
        ValueError, match=r"resource intel\.com/nic would stand for 144D:A808 and 8086:1520"
    ):
        kubevirt.export(plan(ALL, host), kubevirt.KubevirtOptions(names=names), host)
