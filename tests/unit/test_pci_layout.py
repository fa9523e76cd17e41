"""The capability tables read and write the same bits: what the parser decodes from any
register contents, the server's config builder encodes back, and the parser reads again."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyvfio._uapi import pci_regs
from pyvfio.pci.capabilities import CAP_LAYOUTS, MSI_LAYOUT, Capability
from pyvfio.pci.config import parse_config
from pyvfio.pci.extended import EXT_CAP_LAYOUTS, ExtendedCapability
from pyvfio.pci.layout import Bits, Layout, Register
from pyvfio.server.config import ConfigSpaceBuilder

LAYOUTS = [*CAP_LAYOUTS.values(), *EXT_CAP_LAYOUTS.values()]


def _own_fields(layout: Layout) -> set[str]:
    base = Capability if layout in CAP_LAYOUTS.values() else ExtendedCapability
    inherited = {f.name for f in dataclasses.fields(base)}
    return {f.name for f in dataclasses.fields(layout.cls)} - inherited


def _more_fields(layout: Layout) -> set[str]:
    return set(layout.more(bytes(4096), 0)) if layout.more else set()


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda layout: layout.cls.__name__)
def test_a_table_describes_every_field_of_its_dataclass(layout: Layout) -> None:
    assert set(layout.fields) | _more_fields(layout) == _own_fields(layout)
    assert not set(layout.fields) & _more_fields(layout)
    for register in layout.registers:
        assert register.offset + register.width <= layout.size
        masks = [register.mask_of(bits) for bits in register.fields]
        assert all(0 < mask <= register.all_bits for mask in masks)
        for i, mask in enumerate(masks):  # no two fields of a register share a bit
            assert not any(mask & other for other in masks[i + 1 :]), register.offset


def _built(layout: Layout, values: dict[str, Any]) -> bytes:
    builder = ConfigSpaceBuilder(0x1234, 0x5678)
    builder.add_express()  # extended capabilities need the 4 KiB space of an express device
    if layout in CAP_LAYOUTS.values():
        builder.add_capability(layout, **values)
    else:
        builder.add_extended_capability(layout, **values)
    return bytes(builder.build().data)


def _found(layout: Layout, data: bytes) -> Capability | ExtendedCapability:
    space = parse_config(data)
    assert not space.problems
    if layout in CAP_LAYOUTS.values():
        found: Capability | ExtendedCapability | None = space.find_all(layout.id)[-1]
    else:
        found = space.find_extended(layout.id)
    assert found is not None and type(found) is layout.cls, found  # the layout's own class
    return found


@pytest.mark.parametrize(
    "layout", [lay for lay in LAYOUTS if lay.fields], ids=lambda layout: layout.cls.__name__
)
@given(registers=st.binary(min_size=64, max_size=64))
def test_what_is_decoded_builds_back_to_the_same_capability(
    layout: Layout, registers: bytes
) -> None:
    data = bytes(4) + registers  # the header of the capability, then its registers
    values = layout.decode(data, 0)
    for name in _more_fields(layout):
        del values[name]
    given_values = {name: value for name, value in values.items() if value is not None}
    found = _found(layout, _built(layout, given_values))
    assert {name: getattr(found, name) for name in values} == values


def test_writable_bits_follow_the_values() -> None:
    builder = ConfigSpaceBuilder(0x1234, 0x5678)
    offset = builder.add_capability(MSI_LAYOUT, vectors=4, is_64bit=False, per_vector_masking=True)
    writable = builder.build().writable
    mask = offset + pci_regs.PCI_MSI_MASK_32
    assert int.from_bytes(writable[mask : mask + 4], "little") == 0xF  # one bit per vector
    data = offset + pci_regs.PCI_MSI_DATA_32
    assert int.from_bytes(writable[data : data + 2], "little") == 0xFFFF


def test_a_value_that_does_not_fit_its_bits_is_refused() -> None:
    builder = ConfigSpaceBuilder(0x1234, 0x5678)
    with pytest.raises(ValueError, match="version 8 does not fit"):
        builder.add_capability(CAP_LAYOUTS[pci_regs.PCI_CAP_ID_PM], version=8)
    with pytest.raises(ValueError, match="address 4294967296 does not fit"):
        builder.add_capability(MSI_LAYOUT, is_64bit=False, address=1 << 32)
    with pytest.raises(ValueError, match="has no field colour"):
        builder.add_capability(MSI_LAYOUT, colour=1)


def test_a_field_is_read_one_way() -> None:
    with pytest.raises(ValueError, match="read two ways"):
        Layout(
            Capability,
            0x7F,
            Register(2, 2, Bits("x", 0x1)),
            Register(4, 2, Bits("x", 0x1, MSI_LAYOUT.registers[0].fields[0].codec)),
        )
