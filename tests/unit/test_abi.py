"""The ctypes mirrors in `pyvfio._uapi` against the kernel's own C headers.

A C program generated from `pyvfio._uapi.ABI` prints, as gcc sees them in
``<linux/vfio.h>``, ``<linux/iommufd.h>`` and ``<linux/pci_regs.h>``: each struct's size
and alignment, each member's offset, size and signedness, each ioctl number, macro and
enumerator, and what each field-extracting macro (``PCI_ARI_CAP_NFN(x)``) makes of a few
register values. Every difference from the Python side fails, and all of them are listed.

The headers come from `kernel_headers`, which fetches Debian's bookworm-backports
``linux-libc-dev`` when the system's lack iommufd (bookworm's own are 6.1).  Nothing
here skips: without gcc or headers the test fails and says why.
"""

from __future__ import annotations

import ctypes
import inspect
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pyvfio._uapi import ABI, Abi, FieldMask, KernelStruct, iommufd, vfio
from pyvfio._uapi._base import members
from pyvfio.lab.headers import UAPI_HEADERS, KernelHeaders, kernel_headers

# ---- the Python side, flattened -------------------------------------------------------

_INT_CODES = "bBhHiIlLqQ"  # ctypes' _type_ codes of the fixed-size integers


def offset_of(struct: type[KernelStruct], name: str) -> int:
    (member,) = (member for member in members(struct) if member.name == name)
    return member.offset


def _element(ctype: type) -> type:
    """The element type of an array type, the type itself otherwise."""
    if issubclass(ctype, ctypes.Array):
        element: type = ctype._type_  # type: ignore[assignment]  # typeshed: a method
        return element
    return ctype


def _is_int(ctype: type) -> bool:
    code = getattr(ctype, "_type_", None)
    return issubclass(ctype, ctypes._SimpleCData) and isinstance(code, str) and code in _INT_CODES


def _is_flexible(ctype: type) -> bool:
    return issubclass(ctype, ctypes.Array) and ctypes.sizeof(ctype) == 0


def _python_member_size(ctype: type) -> int:
    # C has no sizeof for a flexible array member: both sides give its element's size.
    return ctypes.sizeof(_element(ctype) if _is_flexible(ctype) else ctype)


def _python_signed(ctype: type) -> int | None:
    element = _element(ctype)
    return int(str(getattr(element, "_type_", "")).islower()) if _is_int(element) else None


# ---- the C side -----------------------------------------------------------------------


def _c_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def generate_c(abi: Abi) -> str:
    """A C program printing, tab separated, what the headers say of everything in ``abi``."""
    lines = [
        "#include <stddef.h>",
        "#include <stdio.h>",
        *(f"#include <{header}>" for header in UAPI_HEADERS),
        "",
        "#define SIGNED(expr) ((__typeof__(expr))-1 < 0)",
        "",
        "int main(void)",
        "{",
    ]
    for struct in abi.structs:
        c_type = struct._c_name_
        lines.append(
            f'\tprintf("S\\t%s\\t%zu\\t%zu\\n", {_c_string(c_type)}, '
            f"sizeof({c_type}), _Alignof({c_type}));"
        )
        for member in members(struct):
            member_expr = f"(({c_type} *)0)->{member.name}"
            is_array = issubclass(member.ctype, ctypes.Array)
            element_expr = f"{member_expr}[0]" if is_array else member_expr
            size_expr = element_expr if _is_flexible(member.ctype) else member_expr
            signed_expr = (
                "-1" if _python_signed(member.ctype) is None else f"SIGNED({element_expr})"
            )
            lines.append(
                f'\tprintf("F\\t%s\\t%s\\t%zu\\t%zu\\t%d\\n", {_c_string(c_type)}, '
                f'"{member.name}", offsetof({c_type}, {member.name}), sizeof({size_expr}), '
                f"(int)({signed_expr}));"
            )
    values: dict[str, int | str] = {**abi.ioctls, **abi.constants}
    for family in abi.enums:
        values.update({name: member.value for name, member in family.__members__.items()})
    for name, value in values.items():
        if isinstance(value, str):
            lines.append(f'\tprintf("T\\t%s\\t%s\\n", "{name}", {name});')
        else:
            lines.append(
                f'\tprintf("C\\t%s\\t%llu\\t%zu\\n", "{name}", '
                f"(unsigned long long)({name}), sizeof({name}));"
            )
    for name, mask in abi.field_masks.items():
        for register in field_probes(mask):
            lines.append(
                f'\tprintf("X\\t%s\\t%llu\\t%llu\\n", "{name}", {register}ULL, '
                f"(unsigned long long)({name}({register}U)));"
            )
    lines += ["\treturn 0;", "}", ""]
    return "\n".join(lines)


# Register values each field macro is applied to: all ones, alternate bits, and each
# mask and its complement (below), enough to tell any two contiguous masks apart.
FIELD_PROBES = (0xFFFFFFFF, 0x55555555, 0xAAAAAAAA, 0x12345678)


def field_probes(mask: FieldMask) -> tuple[int, ...]:
    return (*FIELD_PROBES, int(mask), ~mask & 0xFFFFFFFF)


@dataclass
class CLayout:
    """What the compiled program printed."""

    structs: dict[str, tuple[int, int]] = field(default_factory=dict)  # size, alignment
    fields: dict[tuple[str, str], tuple[int, int, int]] = field(default_factory=dict)
    integers: dict[str, tuple[int, int]] = field(default_factory=dict)  # value, sizeof
    strings: dict[str, str] = field(default_factory=dict)
    extracted: dict[tuple[str, int], int] = field(default_factory=dict)  # (macro, x): F(x)


def parse_output(output: str) -> CLayout:
    layout = CLayout()
    for line in output.splitlines():
        kind, *rest = line.split("\t")
        if kind == "S":
            layout.structs[rest[0]] = (int(rest[1]), int(rest[2]))
        elif kind == "F":
            layout.fields[rest[0], rest[1]] = (int(rest[2]), int(rest[3]), int(rest[4]))
        elif kind == "C":
            layout.integers[rest[0]] = (int(rest[1]), int(rest[2]))
        elif kind == "T":
            layout.strings[rest[0]] = rest[1]
        elif kind == "X":
            layout.extracted[rest[0], int(rest[1])] = int(rest[2])
    return layout


@pytest.fixture(scope="module")
def headers() -> KernelHeaders:
    return kernel_headers()


@pytest.fixture(scope="module")
def c_layout(headers: KernelHeaders, tmp_path_factory: pytest.TempPathFactory) -> CLayout:
    gcc = shutil.which("gcc")
    assert gcc, "gcc is needed to check the ABI mirrors: apt-get install gcc"
    work: Path = tmp_path_factory.mktemp("abi")
    source = work / "abi.c"
    source.write_text(generate_c(ABI))
    program = work / "abi"
    compiled = subprocess.run(
        [gcc, "-std=gnu11", "-Wall", *headers.cflags, "-o", str(program), str(source)],
        capture_output=True,
        text=True,
        check=False,
    )
    errors = [line for line in compiled.stderr.splitlines() if "error" in line]
    assert compiled.returncode == 0, (
        f"the ABI check program does not compile against {headers}: a mirrored name is "
        f"missing from the headers, or misspelled ({source}):\n" + "\n".join(errors[:50])
    )
    ran = subprocess.run([str(program)], capture_output=True, text=True, check=True)
    return parse_output(ran.stdout)


# ---- the checks -----------------------------------------------------------------------


def fail_on(mismatches: list[str | None], headers: KernelHeaders) -> None:
    found = [mismatch for mismatch in mismatches if mismatch]
    if found:
        pytest.fail(
            f"{len(found)} mismatches against {headers}:\n" + "\n".join(found), pytrace=False
        )


def test_struct_layouts_match_c(c_layout: CLayout, headers: KernelHeaders) -> None:
    mismatches: list[str | None] = []
    for struct in ABI.structs:
        c_name = struct._c_name_
        python = (ctypes.sizeof(struct), ctypes.alignment(struct))
        if c_layout.structs[c_name] != python:
            mismatches.append(
                f"{c_name}: (sizeof, alignof) {python} in Python, {c_layout.structs[c_name]} in C"
            )
        for member in members(struct):
            python_member = (
                member.offset,
                _python_member_size(member.ctype),
                _python_signed(member.ctype),
            )
            offset, size, signed = c_layout.fields[c_name, member.name]
            c_member = (offset, size, None if signed == -1 else signed)
            if python_member != c_member:
                mismatches.append(
                    f"{c_name}.{member.name}: (offset, size, signed) {python_member} in Python, "
                    f"{c_member} in C"
                )
    fail_on(mismatches, headers)


def _integer_mismatch(name: str, python: int, c_value: int, c_size: int) -> str | None:
    # Compare the bit patterns at the width of the C expression: (1 << 31) is INT_MIN in
    # C and 0x80000000 in Python, and both are the same __u32 flag.  (The C side printed
    # the value widened to 64 bits, so a negative int arrives sign-extended.)
    bits = 8 * c_size
    fits = -(1 << (bits - 1)) <= python < (1 << bits)
    if fits and python % (1 << bits) == c_value % (1 << bits):
        return None
    return f"{name}: {python:#x} in Python, {c_value:#x} ({c_size}-byte) in C"


def test_ioctl_numbers_match_c(c_layout: CLayout, headers: KernelHeaders) -> None:
    mismatches = [
        _integer_mismatch(name, number, *c_layout.integers[name])
        for name, number in ABI.ioctls.items()
    ]
    fail_on(mismatches, headers)


def test_constants_match_c(c_layout: CLayout, headers: KernelHeaders) -> None:
    mismatches: list[str | None] = []
    for name, value in ABI.constants.items():
        if isinstance(value, str):
            if c_layout.strings[name] != value:
                mismatches.append(f"{name}: {value!r} in Python, {c_layout.strings[name]!r} in C")
        else:
            mismatches.append(_integer_mismatch(name, value, *c_layout.integers[name]))
    fail_on(mismatches, headers)


def test_enum_members_match_c(c_layout: CLayout, headers: KernelHeaders) -> None:
    mismatches = [
        _integer_mismatch(f"{family.__name__}.{name}", member.value, *c_layout.integers[name])
        for family in ABI.enums
        for name, member in family.__members__.items()
    ]
    fail_on(mismatches, headers)


def test_field_masks_extract_what_the_macros_do(c_layout: CLayout, headers: KernelHeaders) -> None:
    mismatches: list[str | None] = []
    for name, mask in ABI.field_masks.items():
        for register in field_probes(mask):
            python = (register & mask) >> mask.shift
            c_value = c_layout.extracted[name, register]
            if python != c_value:
                mismatches.append(
                    f"{name}({register:#010x}): {python:#x} by the mask {mask:#x} in Python, "
                    f"{c_value:#x} in C"
                )
    fail_on(mismatches, headers)


def test_headers_are_recent_enough(headers: KernelHeaders) -> None:
    major, minor, *_ = (int(part) for part in headers.linux_version.split("."))
    assert (major, minor) >= (6, 12), f"{headers}: the mirrors follow Linux 6.12"


# ---- the Python side on its own -------------------------------------------------------


def test_annotations_name_every_member() -> None:
    """The typing annotations of each struct agree with its ``_fields_``.

    ``__reserved``-style members go unannotated: Python would mangle the name.
    """
    mismatches = []
    for struct in ABI.structs:
        annotations = inspect.get_annotations(struct)
        expected = {m.name: m for m in members(struct) if not m.name.startswith("__")}
        if set(annotations) != set(expected):
            mismatches.append(
                f"{struct.__name__}: annotates {sorted(annotations)}, has {sorted(expected)}"
            )
            continue
        mismatches += [
            f"{struct.__name__}.{name}: annotated {annotations[name]!r}, holds an int"
            for name, member in expected.items()
            if _is_int(member.ctype) and annotations[name] != "int"
        ]
    assert not mismatches, "\n".join(mismatches)


def test_every_struct_is_registered_once() -> None:
    c_names = [struct._c_name_ for struct in ABI.structs]
    assert len(c_names) == len(set(c_names))
    for module in (vfio, iommufd):
        defined = {
            value
            for value in vars(module).values()
            if isinstance(value, type)
            and issubclass(value, KernelStruct)
            and value.__module__ == module.__name__
        }
        assert defined == set(module.ABI.structs)
    for struct in ABI.structs:
        assert struct._c_name_ == f"struct {struct.__name__}"


# What a VFIO userspace library needs, by kernel name: dropping one fails here.
NEEDED_NAMES = """
VFIO_API_VERSION VFIO_TYPE1_IOMMU VFIO_TYPE1v2_IOMMU VFIO_NOIOMMU_IOMMU VFIO_UNMAP_ALL
VFIO_UPDATE_VADDR VFIO_GET_API_VERSION VFIO_CHECK_EXTENSION VFIO_SET_IOMMU
vfio_group_status VFIO_GROUP_FLAGS_VIABLE VFIO_GROUP_GET_STATUS VFIO_GROUP_SET_CONTAINER
VFIO_GROUP_UNSET_CONTAINER VFIO_GROUP_GET_DEVICE_FD vfio_device_info VFIO_DEVICE_FLAGS_PCI
VFIO_DEVICE_FLAGS_CAPS VFIO_DEVICE_GET_INFO vfio_info_cap_header
vfio_device_info_cap_pci_atomic_comp VFIO_DEVICE_INFO_CAP_PCI_ATOMIC_COMP vfio_region_info
VFIO_REGION_INFO_FLAG_MMAP VFIO_DEVICE_GET_REGION_INFO vfio_region_sparse_mmap_area
vfio_region_info_cap_sparse_mmap vfio_region_info_cap_type VFIO_REGION_INFO_CAP_SPARSE_MMAP
VFIO_REGION_INFO_CAP_TYPE VFIO_REGION_INFO_CAP_MSIX_MAPPABLE VFIO_PCI_BAR0_REGION_INDEX
VFIO_PCI_CONFIG_REGION_INDEX VFIO_PCI_VGA_REGION_INDEX VFIO_PCI_NUM_REGIONS
VFIO_PCI_INTX_IRQ_INDEX VFIO_PCI_MSIX_IRQ_INDEX VFIO_PCI_REQ_IRQ_INDEX VFIO_PCI_NUM_IRQS
vfio_irq_info VFIO_IRQ_INFO_EVENTFD VFIO_DEVICE_GET_IRQ_INFO vfio_irq_set
VFIO_IRQ_SET_DATA_EVENTFD VFIO_IRQ_SET_ACTION_TRIGGER VFIO_DEVICE_SET_IRQS VFIO_DEVICE_RESET
vfio_pci_dependent_device vfio_pci_hot_reset_info VFIO_DEVICE_GET_PCI_HOT_RESET_INFO
vfio_pci_hot_reset VFIO_DEVICE_PCI_HOT_RESET VFIO_PCI_HOT_RESET_FLAG_DEV_ID
VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED VFIO_PCI_DEVID_OWNED VFIO_PCI_DEVID_NOT_OWNED
vfio_device_feature VFIO_DEVICE_FEATURE_PROBE VFIO_DEVICE_FEATURE vfio_iommu_type1_info
VFIO_IOMMU_INFO_PGSIZES VFIO_IOMMU_GET_INFO vfio_iova_range
vfio_iommu_type1_info_cap_iova_range vfio_iommu_type1_info_cap_migration
vfio_iommu_type1_info_dma_avail VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE
VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL vfio_iommu_type1_dma_map
VFIO_DMA_MAP_FLAG_READ VFIO_IOMMU_MAP_DMA vfio_bitmap vfio_iommu_type1_dma_unmap
VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP VFIO_DMA_UNMAP_FLAG_ALL VFIO_DMA_UNMAP_FLAG_VADDR
VFIO_IOMMU_UNMAP_DMA vfio_iommu_type1_dirty_bitmap vfio_iommu_type1_dirty_bitmap_get
VFIO_IOMMU_DIRTY_PAGES VFIO_IOMMU_ENABLE VFIO_IOMMU_DISABLE vfio_device_bind_iommufd
VFIO_DEVICE_BIND_IOMMUFD vfio_device_attach_iommufd_pt VFIO_DEVICE_ATTACH_IOMMUFD_PT
vfio_device_detach_iommufd_pt VFIO_DEVICE_DETACH_IOMMUFD_PT
iommu_destroy IOMMU_DESTROY iommu_ioas_alloc IOMMU_IOAS_ALLOC iommu_iova_range
iommu_ioas_iova_ranges IOMMU_IOAS_IOVA_RANGES iommu_ioas_allow_iovas IOMMU_IOAS_ALLOW_IOVAS
iommu_ioas_map IOMMU_IOAS_MAP IOMMU_IOAS_MAP_FIXED_IOVA IOMMU_IOAS_MAP_WRITEABLE
IOMMU_IOAS_MAP_READABLE iommu_ioas_copy IOMMU_IOAS_COPY iommu_ioas_unmap IOMMU_IOAS_UNMAP
iommu_option IOMMU_OPTION IOMMU_OPTION_RLIMIT_MODE IOMMU_OPTION_HUGE_PAGES
IOMMU_OPTION_OP_SET IOMMU_OPTION_OP_GET iommu_vfio_ioas IOMMU_VFIO_IOAS iommu_hw_info
IOMMU_GET_HW_INFO iommu_hw_info_vtd iommu_hwpt_alloc IOMMU_HWPT_ALLOC
"""


def test_registry_holds_what_a_vfio_library_needs() -> None:
    assert sorted(set(NEEDED_NAMES.split()) - ABI.names()) == []


def test_known_values() -> None:
    assert vfio.VFIO_TYPE == ord(";") == 0x3B
    assert vfio.VFIO_BASE == 100
    assert vfio.VFIO_GET_API_VERSION == 0x3B64
    assert vfio.VFIO_CHECK_EXTENSION == 0x3B65
    assert vfio.VFIO_DEVICE_GET_INFO == 0x3B6B
    assert vfio.VFIO_IOMMU_MAP_DMA == 0x3B71
    assert vfio.VFIO_DEVICE_BIND_IOMMUFD == 0x3B76
    assert iommufd.IOMMU_DESTROY == 0x3B80
    assert iommufd.IOMMU_IOAS_MAP == 0x3B85
    assert iommufd.IOMMU_GET_HW_INFO == 0x3B8A
    assert vfio.VfioExtension.VFIO_TYPE1v2_IOMMU.value == 3
    assert vfio.VfioPciRegionIndex.VFIO_PCI_CONFIG_REGION_INDEX.value == 7
    assert vfio.VfioIrqSetFlag.VFIO_IRQ_SET_ACTION_TYPE_MASK.value == 0b111000
    # The type1 IOMMU reuses device ioctl numbers; the fd they go to tells them apart.
    assert vfio.VFIO_IOMMU_GET_INFO == vfio.VFIO_DEVICE_GET_PCI_HOT_RESET_INFO


def test_known_layouts() -> None:
    assert ctypes.sizeof(vfio.vfio_device_info) == 24
    assert ctypes.sizeof(vfio.vfio_region_info) == 32
    assert offset_of(vfio.vfio_region_info, "size") == 16
    assert ctypes.sizeof(vfio.vfio_irq_set) == 20  # data[] adds nothing
    assert offset_of(vfio.vfio_irq_set, "data") == 20
    assert ctypes.sizeof(vfio.vfio_pci_hot_reset_info) == 12
    assert ctypes.sizeof(vfio.vfio_pci_dependent_device) == 8
    assert ctypes.sizeof(vfio.vfio_iommu_type1_info_cap_migration) == 32
    assert ctypes.sizeof(iommufd.iommu_ioas_map) == 40
    assert ctypes.sizeof(iommufd.iommu_hw_info) == 40
    assert offset_of(iommufd.iommu_hw_info, "out_capabilities") == 32


def test_flags_keep_bits_the_kernel_adds_later() -> None:
    flags = vfio.VfioRegionInfoFlag(0b1111 | 1 << 20)
    assert vfio.VfioRegionInfoFlag.VFIO_REGION_INFO_FLAG_MMAP in flags
    assert int(flags) == 0b1111 | 1 << 20


def test_anonymous_union_members_share_storage() -> None:
    device = vfio.vfio_pci_dependent_device(devid=0xFFFFFFFF, segment=1, bus=2, devfn=0x18)
    assert device.group_id == 0xFFFFFFFF
    assert repr(device) == (
        "vfio_pci_dependent_device(group_id=4294967295, devid=4294967295, "
        "segment=1, bus=2, devfn=24)"
    )
