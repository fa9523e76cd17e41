"""Iommu.mode: which of the kernel VFIO selftests' modes serves an Iommu (issue 17).

The lab proves it on the real kernel (tests/lab/test_iommu_amd.py: VFIO's own container
and iommufd); here, the probe that tells iommufd's compatibility container from VFIO's,
and the names, without a kernel."""

from __future__ import annotations

import errno

import pytest

from pyvfio import _ioctl
from pyvfio._uapi import iommufd as ufd
from pyvfio._uapi import vfio as v
from pyvfio.backends import noiommu, type1
from pyvfio.errors import VfioError


def fake_option_get(answer: int | None) -> object:
    asked: list[tuple[int, int]] = []

    def option_get(fd: int, option: int, object_id: int = 0, device: str = "") -> int:
        asked.append((fd, option))
        if answer is None:  # VFIO's container: no IOMMU driver set yet, so EINVAL
            raise VfioError("IOMMU_OPTION failed", errno=errno.EINVAL, ioctl="IOMMU_OPTION")
        return answer

    option_get.asked = asked  # type: ignore[attr-defined]
    return option_get


@pytest.mark.parametrize(("answer", "compat"), [(None, False), (0, True), (1, True)])
def test_the_container_is_iommufds_when_it_answers_iommu_option(
    monkeypatch: pytest.MonkeyPatch, answer: int | None, compat: bool
) -> None:
    probe = fake_option_get(answer)
    monkeypatch.setattr(_ioctl, "option_get", probe)
    assert type1._served_by_iommufd(7, "/dev/vfio/vfio") is compat
    assert probe.asked == [(7, ufd.IommuOption.IOMMU_OPTION_RLIMIT_MODE)]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("cls", "compat", "mode"),
    [
        (type1.Type1Backend, False, "vfio_type1v2_iommu"),
        (type1.Type1Backend, True, "iommufd_compat_type1v2"),
        (noiommu.NoIommuBackend, False, "vfio_noiommu_iommu"),
        (noiommu.NoIommuBackend, True, "iommufd_compat_noiommu"),
    ],
)
def test_mode_names_follow_the_kernel_selftests(
    cls: type[type1.Type1Backend], compat: bool, mode: str
) -> None:
    backend = cls.__new__(cls)
    backend.iommufd_compat = compat
    assert backend.mode == mode
    assert cls.iommu_type in (
        v.VfioExtension.VFIO_TYPE1v2_IOMMU,
        v.VfioExtension.VFIO_NOIOMMU_IOMMU,
    )


def test_iommu_mode_is_none_until_a_backend_is_chosen() -> None:
    import pyvfio

    iommu = pyvfio.Iommu()  # auto: nothing chosen before the first device
    try:
        assert iommu.mode is None
    finally:
        iommu.close()
