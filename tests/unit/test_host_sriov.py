"""``pyvfio sriov``: VFs made and removed through sriov_numvfs, journaled, restored after a
crash; ls/show's PF-VF fields. On the simulated kernel (its sriov_numvfs acts as the PCI
core's: ENOENT without a driver that configures SR-IOV, ERANGE, EBUSY from N to M)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pyvfio.cli import app
from pyvfio.host import details, journal, sriov
from pyvfio.host.bind import bind_to
from pyvfio.testing import SimulatedKernel, intel_server

PF = "0000:00:02.0"
VF1, VF2 = "0000:00:02.1", "0000:00:02.2"
EDU = "0000:00:05.0"  # no SR-IOV
runner = CliRunner()


@pytest.fixture
def kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SimulatedKernel:
    monkeypatch.setenv(journal.STATE_DIR_ENV, str(tmp_path / "state"))
    k = intel_server(tmp_path / "host")
    k.host.write(f"{k.host.real[PF]}/sriov_vf_device", "0x1520\n")
    return k


def numvfs(kernel: SimulatedKernel) -> int:
    return kernel.read_int(f"{kernel.device_dir(PF)}/sriov_numvfs") or 0


def test_state_lists_the_vfs_with_their_drivers(kernel: SimulatedKernel) -> None:
    now = sriov.state("00:02.0", kernel)
    assert (now.total_vfs, now.num_vfs, now.driver) == (7, 2, "igb")
    assert [(vf.index, vf.address, vf.driver) for vf in now.vfs] == [
        (0, VF1, "igbvf"),
        (1, VF2, "igbvf"),
    ]


def test_n_to_m_goes_through_zero_and_restore_puts_the_original_back(
    kernel: SimulatedKernel,
) -> None:
    said: list[str] = []
    change = sriov.set_num_vfs(PF, 3, sysfs=kernel, progress=said.append)
    assert (change.before, change.after) == (2, 3)
    assert [vf.address for vf in change.vfs] == [VF1, VF2, "0000:00:02.3"]
    writes = [v for rel, v in kernel.writes if rel.endswith("sriov_numvfs")]
    assert writes == ["0", "3"]  # the kernel takes a new count only through 0
    assert said == [f"{PF}: removing 2 VFs", f"{PF}: creating 3 VFs (the kernel probes "
                    "each: this can take a while)"]  # fmt: skip
    [entry] = sriov.journal_entries().values()
    assert (entry.original, entry.target, entry.done) == (2, 3, True)
    [back] = sriov.restore(all_devices=True, sysfs=kernel)
    assert back.changed and numvfs(kernel) == 2 and sriov.journal_entries() == {}


def test_setting_the_count_it_started_with_leaves_nothing_to_undo(
    kernel: SimulatedKernel,
) -> None:
    sriov.set_num_vfs(PF, 0, sysfs=kernel)
    assert numvfs(kernel) == 0 and not kernel.exists(f"sys/bus/pci/devices/{VF1}")
    sriov.set_num_vfs(PF, 2, sysfs=kernel)
    assert sriov.journal_entries() == {}
    assert sriov.set_num_vfs(PF, 2, sysfs=kernel).changed is False


@pytest.mark.parametrize(
    ("address", "count", "message"),
    [
        (PF, 8, "at most 7 VFs \\(sriov_totalvfs\\), not 8"),
        (PF, -1, "from 0 to 7"),
        (EDU, 1, "no SR-IOV capability"),
        (VF1, 1, f"it is a VF of {PF}"),
    ],
)
def test_bad_requests_are_refused_before_any_write(
    kernel: SimulatedKernel, address: str, count: int, message: str
) -> None:
    with pytest.raises(sriov.SriovError, match=message):
        sriov.set_num_vfs(address, count, sysfs=kernel)
    assert not [w for w in kernel.writes if w[0].endswith("sriov_numvfs")]
    assert sriov.journal_entries() == {}


def test_a_pf_on_vfio_pci_needs_enable_sriov_which_the_flag_sets(
    kernel: SimulatedKernel,
) -> None:
    sriov.set_num_vfs(PF, 0, sysfs=kernel)
    bind_to(PF, "vfio-pci", kernel)
    kernel.host.write(sriov.ENABLE_SRIOV_PARAM, "N\n")
    with pytest.raises(sriov.SriovError, match="enable_sriov=1: add --enable-sriov"):
        sriov.set_num_vfs(PF, 2, sysfs=kernel)
    change = sriov.set_num_vfs(PF, 2, enable_sriov=True, sysfs=kernel)
    assert kernel.read_attr(sriov.ENABLE_SRIOV_PARAM) == "1"
    # vfio-pci's bus notifier gives the new VFs to vfio-pci too.
    assert [vf.driver for vf in change.vfs] == ["vfio-pci", "vfio-pci"]


def test_a_pf_without_a_driver_is_refused(kernel: SimulatedKernel) -> None:
    kernel.host.bind(PF, None)
    with pytest.raises(sriov.SriovError, match="has no driver"):
        sriov.set_num_vfs(PF, 0, sysfs=kernel)


def test_vfs_the_host_uses_are_kept_unless_forced(kernel: SimulatedKernel) -> None:
    kernel.host.add_net(VF1, "eth5", up=True, routes=1)
    with pytest.raises(sriov.VfInUseError, match=f"VF {VF1} is in use: network interface"):
        sriov.set_num_vfs(PF, 1, sysfs=kernel)
    assert numvfs(kernel) == 2
    sriov.set_num_vfs(PF, 1, force=True, sysfs=kernel)
    assert numvfs(kernel) == 1


def _set_and_die(kernel: SimulatedKernel, crash_after: int, count: int) -> int:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.environ[journal.CRASH_ENV] = str(crash_after)
        try:
            sriov.set_num_vfs(PF, count, sysfs=kernel)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return status


def test_kill_after_every_step_then_restore_all_puts_the_count_back(
    kernel: SimulatedKernel,
) -> None:
    killed = 0
    for n in range(1, 20):
        status = _set_and_die(kernel, n, 5)
        if not os.WIFSIGNALED(status):
            assert os.WEXITSTATUS(status) == 0
            break
        assert os.WTERMSIG(status) == signal.SIGKILL
        killed += 1
        assert list(sriov.journal_entries()) == [PF]
        sriov.restore(all_devices=True, sysfs=kernel)
        assert numvfs(kernel) == 2, n
        assert sriov.journal_entries() == {}
    # journal, zero, write, journal
    assert killed == 4


def test_damaged_sriov_journal_is_an_error_naming_the_file(kernel: SimulatedKernel) -> None:
    where = journal.state_dir()
    where.mkdir(parents=True)
    (where / sriov.SRIOV_JOURNAL).write_text('{"version": 1, "devices": {"x": {}}}')
    with pytest.raises(sriov.SriovError, match=r"cannot read the SR-IOV journal .*sriov\.json"):
        sriov.set_num_vfs(PF, 1, sysfs=kernel)
    assert numvfs(kernel) == 2


def test_show_names_each_vfs_driver(kernel: SimulatedKernel) -> None:
    pf = details.describe(PF, kernel)
    assert f"{VF1} (igbvf), {VF2} (igbvf)" in str(pf)
    assert pf.to_json()["sriov"]["vfs"] == [
        {"address": VF1, "driver": "igbvf"},
        {"address": VF2, "driver": "igbvf"},
    ]


def test_relations_give_ls_its_pf_and_vf_fields(kernel: SimulatedKernel) -> None:
    found = sriov.relations(kernel)
    assert found[VF1] == {"physical_function": PF}
    assert found[PF]["sriov"]["total_vfs"] == 7
    assert [vf["driver"] for vf in found[PF]["sriov"]["vfs"]] == ["igbvf", "igbvf"]
    assert EDU not in found
    json.dumps(found)


def test_ls_json_and_text_from_a_snapshot_show_pf_and_vfs(
    kernel: SimulatedKernel, tmp_path: Path
) -> None:
    result = runner.invoke(app, ["ls", "--json", "--root", str(kernel.root)])
    assert result.exit_code == 0, result.output
    devs = {d["address"]: d for g in json.loads(result.stdout)["groups"] for d in g["devices"]}
    assert devs[VF2]["physical_function"] == PF
    assert devs[PF]["sriov"]["num_vfs"] == 2
    assert "sriov" not in devs[EDU] and "physical_function" not in devs[EDU]
    text = runner.invoke(app, ["ls", "--root", str(kernel.root)]).stdout
    assert f"SR-IOV: {PF} has 2 of 7 VFs: {VF1} (igbvf), {VF2} (igbvf)" in text


def test_cli_bad_input_is_one_line_and_exit_2(kernel: SimulatedKernel) -> None:
    result = runner.invoke(app, ["sriov", "zz:99", "--vfs", "1"])
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1


def test_restore_leaves_a_device_that_is_no_pf_now_alone(kernel: SimulatedKernel) -> None:
    sriov.set_num_vfs(PF, 3, sysfs=kernel)
    (kernel.path(kernel.device_dir(PF)) / "sriov_totalvfs").unlink()  # another card there
    [result] = sriov.restore(all_devices=True, sysfs=kernel)
    assert (result.changed, result.note) == (False, "no SR-IOV PF there now")
    assert numvfs(kernel) == 3 and sriov.journal_entries() == {}
