"""One function per VFIO/iommufd ioctl: plain values in, plain values out.

This is the only module that issues ioctls, and the one place where an errno
becomes a pyvfio exception (pyroute2's ``IoctlEthtool.ioctl``, pyusb's ``_check``):
:func:`call` for every ioctl, :func:`open_node` for opening a VFIO or iommufd node,
and :func:`os_error` for the other system calls the core makes on a device (``mmap``
of a region, ``pread``/``pwrite`` at its offset), which `Region` hands it. (A
failed allocation of DMA memory is Python's ``MemoryError``, raised in `pyvfio.dma`;
the vfio-user client maps its socket's errors in `pyvfio.vfio_user.client`.)

The libc ``ioctl`` is called through ctypes rather than
``fcntl.ioctl`` because VFIO returns new file descriptors as the ioctl's *return
value* (``VFIO_GROUP_GET_DEVICE_FD``), which ``fcntl.ioctl`` drops when it is given
a buffer. The DMA map and unmap ioctls, which a driver may issue thousands of times a
second and which return nothing but their struct, go through ``fcntl.ioctl`` on an
argument struct made once per container or IOAS (`Type1Dma`, `IoasDma`): a quarter
of a map's cost was building a ctypes struct from keywords and the ctypes foreign
call. Their errno becomes an exception in the same `_error`.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno as E
import fcntl
import os
import resource
import struct
from collections.abc import Callable
from typing import Any

from pyvfio._uapi import iommufd as ufd
from pyvfio._uapi import vfio as v
from pyvfio.errors import (
    MemlockLimitError,
    NoInterruptRemappingError,
    PermissionDeniedError,
    UnsupportedError,
    VfioError,
    VfTokenError,
)
from pyvfio.info import (
    DependentDevice,
    DeviceInfo,
    InfoCapability,
    IommuInfo,
    IovaRange,
    IrqInfo,
    RegionInfo,
    SparseArea,
)

_libc = ctypes.CDLL(None, use_errno=True)
_libc_ioctl = _libc.ioctl
_libc_ioctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)
_libc_ioctl.restype = ctypes.c_int
_fcntl_ioctl = fcntl.ioctl  # the DMA hot path's: looked up once

Arg = Any  # a ctypes object passed by reference, an int passed by value, or bytes

# The kernel's answers that mean "not this device/kernel": ENOTTY for an ioctl the
# driver does not know, EINVAL/ENODEV for a feature or index it lacks.
_UNSUPPORTED = {E.ENOTTY, E.EOPNOTSUPP}


def call(fd: int, request: int, arg: Arg, name: str, device: str | None = None) -> int:
    """``ioctl(fd, request, arg)``; the ioctl's return value, or a VfioError.

    ctypes objects (structures, arrays, c_int32) go by address; ints by value.
    EINTR is retried (a signal during a long MAP_DMA pin), everything else is
    raised with its errno, the ioctl's kernel name and the device.
    """
    ptr = arg if isinstance(arg, int) else ctypes.addressof(arg)
    while True:
        ret: int = _libc_ioctl(fd, request, ptr)
        if ret >= 0:
            return ret
        err = ctypes.get_errno()
        if err != E.EINTR:
            raise _error(err, name, device)


def _error(err: int, name: str, device: str | None) -> VfioError:
    where = f" on {device}" if device else ""
    text = f"{name}{where} failed: {os.strerror(err)} (errno {err})"
    if err in _UNSUPPORTED:
        return UnsupportedError(
            f"{text}; this kernel or device does not support it",
            errno=err,
            ioctl=name,
            device=device,
        )
    if err == E.EPERM and name in ("VFIO_SET_IOMMU", "VFIO_GROUP_SET_CONTAINER"):
        # vfio_iommu_type1_attach_group: -EPERM when the platform cannot remap
        # interrupts and allow_unsafe_interrupts is off (the kernel logs
        # "No interrupt remapping support. Use the module param ...").
        return NoInterruptRemappingError(
            f"{text}: the IOMMU has no interrupt remapping, so vfio_iommu_type1 "
            "refuses the group (dmesg: 'No interrupt remapping support'); enable it in "
            "firmware/with intremap=on, or accept the risk with the module parameter "
            "vfio_iommu_type1.allow_unsafe_interrupts=1",
            errno=err,
            ioctl=name,
            device=device,
        )
    if err == E.EPERM and name == "VFIO_DEVICE_BIND_IOMMUFD":
        # Access was checked when the cdev was opened. iommufd_device_bind answers
        # -EPERM when the group has another DMA owner (iommu_device_claim_dma_owner)
        # or cannot isolate MSI while iommufd.allow_unsafe_interrupts is off.
        return VfioError(
            f"{text}: the device's IOMMU group has another owner (a kernel driver on a "
            "member, another iommufd or a type1 container: pyvfio ls), or it cannot "
            "isolate MSI (no interrupt remapping; iommufd.allow_unsafe_interrupts=1 "
            "accepts that risk)",
            errno=err,
            ioctl=name,
            device=device,
        )
    if err in (E.EACCES, E.EPERM):
        return PermissionDeniedError(
            f"{text}; run as root or get access with 'pyvfio grant'",
            errno=err,
            ioctl=name,
            device=device,
        )
    return VfioError(text, errno=err, ioctl=name, device=device)


def open_node(path: str, flags: int = os.O_RDWR | os.O_CLOEXEC) -> int:
    """Open a VFIO or iommufd node; a PermissionDeniedError names its owner and mode."""
    try:
        return os.open(path, flags)
    except PermissionError as err:
        try:
            st = os.stat(path)
            owner = f"owned by uid {st.st_uid} gid {st.st_gid}, mode {st.st_mode & 0o777:o}"
        except OSError:
            owner = "owner unknown"
        raise PermissionDeniedError(
            f"cannot open {path} ({owner}): run as root, or give this user the node "
            "(pyvfio grant BDF --user NAME)",
            errno=err.errno or E.EACCES,
            device=path,
        ) from err
    except OSError as err:
        # EBUSY: a VFIO group opens once (vfio_group_fops_open), so another process or
        # Iommu holds it; Iommu.open names that. Never a bare OSError past this layer.
        raise VfioError(
            f"cannot open {path}: {err.strerror}", errno=err.errno or 0, device=path
        ) from err


def close_node(fd: int) -> None:
    """Close a node's fd; an error is dropped (the fd is gone whatever close answers)."""
    with contextlib.suppress(OSError):
        os.close(fd)


def os_error(err: OSError, doing: str, device: str | None = None) -> VfioError:
    """The `VfioError` for a system call on a device other than an ioctl (``mmap`` of
    a region, ``pread``/``pwrite`` at its offset, opening a node): ``doing`` says what
    failed ("reading 4 bytes at 0x10 of BAR0 of 0000:00:10.0"), the errno goes with it."""
    return VfioError(f"{doing} failed: {err.strerror}", errno=err.errno or 0, device=device)


# -- capability chains ----------------------------------------------------------------

_CAP_HEADER = ctypes.sizeof(v.vfio_info_cap_header)


def _walk_caps(buf: bytes, first: int) -> tuple[InfoCapability, ...]:
    """Decode an INFO buffer's capability chain; stop at a loop or a bad offset."""
    caps: list[InfoCapability] = []
    seen: set[int] = set()
    offset = first
    while offset and offset not in seen and offset + _CAP_HEADER <= len(buf):
        seen.add(offset)
        hdr = v.vfio_info_cap_header.from_buffer_copy(buf, offset)
        end = hdr.next if hdr.next > offset else len(buf)
        caps.append(InfoCapability(hdr.id, hdr.version, offset, bytes(buf[offset:end])))
        offset = hdr.next
    return tuple(caps)


def _info_with_caps(
    fd: int, request: int, struct: type[Any], name: str, device: str | None, **fields: int
) -> tuple[Any, bytes]:
    """Call an INFO ioctl twice if needed: first to learn ``argsz``, then with room for caps."""
    info = struct(argsz=ctypes.sizeof(struct), **fields)
    call(fd, request, info, name, device)
    if info.argsz <= ctypes.sizeof(struct):
        return info, bytes(info)
    buf = (ctypes.c_uint8 * info.argsz)()
    head = struct.from_buffer(buf)
    head.argsz = info.argsz
    for key, value in fields.items():
        setattr(head, key, value)
    call(fd, request, buf, name, device)
    return struct.from_buffer_copy(buf), bytes(buf)


# -- container and group --------------------------------------------------------------


def get_api_version(container: int) -> int:
    return call(container, v.VFIO_GET_API_VERSION, 0, "VFIO_GET_API_VERSION")


def check_extension(container: int, extension: int) -> bool:
    return call(container, v.VFIO_CHECK_EXTENSION, extension, "VFIO_CHECK_EXTENSION") > 0


def set_iommu(container: int, iommu_type: int) -> None:
    call(container, v.VFIO_SET_IOMMU, iommu_type, "VFIO_SET_IOMMU")


def group_get_status(group: int, device: str | None = None) -> v.VfioGroupFlag:
    status = v.vfio_group_status(argsz=ctypes.sizeof(v.vfio_group_status))
    call(group, v.VFIO_GROUP_GET_STATUS, status, "VFIO_GROUP_GET_STATUS", device)
    return v.VfioGroupFlag(status.flags)


def group_set_container(group: int, container: int, device: str | None = None) -> None:
    fd = ctypes.c_int32(container)
    call(group, v.VFIO_GROUP_SET_CONTAINER, fd, "VFIO_GROUP_SET_CONTAINER", device)


def group_unset_container(group: int, device: str | None = None) -> None:
    call(group, v.VFIO_GROUP_UNSET_CONTAINER, 0, "VFIO_GROUP_UNSET_CONTAINER", device)


def group_get_device_fd(group: int, address: str, vf_token: str | None = None) -> int:
    """The device's fd; ``vf_token`` (a UUID's 36 characters) goes in the name, as
    vfio_pci_core_match reads it: ``"0000:04:10.0 vf_token=bd8d9d2b-..."``."""
    text = address if vf_token is None else f"{address} vf_token={vf_token}"
    name = ctypes.create_string_buffer(text.encode())
    try:
        return call(group, v.VFIO_GROUP_GET_DEVICE_FD, name, "VFIO_GROUP_GET_DEVICE_FD", address)
    except VfioError as err:
        raise _vf_token_error(err, address, vf_token) from err


def _vf_token_error(err: VfioError, address: str, vf_token: str | None) -> VfioError:
    """vfio_pci_validate_vf_token's answers as VfTokenError: -EACCES for a token missing
    or not the PF's, -EINVAL for a token given where none is wanted; other errors as
    they are. (The token itself is never put in a message: it is the PF user's secret.)"""
    doing = f"{err.ioctl} on {address} failed: {os.strerror(err.errno or 0)} (errno {err.errno})"
    if err.errno == E.EACCES and vf_token is None:
        text = (
            f"{doing}: {address} needs a VF token: an SR-IOV VF whose PF is on vfio-pci "
            "(or such a PF while its VFs are open) opens only with the token the PF's user "
            f"set (Device.set_vf_token): pyvfio.open({address!r}, vf_token=UUID)"
        )
    elif err.errno == E.EACCES:
        text = (
            f"{doing}: the VF token given for {address} is not the one the PF's user set "
            "(Device.set_vf_token); ask the PF's user for the token"
        )
    elif err.errno == E.EINVAL and vf_token is not None:
        text = (
            f"{doing}: {address} takes no VF token: its PF is not on vfio-pci, or it is no "
            "SR-IOV device; open it without vf_token"
        )
    else:
        return err
    return VfTokenError(text, errno=err.errno, ioctl=err.ioctl, device=address)


def device_set_vf_token(device: int, token: bytes, address: str | None = None) -> None:
    """``VFIO_DEVICE_FEATURE`` SET ``VFIO_DEVICE_FEATURE_PCI_VF_TOKEN``: the PF's VF token,
    16 bytes (the UUID's). The kernel offers no GET: it would show the last user's."""
    head = ctypes.sizeof(v.vfio_device_feature)
    buf = (ctypes.c_uint8 * (head + 16))()
    feature = v.vfio_device_feature.from_buffer(buf)
    feature.argsz = head + 16
    feature.flags = (
        v.VfioDeviceFeatureFlag.VFIO_DEVICE_FEATURE_SET
        | v.VfioDeviceFeature.VFIO_DEVICE_FEATURE_PCI_VF_TOKEN
    )
    ctypes.memmove(ctypes.addressof(buf) + head, token, 16)
    try:
        call(device, v.VFIO_DEVICE_FEATURE, buf, "VFIO_DEVICE_FEATURE", address)
    except UnsupportedError as err:
        # vfio_pci_core_feature_token: -ENOTTY unless the device is an SR-IOV PF.
        raise UnsupportedError(
            f"{address or 'the device'} takes no VF token: only an SR-IOV PF on vfio-pci "
            "does (VFIO_DEVICE_FEATURE_PCI_VF_TOKEN answered ENOTTY)",
            errno=err.errno or E.ENOTTY,
            ioctl="VFIO_DEVICE_FEATURE",
            device=address,
        ) from err


# -- device ----------------------------------------------------------------------------


def device_get_info(device: int, address: str | None = None) -> DeviceInfo:
    info, buf = _info_with_caps(
        device, v.VFIO_DEVICE_GET_INFO, v.vfio_device_info, "VFIO_DEVICE_GET_INFO", address
    )
    has_caps = info.flags & v.VfioDeviceFlag.VFIO_DEVICE_FLAGS_CAPS
    caps = _walk_caps(buf, info.cap_offset) if has_caps else ()
    return DeviceInfo(v.VfioDeviceFlag(info.flags), info.num_regions, info.num_irqs, caps)


def device_get_region_info(device: int, index: int, address: str | None = None) -> RegionInfo:
    _, buf = _info_with_caps(
        device,
        v.VFIO_DEVICE_GET_REGION_INFO,
        v.vfio_region_info,
        "VFIO_DEVICE_GET_REGION_INFO",
        address,
        index=index,
    )
    return region_info_from_buffer(index, buf)


def region_info_from_buffer(index: int, buf: bytes) -> RegionInfo:
    """A ``vfio_region_info`` and its capability chain, decoded (the vfio-user client's
    ``VFIO_USER_DEVICE_GET_REGION_INFO`` reply carries the same bytes)."""
    info = v.vfio_region_info.from_buffer_copy(buf)
    flags = v.VfioRegionInfoFlag(info.flags)
    caps = (
        _walk_caps(buf, info.cap_offset)
        if flags & v.VfioRegionInfoFlag.VFIO_REGION_INFO_FLAG_CAPS
        else ()
    )
    sparse: tuple[SparseArea, ...] | None = None
    rtype: tuple[int, int] | None = None
    msix_mappable = False
    for cap in caps:
        if cap.id == v.VfioRegionInfoCap.VFIO_REGION_INFO_CAP_SPARSE_MMAP:
            head = v.vfio_region_info_cap_sparse_mmap.from_buffer_copy(cap.data)
            base = ctypes.sizeof(v.vfio_region_info_cap_sparse_mmap)
            step = ctypes.sizeof(v.vfio_region_sparse_mmap_area)
            count = min(head.nr_areas, max(0, (len(cap.data) - base) // step))
            sparse = tuple(
                SparseArea(a.offset, a.size)
                for a in (
                    v.vfio_region_sparse_mmap_area.from_buffer_copy(cap.data, base + i * step)
                    for i in range(count)
                )
                if a.size
            )
        elif cap.id == v.VfioRegionInfoCap.VFIO_REGION_INFO_CAP_TYPE:
            t = v.vfio_region_info_cap_type.from_buffer_copy(cap.data)
            rtype = (t.type, t.subtype)
        elif cap.id == v.VfioRegionInfoCap.VFIO_REGION_INFO_CAP_MSIX_MAPPABLE:
            msix_mappable = True
    return RegionInfo(index, flags, info.size, info.offset, sparse, rtype, msix_mappable, caps)


def device_get_irq_info(device: int, index: int, address: str | None = None) -> IrqInfo:
    info = v.vfio_irq_info(argsz=ctypes.sizeof(v.vfio_irq_info), index=index)
    call(device, v.VFIO_DEVICE_GET_IRQ_INFO, info, "VFIO_DEVICE_GET_IRQ_INFO", address)
    return IrqInfo(index, v.VfioIrqInfoFlag(info.flags), info.count)


def device_set_irqs(
    device: int,
    index: int,
    start: int,
    flags: int,
    eventfds: list[int] | None = None,
    count: int | None = None,
    address: str | None = None,
) -> None:
    """``VFIO_DEVICE_SET_IRQS``; ``eventfds`` (-1 de-assigns) when DATA_EVENTFD is set."""
    data = eventfds or []
    n = len(data) if count is None else count
    size = ctypes.sizeof(v.vfio_irq_set) + 4 * len(data)
    buf = (ctypes.c_uint8 * size)()
    head = v.vfio_irq_set.from_buffer(buf)
    head.argsz, head.flags, head.index, head.start, head.count = size, flags, index, start, n
    if data:
        fds = (ctypes.c_int32 * len(data)).from_buffer(buf, ctypes.sizeof(v.vfio_irq_set))
        for i, efd in enumerate(data):
            fds[i] = efd
    call(device, v.VFIO_DEVICE_SET_IRQS, buf, "VFIO_DEVICE_SET_IRQS", address)


def device_reset(device: int, address: str | None = None) -> None:
    call(device, v.VFIO_DEVICE_RESET, 0, "VFIO_DEVICE_RESET", address)


def device_get_pci_hot_reset_info(
    device: int, address: str | None = None
) -> tuple[DependentDevice, ...]:
    """The devices a bus reset would affect (ENOSPC first tells how many)."""
    head = v.vfio_pci_hot_reset_info(argsz=ctypes.sizeof(v.vfio_pci_hot_reset_info))
    name = "VFIO_DEVICE_GET_PCI_HOT_RESET_INFO"
    try:
        call(device, v.VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, head, name, address)
    except VfioError as err:
        if err.errno != E.ENOSPC:
            raise
    step = ctypes.sizeof(v.vfio_pci_dependent_device)
    size = ctypes.sizeof(v.vfio_pci_hot_reset_info) + step * head.count
    buf = (ctypes.c_uint8 * size)()
    full = v.vfio_pci_hot_reset_info.from_buffer(buf)
    full.argsz = size
    call(device, v.VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, buf, name, address)
    base = ctypes.sizeof(v.vfio_pci_hot_reset_info)
    out = []
    flags = v.VfioPciHotResetFlag(full.flags)
    by_devid = bool(flags & v.VfioPciHotResetFlag.VFIO_PCI_HOT_RESET_FLAG_DEV_ID)
    owned = bool(flags & v.VfioPciHotResetFlag.VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED)
    for i in range(full.count):
        d = v.vfio_pci_dependent_device.from_buffer_copy(buf, base + i * step)
        if by_devid:
            out.append(DependentDevice(d.segment, d.bus, d.devfn, devid=d._id.devid, owned=owned))
        else:
            out.append(DependentDevice(d.segment, d.bus, d.devfn, group_id=d._id.group_id))
    return tuple(out)


def device_pci_hot_reset(device: int, group_fds: list[int], address: str | None = None) -> None:
    size = ctypes.sizeof(v.vfio_pci_hot_reset) + 4 * len(group_fds)
    buf = (ctypes.c_uint8 * size)()
    head = v.vfio_pci_hot_reset.from_buffer(buf)
    head.argsz, head.count = size, len(group_fds)
    fds = (ctypes.c_int32 * len(group_fds)).from_buffer(buf, ctypes.sizeof(v.vfio_pci_hot_reset))
    for i, gfd in enumerate(group_fds):
        fds[i] = gfd
    call(device, v.VFIO_DEVICE_PCI_HOT_RESET, buf, "VFIO_DEVICE_PCI_HOT_RESET", address)


def device_bind_iommufd(
    device: int, iommufd: int, address: str | None = None, vf_token: bytes | None = None
) -> int:
    """``VFIO_DEVICE_BIND_IOMMUFD``; the device's id in that iommufd. ``vf_token`` (16
    bytes) needs Linux 6.17+ (``VFIO_DEVICE_BIND_FLAG_TOKEN``); an older kernel answers
    EINVAL (its flags must be 0), as it does to a second bind: the caller tells them apart.
    EACCES (6.17+: the VF token missing or wrong; the cdev's own access was checked when
    it was opened) is a VfTokenError."""
    bind: v.vfio_device_bind_iommufd | v.vfio_device_bind_iommufd_token
    uuid_buf = ctypes.create_string_buffer(vf_token or b"", 16)
    if vf_token is None:
        bind = v.vfio_device_bind_iommufd(
            argsz=ctypes.sizeof(v.vfio_device_bind_iommufd), iommufd=iommufd
        )
    else:
        bind = v.vfio_device_bind_iommufd_token(
            argsz=ctypes.sizeof(v.vfio_device_bind_iommufd_token),
            flags=v.BIND_FLAG_TOKEN,
            iommufd=iommufd,
            token_uuid_ptr=ctypes.addressof(uuid_buf),
        )
    try:
        call(device, v.VFIO_DEVICE_BIND_IOMMUFD, bind, "VFIO_DEVICE_BIND_IOMMUFD", address)
    except VfioError as err:
        if err.errno == E.EACCES:
            token = None if vf_token is None else "given"
            raise _vf_token_error(err, address or "the device", token) from err
        raise
    return int(bind.out_devid)


def device_attach_iommufd_pt(device: int, pt_id: int, address: str | None = None) -> int:
    att = v.vfio_device_attach_iommufd_pt(
        argsz=ctypes.sizeof(v.vfio_device_attach_iommufd_pt), pt_id=pt_id
    )
    call(device, v.VFIO_DEVICE_ATTACH_IOMMUFD_PT, att, "VFIO_DEVICE_ATTACH_IOMMUFD_PT", address)
    return int(att.pt_id)


def device_detach_iommufd_pt(device: int, address: str | None = None) -> None:
    det = v.vfio_device_detach_iommufd_pt(argsz=ctypes.sizeof(v.vfio_device_detach_iommufd_pt))
    call(device, v.VFIO_DEVICE_DETACH_IOMMUFD_PT, det, "VFIO_DEVICE_DETACH_IOMMUFD_PT", address)


# -- type1 IOMMU ------------------------------------------------------------------------


def iommu_get_info(container: int) -> IommuInfo:
    info, buf = _info_with_caps(
        container, v.VFIO_IOMMU_GET_INFO, v.vfio_iommu_type1_info, "VFIO_IOMMU_GET_INFO", None
    )
    ranges: tuple[IovaRange, ...] = (IovaRange(0, (1 << 64) - 1),)
    avail: int | None = None
    if info.flags & v.VfioIommuInfoFlag.VFIO_IOMMU_INFO_CAPS:
        for cap in _walk_caps(buf, info.cap_offset):
            if cap.id == v.VfioIommuType1InfoCap.VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE:
                head = v.vfio_iommu_type1_info_cap_iova_range.from_buffer_copy(cap.data)
                base = ctypes.sizeof(v.vfio_iommu_type1_info_cap_iova_range)
                step = ctypes.sizeof(v.vfio_iova_range)
                ranges = tuple(
                    IovaRange(r.start, r.end)
                    for r in (
                        v.vfio_iova_range.from_buffer_copy(cap.data, base + i * step)
                        for i in range(head.nr_iovas)
                    )
                )
            elif cap.id == v.VfioIommuType1InfoCap.VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL:
                avail = v.vfio_iommu_type1_info_dma_avail.from_buffer_copy(cap.data).avail
    return IommuInfo(info.iova_pgsizes, ranges, avail)


def _memlock_error(err: VfioError, size: int) -> VfioError:
    if err.errno != E.ENOMEM:
        return err
    soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    limit = "unlimited" if soft == resource.RLIM_INFINITY else f"{soft} bytes"
    return MemlockLimitError(
        f"pinning {size} bytes for DMA failed: RLIMIT_MEMLOCK is {limit} and this process "
        "already pins what it mapped before; raise it (ulimit -l, or LimitMEMLOCK= / "
        "/etc/security/limits.conf for a user)",
        limit=-1 if soft == resource.RLIM_INFINITY else soft,
        requested=size,
        errno=err.errno,
        ioctl=err.ioctl,
        device=err.device,
    )


def iommu_map_dma(
    container: int,
    vaddr: int,
    iova: int,
    size: int,
    flags: int = v.VfioDmaMapFlag.VFIO_DMA_MAP_FLAG_READ | v.VfioDmaMapFlag.VFIO_DMA_MAP_FLAG_WRITE,
) -> None:
    m = v.vfio_iommu_type1_dma_map(
        argsz=ctypes.sizeof(v.vfio_iommu_type1_dma_map),
        flags=flags,
        vaddr=vaddr,
        iova=iova,
        size=size,
    )
    try:
        call(container, v.VFIO_IOMMU_MAP_DMA, m, "VFIO_IOMMU_MAP_DMA")
    except VfioError as err:
        raise _memlock_error(err, size) from err


def iommu_unmap_dma(container: int, iova: int, size: int, flags: int = 0) -> int:
    """Unmap; the number of bytes the kernel unmapped."""
    u = v.vfio_iommu_type1_dma_unmap(
        argsz=ctypes.sizeof(v.vfio_iommu_type1_dma_unmap), flags=flags, iova=iova, size=size
    )
    call(container, v.VFIO_IOMMU_UNMAP_DMA, u, "VFIO_IOMMU_UNMAP_DMA")
    return int(u.size)


# -- DMA map and unmap on the hot path ------------------------------------------------------

_U64_MASK = (1 << 64) - 1
_EBADF = OSError(E.EBADF, os.strerror(E.EBADF))  # what ioctl(-1, ...) answers


def _u64_fields(kernel_struct: type[ctypes.Structure], *names: str) -> tuple[struct.Struct, int]:
    """A ``struct.Struct`` that packs the consecutive ``__u64`` fields ``names`` of
    ``kernel_struct`` with one call, and the offset of the first: the layout is the
    `_uapi` mirror's (one source), checked here when the module loads."""
    fields = [getattr(kernel_struct, name) for name in names]
    first = fields[0].offset
    if any(f.size != 8 or f.offset != first + 8 * i for i, f in enumerate(fields)):
        raise ImportError(f"{kernel_struct.__name__}: {names} are not consecutive __u64 fields")
    return struct.Struct("=" + "Q" * len(names)), first


_TYPE1_MAP, _TYPE1_MAP_AT = _u64_fields(v.vfio_iommu_type1_dma_map, "vaddr", "iova", "size")
_TYPE1_UNMAP, _TYPE1_UNMAP_AT = _u64_fields(v.vfio_iommu_type1_dma_unmap, "iova", "size")
_IOAS_MAP, _IOAS_MAP_AT = _u64_fields(ufd.iommu_ioas_map, "user_va", "length", "iova")
_IOAS_UNMAP, _IOAS_UNMAP_AT = _u64_fields(ufd.iommu_ioas_unmap, "iova", "length")


class Type1Dma:
    """``VFIO_IOMMU_MAP_DMA`` (read + write) and ``VFIO_IOMMU_UNMAP_DMA`` on one
    container, each packed into an argument struct made once (`iommu_map_dma` and
    `iommu_unmap_dma` are the general forms).

    Not thread-safe: every call writes the same two structs, and ``fcntl.ioctl``
    copies a struct in before the system call and back after it, with the GIL
    released in between. The `~pyvfio.Iommu` that owns the backend serialises map and
    unmap under its lock; another owner must do the same. ``fd`` is set to -1 when
    the container closes (a call then fails with EBADF, never on a reused fd).
    """

    __slots__ = ("_map", "_unmap", "fd")

    def __init__(self, container: int) -> None:
        self.fd = container
        self._map = v.vfio_iommu_type1_dma_map(
            argsz=ctypes.sizeof(v.vfio_iommu_type1_dma_map),
            flags=v.VfioDmaMapFlag.VFIO_DMA_MAP_FLAG_READ
            | v.VfioDmaMapFlag.VFIO_DMA_MAP_FLAG_WRITE,
        )
        self._unmap = v.vfio_iommu_type1_dma_unmap(
            argsz=ctypes.sizeof(v.vfio_iommu_type1_dma_unmap)
        )

    def map(self, vaddr: int, iova: int, size: int) -> None:
        # vaddr is the caller's number: wrapped to 64 bits as a ctypes field would be,
        # so a bad one is the kernel's EFAULT, not a struct.error.
        _TYPE1_MAP.pack_into(self._map, _TYPE1_MAP_AT, vaddr & _U64_MASK, iova, size)
        while True:
            try:
                _fcntl_ioctl(self.fd, v.VFIO_IOMMU_MAP_DMA, self._map, True)
                return
            except InterruptedError:  # a signal during a long pin: fcntl does not retry
                continue
            except OSError as err:
                raise _dma_error(err, "VFIO_IOMMU_MAP_DMA", size, None) from err
            except ValueError as err:  # fd -1: fcntl refuses it before the kernel would
                raise _dma_error(_EBADF, "VFIO_IOMMU_MAP_DMA", size, None) from err

    def unmap(self, iova: int, size: int) -> int:
        """Unmap; the number of bytes the kernel unmapped."""
        _TYPE1_UNMAP.pack_into(self._unmap, _TYPE1_UNMAP_AT, iova, size)
        while True:
            try:
                _fcntl_ioctl(self.fd, v.VFIO_IOMMU_UNMAP_DMA, self._unmap, True)
                return self._unmap.size
            except InterruptedError:
                continue
            except OSError as err:
                raise _dma_error(err, "VFIO_IOMMU_UNMAP_DMA", 0, None) from err
            except ValueError as err:  # fd -1: fcntl refuses it before the kernel would
                raise _dma_error(_EBADF, "VFIO_IOMMU_UNMAP_DMA", 0, None) from err


def _dma_error(err: OSError, name: str, size: int, device: str | None) -> VfioError:
    """`_error` for a map or unmap; ENOMEM on a map (``size`` > 0) is the memlock limit."""
    error = _error(err.errno or 0, name, device)
    return _memlock_error(error, size) if size else error


# -- iommufd ------------------------------------------------------------------------------


def ioas_alloc(iommufd: int) -> int:
    a = ufd.iommu_ioas_alloc(size=ctypes.sizeof(ufd.iommu_ioas_alloc))
    call(iommufd, ufd.IOMMU_IOAS_ALLOC, a, "IOMMU_IOAS_ALLOC", "/dev/iommu")
    return int(a.out_ioas_id)


def iommufd_destroy(iommufd: int, object_id: int) -> None:
    d = ufd.iommu_destroy(size=ctypes.sizeof(ufd.iommu_destroy), id=object_id)
    call(iommufd, ufd.IOMMU_DESTROY, d, "IOMMU_DESTROY", "/dev/iommu")


def option_get(iommufd: int, option: int, object_id: int = 0, device: str = "/dev/iommu") -> int:
    """``IOMMU_OPTION`` with ``IOMMU_OPTION_OP_GET``: an option's value (0: the iommufd's own)."""
    o = ufd.iommu_option(
        size=ctypes.sizeof(ufd.iommu_option),
        option_id=option,
        op=ufd.IommuOptionOp.IOMMU_OPTION_OP_GET,
        object_id=object_id,
    )
    call(iommufd, ufd.IOMMU_OPTION, o, "IOMMU_OPTION", device)
    return int(o.val64)


def ioas_iova_ranges(iommufd: int, ioas: int) -> tuple[tuple[IovaRange, ...], int]:
    """The IOAS's usable ranges and the alignment the kernel requires for IOVAs."""
    q = ufd.iommu_ioas_iova_ranges(size=ctypes.sizeof(ufd.iommu_ioas_iova_ranges), ioas_id=ioas)
    name = "IOMMU_IOAS_IOVA_RANGES"
    try:
        call(iommufd, ufd.IOMMU_IOAS_IOVA_RANGES, q, name, "/dev/iommu")
    except VfioError as err:  # EMSGSIZE: num_iovas now says how many there are
        if err.errno != E.EMSGSIZE:
            raise
    ranges = (ufd.iommu_iova_range * max(q.num_iovas, 1))()
    q.allowed_iovas = ctypes.addressof(ranges)
    call(iommufd, ufd.IOMMU_IOAS_IOVA_RANGES, q, name, "/dev/iommu")
    return (
        tuple(IovaRange(r.start, r.last) for r in ranges[: q.num_iovas]),
        int(q.out_iova_alignment),
    )


#: What ioas_map and ioas_copy ask by default: the caller's IOVA, read and write.
_FIXED_READ_WRITE = (
    ufd.IommuIoasMapFlag.IOMMU_IOAS_MAP_FIXED_IOVA
    | ufd.IommuIoasMapFlag.IOMMU_IOAS_MAP_READABLE
    | ufd.IommuIoasMapFlag.IOMMU_IOAS_MAP_WRITEABLE
)


def ioas_map(
    iommufd: int,
    ioas: int,
    vaddr: int,
    iova: int,
    size: int,
    flags: int = _FIXED_READ_WRITE,
) -> int:
    m = ufd.iommu_ioas_map(
        size=ctypes.sizeof(ufd.iommu_ioas_map),
        flags=flags,
        ioas_id=ioas,
        user_va=vaddr,
        length=size,
        iova=iova,
    )
    try:
        call(iommufd, ufd.IOMMU_IOAS_MAP, m, "IOMMU_IOAS_MAP", "/dev/iommu")
    except VfioError as err:
        raise _memlock_error(err, size) from err
    return int(m.iova)


def ioas_unmap(iommufd: int, ioas: int, iova: int, size: int) -> int:
    u = ufd.iommu_ioas_unmap(
        size=ctypes.sizeof(ufd.iommu_ioas_unmap), ioas_id=ioas, iova=iova, length=size
    )
    call(iommufd, ufd.IOMMU_IOAS_UNMAP, u, "IOMMU_IOAS_UNMAP", "/dev/iommu")
    return int(u.length)


class IoasDma:
    """``IOMMU_IOAS_MAP`` (fixed IOVA, read + write) and ``IOMMU_IOAS_UNMAP`` on one
    IOAS, each packed into an argument struct made once (`ioas_map` and `ioas_unmap`
    are the general forms). Not thread-safe, for the reasons `Type1Dma` gives."""

    __slots__ = ("_map", "_unmap", "fd")

    def __init__(self, iommufd: int, ioas: int) -> None:
        self.fd = iommufd
        self._map = ufd.iommu_ioas_map(
            size=ctypes.sizeof(ufd.iommu_ioas_map), flags=_FIXED_READ_WRITE, ioas_id=ioas
        )
        self._unmap = ufd.iommu_ioas_unmap(size=ctypes.sizeof(ufd.iommu_ioas_unmap), ioas_id=ioas)

    def map(self, vaddr: int, iova: int, size: int) -> None:
        _IOAS_MAP.pack_into(self._map, _IOAS_MAP_AT, vaddr & _U64_MASK, size, iova)
        while True:
            try:
                _fcntl_ioctl(self.fd, ufd.IOMMU_IOAS_MAP, self._map, True)
                return
            except InterruptedError:
                continue
            except OSError as err:
                raise _dma_error(err, "IOMMU_IOAS_MAP", size, "/dev/iommu") from err
            except ValueError as err:  # fd -1: fcntl refuses it before the kernel would
                raise _dma_error(_EBADF, "IOMMU_IOAS_MAP", size, "/dev/iommu") from err

    def unmap(self, iova: int, size: int) -> int:
        """Unmap; the number of bytes the kernel unmapped."""
        _IOAS_UNMAP.pack_into(self._unmap, _IOAS_UNMAP_AT, iova, size)
        while True:
            try:
                _fcntl_ioctl(self.fd, ufd.IOMMU_IOAS_UNMAP, self._unmap, True)
                return self._unmap.length
            except InterruptedError:
                continue
            except OSError as err:
                raise _dma_error(err, "IOMMU_IOAS_UNMAP", 0, "/dev/iommu") from err
            except ValueError as err:  # fd -1: fcntl refuses it before the kernel would
                raise _dma_error(_EBADF, "IOMMU_IOAS_UNMAP", 0, "/dev/iommu") from err


def ioas_copy(
    iommufd: int,
    dst_ioas: int,
    dst_iova: int,
    src_ioas: int,
    src_iova: int,
    size: int,
    flags: int = _FIXED_READ_WRITE,
) -> int:
    c = ufd.iommu_ioas_copy(
        size=ctypes.sizeof(ufd.iommu_ioas_copy),
        flags=flags,
        dst_ioas_id=dst_ioas,
        src_ioas_id=src_ioas,
        length=size,
        dst_iova=dst_iova,
        src_iova=src_iova,
    )
    call(iommufd, ufd.IOMMU_IOAS_COPY, c, "IOMMU_IOAS_COPY", "/dev/iommu")
    return int(c.dst_iova)


#: Every public function above, for the documentation and the no-other-ioctl check.
IOCTL_FUNCTIONS: tuple[Callable[..., Any], ...] = (
    get_api_version,
    check_extension,
    set_iommu,
    group_get_status,
    group_set_container,
    group_unset_container,
    group_get_device_fd,
    device_get_info,
    device_get_region_info,
    device_get_irq_info,
    device_set_irqs,
    device_reset,
    device_get_pci_hot_reset_info,
    device_pci_hot_reset,
    device_bind_iommufd,
    device_attach_iommufd_pt,
    device_detach_iommufd_pt,
    iommu_get_info,
    iommu_map_dma,
    iommu_unmap_dma,
    ioas_alloc,
    iommufd_destroy,
    ioas_iova_ranges,
    ioas_map,
    ioas_unmap,
    ioas_copy,
)
