"""The served device's configuration space: what the builder lays out is what pyvfio's
parser, and lspci, read back; writes follow the masks a real function has."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyvfio.pci.config import BarType, CapId, PortType, parse_config
from pyvfio.server import BarKind, BarSpec, ConfigSpaceBuilder, EduDevice


def full_builder() -> ConfigSpaceBuilder:
    builder = ConfigSpaceBuilder(
        0x1B36, 0x0010, class_code=0x010802, revision=2, subsystem_vendor_id=0x1AF4,
        subsystem_id=0x1100, interrupt_pin=1,
    )  # fmt: skip
    builder.add_bar(BarSpec(0, 16384, BarKind.MEM64))
    builder.add_bar(BarSpec(2, 4096))
    builder.add_bar(BarSpec(4, 256, BarKind.IO))
    builder.add_pm()
    builder.add_msi(4, is_64bit=True, per_vector_masking=True)
    builder.add_msix(8, table_bar=2, table_offset=0, pba_offset=0x800)
    builder.add_express(max_payload=256, flr=True)
    return builder


def test_parser_reads_back_every_capability() -> None:
    config = full_builder().build()
    assert config.size == 4096
    space = parse_config(bytes(config.data))
    assert not space.problems
    header = space.header
    assert (header.vendor_id, header.device_id, header.revision) == (0x1B36, 0x0010, 2)
    assert header.class_code == 0x010802 and header.interrupt_pin == 1
    assert [cap.id for cap in space.capabilities] == [CapId.PM, CapId.MSI, CapId.MSIX, CapId.EXP]
    pm = space.power_management
    assert pm is not None and pm.version == 3 and pm.no_soft_reset and pm.power_state == 0
    msi = space.msi
    assert msi is not None
    assert (msi.vectors, msi.is_64bit, msi.per_vector_masking, msi.enabled) == (
        4,
        True,
        True,
        False,
    )
    msix = space.msix
    assert msix is not None
    assert (msix.table_size, msix.table_bir, msix.table_offset) == (8, 2, 0)
    assert (msix.pba_bir, msix.pba_offset) == (2, 0x800)
    express = space.express
    assert express is not None and express.port_type == PortType.ENDPOINT
    assert express.flr and express.max_payload == 256 and express.version == 2
    assert space.flr_capable
    assert space.extended_capabilities == ()


def test_bar_sizing_and_types() -> None:
    config = full_builder().build()
    config.write(0x10, b"\xff" * 24)  # all six BAR registers
    raw = [int.from_bytes(config.read(0x10 + 4 * i, 4), "little") for i in range(6)]
    assert raw[0] == 0xFFFFC004  # 16 KiB, 64-bit memory
    assert raw[1] == 0xFFFFFFFF  # its upper half
    assert raw[2] == 0xFFFFF000  # 4 KiB, 32-bit
    assert raw[3] == 0  # not implemented
    assert raw[4] == 0xFFFFFF01  # 256 bytes of I/O
    assert raw[5] == 0
    config.write(0x10, (0xFEB04000).to_bytes(4, "little") + (1).to_bytes(4, "little"))
    bars = parse_config(bytes(config.data)).header.bars
    assert bars[0].type is BarType.MEM64 and bars[0].address == 0x1_FEB04000


def test_writes_touch_only_writable_bits() -> None:
    config = full_builder().build()
    before = bytes(config.data)
    config.write(0, b"\xff" * 4)  # identity
    config.write(0x08, b"\xff" * 4)  # revision, class
    config.write(0x06, b"\xff\xff")  # status
    assert bytes(config.data) == before
    config.write(0x04, b"\xff\xff")
    assert config.command == 0x0547 and config.bus_master and config.intx_disabled
    msi = config.msi
    assert msi is not None
    config.write(msi.offset + 2, b"\xff\xff")
    assert config.msi_enabled and config.u16(msi.offset + 2) & 0x000E == 0x0004  # MMC kept
    msix = config.msix
    assert msix is not None
    config.write(msix.offset + 2, b"\x00\xc0")
    assert config.msix_enabled
    config.reset()
    assert bytes(config.data) == before


@given(
    vectors=st.sampled_from([1, 2, 4, 8, 16, 32]),
    is_64bit=st.booleans(),
    masking=st.booleans(),
    msix=st.integers(1, 2048),
    express=st.booleans(),
    pm=st.booleans(),
)
def test_any_combination_parses_cleanly(
    vectors: int, is_64bit: bool, masking: bool, msix: int, express: bool, pm: bool
) -> None:
    builder = ConfigSpaceBuilder(0x1234, 0x5678)
    builder.add_bar(BarSpec(0, 1 << 16))
    if pm:
        builder.add_pm()
    builder.add_msi(vectors, is_64bit=is_64bit, per_vector_masking=masking)
    builder.add_msix(msix, table_bar=0)
    if express:
        builder.add_express()
    space = parse_config(bytes(builder.build().data))
    assert not space.problems
    assert space.msi is not None and space.msi.vectors == vectors
    assert space.msi.is_64bit == is_64bit and space.msi.per_vector_masking == masking
    assert space.msix is not None and space.msix.table_size == msix
    assert (space.express is not None) == express
    assert (space.power_management is not None) == pm


def test_declarations_are_checked() -> None:
    builder = ConfigSpaceBuilder(0x1234, 0x5678)
    with pytest.raises(ValueError, match="power of two"):
        builder.add_bar(BarSpec(0, 3000))
    with pytest.raises(ValueError, match="BAR5 cannot be one"):
        builder.add_bar(BarSpec(5, 4096, BarKind.MEM64))
    builder.add_bar(BarSpec(0, 4096, BarKind.MEM64))
    with pytest.raises(ValueError, match="overlaps"):
        builder.add_bar(BarSpec(1, 4096))
    with pytest.raises(ValueError, match="1, 2, 4"):
        builder.add_msi(3)
    with pytest.raises(ValueError, match="needs memory BAR2"):
        builder.add_msix(4, table_bar=2)
    with pytest.raises(ValueError, match="does not fit"):
        builder.add_msix(1024, table_bar=0)  # 16 KiB of table in a 4 KiB BAR
    with pytest.raises(ValueError, match="16 bits"):
        ConfigSpaceBuilder(0x12345, 0)


def write_dump(path: Path, data: bytes) -> Path:
    lines = ["00:04.0 Unclassified device: served by pyvfio"]
    for offset in range(0, len(data), 16):
        lines.append(f"{offset:02x}: " + " ".join(f"{b:02x}" for b in data[offset : offset + 16]))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_lspci_reads_the_same_capabilities(tmp_path: Path) -> None:
    lspci = shutil.which("lspci") or "/usr/bin/lspci"
    if not Path(lspci).exists():
        pytest.fail("lspci is the oracle here: apt-get install -y pciutils")
    config = full_builder().build()
    config.write(0x10, (0xFEB04000).to_bytes(4, "little"))
    dump = write_dump(tmp_path / "dump", bytes(config.data))
    out = subprocess.run(
        [lspci, "-F", str(dump), "-vvv"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "Capabilities: [40] Power Management version 3" in out
    assert "Capabilities: [48] MSI: Enable- Count=1/4 Maskable+ 64bit+" in out
    assert "Capabilities: [60] MSI-X: Enable- Count=8 Masked-" in out
    assert "Vector table: BAR=2 offset=00000000" in out
    assert "PBA: BAR=2 offset=00000800" in out
    assert "Capabilities: [6c] Express (v2) Endpoint" in out
    assert "FLReset+" in out and "MaxPayload 256 bytes" in out
    assert "Region 0: Memory at feb04000 (64-bit, non-prefetchable)" in out
    assert "Region 4: I/O ports at <unassigned>" in out


def test_lspci_sees_qemus_edu_in_the_served_edu(tmp_path: Path) -> None:
    lspci = shutil.which("lspci") or "/usr/bin/lspci"
    if not Path(lspci).exists():
        pytest.fail("lspci is the oracle here: apt-get install -y pciutils")
    device = EduDevice()
    dump = write_dump(tmp_path / "dump", bytes(device.config.data))
    out = subprocess.run(
        [lspci, "-F", str(dump), "-vvvnn"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    first = out.splitlines()[0]
    assert "[00ff]" in first and "[1234:11e8] (rev 10)" in first
    assert "Subsystem: Red Hat, Inc." in out and "[1af4:1100]" in out
    assert "Interrupt: pin A" in out
    assert "Capabilities: [40] MSI: Enable- Count=1/1 Maskable- 64bit+" in out
    device.close()
