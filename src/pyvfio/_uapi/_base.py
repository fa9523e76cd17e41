"""What the `_uapi` mirrors share: ioctl encoding, the struct base classes, the registry.

The mirrors target x86_64 Linux.  There every ``__u64`` is 8-byte aligned inside a
struct, so ``__aligned_u64`` (which only matters on i386) is a plain ``c_uint64``
and no structure needs ``_pack_``: neither header has a packed struct.
"""

from __future__ import annotations

import ctypes
import enum
from collections.abc import Iterator, Mapping
from typing import ClassVar, NamedTuple

# <asm-generic/ioctl.h>: nr in bits 0-7, type in 8-15, size in 16-29, direction in 30-31.
_IOC_NRBITS = 8
_IOC_TYPEBITS = 8
_IOC_SIZEBITS = 14
_IOC_NRSHIFT = 0
_IOC_TYPESHIFT = _IOC_NRSHIFT + _IOC_NRBITS
_IOC_SIZESHIFT = _IOC_TYPESHIFT + _IOC_TYPEBITS
_IOC_DIRSHIFT = _IOC_SIZESHIFT + _IOC_SIZEBITS
_IOC_NONE = 0


class IoctlNumber(int):
    """An ioctl request number: an int of its own type so the registry can tell it apart."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"IoctlNumber({int(self):#x})"


class FieldMask(int):
    """The mask of a field the header extracts with a function-like macro.

    ``PCI_ARI_CAP_NFN(x)`` is ``(((x) >> 8) & 0xff)`` in C; its mirror is
    ``FieldMask(0xFF00)``: ``(x & mask) >> shift`` extracts the same bits, and the ABI
    test checks that it does.  An int of its own type so the registry can tell it apart.
    """

    __slots__ = ()

    @property
    def shift(self) -> int:
        """How far the field's lowest bit is from bit 0."""
        return (self & -self).bit_length() - 1

    def __repr__(self) -> str:
        return f"FieldMask({int(self):#x})"


def _IOC(direction: int, type_: int, nr: int, size: int) -> IoctlNumber:
    return IoctlNumber(
        direction << _IOC_DIRSHIFT
        | type_ << _IOC_TYPESHIFT
        | nr << _IOC_NRSHIFT
        | size << _IOC_SIZESHIFT
    )


def _IO(type_: int, nr: int) -> IoctlNumber:
    """``_IO(type, nr)``: VFIO and iommufd encode no size or direction in their ioctls.

    Their structs start with ``argsz``/``size`` instead, so they can grow (vfio.h says so
    above ``VFIO_TYPE``).
    """
    return _IOC(_IOC_NONE, type_, nr, 0)


class Member(NamedTuple):
    """One C member of a mirrored struct, as ctypes lays it out."""

    name: str
    offset: int
    ctype: type


def members(cdata: type[ctypes.Structure | ctypes.Union], base: int = 0) -> Iterator[Member]:
    """The C members of a struct, with the members of anonymous unions in place of the union."""
    anonymous = getattr(cdata, "_anonymous_", ())
    for name, ctype, *_ in cdata._fields_:
        offset = base + getattr(cdata, name).offset
        if name in anonymous and issubclass(ctype, ctypes.Structure | ctypes.Union):
            yield from members(ctype, offset)
        else:
            yield Member(name, offset, ctype)


def _repr(obj: ctypes.Structure | ctypes.Union) -> str:
    fields = ", ".join(
        f"{member.name}={_value_repr(getattr(obj, member.name))}" for member in members(type(obj))
    )
    return f"{type(obj).__name__}({fields})"


def _value_repr(value: object) -> str:
    if isinstance(value, ctypes.Array):
        return f"[{', '.join(_value_repr(item) for item in value)}]"
    return repr(value)


class KernelStruct(ctypes.Structure):
    """Base of every mirrored struct.

    ``_c_name_`` is its C spelling (``struct vfio_device_info``) for the ABI test.  Each
    subclass also annotates its members (``argsz: int``) for type checkers, which cannot
    read ``_fields_``; the test keeps the two in step.
    """

    _c_name_: ClassVar[str]

    def __repr__(self) -> str:
        return _repr(self)


class KernelUnion(ctypes.Union):
    """Base of the anonymous unions inside mirrored structs (they have no C name)."""

    def __repr__(self) -> str:
        return _repr(self)


KernelEnum = type[enum.IntEnum] | type[enum.IntFlag]


class Abi(NamedTuple):
    """Everything a uapi module mirrors, for the ABI test to check against the C headers."""

    structs: tuple[type[KernelStruct], ...]
    ioctls: Mapping[str, IoctlNumber]
    constants: Mapping[str, int | str]
    enums: tuple[KernelEnum, ...]
    field_masks: Mapping[str, FieldMask]

    def names(self) -> frozenset[str]:
        """Every C identifier mirrored: struct tags, macros and enumerators."""
        names = {struct._c_name_.removeprefix("struct ") for struct in self.structs}
        names.update(self.ioctls, self.constants, self.field_masks)
        for family in self.enums:
            names.update(family.__members__)
        return frozenset(names)


def merge_abi(*parts: Abi) -> Abi:
    """One `Abi` holding everything the given ones hold."""
    return Abi(
        tuple(struct for part in parts for struct in part.structs),
        {name: number for part in parts for name, number in part.ioctls.items()},
        {name: value for part in parts for name, value in part.constants.items()},
        tuple(family for part in parts for family in part.enums),
        {name: mask for part in parts for name, mask in part.field_masks.items()},
    )


_KERNEL_PREFIXES = ("VFIO_", "IOMMU_", "IOMMUFD_", "PCI_")


def collect_abi(namespace: Mapping[str, object]) -> Abi:
    """Gather the mirrors a uapi module defines, from its ``globals()``.

    Structs are the `KernelStruct` subclasses with their own ``_c_name_``; ioctls are the
    `IoctlNumber` values; field masks the `FieldMask` values; constants are the other
    ints and strings spelled like kernel macros; enums are the `IntEnum`/`IntFlag`
    classes defined in that module.
    """
    module = namespace["__name__"]
    structs: list[type[KernelStruct]] = []
    ioctls: dict[str, IoctlNumber] = {}
    constants: dict[str, int | str] = {}
    enums: list[KernelEnum] = []
    field_masks: dict[str, FieldMask] = {}
    for name, value in namespace.items():
        if isinstance(value, type):
            if getattr(value, "__module__", None) != module:
                continue
            if issubclass(value, KernelStruct) and "_c_name_" in vars(value):
                structs.append(value)
            elif issubclass(value, enum.IntEnum | enum.IntFlag):
                enums.append(value)
        elif not name.startswith(_KERNEL_PREFIXES):
            continue
        elif isinstance(value, IoctlNumber):
            ioctls[name] = value
        elif isinstance(value, FieldMask):
            field_masks[name] = value
        elif isinstance(value, int | str) and not isinstance(value, bool | enum.Enum):
            constants[name] = value
    return Abi(tuple(structs), ioctls, constants, tuple(enums), field_masks)
