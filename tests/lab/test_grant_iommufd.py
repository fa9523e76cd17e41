"""pyvfio grant where the kernel offers iommufd (the lab's own kernel): the device cdev and
/dev/iommu are granted too, and the unprivileged user's ``auto`` picks iommufd."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from .labhelp import IOMMUFD_LAB
from .test_grant import GRANTED, as_user, cli, node_state

pytestmark = IOMMUFD_LAB


@pytest.fixture(autouse=True)
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYVFIO_STATE_DIR", str(tmp_path / "state"))


def test_grant_opens_the_cdev_and_iommu_for_one_user_and_revoke_restores_them(
    edu_addr: str,
) -> None:
    (name,) = os.listdir(f"/sys/bus/pci/devices/{edu_addr}/vfio-dev")
    cdev = f"/dev/vfio/devices/{name}"
    before = {p: node_state(p) for p in (cdev, "/dev/iommu")}
    assert before[cdev][2] & 0o077 == 0, before  # the kernel's 0600: only root
    refused = as_user(GRANTED, edu_addr, 1 << 20)
    assert refused["error"] == "PermissionDeniedError", refused

    code, data, err = cli("grant", edu_addr, "--user", GRANTED, "--json")
    assert code == 0, err
    actions = {n["path"]: n["action"] for n in data["nodes"]}
    assert actions[cdev] == "granted"
    iommu_open = before["/dev/iommu"][2] & 0o006 == 0o006
    assert actions["/dev/iommu"] == ("open to all" if iommu_open else "granted")

    result = as_user(GRANTED, edu_addr, data["memlock"]["need"])
    assert result["ok"] and result["round_trip"] is True, result
    assert result["backend"] == "iommufd"

    code, data, err = cli("revoke", edu_addr, "--user", GRANTED, "--json")
    assert code == 0 and data["revoked"] is True, err
    assert {p: node_state(p) for p in before} == before
    after = as_user(GRANTED, edu_addr, 1 << 20)
    assert after["error"] == "PermissionDeniedError", after


def test_revoke_names_a_holder_of_the_cdev_and_kill_ends_it(edu_addr: str) -> None:
    """Through iommufd the device fd is the cdev itself: a grantee's program holding it
    is named by revoke (with /dev/iommu where the grant opened it), and --kill ends it."""
    from .labhelp import DeviceHolder
    from .test_grant import revoke_json

    (name,) = os.listdir(f"/sys/bus/pci/devices/{edu_addr}/vfio-dev")
    cdev = f"/dev/vfio/devices/{name}"
    assert cli("grant", edu_addr, "--user", GRANTED)[0] == 0
    holder = DeviceHolder(edu_addr, user=GRANTED)
    try:
        assert holder.ask("dma") == {"round_trip": True}
        code, data, err = revoke_json(edu_addr, "--kill")
        assert code == 0, err
        [held] = data["holders"]
        assert held["pid"] == holder.pid and cdev in held["holds"], held
        assert data["ended"] == [{"pid": holder.pid, "outcome": "ended by SIGTERM"}]
    finally:
        status = holder.end()
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM, status
    after = as_user(GRANTED, edu_addr, 1 << 20)
    assert after["error"] == "PermissionDeniedError", after
