"""pyvfio vm libvirt: golden XML, checked by libvirt's own schema (virt-xml-validate)."""

from __future__ import annotations

import os
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pyvfio import testing as synthetic
from pyvfio.cli import app
from pyvfio.testing import SimulatedKernel
from pyvfio.vm import libvirt
from pyvfio.vm.qemu import GpuOptions

DATA = Path(__file__).parent.parent / "data" / "vm"
runner = CliRunner()


def golden(name: str, text: str) -> None:
    path = DATA / name
    if os.environ.get("PYVFIO_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"{name} changed; review it, then PYVFIO_UPDATE_GOLDEN=1"


#: The tests that validate their XML need virt-xml-validate (scripts/setup.sh installs it).
needs_validator = pytest.mark.needs_tool("virt-xml-validate", "libvirt-clients")


def validate(xml: str, tmp_path: Path) -> None:
    """Validate a domain with virt-xml-validate (a test that calls this is needs_validator)."""
    path = tmp_path / "domain.xml"
    path.write_text(xml)
    done = subprocess.run(
        ["virt-xml-validate", str(path), "domain"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture
def amd(tmp_path: Path) -> SimulatedKernel:
    return synthetic.amd_desktop(tmp_path / "amd")


@needs_validator
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


@needs_validator
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


@needs_validator
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


#: Markup a ROM path or a domain name could carry into the XML: each must come back,
#: parsed, as the same text in its own attribute or element, with nothing added.
XML_HOSTILE = [
    "'/><hostdev mode='subsystem' type='pci' managed='yes'><source><address bus='0x00'/>",
    '"/><rom file="/etc/shadow',
    "a&amp;b&#10;c",
    "]]><!-- -->",
    "<?xml version='1.0'?>",
    "rom, with, commas",
]


@pytest.mark.parametrize("value", XML_HOSTILE)
def test_hostile_romfile_and_name_stay_text(amd: SimulatedKernel, value: str) -> None:
    gpu = GpuOptions(romfile=value)
    tree = ET.fromstring(f"<devices>{libvirt.hostdevs(['0a:00.0'], gpu=gpu, sysfs=amd)}</devices>")
    assert [el.tag for el in tree] == ["hostdev"]
    assert [rom.get("file") for rom in tree.iter("rom")] == [value]
    dom = ET.fromstring(libvirt.domain(["0a:00.0"], value.replace("/", "_"), gpu=gpu, sysfs=amd))
    assert dom.findtext("name") == value.replace("/", "_")
    assert [rom.get("file") for rom in dom.iter("rom")] == [value]
    assert len(list(dom.iter("hostdev"))) == 1


@pytest.mark.parametrize("value", ["a\x01b", "x\x1b[2J", "del\x7f", "a\nb", ""])
def test_what_xml_cannot_carry_is_refused(amd: SimulatedKernel, value: str) -> None:
    """XML 1.0 has no form at all for most C0 controls: ElementTree would write them raw
    and libvirt refuse the file. Refused before anything is written."""
    with pytest.raises(ValueError, match=r"--romfile .*(control character|is empty)"):
        libvirt.hostdevs(["0a:00.0"], gpu=GpuOptions(romfile=value), sysfs=amd)
    with pytest.raises(ValueError, match=r"control character|not a libvirt domain name"):
        libvirt.domain(["0a:00.0"], f"vm{value}" if value else "", sysfs=amd)
