"""SR-IOV on the real kernel: QEMU's NVMe controller as a PF with 2 VFs.

``pyvfio sriov`` through sriov_numvfs with its journal and a kill -9 between steps, then
the PF on vfio-pci with enable_sriov, its VF token set, a VF opened with the right token
and refused with a wrong or missing one, and the VF's config space read through VFIO.

The stock kernel (Debian's 6.1, CONFIG_PCI_IOV=y): the lab's own build has no PCI_IOV.
Its cdev path has no VF tokens either (6.17+), so the tokens here go through type1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

import pyvfio
from pyvfio.cli import app
from pyvfio.host import bind, journal, sriov
from pyvfio.host.sysfs import LIVE
from pyvfio.lab.pytest_plugin import LabFixture

from .labhelp import nvme_settled

pytestmark = pytest.mark.lab(devices=("nvmesriov",))
runner = CliRunner()
PARAM = Path("/sys/module/vfio_pci/parameters/enable_sriov")


def numvfs(pf: str) -> int:
    return int(Path(f"/sys/bus/pci/devices/{pf}/sriov_numvfs").read_text())


def write(path: str | Path, value: str) -> None:
    Path(path).write_text(value)


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    where = tmp_path / "state"
    monkeypatch.setenv(journal.STATE_DIR_ENV, str(where))
    return where


@pytest.fixture
def pf(lab: LabFixture, state: Path) -> Iterator[str]:
    """The PF on nvme, without VFs; VF drivers not probed (QEMU's VFs have no queues
    until NVMe Virtualization Management gives them some: nvme would time out on them)."""
    address = lab.address("nvmesriov")
    nvme_settled(address)
    autoprobe = f"/sys/bus/pci/devices/{address}/sriov_drivers_autoprobe"
    write(autoprobe, "0")
    try:
        yield address
    finally:
        if numvfs(address):
            write(f"/sys/bus/pci/devices/{address}/sriov_numvfs", "0")
        write(autoprobe, "1")


def test_sriov_journal_and_restore_after_a_kill(pf: str, state: Path) -> None:
    assert LIVE.driver(pf) == "nvme"
    write(f"/sys/bus/pci/devices/{pf}/sriov_numvfs", "1")  # the host's own count
    # kill -9 after the journal (step 1) and the write of 0 (step 2), on the way to 2.
    env = {**os.environ, journal.CRASH_ENV: "2"}
    killed = subprocess.run(
        [sys.executable, "-m", "pyvfio", "sriov", pf, "--vfs", "2"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert killed.returncode == -9, killed.stderr
    assert numvfs(pf) == 0
    listing = json.loads(runner.invoke(app, ["ls", "--json"]).stdout)
    [entry] = listing["sriov_journal"]
    assert (entry["address"], entry["original"], entry["done"]) == (pf, 1, False)
    back = runner.invoke(app, ["restore", "--all", "--json"])
    assert back.exit_code == 0, back.output
    assert json.loads(back.stdout)["sriov"] == [
        {"address": pf, "num_vfs": 1, "changed": True, "note": ""}
    ]
    assert numvfs(pf) == 1 and sriov.journal_entries() == {}

    made = runner.invoke(app, ["sriov", pf, "--vfs", "2", "--json"])
    assert made.exit_code == 0, made.output
    data = json.loads(made.stdout)
    assert (data["before"], data["after"]) == (1, 2)
    vfs = [vf["address"] for vf in data["vfs"]]
    assert len(vfs) == 2
    assert all(sriov.physical_function(vf) == pf for vf in vfs)

    too_many = runner.invoke(app, ["sriov", pf, "--vfs", "3"])
    assert too_many.exit_code == 2
    assert "at most 2 VFs (sriov_totalvfs), not 3" in too_many.stderr
    not_pf = runner.invoke(app, ["sriov", vfs[0], "--vfs", "1"])
    assert not_pf.exit_code == 2 and f"it is a VF of {pf}" in not_pf.stderr

    shown = json.loads(runner.invoke(app, ["show", pf, "--json"]).stdout)["sriov"]
    assert (shown["total_vfs"], shown["num_vfs"]) == (2, 2)
    assert [vf["address"] for vf in shown["vfs"]] == vfs

    assert runner.invoke(app, ["restore", pf]).exit_code == 0
    assert numvfs(pf) == 1


def _wait_driver(address: str, driver: str) -> None:
    deadline = time.monotonic() + 60
    while LIVE.driver(address) != driver:
        assert time.monotonic() < deadline, f"{address} is on {LIVE.driver(address)}"
        time.sleep(0.1)


def test_vf_token_on_a_pf_on_vfio_pci(pf: str, state: Path) -> None:
    original = bind.bind_vfio(pf)
    was = PARAM.read_text().strip() if PARAM.exists() else "N"
    write(PARAM, "N")
    try:
        refused = runner.invoke(app, ["sriov", pf, "--vfs", "2"])
        assert refused.exit_code == 2
        assert "enable_sriov=1: add --enable-sriov" in refused.stderr
        made = runner.invoke(app, ["sriov", pf, "--vfs", "2", "--enable-sriov", "--json"])
        assert made.exit_code == 0, made.output
        vfs = [vf["address"] for vf in json.loads(made.stdout)["vfs"]]
        # vfio-pci's bus notifier gives a vfio-pci PF's new VFs to vfio-pci.
        for vf in vfs:
            _wait_driver(vf, "vfio-pci")
        listing = json.loads(runner.invoke(app, ["ls", "--json"]).stdout)
        devs = {d["address"]: d for g in listing["groups"] for d in g["devices"]}
        assert [v["driver"] for v in devs[pf]["sriov"]["vfs"]] == ["vfio-pci", "vfio-pci"]
        assert devs[vfs[0]]["physical_function"] == pf

        token, wrong = uuid.uuid4(), str(uuid.uuid4())
        with pyvfio.Iommu("type1") as iommu:
            pf_dev = iommu.open(pf)
            pf_dev.set_vf_token(token)
            with pytest.raises(pyvfio.VfTokenError, match="needs a VF token"):
                iommu.open(vfs[0])
            with pytest.raises(pyvfio.VfTokenError, match="is not the one the PF's user set"):
                iommu.open(vfs[0], vf_token=wrong)
            vf_dev = iommu.open(vfs[0], vf_token=token)
            # vfio-pci shows a VF's IDs (its own registers read all ones).
            assert (vf_dev.config.read16(0), vf_dev.config.read16(2)) == (0x1B36, 0x0010)
            with pytest.raises(pyvfio.UnsupportedError, match="takes no VF token"):
                vf_dev.set_vf_token(token)  # a VF: vfio-pci keeps tokens on PFs only
        assert runner.invoke(app, ["sriov", pf, "--vfs", "0"]).exit_code == 0
        assert sriov.journal_entries() == {}
    finally:
        if numvfs(pf):
            write(f"/sys/bus/pci/devices/{pf}/sriov_numvfs", "0")
        write(PARAM, was)
        bind.give_back(pf, original)
        nvme_settled(pf)
