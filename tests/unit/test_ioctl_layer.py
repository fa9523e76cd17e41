"""The ioctl layer's pure parts: capability chains and the errno choke point."""

from __future__ import annotations

import ctypes
import errno

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
