"""The ioctl layer's pure parts: capability chains, the errno choke point, and the DMA
map/unmap structs packed once per container."""

from __future__ import annotations

import ctypes
import errno
from typing import Any

import pytest

from pyvfio import _ioctl
from pyvfio._uapi import vfio as v
from pyvfio._uapi._base import members
from pyvfio.errors import (
    NoInterruptRemappingError,
    PermissionDeniedError,
    UnsupportedError,
    VfioError,
)


def _cap(buf: bytearray, offset: int, cap_id: int, nxt: int, payload: bytes = b"") -> None:
    hdr = v.vfio_info_cap_header(id=cap_id, version=1, next=nxt)
    buf[offset : offset + 8] = bytes(hdr)
    buf[offset + 8 : offset + 8 + len(payload)] = payload


def test_cap_chain_is_walked_in_order() -> None:
    buf = bytearray(96)
    _cap(buf, 32, 3, 48)
    _cap(buf, 48, 1, 64, b"\x01\x00\x00\x00")
    _cap(buf, 64, 2, 0)
    caps = _ioctl._walk_caps(bytes(buf), 32)
    assert [(c.id, c.offset) for c in caps] == [(3, 32), (1, 48), (2, 64)]
    assert caps[1].data[8:12] == b"\x01\x00\x00\x00"


@pytest.mark.parametrize("loop_to", [32, 48])
def test_cap_chain_loops_end(loop_to: int) -> None:
    buf = bytearray(64)
    _cap(buf, 32, 1, 48)
    _cap(buf, 48, 2, loop_to)
    assert [c.id for c in _ioctl._walk_caps(bytes(buf), 32)] == [1, 2]


def test_cap_chain_pointing_past_the_buffer_ends() -> None:
    buf = bytearray(40)
    _cap(buf, 32, 1, 4000)
    assert [c.id for c in _ioctl._walk_caps(bytes(buf), 32)] == [1]
    assert _ioctl._walk_caps(bytes(buf), 36) == ()  # a header that does not fit


def test_errno_mapping() -> None:
    err = _ioctl._error(errno.ENOTTY, "VFIO_DEVICE_FEATURE", "0000:00:10.0")
    assert isinstance(err, UnsupportedError) and err.errno == errno.ENOTTY
    assert err.ioctl == "VFIO_DEVICE_FEATURE" and err.device == "0000:00:10.0"
    assert isinstance(_ioctl._error(errno.EPERM, "VFIO_SET_IOMMU", None), NoInterruptRemappingError)
    assert "allow_unsafe_interrupts" in str(_ioctl._error(errno.EPERM, "VFIO_SET_IOMMU", None))
    assert isinstance(
        _ioctl._error(errno.EACCES, "VFIO_GROUP_GET_STATUS", None), PermissionDeniedError
    )
    plain = _ioctl._error(errno.EBUSY, "VFIO_GROUP_GET_DEVICE_FD", "x")
    assert type(plain) is VfioError and "Device or resource busy" in str(plain)


def test_call_raises_with_errno_on_a_non_vfio_fd(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "f"
    path.write_bytes(b"")
    with open(path, "rb") as f, pytest.raises(UnsupportedError) as info:
        _ioctl.get_api_version(f.fileno())
    assert info.value.errno == errno.ENOTTY
    assert info.value.ioctl == "VFIO_GET_API_VERSION"


@pytest.mark.needs_root("a child drops to nobody, whom the node's mode 600 shuts out")
def test_open_node_says_who_owns_it() -> None:
    import os
    import tempfile

    # A folder every user may enter; the child works from inside it with a relative
    # name, so no parent folder's mode matters (a fresh-machine chroot's / is 0700).
    folder = next(
        d
        for d in ("/dev/shm", "/tmp", "/var/tmp")
        if os.path.isdir(d) and os.stat(d).st_mode & 0o001
    )
    with tempfile.NamedTemporaryFile(dir=folder) as node:
        os.chmod(node.name, 0o600)
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: as nobody if we are root, so the kernel refuses
            try:
                os.chdir(folder)
                if os.geteuid() == 0:
                    os.setgid(65534)
                    os.setuid(65534)
                try:
                    _ioctl.open_node(os.path.basename(node.name))
                    text = "opened"
                except Exception as err:
                    text = f"{type(err).__name__} {err}"
                os.write(write_end, text.encode())
            finally:
                os._exit(0)
        os.close(write_end)
        os.waitpid(pid, 0)
        out = os.read(read_end, 4096).decode()
        os.close(read_end)
    assert out.startswith("PermissionDeniedError"), out
    assert "mode 600" in out and "pyvfio grant" in out


def test_irq_set_buffer_layout() -> None:
    # device_set_irqs lays eventfds right after the header; check the layout it relies on.
    assert ctypes.sizeof(v.vfio_irq_set) == 20
    offsets = {member.name: member.offset for member in members(v.vfio_irq_set)}
    assert offsets["data"] == 20


# -- the DMA hot path: fcntl.ioctl on argument structs made once ----------------------------


class RecordedIoctls:
    """Stands in for fcntl.ioctl: records each call's request and struct bytes, and
    answers as told (an OSError to raise, or bytes the kernel writes back)."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, bytes]] = []
        self.raises: list[OSError] = []
        self.writes_back: dict[int, int] = {}  # offset of a __u64 -> value

    def __call__(self, fd: int, request: int, arg: Any, mutate: bool) -> int:
        assert mutate  # the struct is passed to be written back, not copied out
        self.calls.append((fd, request, bytes(arg)))
        if self.raises:
            raise self.raises.pop(0)
        view = memoryview(arg).cast("B")
        for offset, value in self.writes_back.items():
            view[offset : offset + 8] = value.to_bytes(8, "little")
        return 0


def _offsets(kernel_struct: type[ctypes.Structure]) -> dict[str, int]:
    return {member.name: member.offset for member in members(kernel_struct)}


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> RecordedIoctls:
    fake = RecordedIoctls()
    monkeypatch.setattr(_ioctl, "_fcntl_ioctl", fake)
    return fake


def test_type1_map_and_unmap_fill_the_kernel_structs(recorded: RecordedIoctls) -> None:
    dma = _ioctl.Type1Dma(7)
    dma.map(0x7F00_0000_1000, 0x2000, 0x3000)
    dma.map(-4096, 0x5000, 0x1000)  # wrapped to 64 bits, as a ctypes field was
    recorded.writes_back = {_offsets(v.vfio_iommu_type1_dma_unmap)["size"]: 0x3000}
    assert dma.unmap(0x2000, 0x3000) == 0x3000  # what the kernel says it unmapped
    (fd, req, first), (_, _, second), (_, ureq, unmap) = recorded.calls
    assert (fd, req, ureq) == (7, v.VFIO_IOMMU_MAP_DMA, v.VFIO_IOMMU_UNMAP_DMA)
    m = v.vfio_iommu_type1_dma_map.from_buffer_copy(first)
    assert (m.argsz, m.flags) == (ctypes.sizeof(m), 3)  # READ | WRITE
    assert (m.vaddr, m.iova, m.size) == (0x7F00_0000_1000, 0x2000, 0x3000)
    assert v.vfio_iommu_type1_dma_map.from_buffer_copy(second).vaddr == (1 << 64) - 4096
    u = v.vfio_iommu_type1_dma_unmap.from_buffer_copy(unmap)
    assert (u.argsz, u.flags, u.iova, u.size) == (ctypes.sizeof(u), 0, 0x2000, 0x3000)


def test_ioas_map_and_unmap_fill_the_kernel_structs(recorded: RecordedIoctls) -> None:
    from pyvfio._uapi import iommufd as ufd

    dma = _ioctl.IoasDma(9, 3)
    dma.map(0x7F00_0000_1000, 0x2000, 0x3000)
    recorded.writes_back = {_offsets(ufd.iommu_ioas_unmap)["length"]: 0x3000}
    assert dma.unmap(0x2000, 0x3000) == 0x3000
    (fd, req, mapped), (_, ureq, unmapped) = recorded.calls
    assert (fd, req, ureq) == (9, ufd.IOMMU_IOAS_MAP, ufd.IOMMU_IOAS_UNMAP)
    m = ufd.iommu_ioas_map.from_buffer_copy(mapped)
    assert (m.size, m.ioas_id) == (ctypes.sizeof(m), 3)
    assert m.flags == _ioctl._FIXED_READ_WRITE
    assert (m.user_va, m.length, m.iova) == (0x7F00_0000_1000, 0x3000, 0x2000)
    u = ufd.iommu_ioas_unmap.from_buffer_copy(unmapped)
    assert (u.size, u.ioas_id, u.iova, u.length) == (ctypes.sizeof(u), 3, 0x2000, 0x3000)


def test_dma_errno_becomes_the_same_exceptions(recorded: RecordedIoctls) -> None:
    """One choke point: the errors the ctypes path raised, with the same messages."""
    from pyvfio.errors import MemlockLimitError

    dma = _ioctl.Type1Dma(7)
    recorded.raises = [OSError(errno.EFAULT, "Bad address")]
    with pytest.raises(VfioError) as info:
        dma.map(0x1000, 0x1000, 0x1000)
    assert str(info.value) == "VFIO_IOMMU_MAP_DMA failed: Bad address (errno 14)"
    assert (info.value.errno, info.value.ioctl) == (errno.EFAULT, "VFIO_IOMMU_MAP_DMA")
    recorded.raises = [OSError(errno.ENOMEM, "Cannot allocate memory")]
    with pytest.raises(MemlockLimitError, match="pinning 4096 bytes for DMA failed"):
        dma.map(0x1000, 0x1000, 0x1000)
    recorded.raises = [OSError(errno.EINVAL, "Invalid argument")]
    with pytest.raises(VfioError, match="VFIO_IOMMU_UNMAP_DMA failed: Invalid argument"):
        dma.unmap(0x1000, 0x1000)
    ioas = _ioctl.IoasDma(9, 3)
    recorded.raises = [OSError(errno.ENOENT, "No such file or directory")]
    with pytest.raises(VfioError) as info:
        ioas.unmap(0x1000, 0x1000)
    assert info.value.device == "/dev/iommu" and info.value.ioctl == "IOMMU_IOAS_UNMAP"


def test_dma_ioctls_are_retried_after_a_signal(recorded: RecordedIoctls) -> None:
    """fcntl.ioctl does not retry EINTR (a signal during a long pin): the layer does."""
    recorded.raises = [InterruptedError(errno.EINTR, "Interrupted"), InterruptedError()]
    _ioctl.Type1Dma(7).map(0x1000, 0x1000, 0x1000)
    assert len(recorded.calls) == 3


def test_dma_ioctls_reach_the_kernel_through_fcntl() -> None:
    """The real fcntl.ioctl on a file that is no container: ENOTTY, as for any ioctl."""
    import os

    fd = os.open(os.devnull, os.O_RDWR)
    try:
        with pytest.raises(UnsupportedError) as info:
            _ioctl.Type1Dma(fd).map(0x1000, 0x1000, 0x1000)
        assert info.value.errno == errno.ENOTTY and info.value.ioctl == "VFIO_IOMMU_MAP_DMA"
        with pytest.raises(UnsupportedError):
            _ioctl.IoasDma(fd, 1).unmap(0x1000, 0x1000)
    finally:
        os.close(fd)
    closed = _ioctl.Type1Dma(-1)  # what a closed backend leaves: EBADF, never another fd
    with pytest.raises(VfioError) as bad:
        closed.unmap(0x1000, 0x1000)
    assert bad.value.errno == errno.EBADF
    assert str(bad.value) == "VFIO_IOMMU_UNMAP_DMA failed: Bad file descriptor (errno 9)"
