"""The lab runner's progress and log plumbing, with virtme-ng replaced by a fake.

The fake (``FAKE_VNG``) prints what a guest's boot console prints, then runs the guest
script the runner wrote, as the guest would (minus its console-loglevel line, which on
the host would change the host's), or dies as a panicking guest does.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from pyvfio.cli import app
from pyvfio.cli import demo as demo_cli
from pyvfio.lab import runner
from pyvfio.lab.topology import Manifest, Topology

RECORDED = Path(__file__).parents[1] / "data" / "lab" / "boot-console-6.1-tcg.txt"
RECORDED_TOKEN = "pyvfio-lab-0123abcd"

FAKE_VNG = r"""
import atexit, pathlib, re, subprocess, sys
mode, script, leftover = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3])
# As virtme-ng's /tmp/virtme_ret* file: removed by an exit handler, so only if it exits cleanly.
leftover.touch()
leftover.with_name("scratch.txt").write_text(str(pathlib.Path(script).parent))
atexit.register(leftover.unlink)
print("virtme-run: some message of virtme-ng's", flush=True)
print("[    0.000000] Linux version 6.1.0-57-amd64 (debian-kernel@lists.debian.org)", flush=True)
print("[    7.010161] Run /init as init process", flush=True)
print("[   14.036618] virtme-ng-init: triggering udev coldplug", flush=True)
if mode == "console":  # udev too slow: the script runs on the console, vng says 255
    print("[  509.6] virtme-ng-init: starting script (console fallback)", flush=True)
    text = open(script).read()
    text = "".join(l for l in text.splitlines(True) if "/proc/sys/kernel/printk" not in l)
    subprocess.run(["sh", "-c", text])
    sys.exit(255)
if mode == "panic":
    print("[   20.1] Kernel panic - not syncing: Attempted to kill init! exitcode=0x9", flush=True)
    sys.exit(255)
text = open(script).read()
if mode == "canned":  # the markers around canned output, without running the script
    token = re.search(r"(pyvfio-lab-[0-9a-f]+) command starting", text).group(1)
    print(f"{token} command starting\ncanned output\n{token} command ended 0", flush=True)
    sys.exit(0)
text = "".join(l for l in text.splitlines(True) if "/proc/sys/kernel/printk" not in l)
done = subprocess.run(["sh", "-c", text])
print("[  102.385112] reboot: Power down", flush=True)
sys.exit(done.returncode)
"""


@pytest.fixture(autouse=True)
def logs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The log folder of these runs (not the real lab's)."""
    folder = tmp_path / "lab-logs"
    monkeypatch.setenv("PYVFIO_LAB_LOG_DIR", str(folder))  # the documented variable
    return folder


def install_fake(
    tmp_path: Path, mode: str = "run"
) -> tuple[Callable[..., tuple[Manifest, Path]], Callable[..., list[str]], Path]:
    """Stand-ins for the runner's `_prepare` and `vng_argv`, and the fake's leftover file."""
    fake = tmp_path / "fake_vng.py"
    fake.write_text(FAKE_VNG)
    leftover = tmp_path / "virtme_ret_fake"

    def prepare(
        topology: Topology,
        scratch: Path,
        kernel: str | None,
        accel: str | None,
        say: Callable[[str], None],
        cpus: int = 2,
    ) -> tuple[Manifest, Path]:
        say(f"lab: booting {topology.name} on fake under TCG")
        return Manifest(topology=topology.name, accel="tcg", kernel="fake"), Path("/fake")

    def argv(
        topology: Topology,
        manifest: Manifest,
        image: Path,
        scratch: Path,
        command: str,
        **kw: object,
    ) -> list[str]:
        return [sys.executable, str(fake), mode, str(scratch / "run.sh"), str(leftover)]

    return prepare, argv, leftover


@pytest.fixture
def fake_vng(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], Path]:
    """Call with a mode to put the fake in virtme-ng's place; returns its leftover file."""

    def use(mode: str) -> Path:
        prepare, argv, leftover = install_fake(tmp_path, mode)
        monkeypatch.setattr(runner, "_prepare", prepare)
        monkeypatch.setattr(runner, "vng_argv", argv)
        monkeypatch.chdir(tmp_path)
        return leftover

    return use


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_watcher_follows_a_recorded_boot() -> None:
    """Fed a real boot's output at the seconds it came, the watcher reports the steps of
    the boot when they happened, passes on only the command's output, and times both."""
    clock = FakeClock()
    progress: list[str] = []
    output: list[str] = []
    watcher = runner.GuestWatcher(RECORDED_TOKEN, output.append, progress.append, clock)
    for line in RECORDED.read_text().splitlines():
        if line.startswith("#"):
            continue
        seconds, _, text = line.strip().partition(" ")
        clock.now = float(seconds)
        watcher.feed(text + "\n")
    assert progress == [
        "kernel 6.1.0-57-amd64 started (23 s)",
        "kernel up, init /init running (33 s)",
        "guest userspace up, udev probing the devices (63 s)",
        "guest up, command starting (127 s)",
    ]
    assert output == [
        "6.1.0-57-amd64",
        "to-stderr",
        "ls: cannot access '/nonexist': No such file or directory",
        "done",
    ]
    assert watcher.status == 2
    boot, command = watcher.seconds()
    assert boot == pytest.approx(127.08) and command == pytest.approx(127.97 - 127.08)
    assert watcher.failure(2) is None


def test_the_watcher_says_in_one_line_why_a_guest_died() -> None:
    panicked = runner.GuestWatcher("tok", print, print, FakeClock())
    for line in (
        "[    0.000000] Linux version 6.1.0-57-amd64 (gcc)",
        "[    3.000000] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown",
        "[    3.000100] CPU: 0 PID: 1 Comm: swapper/0 Not tainted 6.1.0-57-amd64 #1",
    ):
        panicked.feed(line)
    assert panicked.failure(255) == (
        "the guest's kernel panicked while booting (the command had not started): "
        "Kernel panic - not syncing: VFS: Unable to mount root fs on unknown"
    )
    died = runner.GuestWatcher("tok", print, print, FakeClock())
    died.feed("tok command starting")
    died.feed("some output")
    assert died.failure(255) == "the guest stopped while the command ran (virtme-ng exit 255)"


def test_the_last_line_of_the_command_may_lack_a_newline() -> None:
    output: list[str] = []
    watcher = runner.GuestWatcher("tok", output.append, lambda line: None, FakeClock())
    for line in ("tok command starting", "one", "twotok command ended 0"):
        watcher.feed(line + "\n")
    assert output == ["one", "two"] and watcher.status == 0


def test_lab_run_says_where_the_guest_is_and_keeps_its_output(
    fake_vng: Callable[[str], Path], logs: Path
) -> None:
    leftover = fake_vng("run")
    done = CliRunner().invoke(app, ["lab", "run", "-d", "edu", "--", "echo", "hello"])
    assert done.exit_code == 0, done.stderr
    assert done.stdout == "hello\n", "only the command's output on stdout"
    progress = done.stderr.splitlines()
    expected = [
        "lab: booting edu on fake under TCG",
        "lab: edu: virtme-ng started: pid *, the guest's output kept in */run-edu.log (* s)",
        "lab: edu: kernel 6.1.0-57-amd64 started (* s)",
        "lab: edu: kernel up, init /init running (* s)",
        "lab: edu: guest userspace up, udev probing the devices (* s)",
        "lab: edu: guest up, command starting (* s)",
        "lab: command done: exit 0 after * s (guest up in * s; command * s; TCG, kernel fake)",
    ]
    assert len(progress) == len(expected), done.stderr
    for line, pattern in zip(progress, expected, strict=True):
        assert re.fullmatch(re.escape(pattern).replace(r"\*", ".*"), line), (line, pattern)
    log = (logs / "run-edu.log").read_text()
    for kept in ("some message of virtme-ng's", "Linux version", "hello", "reboot: Power down"):
        assert kept in log
    assert "guest up, command starting" in log, "the progress lines are in the log too"
    assert not leftover.exists()
    assert [p.name for p in logs.iterdir()] == ["run-edu.log"], "no partial file left"
    assert (logs / "run-edu.log").stat().st_mode & 0o777 == 0o644


def test_a_log_folder_that_cannot_be_written_is_said_and_the_run_goes_on(
    fake_vng: Callable[[str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_vng("run")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("PYVFIO_LAB_LOG_DIR", str(blocker / "logs"))
    done = CliRunner().invoke(app, ["lab", "run", "--", "sh", "-c", "echo hi; exit 4"])
    assert (done.exit_code, done.stdout) == (4, "hi\n")
    assert "lab: the guest's output is not kept: " in done.stderr
    assert "(set PYVFIO_LAB_LOG_DIR to a folder)" in done.stderr
    assert "whole log" not in done.stderr.splitlines()[-1]


def test_a_failed_command_names_the_log(fake_vng: Callable[[str], Path], logs: Path) -> None:
    fake_vng("run")
    done = CliRunner().invoke(app, ["lab", "run", "--", "sh", "-c", "echo oops; exit 3"])
    assert done.exit_code == 3
    last = done.stderr.splitlines()[-1]
    assert last.startswith("lab: command done: exit 3 after ")
    assert last.endswith(f"; whole log: {logs / 'run-edu.log'}")


def test_the_commands_status_survives_virtme_ngs_console_fallback(
    fake_vng: Callable[[str], Path],
) -> None:
    """Seen at load 19: udev did not name the ports in time, the script ran on the
    console and vng said 255; the guest script's end mark still has the status."""
    fake_vng("console")
    done = CliRunner().invoke(app, ["lab", "run", "--", "sh", "-c", "echo hi; exit 3"])
    assert (done.exit_code, done.stdout) == (3, "hi\n")
    assert "the command runs on the console" in done.stderr
    assert done.stderr.splitlines()[-1].startswith("lab: command done: exit 3 after ")


def test_a_panicking_guest_says_so_in_one_line_and_names_the_log(
    fake_vng: Callable[[str], Path], logs: Path
) -> None:
    fake_vng("panic")
    done = CliRunner().invoke(app, ["lab", "run", "--", "true"])
    assert done.exit_code == 255
    assert done.stderr.splitlines()[-1] == (
        "lab: failed: the guest's kernel panicked while booting (the command had not "
        "started): Kernel panic - not syncing: Attempted to kill init! exitcode=0x9; "
        f"whole log: {logs / 'run-edu.log'}"
    )
    assert "Kernel panic" in (logs / "run-edu.log").read_text()


def test_a_guest_past_its_timeout_is_stopped_in_one_line(
    fake_vng: Callable[[str], Path], logs: Path
) -> None:
    leftover = fake_vng("run")
    done = CliRunner().invoke(
        app, ["lab", "run", "--timeout", "1", "--", "sh", "-c", "echo waiting; sleep 600"]
    )
    assert done.exit_code == 1
    last = done.stderr.splitlines()[-1]
    assert last == (
        "error: the lab guest did not finish within 1 s and was killed while the command "
        f"ran; last line: waiting; whole log: {logs / 'run-edu.log'}"
    )
    assert not leftover.exists(), "stopped with SIGINT first: its exit handlers ran"


def test_the_demo_reports_progress_and_keeps_its_log(
    fake_vng: Callable[[str], Path], logs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_vng("canned")
    console = Console(force_terminal=False)
    assert demo_cli.in_lab(console) == 0
    captured = capsys.readouterr()
    assert "canned output" in captured.out
    assert "lab: edu: guest up, command starting" in captured.err
    assert "lab: command done: exit 0" in captured.err.splitlines()[-1]
    assert "canned output" in (logs / "demo.log").read_text()


DRIVER = """
import sys
from pathlib import Path

sys.path.insert(0, {tests!r})
from test_lab_runner import install_fake

from pyvfio.cli import main
from pyvfio.lab import runner

runner._prepare, runner.vng_argv, _ = install_fake(Path({tmp!r}))
runner.STOP_GRACE = 120  # a loaded host must not turn the clean stop into a SIGKILL
sys.argv = ["pyvfio", "lab", "run", "--", "sh", "-c", "echo $$ > {pidfile}; exec sleep 600"]
main()
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_stopping_lab_run_stops_the_guest_and_leaves_nothing(
    tmp_path: Path, logs: Path, sig: signal.Signals
) -> None:
    """Ctrl-C (or a SIGTERM) ends the guest's processes, and virtme-ng gets to remove its
    temporary files: nothing is left running or behind but the log."""
    pidfile = tmp_path / "command.pid"
    driver = tmp_path / "driver.py"
    driver.write_text(
        DRIVER.format(tests=str(Path(__file__).parent), tmp=str(tmp_path), pidfile=pidfile)
    )
    proc = subprocess.Popen(
        [sys.executable, str(driver)],
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYVFIO_LAB_LOG_DIR": str(logs)},
    )
    try:
        deadline = time.monotonic() + 120
        while not (pidfile.exists() and pidfile.read_text().strip()):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        command_pid = int(pidfile.read_text())
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert "interrupted while the command ran: guest stopped; whole log:" in err
    deadline = time.monotonic() + 60
    while _alive(command_pid) and time.monotonic() < deadline:
        time.sleep(0.05)  # an orphan is reaped by init, not by us
    assert not _alive(command_pid), "the guest's command was left running"
    assert not (tmp_path / "virtme_ret_fake").exists(), "virtme-ng's temporary file was left"
    assert [p.name for p in logs.iterdir()] == ["run-edu.log"]
    assert not Path((tmp_path / "scratch.txt").read_text()).exists(), "scratch folder left"


def test_qemu_is_found_in_virtme_ngs_session(tmp_path: Path) -> None:
    for pid, comm, session in (
        (100, "vng", 100),
        (120, "qemu-system-x86", 100),
        (130, "qemu-system-x86", 7),
    ):
        folder = tmp_path / str(pid)
        folder.mkdir()
        # pid (comm) state ppid pgrp session ... (proc(5))
        (folder / "stat").write_text(f"{pid} ({comm}) S 1 {session} {session} 0 -1\n")
    assert runner.qemu_pid(100, proc=tmp_path) == 120
    assert runner.qemu_pid(7, proc=tmp_path) == 130
    assert runner.qemu_pid(55, proc=tmp_path) is None


def test_vng_boots_with_the_console_on_and_without_trying_virtiofsd(tmp_path: Path) -> None:
    topology = Topology(devices=("edu",))
    manifest = Manifest(topology=topology.name, accel="tcg", kernel="k")
    argv = runner.vng_argv(topology, manifest, Path("/k"), tmp_path, "true", boot_console=True)
    assert {"--verbose", "--force-9p"} <= set(argv)
    assert "--append=no_timer_check intel_iommu=on" in argv, "no timer panic on a loaded host"
    quiet = runner.vng_argv(topology, manifest, Path("/k"), tmp_path, None)
    assert "--verbose" not in quiet, "lab shell's terminal gets no boot console"
