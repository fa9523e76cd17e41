"""pyvfio grant where the kernel offers iommufd (the lab's own kernel): the device cdev and
/dev/iommu are granted too, and the unprivileged user's ``auto`` picks iommufd."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_grant import GRANTED, as_user, cli, node_state

pytestmark = pytest.mark.lab(devices=("edu", "edu@rootport"), kernel="iommufd")


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
