"""``pyvfio reset-method`` and ``pyvfio rom`` on hand-made hosts: the journal and restore,
the bus-reset neighbours ``show`` lists, the ROM's images and every way a dump refuses
(the real kernel's side is tests/lab/test_reset_method_rom.py)."""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pyvfio.cli import app
from pyvfio.host import bind, details, journal, resetmethod, rom
from pyvfio.host.journal import JournalError
from pyvfio.host.resetmethod import ResetMethodError, set_reset_method
from pyvfio.host.rom import NoRomError, RomError, dump_rom, parse_images
from pyvfio.host.sysfs import Sysfs
from pyvfio.testing import SimulatedKernel, amd_desktop, intel_server

runner = CliRunner()
NIC = "0000:03:00.0"  # intel_server: an endpoint below a switch port, "flr bus"


class ResetKernel(SimulatedKernel):
    """The PCI core's reset_method store (drivers/pci/pci-sysfs.c): ``default`` gives the
    probed list back, a method the device does not support is EINVAL."""

    def __init__(self, kernel: SimulatedKernel) -> None:
        super().__init__(kernel.host, kernel.defaults)
        self.probed = {a: resetmethod.reset_methods(a, self) for a in self.pci_devices()}

    def write_attr(self, rel: str, value: str, *, timeout: float | None = None) -> None:
        if not rel.endswith("/reset_method"):
            super().write_attr(rel, value, timeout=timeout)
            return
        self.writes.append((rel, value))
        addr = rel.split("/")[-2]
        probed = self.probed[addr]
        names = value.split()
        if names == ["default"]:
            names = list(probed)
        elif any(n not in probed for n in names):
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        self.path(rel).write_text(" ".join(names) + "\n")


@pytest.fixture
def kernel(tmp_path: Path) -> ResetKernel:
    return ResetKernel(intel_server(tmp_path / "intel"))


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    where = tmp_path / "state"
    monkeypatch.setenv(journal.STATE_DIR_ENV, str(where))
    return where


def methods_of(kernel: Sysfs, addr: str = NIC) -> tuple[str, ...]:
    return resetmethod.reset_methods(addr, kernel)


# -- reset-method -----------------------------------------------------------------------------


def test_reset_method_is_journaled_shown_and_restored(kernel: ResetKernel, state: Path) -> None:
    change = set_reset_method(NIC, ["bus"], sysfs=kernel)
    assert (change.before, change.after, change.original) == (
        ("flr", "bus"),
        ("bus",),
        ("flr", "bus"),
    )
    assert methods_of(kernel) == ("bus",)
    assert resetmethod.read_originals() == {NIC: ("flr", "bus")}
    assert "'pyvfio restore 0000:03:00.0' puts back flr bus" in str(change)
    # A second change keeps the first original: restore goes back to the kernel's list.
    set_reset_method(NIC, ["flr"], sysfs=kernel)
    assert resetmethod.read_originals() == {NIC: ("flr", "bus")}
    done = bind.restore([NIC], sysfs=kernel)
    assert methods_of(kernel) == ("flr", "bus")
    assert [(r.changed, r.rebound, r.reset_method) for r in done] == [(True, False, ("flr", "bus"))]
    assert str(done[0]) == f"{NIC}: reset_method back to flr bus"
    assert resetmethod.read_originals() == {}


def test_restore_all_gives_back_reset_methods_and_drivers(kernel: ResetKernel, state: Path) -> None:
    set_reset_method(NIC, ["bus"], sysfs=kernel)
    set_reset_method("0000:00:02.0", ["flr"], sysfs=kernel)  # unchanged: nothing journaled
    assert resetmethod.read_originals() == {NIC: ("flr", "bus")}
    done = bind.restore(all_devices=True, sysfs=kernel)
    assert [(r.address, r.reset_method) for r in done] == [(NIC, ("flr", "bus"))]
    assert methods_of(kernel) == ("flr", "bus")
    assert bind.restore(all_devices=True, sysfs=kernel) == []


def test_default_gives_the_kernels_list_back_and_leaves_nothing_to_undo(
    kernel: ResetKernel, state: Path
) -> None:
    set_reset_method(NIC, ["bus", "flr"], sysfs=kernel)
    change = set_reset_method(NIC, ["default"], sysfs=kernel)
    assert change.after == ("flr", "bus") and change.original is None
    assert resetmethod.read_originals() == {}
    assert [r.changed for r in bind.restore([NIC], sysfs=kernel)] == [False]


def test_show_says_what_reset_method_was_before_pyvfio_changed_it(
    kernel: ResetKernel, state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_reset_method(NIC, ["bus"], sysfs=kernel)
    monkeypatch.setattr(Sysfs, "is_live", property(lambda self: True))  # its journal is ours
    info = details.describe(NIC, kernel)
    assert info.reset.kernel == ("bus",) and info.reset.original == ("flr", "bus")
    assert "kernel offers: bus (set by pyvfio reset-method, was flr bus)" in str(info)
    assert json.loads(json.dumps(info.to_json()))["reset"]["original"] == ["flr", "bus"]


@pytest.mark.parametrize(
    ("methods", "says"),
    [
        (["pm"], "0000:03:00.0 does not offer the reset method 'pm': choose among flr bus"),
        (["warm"], "'warm' (not a reset method the kernel knows)"),
        (["flr", "flr"], "'flr' is named twice"),
        (["default", "flr"], "'default' gives 0000:03:00.0 the kernel's own list: name it alone"),
    ],
)
def test_bad_reset_methods_change_nothing(
    kernel: ResetKernel, state: Path, methods: list[str], says: str
) -> None:
    with pytest.raises(ResetMethodError) as caught:
        set_reset_method(NIC, methods, sysfs=kernel)
    assert says in str(caught.value)
    assert methods_of(kernel) == ("flr", "bus") and not kernel.writes
    assert not (state / resetmethod.RESET_JOURNAL_NAME).exists()


def test_a_list_the_kernel_refuses_is_one_line_and_nothing_is_left_to_undo(
    kernel: ResetKernel, state: Path
) -> None:
    kernel.probed[NIC] = ("flr",)  # the kernel's probe says flr only; sysfs said more
    with pytest.raises(ResetMethodError, match="the kernel refused reset methods 'bus'"):
        set_reset_method(NIC, ["bus"], sysfs=kernel)
    assert methods_of(kernel) == ("flr", "bus") and resetmethod.read_originals() == {}


def test_a_device_without_reset_method(kernel: ResetKernel, state: Path) -> None:
    with pytest.raises(
        ResetMethodError, match=re.escape("0000:00:05.0 has no reset_method attribute")
    ):
        set_reset_method("0000:00:05.0", ["flr"], sysfs=kernel)


def test_reset_method_cli_bad_input_is_one_line_exit_2(state: Path) -> None:
    done = runner.invoke(app, ["reset-method", "0000:zz:00.0", "flr"])
    assert done.exit_code == 2
    assert len(done.output.strip().splitlines()) == 1 and "0000:zz:00.0" in done.output


@pytest.mark.parametrize(
    "text",
    [
        "{",
        "[]",
        '{"version": 1, "devices": {"00:03.0": ["flr"]}}',
        '{"version": 1, "devices": {"0000:03:00.0": "flr"}}',
        '{"version": 1, "devices": {"0000:03:00.0": ["flr; rm -rf /"]}}',
        '{"version": 1, "devices": {"0000:03:00.0": []}}',
    ],
)
def test_a_damaged_reset_journal_is_refused_and_nothing_changes(
    kernel: ResetKernel, state: Path, text: str
) -> None:
    state.mkdir()
    (state / resetmethod.RESET_JOURNAL_NAME).write_text(text)
    with pytest.raises(JournalError, match="cannot read the reset-method journal"):
        bind.restore(all_devices=True, sysfs=kernel)
    with pytest.raises(JournalError):
        set_reset_method(NIC, ["bus"], sysfs=kernel)
    assert not kernel.writes


@pytest.mark.parametrize("crash_after", [1, 2])
def test_a_crash_after_any_step_is_undone_by_restore(
    kernel: ResetKernel, state: Path, tmp_path: Path, crash_after: int
) -> None:
    """Killed right after the journal write (1) or the reset_method write (2): restore
    puts the kernel's list back either way."""
    script = (
        "import sys\n"
        "from pyvfio.host.resetmethod import set_reset_method\n"
        "from pyvfio.host.sysfs import Sysfs\n"
        "set_reset_method(sys.argv[1], ['bus'], sysfs=Sysfs(sys.argv[2], confined=False))\n"
    )
    env = {**os.environ, journal.CRASH_ENV: str(crash_after)}
    done = subprocess.run(
        [sys.executable, "-c", script, NIC, str(kernel.root)], env=env, check=False
    )
    assert done.returncode == -9
    assert resetmethod.read_originals() == {NIC: ("flr", "bus")}
    assert methods_of(kernel) == (("flr", "bus") if crash_after == 1 else ("bus",))
    bind.restore(all_devices=True, sysfs=kernel)
    assert methods_of(kernel) == ("flr", "bus") and resetmethod.read_originals() == {}


def test_bus_reset_takes_every_function_below_the_parent_bridge(tmp_path: Path) -> None:
    intel = intel_server(tmp_path / "intel")
    # Below the root port 00:01.0: the switch's ports and both endpoints behind them.
    assert resetmethod.bus_reset_affected("0000:01:00.0", intel) == (
        "0000:02:08.0",
        "0000:02:10.0",
        "0000:03:00.0",
        "0000:04:00.0",
    )
    shown = details.describe("0000:01:00.0", intel).reset.bus_peers  # what show prints
    assert shown == resetmethod.bus_reset_affected("0000:01:00.0", intel)
    assert resetmethod.bus_reset_affected(NIC, intel) == ()  # alone on its bus
    assert resetmethod.bus_reset_affected("0000:00:02.0", intel) == ()  # the root bus
    amd = amd_desktop(tmp_path / "amd")
    gpu = details.describe("0a:00.0", amd)
    assert gpu.reset.bus_peers == ("0000:0a:00.1",) and "also resets 0000:0a:00.1" in str(gpu)


# -- rom --------------------------------------------------------------------------------------


def rom_image(code_type: int, length: int, *, last: bool, efi: bool = False) -> bytes:
    """An option ROM image as the PCI Firmware spec lays it out (5.1)."""
    image = bytearray(length)
    image[0:2] = b"\x55\xaa"
    image[2] = length // 512
    if efi:
        image[0x04:0x06] = (0x0EF1).to_bytes(2, "little")
        image[0x0C:0x0E] = (0x8664).to_bytes(2, "little")
    image[0x18:0x1A] = (0x40).to_bytes(2, "little")
    pcir = bytearray(0x1C)
    pcir[0:4] = b"PCIR"
    pcir[4:6] = (0x8086).to_bytes(2, "little")
    pcir[6:8] = (0x10D3).to_bytes(2, "little")
    pcir[0x10:0x12] = (length // 512).to_bytes(2, "little")
    pcir[0x14] = code_type
    pcir[0x15] = 0x80 if last else 0
    image[0x40 : 0x40 + len(pcir)] = pcir
    return bytes(image)


TWO_IMAGES = rom_image(0, 0x1000, last=False) + rom_image(3, 0x2000, last=True, efi=True)


class RomKernel(SimulatedKernel):
    """Writes to ``rom`` recorded, not stored (the kernel's ``rom`` takes 1 and 0)."""

    def write_attr(self, rel: str, value: str, *, timeout: float | None = None) -> None:
        if rel.endswith("/rom"):
            self.writes.append((rel.rsplit("/", 2)[-2], value))
            return
        super().write_attr(rel, value, timeout=timeout)


@pytest.fixture
def roms(tmp_path: Path) -> RomKernel:
    base = amd_desktop(tmp_path / "amd")
    kernel = RomKernel(base.host, base.defaults)
    kernel.host.write(f"{kernel.host.real['0000:0a:00.0']}/rom", TWO_IMAGES)
    return kernel


def test_parse_images_reads_the_chain() -> None:
    images = parse_images(TWO_IMAGES)
    assert [(i.offset, i.length, i.code_name, i.last) for i in images] == [
        (0, 0x1000, "x86 BIOS", False),
        (0x1000, 0x2000, "EFI (x64)", True),
    ]
    assert (images[0].vendor_id, images[0].device_id) == (0x8086, 0x10D3)


def test_dump_writes_the_rom_and_switches_it_off_again(roms: RomKernel, tmp_path: Path) -> None:
    out = tmp_path / "gpu.rom"
    dump = dump_rom("0a:00.0", str(out), sysfs=roms)
    assert out.read_bytes() == TWO_IMAGES and dump.size == len(TWO_IMAGES)
    assert roms.writes == [("0000:0a:00.0", "1"), ("0000:0a:00.0", "0")]
    assert [i.code_name for i in dump.images] == ["x86 BIOS", "EFI (x64)"]
    assert f"romfile={out}" in str(dump) and dump.to_json()["images"][1]["efi_machine"] == 0x8664


def test_an_existing_file_is_kept_unless_forced(roms: RomKernel, tmp_path: Path) -> None:
    out = tmp_path / "gpu.rom"
    out.write_bytes(b"mine")
    with pytest.raises(
        ValueError, match=re.escape("gpu.rom exists: name another file, or --force")
    ):
        dump_rom("0a:00.0", str(out), sysfs=roms)
    assert out.read_bytes() == b"mine" and roms.writes == []  # the ROM was never switched on
    dump_rom("0a:00.0", str(out), force=True, sysfs=roms)
    assert out.read_bytes() == TWO_IMAGES
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".gpu")) == []


def test_a_bad_signature_writes_nothing_and_switches_the_rom_off(
    roms: RomKernel, tmp_path: Path
) -> None:
    roms.host.write(f"{roms.host.real['0000:0a:00.0']}/rom", b"\xff\xff" + TWO_IMAGES[2:])
    out = tmp_path / "gpu.rom"
    with pytest.raises(RomError, match="not an option ROM: it starts with ffff, not the 55aa"):
        dump_rom("0a:00.0", str(out), sysfs=roms)
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["amd"]
    assert roms.writes[-1] == ("0000:0a:00.0", "0")


def test_a_failed_read_still_switches_the_rom_off(roms: RomKernel, tmp_path: Path) -> None:
    rom_path = roms.path(f"{roms.host.real['0000:0a:00.0']}/rom")
    rom_path.unlink()
    rom_path.mkdir()  # reading it fails (EISDIR), as a ROM the kernel cannot map does
    with pytest.raises(RomError, match=re.escape("reading 0000:0a:00.0's ROM failed")):
        dump_rom("0a:00.0", str(tmp_path / "gpu.rom"), sysfs=roms)
    assert roms.writes == [("0000:0a:00.0", "1"), ("0000:0a:00.0", "0")]
    assert not (tmp_path / "gpu.rom").exists()


def test_switching_the_rom_on_refused(roms: RomKernel, tmp_path: Path) -> None:
    def refuse(rel: str, value: str, *, timeout: float | None = None) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    roms.write_attr = refuse  # type: ignore[method-assign]
    with pytest.raises(RomError, match="needs root"):
        dump_rom("0a:00.0", str(tmp_path / "gpu.rom"), sysfs=roms)
    assert [p.name for p in tmp_path.iterdir()] == ["amd"]


def test_a_device_without_rom(roms: RomKernel, tmp_path: Path) -> None:
    with pytest.raises(NoRomError, match=re.escape("0000:0a:00.1 has no option ROM")):
        dump_rom("0a:00.1", str(tmp_path / "audio.rom"), sysfs=roms)
    assert isinstance(NoRomError("x"), ValueError)  # exit 2 in the CLI
    assert roms.writes == []


def test_an_output_folder_is_refused(roms: RomKernel, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is a folder"):
        dump_rom("0a:00.0", str(tmp_path), sysfs=roms)


def test_rom_cli_bad_input_is_one_line_exit_2(tmp_path: Path) -> None:
    done = runner.invoke(app, ["rom", "0000:zz:00.0", "--out", str(tmp_path / "x.rom")])
    assert done.exit_code == 2 and len(done.output.strip().splitlines()) == 1
    assert not (tmp_path / "x.rom").exists()


def test_show_gives_the_rom_size_and_bar(roms: RomKernel) -> None:
    gpu = details.describe("0a:00.0", roms)
    assert gpu.rom.present and gpu.rom.size == len(TWO_IMAGES)  # the rom file's size
    audio = details.describe("0a:00.1", roms)
    assert not audio.rom.present and "option ROM: none" in str(audio)
    assert json.loads(json.dumps(gpu.to_json()))["rom"]["size"] == len(TWO_IMAGES)


def test_show_on_a_snapshot_takes_the_rom_size_from_resource(tmp_path: Path) -> None:
    amd = amd_desktop(tmp_path / "amd")  # no rom file, as in a snapshot
    gpu = details.describe("0a:00.0", amd)
    assert (gpu.rom.present, gpu.rom.size) == (True, 512 << 10)
    assert "option ROM: 512 KiB" in str(gpu)


def test_rom_info_reads_the_rom_bar() -> None:
    info = rom.RomInfo(True, 256 << 10, 0xFEB40000, False)
    assert str(info) == "256 KiB, ROM BAR at 0xfeb40000 [disabled]"
