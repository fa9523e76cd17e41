"""Boot the lab guest with virtme-ng and run one command in it as root.

The guest's root filesystem is this machine's own (virtme-ng exports ``/`` over 9p,
read-only, with writable overlays), so the guest runs the same Python, venv and
checkout. A scratch folder on the host is shared read-write: it carries the manifest,
the script to run, results, and the NVMe backing files.

A boot under TCG takes minutes, so a run says where the guest is as it goes (QEMU
started, kernel started, init reached, command starting) from the guest's boot
console, and keeps everything the guest printed in the log folder (`log_dir`).
"""

from __future__ import annotations

import compileall
import contextlib
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from pyvfio.errors import LabError, LabUnavailableError
from pyvfio.host.accel import QEMU, QEMU_PACKAGE
from pyvfio.lab.accel import choose_accel
from pyvfio.lab.kernels import resolve_kernel
from pyvfio.lab.topology import NVME_BACKING_SIZE, Manifest, Topology

#: The environment variable that, in the guest, points at the manifest.
MANIFEST_ENV = "PYVFIO_LAB_MANIFEST"

#: Where each run keeps the guest's whole output; the environment variable overrides it.
LOG_DIR_ENV = "PYVFIO_LAB_LOG_DIR"
DEFAULT_LOG_DIR = Path("/tmp/pyvfio-lab-logs")

#: Seconds a stopped guest gets to exit on SIGINT (virtme-ng then removes its temporary
#: files) before its process group is killed.
STOP_GRACE = 5.0

#: Boot console lines that mark a step of the boot: the first match of each becomes a
#: progress line (``{}`` takes the pattern's group).
BOOT_STEPS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\] Linux version (\S+)"), "kernel {} started"),
    (re.compile(r"\] Run (\S+) as init process"), "kernel up, init {} running"),
    (
        re.compile(r"virtme-ng-init: triggering udev coldplug"),
        "guest userspace up, udev probing the devices",
    ),
    (
        re.compile(r"virtme-ng-init: starting script \(console fallback\)"),
        "udev was too slow to name virtio-serial's ports: the command runs on the console",
    ),
)
#: The kernel's last words (panic(): emergency level, so on the console at any loglevel).
PANIC = re.compile(r"Kernel panic - not syncing:.*")


def log_dir() -> Path:
    """The folder where lab runs keep the guest's output (``$PYVFIO_LAB_LOG_DIR``)."""
    return Path(os.environ.get(LOG_DIR_ENV) or DEFAULT_LOG_DIR)


@dataclass(frozen=True)
class LabResult:
    """How a command ended in the guest.

    ``boot_seconds`` is the time until the command started and ``command_seconds`` its
    own run (None when it never started or never ended); ``failure`` says in one line
    why the guest ended without the command ending (a kernel panic, the guest dying);
    ``log`` is the file that keeps everything the guest printed.
    """

    returncode: int
    output: str
    accel: str
    kernel: str
    seconds: float
    boot_seconds: float | None = None
    command_seconds: float | None = None
    failure: str | None = None
    log: Path | None = None

    def summary(self) -> str:
        """One line for the end of a run: how the command ended, or why the guest did,
        and where the whole log is when something went wrong."""
        log = f"; whole log: {self.log}" if self.log else ""
        if self.failure:
            return f"failed: {self.failure}{log}"
        return f"command done: {self}{log if self.returncode else ''}"

    def __str__(self) -> str:
        parts = []
        if self.boot_seconds is not None:
            parts.append(f"guest up in {self.boot_seconds:.1f} s")
        if self.command_seconds is not None:
            parts.append(f"command {self.command_seconds:.1f} s")
        timing = "; ".join(parts) + "; " if parts else ""
        return (
            f"exit {self.returncode} after {self.seconds:.1f} s "
            f"({timing}{self.accel.upper()}, kernel {self.kernel})"
        )


def _require(tool: str, package: str) -> str:
    found = shutil.which(tool)
    if found:
        return found
    raise LabUnavailableError(f"{tool} is missing: install it ({package})")


def _vng() -> str:
    beside = Path(sys.executable).parent / "vng"
    if beside.exists():
        return str(beside)
    return _require("vng", "pip install 'pyvfio[lab]' for virtme-ng")


@contextlib.contextmanager
def scratch_dir() -> Iterator[Path]:
    """A host folder the guest may write, removed afterwards.

    It lives under /tmp, which the guest sees through an overlay of the host's
    /tmp, so the mount point exists there before virtme-ng binds it read-write.
    """
    path = Path(tempfile.mkdtemp(prefix="pyvfio-lab-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def vng_argv(
    topology: Topology,
    manifest: Manifest,
    kernel: Path,
    scratch: Path,
    exec_command: str | None,
    *,
    cpus: int = 2,
    boot_console: bool = False,
) -> list[str]:
    """The virtme-ng command line that boots ``topology``.

    ``boot_console`` sends the kernel's console to QEMU's stderr (``vng -v``: virtme-ng
    otherwise boots it quiet into /dev/null), where a run reads the boot's progress.
    """
    argv = [
        _vng(),
        "--run",
        str(kernel),
        "--disable-microvm",
        # 9p straight away: virtme-ng tries virtiofsd first for / and for each --rwdir,
        # and where virtiofsd cannot start (Debian 12's) it waits 3 s for each.
        "--force-9p",
        "--name",
        "pyvfio-lab",
        "--memory",
        topology.memory,
        "--cpus",
        str(cpus),
        "--user",
        "root",
        "--rwdir",
        str(scratch),
        "--qemu-opts=" + shlex.join(topology.qemu_args(manifest.devices)),
        *topology.numa_args(cpus),
    ]
    if boot_console:
        argv.insert(1, "--verbose")
    if manifest.accel == "tcg":
        argv.append("--disable-kvm")
    # The kernel checks that the IO-APIC timer ticks by busy-waiting for a few ticks; a
    # guest starved of host CPU misses them, and with interrupt remapping that is a panic
    # ("timer doesn't work through Interrupt-remapped IO-APIC", seen under TCG at load 19
    # on 2 CPUs). QEMU's timer does work: skip the check (as VM images do).
    append = ["no_timer_check", *topology.kernel_args()]
    argv.append("--append=" + " ".join(append))
    if exec_command is not None:
        argv.append("--exec=" + exec_command)
    return argv


def precompile(cwd: Path) -> None:
    """Write bytecode for pyvfio (and a tests folder) on the host before booting.

    The guest reads this checkout over 9p and, under TCG, compiling every module
    at each start costs many seconds; with PYTHONDONTWRITEBYTECODE set on the host
    nothing else would have written the .pyc files.
    """
    for folder in (Path(__file__).resolve().parents[1], cwd / "tests"):
        if folder.is_dir():
            compileall.compile_dir(folder, quiet=2, workers=1)


def _prepare(
    topology: Topology,
    scratch: Path,
    kernel: str | None,
    accel: str | None,
    say: Callable[[str], None],
    cpus: int = 2,
) -> tuple[Manifest, Path]:
    topology.check_kernel(kernel)
    _require(QEMU, f"Debian: apt-get install {QEMU_PACKAGE}")
    if kernel in (None, "stock") and not shutil.which("busybox"):
        # A modular kernel needs virtme-ng's initramfs to load 9p/virtio, built from busybox.
        raise LabUnavailableError(
            "busybox is missing: virtme-ng builds the guest's initramfs "
            "with it (Debian: apt-get install busybox-static)"
        )
    image = resolve_kernel(kernel)
    chosen = choose_accel(accel)
    say(
        f"lab: booting {topology.name} on {image.name} under {chosen.upper()} "
        f"({cpus} vCPUs, {topology.memory})"
    )
    devices = topology.layout(scratch)
    for dev in devices:
        if dev.backing_file:
            with open(dev.backing_file, "wb") as f:
                f.truncate(NVME_BACKING_SIZE)
    manifest = Manifest(topology=topology.name, accel=chosen, kernel=image.name, devices=devices)
    manifest.dump(scratch / "manifest.json")
    return manifest, image


def guest_script(command: str, cwd: str, scratch: Path, token: str) -> str:
    """The shell script the guest runs: ``command`` between two marker lines.

    The markers (with ``token``, unique to the run) tell the host's `GuestWatcher` where
    the boot ends and the command's output begins and ends. The boot console is on for
    the log; once the guest is up only emergencies reach it (console loglevel 1, as in
    virtme-ng's quiet boot), so kernel messages do not land in the command's output.
    """
    return (
        "#!/bin/sh\n"
        # The command's stderr joins its stdout, as `lab run` has always shown them.
        "exec 2>&1\n"
        f"export {MANIFEST_ENV}={shlex.quote(str(scratch / 'manifest.json'))}\n"
        "export PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1\n"
        f"export PATH={shlex.quote(str(Path(sys.executable).parent))}:$PATH\n"
        "echo 1 > /proc/sys/kernel/printk\n"
        f"echo '{token} command starting'\n"
        f"cd {shlex.quote(cwd)} || exit 125\n"
        # A subshell, so that an `exit` or `exec` in the command still reaches the end mark.
        f"(\n{command}\n)\n"
        "status=$?\n"
        f"echo '{token} command ended' $status\n"
        "exit $status\n"
    )


class GuestWatcher:
    """Reads the guest's output line by line and says where the guest is.

    Until the start mark of `guest_script` the lines are the boot: virtme-ng's messages
    and the kernel's console, whose `BOOT_STEPS` become ``progress`` lines; from the
    start mark to the end mark they are the command's output, passed to ``on_output``;
    after it, the guest's shutdown. Every line goes to the log whatever its part.
    """

    def __init__(
        self,
        token: str,
        on_output: Callable[[str], None],
        progress: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.start_mark = f"{token} command starting"
        self.end_mark = re.compile(rf"{re.escape(token)} command ended (\d+)$")
        self.on_output = on_output
        self.progress = progress
        self.clock = clock
        self.started = clock()
        self.steps_seen: set[int] = set()
        self.command_started: float | None = None
        self.command_ended: float | None = None
        self.status: int | None = None
        self.panic: str | None = None
        self.output: list[str] = []
        self.last_line = ""

    def elapsed(self) -> float:
        return self.clock() - self.started

    def say(self, message: str) -> None:
        self.progress(f"{message} ({self.elapsed():.0f} s)")

    @property
    def kernel_seen(self) -> bool:
        return bool(self.steps_seen)

    def feed(self, line: str) -> None:
        line = line.rstrip("\n")
        if line.strip():
            self.last_line = line
        panic = PANIC.search(line)
        if panic and self.panic is None:
            self.panic = panic.group(0).strip()
        if self.command_started is None:
            if line.endswith(self.start_mark):
                self.command_started = self.clock()
                self.say("guest up, command starting")
                return
            for index, (pattern, message) in enumerate(BOOT_STEPS):
                found = pattern.search(line)
                if found and index not in self.steps_seen:
                    self.steps_seen.add(index)
                    self.say(message.format(*found.groups()))
            return
        if self.command_ended is None:
            end = self.end_mark.search(line)
            if end is None:
                self.output.append(line + "\n")
                self.on_output(line)
                return
            self.command_ended = self.clock()
            self.status = int(end.group(1))
            if end.start():  # the command's last line had no newline
                self.output.append(line[: end.start()])
                self.on_output(line[: end.start()])

    @property
    def phase(self) -> str:
        """Where the guest was, for a message about its end."""
        if self.command_started is None:
            return "while booting (the command had not started)"
        if self.command_ended is None:
            return "while the command ran"
        return "after the command ended"

    def failure(self, returncode: int) -> str | None:
        """Why the guest ended without the command ending, in one line (None: it ended)."""
        if self.command_ended is not None:
            return None
        if self.panic:
            return f"the guest's kernel panicked {self.phase}: {self.panic}"
        return f"the guest stopped {self.phase} (virtme-ng exit {returncode})"

    def seconds(self) -> tuple[float | None, float | None]:
        """The boot's and the command's seconds (None for a part that did not happen)."""
        boot = None if self.command_started is None else self.command_started - self.started
        command = None
        if self.command_started is not None and self.command_ended is not None:
            command = self.command_ended - self.command_started
        return boot, command


class GuestLog:
    """The file in `log_dir` that keeps one run's whole output, line by line as it comes.

    It is written beside its final name and renamed over it when the run ends, so two
    runs of the same name never interleave and a reader never sees half of one. Where
    it cannot be written the run goes on without it (``path`` is None) and says why.
    """

    def __init__(self, name: str, say: Callable[[str], None]) -> None:
        self.path: Path | None = log_dir() / f"{name.replace('/', '_')}.log"
        self._lock = threading.Lock()
        self._file: TextIO | None = None
        self._partial = ""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, self._partial = tempfile.mkstemp(
                prefix=f".{self.path.name}.", suffix=".part", dir=self.path.parent
            )
            os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide it from whoever reads logs
            self._file = os.fdopen(fd, "w", errors="replace")
        except OSError as err:
            say(f"lab: the guest's output is not kept: {err} (set {LOG_DIR_ENV} to a folder)")
            self.path = None

    def write(self, line: str) -> None:
        with self._lock:
            if self._file is not None:
                self._file.write(line.rstrip("\n") + "\n")
                self._file.flush()

    def close(self) -> None:
        with self._lock:
            if self._file is None:
                return
            self._file.close()
            self._file = None
            assert self.path is not None
            os.replace(self._partial, self.path)


def qemu_pid(session: int, proc: Path = Path("/proc")) -> int | None:
    """The QEMU process in the session ``session`` (virtme-ng's), if it runs yet."""
    for stat in proc.glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # the process ended while we looked
            continue
        comm = text[text.find("(") + 1 : text.rfind(")")]
        fields = text[text.rfind(")") + 2 :].split()
        # Fields after comm: state ppid pgrp session ... (proc(5)).
        if comm.startswith("qemu-system") and len(fields) > 3 and int(fields[3]) == session:
            return int(stat.parent.name)
    return None


def _group_alive(proc: subprocess.Popen[str]) -> bool:
    proc.poll()  # an unreaped leader would count as a member
    try:
        os.killpg(proc.pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def stop_guest(proc: subprocess.Popen[str], grace: float | None = None) -> None:
    """End virtme-ng's process group (virtme-ng, QEMU): SIGINT, then SIGKILL after ``grace``.

    SIGINT first: virtme-ng's Python then runs its exit handlers, which remove its
    temporary files (/tmp/virtme_ret*), and QEMU exits on it; SIGKILL at once would
    leave those files behind.
    """
    try:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        deadline = time.monotonic() + (STOP_GRACE if grace is None else grace)
        while time.monotonic() < deadline and _group_alive(proc):
            time.sleep(0.05)
    finally:  # a second Ctrl-C while waiting goes straight to SIGKILL
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def interrupt_on_sigterm() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP end this process as Ctrl-C does.

    The guest runs in a session of its own: killed by a plain SIGTERM, this process would
    leave it running; as a KeyboardInterrupt, the run stops the guest on the way out.
    Only the main thread can set handlers; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP)}

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"stopped by signal {signum}")

    for sig, handler in saved.items():
        if handler is signal.SIG_DFL:
            signal.signal(sig, interrupt)
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def run(
    command: Sequence[str] | str,
    topology: Topology | None = None,
    *,
    kernel: str | None = None,
    accel: str | None = None,
    timeout: float = 1800,
    cwd: str | os.PathLike[str] | None = None,
    on_output: Callable[[str], None] | None = None,
    on_progress: Callable[[str], None] | None = None,
    scratch: Path | None = None,
    cancel: threading.Event | None = None,
    cpus: int = 2,
    log_name: str | None = None,
) -> LabResult:
    """Boot the lab, run ``command`` as root in the guest, and return how it ended.

    ``on_output`` receives the command's output line by line as it comes (its stderr
    joined to its stdout); ``on_progress`` the run's progress lines (``lab: ...``:
    booting, QEMU started, kernel started, init reached, command starting), which go
    to ``on_output`` when it is not given. The guest's whole output (virtme-ng's and
    QEMU's messages, the boot console, the command's output) is kept in
    ``log_dir()/LOG_NAME.log`` (``log_name`` defaults to the topology's name).
    ``scratch`` is a host folder to share read-write (a temporary one by default);
    setting ``cancel`` stops the guest (a run stopped from another thread); ``cpus``
    is the guest's number of virtual CPUs.
    Raises LabUnavailableError when QEMU, virtme-ng or a kernel is missing, and
    LabError when the guest does not finish within ``timeout`` seconds. A guest that
    dies (a kernel panic) is a result with ``failure`` set, not an exception.
    """
    topology = topology or Topology()
    out = on_output or (lambda line: None)
    progress = on_progress or out
    with contextlib.ExitStack() as stack:
        if scratch is None:
            scratch = stack.enter_context(scratch_dir())
        manifest, image = _prepare(topology, scratch, kernel, accel, progress, cpus)
        precompile(Path(cwd or os.getcwd()))
        cmd = command if isinstance(command, str) else shlex.join(command)
        token = f"pyvfio-lab-{secrets.token_hex(4)}"
        script = scratch / "run.sh"
        script.write_text(guest_script(cmd, str(cwd or os.getcwd()), scratch, token))
        argv = vng_argv(
            topology,
            manifest,
            image,
            scratch,
            f"sh {shlex.quote(str(script))}",
            cpus=cpus,
            boot_console=True,
        )
        log = GuestLog(log_name or topology.name, progress)
        try:
            return _execute(argv, manifest, timeout, out, progress, cancel, token=token, log=log)
        finally:
            log.close()
    raise AssertionError("unreachable")  # pragma: no cover - ExitStack never swallows


def _execute(
    argv: list[str],
    manifest: Manifest,
    timeout: float,
    on_output: Callable[[str], None],
    progress: Callable[[str], None],
    cancel: threading.Event | None = None,
    *,
    token: str,
    log: GuestLog,
) -> LabResult:
    """Run virtme-ng's ``argv`` and watch the guest through its output (see `run`)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    where = f"; whole log: {log.path}" if log.path else ""

    def say(line: str) -> None:
        log.write(line)
        progress(line)

    watcher = GuestWatcher(
        token, on_output, lambda message: say(f"lab: {manifest.topology}: {message}")
    )
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        env=env,
        start_new_session=True,
    )
    kept = f", the guest's output kept in {log.path}" if log.path else ""
    watcher.say(f"virtme-ng started: pid {proc.pid}{kept}")
    expired = threading.Event()
    finished = threading.Event()
    last_words: list[str] = []

    def expire() -> None:
        # The guest's last line before it is stopped (virtme-ng then prints its own).
        last_words.append(watcher.last_line.strip() or "(none)")
        expired.set()
        stop_guest(proc)

    def look_for_qemu() -> None:
        # QEMU is virtme-ng's grandchild: seen in its session, it is the emulator running.
        while not finished.wait(0.25) and not watcher.kernel_seen:
            pid = qemu_pid(proc.pid)
            if pid is not None:
                watcher.say(f"QEMU started: pid {pid}")
                return

    def stop_on_cancel() -> None:
        assert cancel is not None
        while not finished.wait(0.5):
            if cancel.is_set():
                stop_guest(proc)
                return

    # A hung guest prints nothing, so the deadline cannot wait for the next line.
    watchdog = threading.Timer(timeout, expire)
    watchdog.start()
    threading.Thread(target=look_for_qemu, daemon=True).start()
    if cancel is not None:
        threading.Thread(target=stop_on_cancel, daemon=True).start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            watcher.feed(line)
        returncode = proc.wait()
    except KeyboardInterrupt:
        say(f"lab: {manifest.topology}: interrupted {watcher.phase}: guest stopped{where}")
        raise
    finally:
        watchdog.cancel()
        finished.set()
        if _group_alive(proc):
            stop_guest(proc)
        proc.wait()
    if expired.is_set():
        raise LabError(
            f"the lab guest did not finish within {timeout:.0f} s and was killed "
            f"{watcher.phase}; last line: {last_words[0]}{where}"
        )
    boot, command = watcher.seconds()
    if watcher.status is not None:
        # The guest script's own word. virtme-ng's can be wrong: where udev is too slow
        # to name the virtio-serial ports in time (a loaded host), virtme-ng-init runs
        # the script on the serial console, has no port for its status, and vng says 255.
        returncode = watcher.status
    return LabResult(
        returncode,
        "".join(watcher.output),
        manifest.accel,
        manifest.kernel,
        watcher.elapsed(),
        boot_seconds=boot,
        command_seconds=command,
        failure=watcher.failure(returncode),
        log=log.path,
    )


def shell(
    topology: Topology | None = None, *, kernel: str | None = None, accel: str | None = None
) -> int:
    """Boot the lab with an interactive root shell on this terminal; return its status."""
    topology = topology or Topology()

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    with scratch_dir() as scratch:
        manifest, image = _prepare(topology, scratch, kernel, accel, say)
        argv = vng_argv(topology, manifest, image, scratch, None)
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
        slow = " (under TCG: minutes)" if manifest.accel == "tcg" else ""
        say(f"lab: starting QEMU; the root shell appears when the guest is up{slow}")
        started = time.monotonic()
        status = subprocess.call(argv, env=env)
        say(f"lab: shell ended with exit {status} after {time.monotonic() - started:.0f} s")
        return status
