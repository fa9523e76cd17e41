"""pyvfio ls/bind/unbind/restore on the real kernel: drivers, overrides, the journal, kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from pyvfio.cli import app
from pyvfio.host import bind, journal, usage
from pyvfio.host.snapshot import record
from pyvfio.host.sysfs import LIVE, process_start
from pyvfio.lab.pytest_plugin import LabFixture

from .labhelp import DeviceHolder, main_lab

pytestmark = main_lab
runner = CliRunner()

CHIPSET = ("0000:00:1f.0", "0000:00:1f.2", "0000:00:1f.3")
CHIPSET_DRIVERS = {CHIPSET[0]: "lpc_ich", CHIPSET[1]: "ahci", CHIPSET[2]: "i801_smbus"}


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    where = tmp_path / "state"
    monkeypatch.setenv(journal.STATE_DIR_ENV, str(where))
    return where


def pyvfio(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    """The real command in its own process (for kill -9 and another user)."""
    return subprocess.run(
        [sys.executable, "-m", "pyvfio", *args],
        capture_output=True,
        text=True,
        check=False,
        **kw,
    )


def cli(*args: str) -> Result:
    """The command in this process: the same code, without a Python start under TCG."""
    return runner.invoke(app, list(args))


def drivers(*addrs: str) -> dict[str, str | None]:
    return {a: LIVE.driver(a) for a in addrs}


def overrides(*addrs: str) -> dict[str, str | None]:
    return {a: bind.read_override(a) for a in addrs}


def root_9p_device() -> str:
    """The virtio-pci device whose 9p share is mounted on /."""
    sources = {src for src, point, fs in usage.mounts() if point == "/" and fs == "9p"}
    for dev in Path("/sys/bus/virtio/devices").iterdir():
        tag = (LIVE.read_attr(f"sys/bus/virtio/devices/{dev.name}/mount_tag") or "").strip("\0")
        if tag in sources:
            return Path(os.path.realpath(dev)).parent.name
    raise AssertionError("no 9p root device")


def test_ls_json_groups_equal_sys_kernel_iommu_groups(state: Path) -> None:
    done = cli("ls", "--json")
    assert done.exit_code == 0, done.output
    data = json.loads(done.stdout)
    got = {g["group"]: sorted(d["address"] for d in g["devices"]) for g in data["groups"]}
    want = {
        int(g): sorted(os.listdir(f"/sys/kernel/iommu_groups/{g}/devices"))
        for g in os.listdir("/sys/kernel/iommu_groups")
    }
    assert got == want
    for group in data["groups"]:
        for dev in group["devices"]:
            assert dev["driver"] == LIVE.driver(dev["address"])


def test_a_snapshot_of_the_lab_gives_the_same_answers(
    lab: LabFixture, tmp_path: Path, state: Path
) -> None:
    tarball = tmp_path / "lab.tar.gz"
    record(tarball)
    for args in (["ls", "--json"], ["show", "--json", lab.address("edu", 1)]):
        live, replay = cli(*args), cli(*args, "--root", str(tarball))
        assert (live.exit_code, replay.exit_code) == (0, 0), live.output + replay.output
        assert json.loads(live.stdout) == json.loads(replay.stdout)
    live, replay = cli("doctor", "--json"), cli("doctor", "--json", "--root", str(tarball))
    live_doc, replay_doc = json.loads(live.stdout), json.loads(replay.stdout)
    pairs = zip(live_doc["checks"], replay_doc["checks"], strict=True)
    differ = [(a, b) for a, b in pairs if a != b]
    assert not differ, differ  # check by check, so a failure names the check
    assert live_doc == replay_doc


@pytest.mark.parametrize("name,original", [("edu", None), ("nvme", "nvme")])
def test_bind_then_restore(lab: LabFixture, state: Path, name: str, original: str | None) -> None:
    addr = lab.address(name)
    assert LIVE.driver(addr) == original
    done = cli("bind", addr)
    assert done.exit_code == 0, done.output
    assert (LIVE.driver(addr), bind.read_override(addr)) == ("vfio-pci", "vfio-pci")
    assert os.path.exists(f"/dev/vfio/{LIVE.iommu_group(addr)}")
    again = cli("bind", addr)
    assert again.exit_code == 0 and "nothing to do" in again.stdout
    [entry] = json.loads(cli("ls", "--json").stdout)["journal"]
    assert (entry["address"], entry["original_driver"], entry["done"]) == (addr, original, True)
    done = cli("restore", addr)
    assert done.exit_code == 0, done.output
    assert (LIVE.driver(addr), bind.read_override(addr)) == (original, None)


def test_unbind_gives_nvme_back(lab: LabFixture, state: Path) -> None:
    addr = lab.address("nvme")
    assert cli("bind", addr).exit_code == 0
    done = cli("unbind", addr)
    assert done.exit_code == 0, done.output
    assert (LIVE.driver(addr), bind.read_override(addr)) == ("nvme", None)


def test_group_bind_of_the_chipset_then_restore(state: Path) -> None:
    done = cli("bind", "--group", "00:1f.2")
    assert done.exit_code == 0, done.output
    assert drivers(*CHIPSET) == dict.fromkeys(CHIPSET, "vfio-pci")
    done = cli("restore", "--all")
    assert done.exit_code == 0, done.output
    assert drivers(*CHIPSET) == CHIPSET_DRIVERS
    assert overrides(*CHIPSET) == dict.fromkeys(CHIPSET)


def test_bind_of_the_9p_root_device_is_refused(state: Path) -> None:
    addr = root_9p_device()
    before = (LIVE.driver(addr), bind.read_override(addr))
    done = cli("bind", addr)
    assert done.exit_code == 1
    assert "in use" in done.stderr and "9p" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert (LIVE.driver(addr), bind.read_override(addr)) == before
    assert not (state / "journal.json").exists()


def test_dry_run_changes_nothing(lab: LabFixture, state: Path) -> None:
    addr = lab.address("nvme")
    done = cli("bind", "--dry-run", "--json", addr)
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["changed"] == []
    assert LIVE.driver(addr) == "nvme"


def test_kill_9_of_the_command_after_a_step_then_restore_all(lab: LabFixture, state: Path) -> None:
    addr = lab.address("nvme")
    env = {**os.environ, journal.CRASH_ENV: "4"}  # after the override's journal entry
    done = pyvfio("bind", addr, env=env)
    assert done.returncode == -signal.SIGKILL
    assert "half-done" in cli("ls").stdout
    assert cli("restore", "--all").exit_code == 0
    assert (LIVE.driver(addr), bind.read_override(addr)) == ("nvme", None)


def _bind_killed_after(step: int, addrs: tuple[str, ...]) -> int:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child dies or exits
        os.environ[journal.CRASH_ENV] = str(step)
        try:
            plan = bind.plan_bind(addrs, group=True)
            bind.bind_devices(plan)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return status


def test_kill_9_after_every_step_then_restore_all(lab: LabFixture, state: Path) -> None:
    nvme = lab.address("nvme")
    everyone = (*CHIPSET, nvme)
    original = drivers(*everyone)
    assert original == {**CHIPSET_DRIVERS, nvme: "nvme"}
    killed = 0
    for step in range(1, 80):
        status = _bind_killed_after(step, (CHIPSET[1], nvme))
        if not os.WIFSIGNALED(status):
            assert os.WEXITSTATUS(status) == 0
            assert drivers(*everyone) == dict.fromkeys(everyone, "vfio-pci")
        else:
            assert os.WTERMSIG(status) == signal.SIGKILL
            killed += 1
        bind.restore(all_devices=True)
        assert drivers(*everyone) == original, step
        assert overrides(*everyone) == dict.fromkeys(everyone), step
        if not os.WIFSIGNALED(status):
            break
    # journal, modules, then for each of 4 devices: override, journal, unbind, journal,
    # probe, journal
    assert killed == 2 + 4 * 6


@pytest.mark.parametrize(
    "args", [["0000:00:1f.9"], ["0000:7f:1f.0"], ["--driver", "nope", "00:1f.2"]]
)
def test_bad_input_is_one_line_exit_2_and_changes_nothing(state: Path, args: list[str]) -> None:
    before = drivers(*CHIPSET)
    done = cli("bind", *args)
    assert done.exit_code == 2, done.output
    assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith("error:")
    assert drivers(*CHIPSET) == before
    assert not (state / "journal.json").exists()


def test_non_root_is_refused_with_exit_2(state: Path) -> None:
    """As nobody (a forked child: the venv's Python lives where nobody cannot go)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read)
            os.setgid(65534)
            os.setuid(65534)
            done = cli("bind", "00:1f.2")
            os.write(write, json.dumps([done.exit_code, done.stderr]).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        text = f.read()
    os.waitpid(pid, 0)
    code, stderr = json.loads(text)
    assert code == 2, stderr
    assert "needs root" in stderr and len(stderr.strip().splitlines()) == 1
    assert drivers(*CHIPSET) == CHIPSET_DRIVERS


def test_restore_of_a_device_held_open_is_refused_naming_the_holder(
    lab: LabFixture, state: Path
) -> None:
    addr = lab.address("edu")
    assert cli("bind", addr).exit_code == 0
    holder = DeviceHolder(addr)
    try:
        done = cli("restore", addr)
        assert done.exit_code == 2, done.output
        [line] = done.stderr.strip().splitlines()
        assert f"{addr} is held open by pid {holder.pid} (root:" in line, line
        assert f"/dev/vfio/{LIVE.iommu_group(addr)}" in line and "nothing was changed" in line
        assert LIVE.driver(addr) == "vfio-pci" and journal.read_journal()[addr].done
        assert holder.ask("dma") == {"round_trip": True}  # untouched
    finally:
        holder.end()
    assert cli("restore", addr).exit_code == 0
    assert (LIVE.driver(addr), bind.read_override(addr)) == (None, None)


def test_an_unbind_the_kernel_makes_wait_times_out_and_the_lock_is_free(
    lab: LabFixture, state: Path
) -> None:
    """A holder that closed its group fd but keeps the device fd is not seen in /proc on
    the lab's kernels (no fdinfo syspath before 6.18): restore writes, vfio-pci's remove
    waits for the device to be closed, and restore stops waiting after --timeout with
    the journal saying so; once the holder lets go the kernel finishes, restore too."""
    addr = lab.address("edu")
    assert cli("bind", addr).exit_code == 0
    holder = DeviceHolder(addr)
    try:
        assert holder.ask("close-group")["closed"] == [f"/dev/vfio/{LIVE.iommu_group(addr)}"]
        done = cli("restore", addr, "--timeout", "3")
        assert done.exit_code == 1, done.output
        [line] = done.stderr.strip().splitlines()
        assert f"{addr}: waited 3 s for vfio-pci to let it go" in line, line
        assert f"pid {holder.pid} (root:" in line and "which device, this kernel" in line
        entry = journal.read_journal()[addr]
        assert entry.waiting is not None and not entry.done, entry
        waiter = entry.waiting.pid
        assert process_start(waiter) == entry.waiting.start  # still in the kernel
        assert "waiting" in cli("ls").stdout
        again = cli("restore", addr, "--timeout", "3")  # the lock is free: no queueing
        assert again.exit_code == 1 and f"process {waiter} still waits" in again.stderr
        assert holder.ask("dma") == {"round_trip": True}  # the holder still has it
    finally:
        holder.end()
    deadline = time.monotonic() + 60  # a hang guard: the kernel finishes on the last close
    while process_start(waiter) is not None:
        assert time.monotonic() < deadline, "the unbind did not finish after the close"
        time.sleep(0.1)
    assert LIVE.driver(addr) is None  # the unbind the kernel finished
    done = cli("restore", addr)
    assert done.exit_code == 0, done.output
    assert (LIVE.driver(addr), bind.read_override(addr)) == (None, None)
    assert journal.read_journal() == {}
