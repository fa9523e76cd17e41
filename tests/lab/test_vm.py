"""pyvfio vm qemu in the lab: a nested QEMU (TCG) takes lab devices through vfio-pci.

The lab guest's root filesystem is the host's, so qemu-system-x86_64 is there too. QEMU
starts with -S: its devices are realized (VFIO group attached, RAM mapped for DMA,
BARs mapped) before any CPU runs, so query-pci answers in seconds even nested.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from pyvfio.cli import app
from pyvfio.host import details, journal
from pyvfio.host.accel import kvm_usable
from pyvfio.host.sysfs import LIVE
from pyvfio.lab.pytest_plugin import LabFixture
from pyvfio.vm import qemu

from .labhelp import main_lab

pytestmark = main_lab
runner = CliRunner()

CHIPSET = ("0000:00:1f.0", "0000:00:1f.2", "0000:00:1f.3")
PAYLOAD = Path(__file__).parent.parent / "data" / "vm" / "edu_id.S"
#: Small guest RAM: VFIO pins all of it in the 2 GiB lab guest.
SMALL = ("--memory", "128M", "--accel", "tcg")


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    where = tmp_path / "state"
    monkeypatch.setenv(journal.STATE_DIR_ENV, str(where))
    return where


def cli(*args: str) -> Result:
    return runner.invoke(app, list(args))


def check(address: str) -> tuple[Result, dict[str, Any]]:
    done = cli("vm", "qemu", address, "--check", "--json", *SMALL)
    return done, json.loads(done.stdout)


def _passes(address: str, ids: str, state: Path) -> None:
    bar0 = details.resources(address)[0].size
    before = LIVE.driver(address)
    done, data = check(address)
    assert done.exit_code == 0, done.output
    assert data["ok"], data["reasons"]
    (dev,) = data["devices"]
    assert dev["guest"]["ids"] == ids
    bars = {b["index"]: b["size"] for b in dev["guest"]["bars"]}
    assert bars[0] == bar0
    assert LIVE.driver(address) == before
    assert journal.read_journal(state) == {}
    print(f"vm qemu {address} --check: {data['seconds']} s")


def test_check_edu_passes_and_qmp_shows_1234_11e8(lab: LabFixture, state: Path) -> None:
    _passes(lab.address("edu"), "1234:11e8", state)


def test_check_nvme_passes_and_it_goes_back_to_nvme(lab: LabFixture, state: Path) -> None:
    addr = lab.address("nvme")
    assert LIVE.driver(addr) == "nvme"
    _passes(addr, "1b36:0010", state)
    assert LIVE.driver(addr) == "nvme"


def test_check_with_no_flags_passes_on_a_small_host(lab: LabFixture, state: Path) -> None:
    """The lab guest has 2 GiB: a check takes 64 MiB of guest RAM, on KVM only where the
    probe saw it run a vCPU (nested under the lab's TCG it may: TCG emulates SVM), else
    on TCG saying why; QEMU drops root (to nobody) under seccomp once edu is open."""
    addr = lab.address("edu")
    done = cli("vm", "qemu", addr, "--check", "--json")
    assert done.exit_code == 0, done.output
    data = json.loads(done.stdout)
    assert data["ok"], data["reasons"]
    argv = data["argv"]
    assert argv[argv.index("-m") + 1] == "64M"
    assert [a for a in argv if "prealloc" in a] == []
    kvm, why = kvm_usable()
    accel = "kvm" if kvm else "tcg"
    assert data["accel"] == accel and argv[argv.index("-accel") + 1] == accel
    fallback = [n for n in data["notes"] if n.startswith("KVM does not work here")]
    assert fallback == (
        [] if kvm else [f"KVM does not work here ({why}): the check runs QEMU on TCG"]
    )
    print(f"vm qemu {addr} --check with no flags: {accel}, {data['seconds']} s")
    nobody = pwd.getpwnam("nobody").pw_uid
    assert data["qemu_process"]["uids"] == [nobody] * 4
    assert data["qemu_process"]["seccomp"] == 2
    assert LIVE.driver(addr) is None
    assert journal.read_journal(state) == {}


def _qemu_holding(address: str) -> int | None:
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(a.startswith(b"vfio-pci,host=" + address.encode()) for a in cmdline):
            return int(pid)
    return None


def _watch_qemu(address: str, seen: list[tuple[list[int], int]], stop: threading.Event) -> None:
    """Read the uids and seccomp mode of the QEMU that holds ``address``, as it runs."""
    pid = None
    while not stop.is_set():
        pid = pid or _qemu_holding(address)
        if pid is not None:
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                return  # it exited
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            if fields["State"].split()[0] != "Z":
                seen.append(([int(u) for u in fields["Uid"].split()], int(fields["Seccomp"])))
        stop.wait(0.05)


def test_dropped_qemu_has_edu_and_is_not_root(lab: LabFixture, state: Path) -> None:
    """Read from /proc beside pyvfio: the QEMU that QMP shows edu in runs as nobody."""
    addr = lab.address("edu")
    seen: list[tuple[list[int], int]] = []
    stop = threading.Event()
    watcher = threading.Thread(target=_watch_qemu, args=(addr, seen, stop), daemon=True)
    watcher.start()
    try:
        plan = qemu.build([addr], check=True, run_as="nobody")
        report = qemu.run(plan, check=True, journal_dir=state)
    finally:
        stop.set()
        watcher.join(30)
    assert report.ok, str(report)
    (found,) = report.confirmations
    assert found.guest is not None and found.guest.ids == "1234:11e8"
    nobody = pwd.getpwnam("nobody").pw_uid
    assert seen, "the QEMU process was never seen in /proc"
    assert seen[-1] == ([nobody] * 4, 2)  # its last state: dropped, filtered
    assert all(uids in ([0] * 4, [nobody] * 4) for uids, _ in seen)
    assert LIVE.driver(addr) is None


def test_chipset_device_fails_preflight_naming_its_peers(state: Path) -> None:
    before = {a: LIVE.driver(a) for a in CHIPSET}
    done, data = check(CHIPSET[2])
    assert done.exit_code == 1
    assert not data["ok"] and not data["started"]
    reasons = " ".join(data["reasons"])
    assert "0000:00:1f.0 on lpc_ich" in reasons and "0000:00:1f.2 on ahci" in reasons
    assert {a: LIVE.driver(a) for a in CHIPSET} == before
    assert journal.read_journal(state) == {}


@pytest.mark.slow
def test_nested_guest_reads_the_edu_id_register(
    lab: LabFixture, state: Path, tmp_path: Path
) -> None:
    """SeaBIOS assigns the BARs, a multiboot payload reads edu's ID register and prints it."""
    if shutil.which("as") is None or shutil.which("ld") is None:
        pytest.skip("binutils (as, ld) is missing: apt-get install binutils")
    obj, payload, serial = tmp_path / "edu_id.o", tmp_path / "edu_id.bin", tmp_path / "serial"
    subprocess.run(["as", "--32", "-o", str(obj), str(PAYLOAD)], check=True)
    link = ["ld", "-m", "elf_i386", "-Ttext=0x100000", "--oformat", "binary"]
    subprocess.run([*link, "-o", str(payload), str(obj)], check=True)
    addr = lab.address("edu")
    extra = ["-nodefaults", "-display", "none", "-kernel", str(payload)]
    extra += ["-serial", f"file:{serial}", "-device", "isa-debug-exit,iobase=0xf4,iosize=4"]
    plan = qemu.build([addr], memory="128M", accel="tcg", extra=extra)
    began = time.monotonic()
    report = qemu.run(plan, timeout=600, journal_dir=state)
    print(f"nested guest read the edu ID in {time.monotonic() - began:.1f} s")
    assert report.error is None, str(report)
    assert all(c.ok for c in report.confirmations)
    assert report.qemu_exit == (0x10 << 1) | 1  # isa-debug-exit
    assert serial.read_text().strip() == "EDU-ID=010000ed"
    assert LIVE.driver(addr) is None  # edu has no host driver; it went back to none
