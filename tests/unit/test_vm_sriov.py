"""``vm qemu`` and ``vm libvirt`` with SR-IOV VFs: a port each, and QEMU's vf-token where
the VF's PF is on vfio-pci (on the simulated intel server: PF 00:02.0 on igb, VFs
00:02.1 and 00:02.2 on igbvf)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from pyvfio import testing as synthetic
from pyvfio.cli import app
from pyvfio.testing import SimulatedKernel
from pyvfio.vm import libvirt, qemu
from pyvfio.vm.layout import layout

PF, VF1, VF2 = "0000:00:02.0", "0000:00:02.1", "0000:00:02.2"
TOKEN = "bd8d9d2b-5a5f-4f5a-a211-f591514ba1f3"
QEMU_7_2 = qemu.QemuFeatures(found=True, sandbox=True, drop="-runas")
runner = CliRunner()


@pytest.fixture
def intel(tmp_path: Path) -> SimulatedKernel:
    return synthetic.intel_server(tmp_path / "intel")


def device_args(plan: qemu.QemuPlan) -> list[str]:
    argv = list(plan.argv)
    return [argv[n + 1] for n, a in enumerate(argv) if a == "-device" and "vfio-pci" in argv[n + 1]]


def test_each_vf_gets_a_port_of_its_own_as_function_0(intel: SimulatedKernel) -> None:
    placed = layout([VF1, VF2], intel)
    assert [(d.port, d.function, d.multifunction) for d in placed] == [(1, 0, False), (2, 0, False)]
    assert {d.physical_function for d in placed} == {PF}


def test_vfs_of_a_pf_on_a_host_driver_pass_without_a_token(intel: SimulatedKernel) -> None:
    plan = qemu.build([VF1, VF2], features=QEMU_7_2, sysfs=intel)
    assert all("vf-token" not in arg for arg in device_args(plan))
    with pytest.raises(ValueError, match="--vf-token is for SR-IOV VFs whose PF is on vfio-pci"):
        qemu.build([VF1], vf_token=TOKEN, features=QEMU_7_2, sysfs=intel)


def test_vfs_of_a_pf_on_vfio_pci_get_qemus_vf_token(intel: SimulatedKernel) -> None:
    intel.host.bind(PF, "vfio-pci")
    with pytest.raises(
        ValueError, match=f"{VF1} is a VF of {PF}, which is on vfio-pci.*--vf-token"
    ):
        qemu.build([VF1], features=QEMU_7_2, sysfs=intel)
    plan = qemu.build([VF1, VF2], vf_token=TOKEN.upper(), features=QEMU_7_2, sysfs=intel)
    assert [a.split(",")[-1] for a in device_args(plan)] == [f"vf-token={TOKEN}"] * 2
    with pytest.raises(ValueError, match="is not a UUID"):
        qemu.build([VF1], vf_token="x,host=0000:00:1f.0", features=QEMU_7_2, sysfs=intel)


def test_cli_dry_run_passes_the_token(intel: SimulatedKernel) -> None:
    intel.host.bind(PF, "vfio-pci")
    result = runner.invoke(
        app, ["vm", "qemu", VF1, "--vf-token", TOKEN, "--dry-run", "--root", str(intel.root)]
    )
    assert result.exit_code == 0, result.output
    assert f"vf-token={TOKEN}" in result.stdout


def test_libvirt_passes_vfs_and_refuses_one_that_needs_a_token(intel: SimulatedKernel) -> None:
    text = libvirt.hostdevs([VF1], sysfs=intel)
    assert 'function="0x1"' in text and "<hostdev" in text
    intel.host.bind(PF, "vfio-pci")
    with pytest.raises(ValueError, match="a libvirt <hostdev> has no setting for one"):
        libvirt.hostdevs([VF1], sysfs=intel)
