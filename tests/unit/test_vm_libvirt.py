"""pyvfio vm libvirt: golden XML, checked by libvirt's own schema (virt-xml-validate)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pyvfio.cli import app
from pyvfio.host import synthetic
from pyvfio.host.synthetic import SimulatedKernel
from pyvfio.vm import libvirt
from pyvfio.vm.qemu import GpuOptions

DATA = Path(__file__).parent.parent / "data" / "vm"
runner = CliRunner()


def golden(name: str, text: str) -> None:
    path = DATA / name
    if os.environ.get("PYVFIO_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"{name} changed; review it, then PYVFIO_UPDATE_GOLDEN=1"


def validate(xml: str, tmp_path: Path) -> None:
    """virt-xml-validate from libvirt-clients (scripts/setup.sh installs it)."""
    if shutil.which("virt-xml-validate") is None:
        pytest.skip("virt-xml-validate is missing: apt-get install libvirt-clients")
    path = tmp_path / "domain.xml"
    path.write_text(xml)
    done = subprocess.run(
        ["virt-xml-validate", str(path), "domain"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture
def amd(tmp_path: Path) -> SimulatedKernel:
    return synthetic.amd_desktop(tmp_path / "amd")


def test_gpu_audio_domain_is_valid_and_keeps_one_slot(amd: SimulatedKernel, tmp_path: Path) -> None:
    xml = libvirt.domain(
        ["0a:00.0", "0a:00.1"],
        "gaming",
        memory="8G",
        hugepages=True,
        gpu=GpuOptions(romfile="/var/lib/libvirt/gtx1080.rom"),
        sysfs=amd,
    )
    golden("libvirt-gpu-audio.xml", xml)
    validate(xml, tmp_path)


def test_hostdev_elements_are_valid_inside_a_domain(tmp_path: Path) -> None:
    kernel = synthetic.intel_server(tmp_path / "intel")
    elements = libvirt.hostdevs(["03:00.0", "04:00.0", "00:02.1"], sysfs=kernel)
    golden("libvirt-hostdevs.xml", elements)
    skeleton = libvirt.domain(["00:02.2"], "wrap", sysfs=kernel)
    validate(skeleton.replace("</devices>", elements + "</devices>"), tmp_path)


def test_multifunction_elements_say_to_share_a_slot(amd: SimulatedKernel) -> None:
    text = libvirt.hostdevs(["0a:00.0", "0a:00.1"], sysfs=amd)
    assert "functions of one device" in text
    assert text.count("<hostdev ") == 2


def test_bad_input(amd: SimulatedKernel) -> None:
    with pytest.raises(ValueError, match="x-vga"):
        libvirt.hostdevs(["0a:00.0"], gpu=GpuOptions(x_vga=True), sysfs=amd)
    with pytest.raises(ValueError, match="domain name"):
        libvirt.domain(["0a:00.0"], "a/b", sysfs=amd)


def test_cli_domain(tmp_path: Path) -> None:
    synthetic.q35_lab(tmp_path / "lab")
    args = [
        "vm",
        "libvirt",
        "00:11.0",
        "01:00.0",
        "--domain",
        "lab",
        "--root",
        str(tmp_path / "lab"),
    ]
    done = runner.invoke(app, args)
    assert done.exit_code == 0, done.output
    assert "<name>lab</name>" in done.stdout
    validate(done.stdout, tmp_path)
    done = runner.invoke(app, ["vm", "libvirt", "00:18.0", "--root", str(tmp_path / "lab")])
    assert done.exit_code == 2 and "bridge" in done.output
