"""VFIO's unsafe no-IOMMU mode on the real kernel: refused, unless opted into by name.

Debian's kernels lack CONFIG_VFIO_NOIOMMU, the lab's own build has it; the guest has
no vIOMMU, so edu has no IOMMU group until vfio-pci makes it a fake one. The mode is
switched on at run time (the vfio parameter is writable) and off again after. The
second edu sits below a root port, where it can be bus-reset.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

import pyvfio
from pyvfio import noiommu
from pyvfio.drivers import edu as edu_mod
from pyvfio.drivers.edu import Edu
from pyvfio.errors import UnsafeNoIommuError, UnsupportedError
from pyvfio.host import bind
from pyvfio.host.journal import STATE_DIR_ENV
from pyvfio.host.sysfs import LIVE
from pyvfio.lab.pytest_plugin import LabFixture

from .labhelp import NOIOMMU_LAB

pytestmark = NOIOMMU_LAB
MODE = Path("/") / noiommu.MODE_PARAM


@contextlib.contextmanager
def in_noiommu_group(address: str) -> Iterator[tuple[str, int]]:
    """``address`` on vfio-pci in a no-IOMMU group; the mode and the driver put back after."""
    assert LIVE.iommu_group(address) is None  # no vIOMMU: the mode is what makes a group
    MODE.write_text("Y")
    try:
        original = bind.bind_vfio(address)
        try:
            group = LIVE.iommu_group(address)
            assert group is not None
            yield address, group
        finally:
            bind.give_back(address, original)
    finally:
        MODE.write_text("N")


@pytest.fixture
def noiommu_edu(lab: LabFixture) -> Iterator[tuple[str, int]]:
    """The edu on the root bus, in a no-IOMMU group."""
    with in_noiommu_group(lab.address("edu", 0)) as found:
        yield found


@pytest.fixture
def noiommu_edu_below_a_port(lab: LabFixture) -> Iterator[tuple[str, int]]:
    """The edu below a root port, in a no-IOMMU group."""
    with in_noiommu_group(lab.address("edu", 1)) as found:
        yield found


def test_without_the_opt_in_every_backend_is_refused(noiommu_edu: tuple[str, int]) -> None:
    address, group = noiommu_edu
    assert noiommu.is_noiommu_group(group)
    assert os.path.exists(f"/dev/vfio/noiommu-{group}")
    for backend in ("auto", "type1", "iommufd"):
        with pytest.raises(UnsafeNoIommuError) as err:
            pyvfio.open(address, backend=backend)
        message = str(err.value)
        assert "backend='unsafe-noiommu'" in message and "any host memory" in message
        assert "\n" not in message


def test_with_the_opt_in_config_bars_and_polling_work_and_dma_is_unsupported(
    noiommu_edu: tuple[str, int],
) -> None:
    address, _ = noiommu_edu
    with Edu(pyvfio.open(address, backend="unsafe-noiommu")) as edu:
        assert edu.device.iommu.backend == "unsafe-noiommu"
        assert edu.device.config.read16(0) == edu_mod.VENDOR_ID
        assert edu.bar0.read32(edu_mod.REG_ID) == 0x010000ED
        assert edu.is_alive()
        assert edu.factorial(6) == 720
        with pytest.raises(UnsupportedError, match="no DMA mapping in VFIO's no-IOMMU mode"):
            edu.device.dma_alloc(4096)
        with pytest.raises(UnsupportedError, match="no DMA mapping"):
            edu.device.iommu.map(bytearray(4096))
        assert edu.bar0.read32(edu_mod.REG_ID) == 0x010000ED  # still usable after


def test_a_bus_reset_passes_the_no_iommu_group_fd(
    noiommu_edu_below_a_port: tuple[str, int],
) -> None:
    """Below a root port edu can be bus-reset; the reset names its group by the fd of
    /dev/vfio/noiommu-N, which the no-IOMMU backend keeps as type1 keeps its groups'
    (it raised AttributeError when they were kept as tuples)."""
    address, group = noiommu_edu_below_a_port
    with Edu(pyvfio.open(address, backend="unsafe-noiommu")) as edu:
        (dependent,) = edu.device.hot_reset_dependents()
        assert (dependent.address, dependent.group_id) == (address, group)
        edu.device.hot_reset()
        assert edu.bar0.read32(edu_mod.REG_ID) == 0x010000ED  # config restored, decoding


def test_doctor_ls_and_grant_say_so(
    noiommu_edu: tuple[str, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pyvfio.cli import app

    address, group = noiommu_edu
    runner = CliRunner()
    data = json.loads(runner.invoke(app, ["doctor", "--json", address]).stdout)
    found = {c["name"]: c for c in data["checks"]}
    assert found["no-IOMMU mode"]["status"] == "WARN"
    assert f"group {group}: {address}" in found["no-IOMMU mode"]["message"]
    assert found[f"{address} group"]["status"] == "WARN"
    listing = json.loads(runner.invoke(app, ["ls", "--json"]).stdout)
    (entry,) = [g for g in listing["groups"] if g["group"] == group]
    assert entry["noiommu"] is True
    monkeypatch.setenv(STATE_DIR_ENV, str(tmp_path))
    done = runner.invoke(app, ["grant", address, "--user", "nobody"])
    assert done.exit_code == 1 and "CAP_SYS_RAWIO" in done.stderr


def test_mode_off_is_a_pass_in_doctor(lab: LabFixture) -> None:
    from pyvfio.host import doctor

    assert MODE.read_text().strip() == "N"
    result = doctor.check_noiommu(LIVE)
    assert result.status is doctor.Status.PASS and result.message == "off"
