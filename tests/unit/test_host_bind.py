"""bind / unbind / restore and the journal, on a simulated kernel over a synthetic q35 tree."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from pyvfio.errors import DeviceNotFoundError, HostError, InvalidAddressError
from pyvfio.host import bind, inventory, journal
from pyvfio.host.synthetic import SimulatedKernel, q35_lab

EDU, NVME, NINEP = "0000:00:10.0", "0000:00:11.0", "0000:00:01.0"
CHIPSET = ("0000:00:1f.0", "0000:00:1f.2", "0000:00:1f.3")
ORIGINAL = {CHIPSET[0]: "lpc_ich", CHIPSET[1]: "ahci", CHIPSET[2]: "i801_smbus", NVME: "nvme"}


@pytest.fixture
def kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SimulatedKernel:
    monkeypatch.setenv(journal.STATE_DIR_ENV, str(tmp_path / "state"))
    return q35_lab(tmp_path / "root")


def override(kernel: SimulatedKernel, addr: str) -> str | None:
    return bind.read_override(addr, kernel)


def do_bind(
    kernel: SimulatedKernel, *addrs: str, group: bool = False, force: bool = False
) -> list[str]:
    plan = bind.plan_bind(addrs, group=group, sysfs=kernel)
    return [a.address for a in bind.bind_devices(plan, force=force, sysfs=kernel)]


def test_bind_edu_then_restore_leaves_it_driverless_without_override(kernel) -> None:
    assert do_bind(kernel, "00:10.0") == [EDU]
    assert kernel.driver(EDU) == "vfio-pci"
    assert override(kernel, EDU) == "vfio-pci"
    entry = journal.read_journal()[EDU]
    assert (entry.original_driver, entry.step, entry.done) == (None, "bound", True)
    [done] = bind.restore([EDU], sysfs=kernel)
    assert done.changed and kernel.driver(EDU) is None and override(kernel, EDU) is None
    assert journal.read_journal() == {}


def test_second_bind_is_a_no_op_and_keeps_the_original(kernel) -> None:
    do_bind(kernel, NVME)
    writes = len(kernel.writes)
    assert do_bind(kernel, NVME) == []
    assert len(kernel.writes) == writes
    assert journal.read_journal()[NVME].original_driver == "nvme"
    bind.restore([NVME], sysfs=kernel)
    assert kernel.driver(NVME) == "nvme" and override(kernel, NVME) is None


def test_binding_uses_driver_override_never_new_id(kernel) -> None:
    do_bind(kernel, NVME)
    assert not any(rel.endswith("new_id") for rel, _ in kernel.writes)
    assert (f"sys/bus/pci/devices/{NVME}/driver_override", "vfio-pci") in kernel.writes


def test_group_bind_takes_the_chipset_and_restore_gives_each_back(kernel) -> None:
    plan = bind.plan_bind(["00:1f.2"], group=True, sysfs=kernel)
    assert sorted(a.address for a in plan.changes) == sorted(CHIPSET)
    assert not plan.blockers
    bind.bind_devices(plan, sysfs=kernel)
    assert all(kernel.driver(a) == "vfio-pci" for a in CHIPSET)
    assert inventory.group_of(CHIPSET[0], kernel).viable  # type: ignore[union-attr]
    bind.restore(all_devices=True, sysfs=kernel)
    assert {a: kernel.driver(a) for a in CHIPSET} == {a: ORIGINAL[a] for a in CHIPSET}
    assert all(override(kernel, a) is None for a in CHIPSET)


def test_without_group_the_plan_names_the_members_left_blocking(kernel) -> None:
    plan = bind.plan_bind(["00:1f.2"], sysfs=kernel)
    assert [a.address for a in plan.changes] == [CHIPSET[1]]
    assert {addr for _, addr, _ in plan.blockers} == {CHIPSET[0], CHIPSET[2]}
    assert "use --group" in str(plan)


def test_group_bind_leaves_bridges_and_driverless_members(kernel) -> None:
    plan = bind.plan_bind(["0000:04:00.0"], group=True, sysfs=kernel)
    port = next(a for a in plan.actions if a.address == "0000:03:00.0")
    assert not port.bind and "bridge" in port.reason
    assert [a.address for a in plan.changes] == ["0000:04:00.0"]


def test_the_9p_root_device_is_refused_and_nothing_changes(kernel, tmp_path: Path) -> None:
    plan = bind.plan_bind([NINEP], sysfs=kernel)
    with pytest.raises(bind.DeviceInUseError, match="9p filesystem '/dev/root' mounted on /"):
        bind.bind_devices(plan, sysfs=kernel)
    assert kernel.writes == [] and kernel.driver(NINEP) == "virtio-pci"
    assert not (tmp_path / "state" / "journal.json").exists()


def test_force_takes_a_device_in_use(kernel) -> None:
    assert do_bind(kernel, NINEP, force=True) == [NINEP]
    bind.restore(all_devices=True, sysfs=kernel)
    assert kernel.driver(NINEP) == "virtio-pci"


def test_a_disk_with_a_mounted_partition_is_in_use(tmp_path: Path) -> None:
    kernel = q35_lab(tmp_path)
    kernel.host.add_block(NVME, "nvme1n1", partitions=("nvme1n1p1",))
    assert bind.usage.device_users(NVME, kernel) == ()
    kernel.host.add_mount("/dev/nvme1n1p1", "/home", "ext4")
    assert bind.usage.device_users(NVME, kernel) == ("/dev/nvme1n1p1 is mounted on /home",)


def test_an_interface_up_with_routes_is_in_use_and_a_down_one_is_not(tmp_path: Path) -> None:
    kernel = q35_lab(tmp_path)
    nic = "0000:01:00.0"
    assert bind.usage.device_users(nic, kernel) == ()
    kernel.host.add_net(nic, "eth1", up=True, routes=2, ipv6=1)
    [why] = bind.usage.device_users(nic, kernel)
    assert why == "network interface eth1 is up with 2 IPv4 route(s) and 1 IPv6 address(es)"


def test_the_console_framebuffer_is_in_use(tmp_path: Path) -> None:
    kernel = q35_lab(tmp_path)
    kernel.host.add_framebuffer(EDU)
    assert bind.usage.device_users(EDU, kernel) == ("it drives the console framebuffer fb0",)


def test_a_device_that_refuses_vfio_rolls_every_device_back(kernel) -> None:
    kernel.refuse.add((CHIPSET[2], "vfio-pci"))
    with pytest.raises(HostError, match="did not bind to vfio-pci"):
        do_bind(kernel, CHIPSET[1], group=True)
    assert {a: kernel.driver(a) for a in CHIPSET} == {a: ORIGINAL[a] for a in CHIPSET}
    assert journal.read_journal() == {}


def _bind_and_die(kernel: SimulatedKernel, crash_after: int, addrs: tuple[str, ...]) -> int:
    """Run a group bind in a child that SIGKILLs itself after step ``crash_after``."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.environ[journal.CRASH_ENV] = str(crash_after)
        try:
            do_bind(kernel, *addrs, group=True)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return status


def test_kill_after_every_step_then_restore_all_gives_every_device_back(kernel) -> None:
    addrs = (CHIPSET[0], NVME)
    killed = 0
    for n in range(1, 60):
        status = _bind_and_die(kernel, n, addrs)
        if not os.WIFSIGNALED(status):
            assert os.WEXITSTATUS(status) == 0
            break
        assert os.WTERMSIG(status) == signal.SIGKILL
        killed += 1
        entries = journal.read_journal()
        listing = inventory.listing_json(inventory.iommu_groups(kernel), entries)
        assert listing["journal"] == [e.to_json() for e in entries.values()]
        bind.restore(all_devices=True, sysfs=kernel)
        for addr in (*CHIPSET, NVME):
            assert kernel.driver(addr) == ORIGINAL[addr], (n, addr)
            assert override(kernel, addr) is None, (n, addr)
        assert journal.read_journal() == {}
    # journal, modules, then per device override/journal/unbind/journal/probe/journal
    assert killed >= 1 + 1 + 4 * 6


def test_ls_json_marks_devices_left_half_done(kernel) -> None:
    assert os.WIFSIGNALED(_bind_and_die(kernel, 3, (EDU,)))  # after the override
    data = inventory.listing_json(inventory.iommu_groups(kernel), journal.read_journal())
    dev = next(d for g in data["groups"] for d in g["devices"] if d["address"] == EDU)
    assert dev["journal"]["done"] is False and dev["journal"]["original_driver"] is None
    json.dumps(data)


def test_unbind_of_a_journaled_device_restores_it(kernel) -> None:
    do_bind(kernel, NVME)
    [r] = bind.unbind_devices([NVME], sysfs=kernel)
    assert r.changed and kernel.driver(NVME) == "nvme"


def test_unbind_of_a_device_pyvfio_did_not_bind_reprobes_host_drivers(kernel) -> None:
    kernel.host.bind(NVME, "vfio-pci")
    [r] = bind.unbind_devices([NVME], sysfs=kernel)
    assert r.changed and kernel.driver(NVME) == "nvme"
    [r] = bind.unbind_devices([EDU], sysfs=kernel)
    assert not r.changed and "not on vfio-pci" in str(r)


@pytest.mark.parametrize("bad", ["0000:00:1f.9", "zz:00.0", "", "00:20.0"])
def test_malformed_addresses_are_refused_before_anything(kernel, bad: str) -> None:
    with pytest.raises(InvalidAddressError):
        bind.plan_bind([bad], sysfs=kernel)
    assert kernel.writes == []


def test_missing_device_and_unknown_driver_are_bad_input(kernel) -> None:
    with pytest.raises(DeviceNotFoundError, match=r"no PCI device 0000:00:09\.0"):
        bind.plan_bind(["00:09.0"], sysfs=kernel)
    with pytest.raises(bind.UnknownDriverError, match="no PCI driver called 'nope'"):
        bind.plan_bind([EDU], target="nope", sysfs=kernel)
    with pytest.raises(InvalidAddressError):
        bind.plan_bind([], sysfs=kernel)
    with pytest.raises(InvalidAddressError, match="--all"):
        bind.restore([], sysfs=kernel)


def test_non_root_changes_nothing_on_the_live_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(bind.NotRootError, match="needs root"):
        bind.require_root()


def test_modules_dep_and_builtin_make_a_module_available(tmp_path: Path) -> None:
    kernel = q35_lab(tmp_path)
    kernel.host.write(
        "lib/modules/6.1.0-synthetic/modules.dep", "kernel/drivers/vfio/pci/vfio-pci.ko.xz: x\n"
    )
    kernel.host.write(
        "lib/modules/6.1.0-synthetic/modules.builtin", "kernel/drivers/pci/pci-stub.ko\n"
    )
    assert bind.module_available("vfio-pci", kernel)
    assert bind.module_available("pci_stub", kernel)
    assert not bind.module_available("nouveau", kernel)


@pytest.mark.parametrize(
    "args",
    [
        ["bind", "0000:00:1f.9"],
        ["bind", "zz:00.0"],
        ["bind", ""],
        ["bind", "0000:7f:1f.0"],
        ["bind", "--driver", "no-such-driver", "0000:7f:1f.0"],
        ["unbind", "0000:00:1f.9"],
        ["restore", "zz:00.0"],
        ["restore"],
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(
    args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from pyvfio.cli import app

    monkeypatch.setenv(journal.STATE_DIR_ENV, str(tmp_path))
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 2, done.output
    assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith("error:")
    assert list(tmp_path.iterdir()) == []


def test_a_built_in_module_without_parameters_counts_as_loaded(tmp_path: Path) -> None:
    kernel = q35_lab(tmp_path)
    assert not bind.module_loaded("pci_stub", kernel)
    kernel.host.write(
        "lib/modules/6.1.0-synthetic/modules.builtin", "kernel/drivers/pci/pci-stub.ko\n"
    )
    assert bind.module_loaded("pci-stub", kernel)


def test_a_damaged_journal_stops_restore_with_the_reason(kernel, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "journal.json").write_text("{not json")
    with pytest.raises(HostError, match="cannot read the bind journal"):
        bind.restore(all_devices=True, sysfs=kernel)
    assert journal.read_journal() == {}  # ls stays usable
