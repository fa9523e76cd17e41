"""bind / unbind / restore and the journal, on a simulated kernel over a synthetic q35 tree."""

from __future__ import annotations

import fcntl
import functools
import json
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from pyvfio.errors import DeviceNotFoundError, HostError, InvalidAddressError
from pyvfio.host import bind, inventory, journal, usage
from pyvfio.host.sysfs import Sysfs, WriteTimeoutError
from pyvfio.host.sysfs import process_start as sysfs_process_start
from pyvfio.testing import SimulatedKernel, q35_lab

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


def test_bind_edu_then_restore_leaves_it_driverless_without_override(
    kernel: SimulatedKernel,
) -> None:
    assert do_bind(kernel, "00:10.0") == [EDU]
    assert kernel.driver(EDU) == "vfio-pci"
    assert override(kernel, EDU) == "vfio-pci"
    entry = journal.read_journal()[EDU]
    assert (entry.original_driver, entry.step, entry.done) == (None, "bound", True)
    [done] = bind.restore([EDU], sysfs=kernel)
    assert done.changed and kernel.driver(EDU) is None and override(kernel, EDU) is None
    assert journal.read_journal() == {}


def test_second_bind_is_a_no_op_and_keeps_the_original(kernel: SimulatedKernel) -> None:
    do_bind(kernel, NVME)
    writes = len(kernel.writes)
    assert do_bind(kernel, NVME) == []
    assert len(kernel.writes) == writes
    assert journal.read_journal()[NVME].original_driver == "nvme"
    bind.restore([NVME], sysfs=kernel)
    assert kernel.driver(NVME) == "nvme" and override(kernel, NVME) is None


def test_binding_uses_driver_override_never_new_id(kernel: SimulatedKernel) -> None:
    do_bind(kernel, NVME)
    assert not any(rel.endswith("new_id") for rel, _ in kernel.writes)
    assert (f"sys/bus/pci/devices/{NVME}/driver_override", "vfio-pci") in kernel.writes


def test_group_bind_takes_the_chipset_and_restore_gives_each_back(kernel: SimulatedKernel) -> None:
    plan = bind.plan_bind(["00:1f.2"], group=True, sysfs=kernel)
    assert sorted(a.address for a in plan.changes) == sorted(CHIPSET)
    assert not plan.blockers
    bind.bind_devices(plan, sysfs=kernel)
    assert all(kernel.driver(a) == "vfio-pci" for a in CHIPSET)
    assert inventory.group_of(CHIPSET[0], kernel).viable  # type: ignore[union-attr]
    bind.restore(all_devices=True, sysfs=kernel)
    assert {a: kernel.driver(a) for a in CHIPSET} == {a: ORIGINAL[a] for a in CHIPSET}
    assert all(override(kernel, a) is None for a in CHIPSET)


def test_without_group_the_plan_names_the_members_left_blocking(kernel: SimulatedKernel) -> None:
    plan = bind.plan_bind(["00:1f.2"], sysfs=kernel)
    assert [a.address for a in plan.changes] == [CHIPSET[1]]
    assert {addr for _, addr, _ in plan.blockers} == {CHIPSET[0], CHIPSET[2]}
    assert "use --group" in str(plan)


def test_group_bind_leaves_bridges_and_driverless_members(kernel: SimulatedKernel) -> None:
    plan = bind.plan_bind(["0000:04:00.0"], group=True, sysfs=kernel)
    port = next(a for a in plan.actions if a.address == "0000:03:00.0")
    assert not port.bind and "bridge" in port.reason
    assert [a.address for a in plan.changes] == ["0000:04:00.0"]


def test_the_9p_root_device_is_refused_and_nothing_changes(
    kernel: SimulatedKernel, tmp_path: Path
) -> None:
    plan = bind.plan_bind([NINEP], sysfs=kernel)
    with pytest.raises(bind.DeviceInUseError, match="9p filesystem '/dev/root' mounted on /"):
        bind.bind_devices(plan, sysfs=kernel)
    assert kernel.writes == [] and kernel.driver(NINEP) == "virtio-pci"
    assert not (tmp_path / "state" / "journal.json").exists()


def test_force_takes_a_device_in_use(kernel: SimulatedKernel) -> None:
    assert do_bind(kernel, NINEP, force=True) == [NINEP]
    bind.restore(all_devices=True, sysfs=kernel)
    assert kernel.driver(NINEP) == "virtio-pci"


def test_a_disk_with_a_mounted_partition_is_in_use(tmp_path: Path) -> None:
    kernel = q35_lab(tmp_path)
    kernel.host.add_block(NVME, "nvme1n1", partitions=("nvme1n1p1",))
    assert usage.device_users(NVME, kernel) == ()
    kernel.host.add_mount("/dev/nvme1n1p1", "/home", "ext4")
    assert usage.device_users(NVME, kernel) == ("/dev/nvme1n1p1 is mounted on /home",)


def test_an_interface_up_with_routes_is_in_use_and_a_down_one_is_not(tmp_path: Path) -> None:
    kernel = q35_lab(tmp_path)
    nic = "0000:01:00.0"
    assert usage.device_users(nic, kernel) == ()
    kernel.host.add_net(nic, "eth1", up=True, routes=2, ipv6=1)
    [why] = usage.device_users(nic, kernel)
    assert why == "network interface eth1 is up with 2 IPv4 route(s) and 1 IPv6 address(es)"


def test_the_console_framebuffer_is_in_use(tmp_path: Path) -> None:
    kernel = q35_lab(tmp_path)
    kernel.host.add_framebuffer(EDU)
    assert usage.device_users(EDU, kernel) == ("it drives the console framebuffer fb0",)


def test_a_device_that_refuses_vfio_rolls_every_device_back(kernel: SimulatedKernel) -> None:
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


def test_kill_after_every_step_then_restore_all_gives_every_device_back(
    kernel: SimulatedKernel,
) -> None:
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


def test_ls_json_marks_devices_left_half_done(kernel: SimulatedKernel) -> None:
    assert os.WIFSIGNALED(_bind_and_die(kernel, 3, (EDU,)))  # after the override
    data = inventory.listing_json(inventory.iommu_groups(kernel), journal.read_journal())
    dev = next(d for g in data["groups"] for d in g["devices"] if d["address"] == EDU)
    assert dev["journal"]["done"] is False and dev["journal"]["original_driver"] is None
    json.dumps(data)


def test_unbind_of_a_journaled_device_restores_it(kernel: SimulatedKernel) -> None:
    do_bind(kernel, NVME)
    [r] = bind.unbind_devices([NVME], sysfs=kernel)
    assert r.changed and kernel.driver(NVME) == "nvme"


def test_unbind_of_a_device_pyvfio_did_not_bind_reprobes_host_drivers(
    kernel: SimulatedKernel,
) -> None:
    kernel.host.bind(NVME, "vfio-pci")
    [r] = bind.unbind_devices([NVME], sysfs=kernel)
    assert r.changed and kernel.driver(NVME) == "nvme"
    [r] = bind.unbind_devices([EDU], sysfs=kernel)
    assert not r.changed and "not on vfio-pci" in str(r)


@pytest.mark.parametrize("bad", ["0000:00:1f.9", "zz:00.0", "", "00:20.0"])
def test_malformed_addresses_are_refused_before_anything(kernel: SimulatedKernel, bad: str) -> None:
    with pytest.raises(InvalidAddressError):
        bind.plan_bind([bad], sysfs=kernel)
    assert kernel.writes == []


def test_missing_device_and_unknown_driver_are_bad_input(kernel: SimulatedKernel) -> None:
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


def test_a_damaged_journal_stops_restore_with_the_reason(
    kernel: SimulatedKernel, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "journal.json").write_text("{not json")
    with pytest.raises(journal.JournalError, match="cannot read the bind journal"):
        bind.restore(all_devices=True, sysfs=kernel)
    with pytest.raises(journal.JournalError, match="cannot read the bind journal"):
        journal.read_journal()  # ls catches it: the groups are still shown, then exit 2
    assert kernel.writes == []


# -- Two pyvfio at once: the plan is checked again under the journal's lock ----------------------


def test_a_bind_planned_while_another_moved_the_device_is_refused(kernel: SimulatedKernel) -> None:
    """The race of issue 14: A plans while B's bind of the same device is half-way (the
    device driverless); B is undone; A's bind must not record 'no driver' as the
    original, or restore would leave the NVMe controller without its driver."""
    assert os.WIFSIGNALED(_bind_and_die(kernel, 5, (NVME,)))  # B dies after its unbind
    assert kernel.driver(NVME) is None
    plan = bind.plan_bind([NVME], sysfs=kernel)  # A sees no driver
    bind.restore(all_devices=True, sysfs=kernel)  # B's owner undoes B
    assert kernel.driver(NVME) == "nvme"
    writes = len(kernel.writes)
    with pytest.raises(bind.StalePlanError, match=r"it was on no driver, now it is on nvme"):
        bind.bind_devices(plan, sysfs=kernel)
    assert len(kernel.writes) == writes and journal.read_journal() == {}
    assert kernel.driver(NVME) == "nvme"


def test_a_plan_whose_group_member_moved_is_refused(kernel: SimulatedKernel) -> None:
    plan = bind.plan_bind(["00:1f.2"], sysfs=kernel)  # 1f.0 and 1f.3 stay blockers
    kernel.host.bind(CHIPSET[2], None)
    with pytest.raises(bind.StalePlanError, match=r"0000:00:1f\.3 changed .* on i801_smbus"):
        bind.bind_devices(plan, sysfs=kernel)
    assert kernel.writes == []


def test_a_device_put_in_use_after_the_plan_is_refused_unless_forced(
    kernel: SimulatedKernel,
) -> None:
    plan = bind.plan_bind([NVME], sysfs=kernel)
    assert plan.in_use == ()
    kernel.host.add_block(NVME, "nvme0n1", partitions=("nvme0n1p1",))
    kernel.host.add_mount("/dev/nvme0n1p1", "/srv", "ext4")
    with pytest.raises(bind.StalePlanError, match="now in use: /dev/nvme0n1p1 is mounted on /srv"):
        bind.bind_devices(plan, sysfs=kernel)
    assert kernel.writes == [] and journal.read_journal() == {}
    assert [a.address for a in bind.bind_devices(plan, force=True, sysfs=kernel)] == [NVME]


def _on_kernel(kernel: SimulatedKernel, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's bind/unbind/restore act on ``kernel`` instead of this machine."""
    for name in ("plan_bind", "bind_devices", "unbind_devices", "restore"):
        monkeypatch.setattr(bind, name, functools.partial(getattr(bind, name), sysfs=kernel))


def test_cli_bind_of_a_stale_plan_is_one_line_exit_2(
    kernel: SimulatedKernel, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pyvfio.cli import app

    _on_kernel(kernel, monkeypatch)
    planned = bind.plan_bind

    def plan_then_another_pyvfio_moves_it(*args: Any, **kw: Any) -> bind.BindPlan:
        plan = planned(*args, **kw)
        kernel.host.bind(NVME, None)
        return plan

    monkeypatch.setattr(bind, "plan_bind", plan_then_another_pyvfio_moves_it)
    done = CliRunner().invoke(app, ["bind", NVME])
    assert done.exit_code == 2, done.output
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"error: {NVME} changed while the bind was planned"), line
    assert kernel.writes == [] and journal.read_journal() == {}


# -- A device held open: refused up front; a write that waits anyway has a deadline --------------


#: What the fixture gives: it starts a process holding a node of the tree open.
Holder = Callable[[str], subprocess.Popen[bytes]]


@pytest.fixture
def holder(kernel: SimulatedKernel) -> Iterator[Holder]:
    """Start a real process that holds a node of the synthetic tree open (its stdin)."""
    started: list[subprocess.Popen[bytes]] = []

    def hold(rel: str) -> subprocess.Popen[bytes]:
        node = kernel.path(rel)
        node.parent.mkdir(parents=True, exist_ok=True)
        node.touch()
        with open(node, "rb") as f:
            child = subprocess.Popen(["sleep", "600"], stdin=f)
        started.append(child)
        kernel.host.add_process(child.pid)
        return child

    yield hold
    for child in started:
        child.kill()
        child.wait()


@pytest.mark.needs_root("the holder it names must be root's")
def test_restore_of_a_device_held_open_is_refused_naming_the_process(
    kernel: SimulatedKernel, holder: Holder
) -> None:
    do_bind(kernel, EDU)
    child = holder("dev/vfio/2")  # edu's group node, as QEMU or a pyvfio program holds it
    writes = len(kernel.writes)
    with pytest.raises(bind.DeviceHeldError, match=rf"held open by pid {child.pid} \(root: sleep"):
        bind.restore([EDU], sysfs=kernel)
    assert len(kernel.writes) == writes, "nothing is written for a held device"
    assert kernel.driver(EDU) == "vfio-pci" and journal.read_journal()[EDU].done
    child.kill()
    child.wait()
    [done] = bind.restore([EDU], sysfs=kernel)
    assert done.changed and kernel.driver(EDU) is None


def test_cli_restore_of_a_held_device_is_one_line_exit_2(
    kernel: SimulatedKernel,
    holder: Holder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pyvfio.cli import app

    do_bind(kernel, EDU)
    child = holder("dev/vfio/2")
    _on_kernel(kernel, monkeypatch)
    done = CliRunner().invoke(app, ["restore", EDU])
    assert done.exit_code == 2, done.output
    [line] = done.stderr.strip().splitlines()
    assert f"pid {child.pid}" in line and "nothing was changed" in line, line


def _lock_is_free() -> bool:
    where = journal.state_dir()
    fd = os.open(where / "journal.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def test_an_unbind_that_waits_times_out_with_the_lock_free_and_the_journal_true(
    kernel: SimulatedKernel,
) -> None:
    """vfio-pci's remove waits for a user pyvfio cannot see: restore stops waiting after
    its timeout, the journal says the write is pending, and the next restore neither
    waits nor writes until the kernel is done; then it finishes the job."""
    do_bind(kernel, EDU)
    kernel.hung.add(EDU)
    with pytest.raises(bind.UnbindTimeoutError, match=r"waited 0\.5 s for vfio-pci to let it go"):
        bind.restore([EDU], sysfs=kernel, timeout=0.5)
    assert _lock_is_free()
    entry = journal.read_journal()[EDU]
    assert entry.waiting is not None and entry.waiting.write == "unbind from vfio-pci"
    assert not entry.done and "waiting" in str(entry)
    assert sysfs_process_start(entry.waiting.pid) == entry.waiting.start  # it still waits
    writes = len(kernel.writes)
    with pytest.raises(HostError, match=rf"process {entry.waiting.pid} still waits"):
        bind.restore([EDU], sysfs=kernel, timeout=0.5)
    assert len(kernel.writes) == writes
    with pytest.raises(HostError, match="has not finished"):
        do_bind(kernel, EDU)  # nor does a bind queue behind it
    kernel.release(EDU)  # the holder closed the device: the kernel finishes the unbind
    [done] = bind.restore([EDU], sysfs=kernel)
    assert done.changed and kernel.driver(EDU) is None and journal.read_journal() == {}


def test_a_host_driver_that_will_not_let_go_leaves_the_others_given_back(
    kernel: SimulatedKernel,
) -> None:
    kernel.hung.add(CHIPSET[2])
    with pytest.raises(bind.UnbindTimeoutError, match=r"0000:00:1f\.3: waited"):
        bind.bind_devices(
            bind.plan_bind([CHIPSET[1]], group=True, sysfs=kernel), sysfs=kernel, timeout=0.5
        )
    assert _lock_is_free()
    assert (kernel.driver(CHIPSET[0]), kernel.driver(CHIPSET[1])) == ("lpc_ich", "ahci")
    assert list(journal.read_journal()) == [CHIPSET[2]]
    kernel.release(CHIPSET[2])
    bind.restore(all_devices=True, sysfs=kernel)
    assert {a: kernel.driver(a) for a in CHIPSET} == {a: ORIGINAL[a] for a in CHIPSET}
    assert journal.read_journal() == {}


def test_a_sysfs_write_that_never_returns_is_left_to_a_child(tmp_path: Path) -> None:
    """The writer itself, on a FIFO nobody reads (its open() waits as an unbind does)."""
    tree = Sysfs(tmp_path)
    os.mkfifo(tmp_path / "unbind")
    with pytest.raises(WriteTimeoutError) as err:
        tree.write_attr("unbind", "0000:00:10.0", timeout=0.2)
    pid = err.value.pid
    assert sysfs_process_start(pid) == err.value.start
    assert Path(f"/proc/{pid}/comm").read_text().strip() == "pyvfio-sysfs-wr"
    assert os.getppid() != pid and _parent(pid) != os.getpid(), "not this process's child"
    fifo = os.open(tmp_path / "unbind", os.O_RDONLY)
    try:
        assert os.read(fifo, 64) == b"0000:00:10.0"
    finally:
        os.close(fifo)
    (tmp_path / "plain").write_text("")
    tree.write_attr("plain", "vfio-pci", timeout=10)
    assert (tmp_path / "plain").read_text() == "vfio-pci"
    with pytest.raises(FileNotFoundError):
        tree.write_attr("missing/attr", "x", timeout=10)


def _parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


# -- A damaged journal: one clear error, exit 2, nothing changed, for every command ------------

DAMAGED = {
    "a list": "[]",
    "empty": "",
    "truncated": '{"version": 1, "devices": {"0000:00:10.0": {"original_dri',
    "entry a string": '{"version": 1, "devices": {"0000:00:10.0": "vfio-pci"}}',
    "driver a number": '{"version": 1, "devices": {"0000:00:11.0": {"original_driver": 7, '
    '"original_override": null, "target": "vfio-pci", "step": "bound"}}}',
}


@pytest.mark.parametrize("text", DAMAGED.values(), ids=DAMAGED.keys())
@pytest.mark.parametrize(
    "args",
    [
        ["bind", EDU],
        ["unbind", NVME],
        ["restore", NVME],
        ["restore", "--all"],
        ["ls"],
        ["ls", "--json"],
    ],
    ids=" ".join,
)
def test_every_command_that_reads_a_damaged_journal_exits_2(
    kernel: SimulatedKernel,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    args: list[str],
    text: str,
) -> None:
    from pyvfio.cli import app

    bind.bind_vfio(NVME, kernel)  # so unbind has to ask the journal about it
    kernel.writes.clear()
    state = tmp_path / "state"
    state.mkdir()
    (state / "journal.json").write_text(text)
    _on_kernel(kernel, monkeypatch)
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 2, done.output
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: cannot read the bind journal") and "rm " in line, line
    assert "Traceback" not in done.output
    assert kernel.writes == [] and (state / "journal.json").read_text() == text
    if args == ["ls", "--json"]:  # the groups are still shown, and say why the exit is 2
        assert json.loads(done.stdout)["journal_error"] == line.removeprefix("error: ")


def _recorded_process(kernel: SimulatedKernel, pid: int, fds: dict[int, tuple[str, str]]) -> None:
    """A process as /proc shows it (no process behind it): fd -> (link, fdinfo)."""
    base = f"proc/{pid}"
    kernel.host.write(f"{base}/cmdline", b"qemu-system-x86_64\0-m\x004G\0")
    kernel.host.write(f"{base}/status", "Name:\tqemu\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n")
    kernel.host.write(f"{base}/stat", f"{pid} (qemu) S 1 {' '.join(['0'] * 17)} 4242 0\n")
    for fd, (target, info) in fds.items():
        kernel.path(f"{base}/fd").mkdir(parents=True, exist_ok=True)
        os.symlink(target, kernel.path(f"{base}/fd/{fd}"))
        kernel.host.write(f"{base}/fdinfo/{fd}", f"pos:\t0\nflags:\t02\n{info}")


def test_a_vfio_device_fd_counts_for_its_device_where_the_kernel_names_it(
    kernel: SimulatedKernel,
) -> None:
    """Linux 6.18 names a VFIO device fd's device in fdinfo; before, it is 'some device'."""
    syspath = f"vfio-device-syspath: /sys/devices/pci0000:00/{EDU}\n"
    _recorded_process(kernel, 4000, {7: (usage.VFIO_DEVICE_FD, syspath)})
    _recorded_process(kernel, 4001, {9: (usage.VFIO_DEVICE_FD, "")})
    _recorded_process(kernel, 4002, {3: ("socket:[1234]", ""), 4: ("/dev/null", "")})
    found = {h.pid: h for h in usage.device_holders(EDU, kernel)}
    assert set(found) == {4000, 4001}
    assert found[4000].certain and found[4000].holds == (f"VFIO device {EDU}",)
    assert not found[4001].certain and found[4001].holds == (usage.SOME_VFIO_DEVICE,)
    assert found[4000].command == "qemu-system-x86_64 -m 4G" and found[4000].start == 4242
    assert [h.pid for h in usage.device_holders(NVME, kernel)] == [4001]
    with pytest.raises(bind.DeviceHeldError, match="pid 4000 \\(root: qemu-system"):
        bind.refuse_held(EDU, kernel)
    bind.refuse_held(NVME, kernel)  # an unnamed fd alone is no reason to refuse


@pytest.mark.needs_root("a child drops to nobody, whom root's journal shuts out")
def test_a_user_who_may_not_read_the_journal_sees_none_in_ls(tmp_path: Path) -> None:
    """The journal is root's (/run/pyvfio is 0700): ls as an ordinary user shows no
    journal, as before, while a command that must trust it says why it cannot."""
    folder = tmp_path / "state"
    folder.mkdir(mode=0o700)
    (folder / "journal.json").write_text('{"version": 1, "devices": {}}')
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            try:
                journal.Journal(folder)
                strict = "read"
            except journal.JournalUnreadableError as err:
                strict = str(err)
            os.write(write, json.dumps([journal.read_journal(folder), strict]).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        lenient, strict = json.loads(f.read())
    os.waitpid(pid, 0)
    assert lenient == {} and "permission denied; run as root" in strict
