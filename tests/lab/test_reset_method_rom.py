"""pyvfio reset-method, rom and show on the real kernel: e1000e's option ROM (QEMU loads
iPXE's efi-e1000e.rom into its ROM BAR), the kernel's reset_method, kill -9 and restore."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from pyvfio.cli import app
from pyvfio.host import details, journal, resetmethod
from pyvfio.host.rom import parse_images
from pyvfio.host.sysfs import LIVE
from pyvfio.lab.pytest_plugin import LabFixture

from .labhelp import main_lab

pytestmark = main_lab
runner = CliRunner()
#: Where Debian's ipxe-qemu puts the ROM QEMU gives its e1000e (the guest shares the host's /).
IPXE_E1000E = Path("/usr/lib/ipxe/qemu/efi-e1000e.rom")


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    where = tmp_path / "state"
    monkeypatch.setenv(journal.STATE_DIR_ENV, str(where))
    return where


def cli(*args: str) -> Result:
    return runner.invoke(app, list(args))


def test_rom_dumps_e1000e_option_rom_and_switches_it_off(lab: LabFixture, tmp_path: Path) -> None:
    nic = lab.address("e1000e")
    shown = json.loads(cli("show", nic, "--json").stdout)["rom"]
    assert shown["present"] and shown["size"] >= 64 << 10 and not shown["bar_enabled"]
    out = tmp_path / "e1000e.rom"
    done = cli("rom", nic, "--out", str(out), "--json")
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    data = out.read_bytes()
    assert data[:2] == b"\x55\xaa" and report["size"] == len(data) <= shown["size"]
    images = parse_images(data)
    assert images[0].vendor_id == 0x8086 and images[-1].last
    assert [i["code_name"] for i in report["images"]] == [i.code_name for i in images]
    if IPXE_E1000E.exists():  # the very ROM QEMU loaded, as far as the kernel returns it
        assert IPXE_E1000E.read_bytes()[: len(data)] == data
    after = details.describe(nic).rom
    assert after.bar_enabled is False  # "echo 0 > rom" ran


def test_rom_refuses_an_existing_file_unless_forced(lab: LabFixture, tmp_path: Path) -> None:
    nic = lab.address("e1000e")
    out = tmp_path / "mine.rom"
    out.write_bytes(b"keep me")
    done = cli("rom", nic, "--out", str(out))
    assert done.exit_code == 2 and "exists" in done.output and out.read_bytes() == b"keep me"
    assert cli("rom", nic, "--out", str(out), "--force").exit_code == 0
    assert out.read_bytes()[:2] == b"\x55\xaa"


def test_rom_of_a_device_without_one_is_one_line_exit_2(lab: LabFixture, tmp_path: Path) -> None:
    edu = lab.address("edu")
    assert json.loads(cli("show", edu, "--json").stdout)["rom"]["present"] is False
    done = cli("rom", edu, "--out", str(tmp_path / "edu.rom"))
    assert done.exit_code == 2 and "has no option ROM" in done.output
    assert len(done.output.strip().splitlines()) == 1 and not (tmp_path / "edu.rom").exists()


def test_reset_method_is_set_shown_and_restored(lab: LabFixture, state: Path) -> None:
    nic = lab.address("e1000e")
    kernel = resetmethod.reset_methods(nic)
    assert kernel, "the kernel offers e1000e@rootport at least a bus reset"
    keep = kernel[-1]
    done = cli("reset-method", nic, keep, "--json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["after"] == [keep]
    assert resetmethod.reset_methods(nic) == (keep,)
    shown = json.loads(cli("show", nic, "--json").stdout)["reset"]
    assert shown["kernel"] == [keep] and shown["original"] == list(kernel)
    restored = cli("restore", nic, "--json")
    assert restored.exit_code == 0, restored.output
    assert json.loads(restored.stdout)["devices"][0]["reset_method"] == list(kernel)
    assert resetmethod.reset_methods(nic) == kernel


def test_reset_method_bad_input_changes_nothing(lab: LabFixture, state: Path) -> None:
    nic = lab.address("e1000e")
    kernel = resetmethod.reset_methods(nic)
    for bad in (["warm"], ["default", "bus"], [kernel[0], kernel[0]]):
        done = cli("reset-method", nic, *bad)
        assert done.exit_code == 2, (bad, done.output)
        assert len(done.output.strip().splitlines()) == 1
    assert resetmethod.reset_methods(nic) == kernel
    assert resetmethod.read_originals() == {}


def test_a_killed_reset_method_is_undone_by_restore_all(lab: LabFixture, state: Path) -> None:
    nic = lab.address("e1000e")
    kernel = resetmethod.reset_methods(nic)
    env = {**os.environ, journal.CRASH_ENV: "2"}  # after the write to reset_method
    done = subprocess.run(
        [sys.executable, "-m", "pyvfio", "reset-method", nic, kernel[-1]],
        env=env,
        capture_output=True,
        check=False,
    )
    assert done.returncode == -9
    assert resetmethod.reset_methods(nic) == (kernel[-1],)
    assert cli("restore", "--all").exit_code == 0
    assert resetmethod.reset_methods(nic) == kernel


def test_show_lists_what_a_bus_reset_takes_along(lab: LabFixture) -> None:
    """edu@switch: a bus reset of the switch's upstream port resets its downstream port
    and the edu below it; the edu alone on its bus takes nothing along."""
    edu = lab.addresses("edu")[1]
    real = LIVE.realpath(f"sys/bus/pci/devices/{edu}") or ""
    downstream, upstream = real.split("/")[-2], real.split("/")[-3]
    assert details.describe(edu).reset.bus_peers == ()
    assert details.describe(upstream).reset.bus_peers == (downstream, edu)
    assert f"a bus reset also resets {downstream}, {edu}" in cli("show", upstream).output
