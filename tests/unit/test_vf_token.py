"""VF tokens: how each ioctl carries one, and vfio-pci's refusals as VfTokenError.

The kernel's side (vfio_pci_core_match, vfio_pci_validate_vf_token) is proven in the lab
(tests/lab/test_sriov.py); here a fake ioctl records what pyvfio hands the kernel and
answers with the kernel's errnos.
"""

from __future__ import annotations

import ctypes
import errno
import uuid
from pathlib import Path

import pytest

import pyvfio
from pyvfio import _ioctl, backends
from pyvfio._uapi import vfio as v
from pyvfio.backends.iommufd import cdev_takes_vf_token
from pyvfio.errors import UnsupportedError, VfTokenError
from pyvfio.sysfs import Sysfs
from pyvfio.testing import SyntheticHost

TOKEN = "bd8d9d2b-5a5f-4f5a-a211-f591514ba1f3"
VF = "0000:00:10.1"


class FakeIoctl:
    """Stands in for libc's ioctl: keeps each request and its argument's bytes, and
    answers ``-1`` with ``errno`` (0: success)."""

    def __init__(self, errno_: int = 0, size: int = 64) -> None:
        self.errno = errno_
        self.size = size
        self.calls: list[tuple[int, bytes]] = []

    def __call__(self, fd: int, request: int, ptr: int) -> int:
        self.calls.append((request, ctypes.string_at(ptr, self.size)))
        if self.errno:
            ctypes.set_errno(self.errno)
            return -1
        return 7


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeIoctl:
    answer = FakeIoctl()
    monkeypatch.setattr(_ioctl, "_libc_ioctl", answer)
    return answer


def test_type1_puts_the_token_in_the_device_name(fake: FakeIoctl) -> None:
    assert _ioctl.group_get_device_fd(3, VF, TOKEN) == 7
    [(request, arg)] = fake.calls
    assert request == v.VFIO_GROUP_GET_DEVICE_FD
    assert arg.split(b"\0")[0] == f"{VF} vf_token={TOKEN}".encode()
    _ioctl.group_get_device_fd(3, VF)
    assert fake.calls[1][1].split(b"\0")[0] == VF.encode()


@pytest.mark.parametrize(
    ("code", "token", "says"),
    [
        (errno.EACCES, None, f"needs a VF token.*pyvfio.open\\('{VF}', vf_token=UUID\\)"),
        (errno.EACCES, TOKEN, "the VF token given .* is not the one the PF's user set"),
        (errno.EINVAL, TOKEN, "takes no VF token: its PF is not on vfio-pci"),
    ],
)
def test_vfio_pcis_refusals_are_vf_token_errors(
    fake: FakeIoctl, code: int, token: str | None, says: str
) -> None:
    fake.errno = code
    with pytest.raises(VfTokenError, match=says) as info:
        _ioctl.group_get_device_fd(3, VF, token)
    assert info.value.errno == code and info.value.device == VF
    assert TOKEN not in str(info.value)  # the PF user's secret stays out of messages


def test_other_errors_stay_what_they_were(fake: FakeIoctl) -> None:
    fake.errno = errno.EBUSY
    with pytest.raises(pyvfio.VfioError) as info:
        _ioctl.group_get_device_fd(3, VF, TOKEN)
    assert type(info.value) is pyvfio.VfioError


def test_set_vf_token_is_a_feature_set_with_the_uuids_bytes(fake: FakeIoctl) -> None:
    _ioctl.device_set_vf_token(4, uuid.UUID(TOKEN).bytes, "0000:00:10.0")
    [(request, arg)] = fake.calls
    assert request == v.VFIO_DEVICE_FEATURE
    argsz, flags = int.from_bytes(arg[:4], "little"), int.from_bytes(arg[4:8], "little")
    assert argsz == 8 + 16
    assert flags == v.VfioDeviceFeatureFlag.VFIO_DEVICE_FEATURE_SET | 0  # PCI_VF_TOKEN is 0
    assert arg[8:24] == uuid.UUID(TOKEN).bytes


def test_set_vf_token_on_a_device_that_is_no_pf_says_so(fake: FakeIoctl) -> None:
    fake.errno = errno.ENOTTY
    with pytest.raises(UnsupportedError, match="takes no VF token: only an SR-IOV PF"):
        _ioctl.device_set_vf_token(4, uuid.UUID(TOKEN).bytes, "0000:00:10.0")


def test_cdev_bind_carries_the_token_by_pointer_with_the_flag(fake: FakeIoctl) -> None:
    _ioctl.device_bind_iommufd(5, 6, VF, uuid.UUID(TOKEN).bytes)
    [(request, arg)] = fake.calls
    assert request == v.VFIO_DEVICE_BIND_IOMMUFD
    fields = v.vfio_device_bind_iommufd_token.from_buffer_copy(arg[:24])
    assert (fields.argsz, fields.flags, fields.iommufd) == (24, v.BIND_FLAG_TOKEN, 6)
    _ioctl.device_bind_iommufd(5, 6, VF)
    assert int.from_bytes(fake.calls[1][1][4:8], "little") == 0  # no flags without one


def test_cdev_bind_refusing_the_token_is_a_vf_token_error(fake: FakeIoctl) -> None:
    fake.errno = errno.EACCES
    with pytest.raises(VfTokenError, match="needs a VF token"):
        _ioctl.device_bind_iommufd(5, 6, VF)


def _host(tmp_path: Path, release: str) -> Sysfs:
    host = SyntheticHost(tmp_path / release)
    host.write("proc/sys/kernel/osrelease", release + "\n")
    return Sysfs(host.root)


@pytest.mark.parametrize(
    ("release", "takes"),
    [("6.12.95-amd64", False), ("6.1.0-28-amd64", False), ("6.17.0", True), ("7.0.1", True)],
)
def test_the_cdev_path_takes_a_token_from_6_17(tmp_path: Path, release: str, takes: bool) -> None:
    assert cdev_takes_vf_token(_host(tmp_path, release)) is takes


def test_auto_picks_type1_for_a_token_where_the_cdev_takes_none(tmp_path: Path) -> None:
    assert backends.choose(VF, _host(tmp_path, "6.12.95"), vf_token=True) == "type1"


@pytest.mark.parametrize("bad", ["nope", "", "bd8d9d2b-5a5f-4f5a-a211"])
def test_a_token_that_is_no_uuid_is_bad_input_before_anything_opens(bad: str) -> None:
    with pytest.raises(ValueError, match="is not a UUID: give one like"):
        pyvfio.open("0000:00:10.1", vf_token=bad)


def test_a_uuid_object_and_upper_case_are_taken() -> None:
    from pyvfio.device import parse_vf_token

    assert parse_vf_token(uuid.UUID(TOKEN)) == TOKEN
    assert parse_vf_token(TOKEN.upper()) == TOKEN


def test_vfio_user_devices_take_no_token(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedError, match="vfio-user device takes none"):
        pyvfio.open(f"vfio-user:{tmp_path}/sock", vf_token=TOKEN)
