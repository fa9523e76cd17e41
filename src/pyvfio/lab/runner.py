"""Boot the lab guest with virtme-ng and run one command in it as root.

The guest's root filesystem is this machine's own (virtme-ng exports ``/`` over 9p,
read-only, with writable overlays), so the guest runs the same Python, venv and
checkout. A scratch folder on the host is shared read-write: it carries the manifest,
the script to run, results, and the NVMe backing files.
"""

from __future__ import annotations

import compileall
import contextlib
import os
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

from pyvfio.errors import LabError, LabUnavailableError
from pyvfio.host.accel import QEMU, QEMU_PACKAGE
from pyvfio.lab.accel import choose_accel
from pyvfio.lab.kernels import resolve_kernel
from pyvfio.lab.topology import NVME_BACKING_SIZE, Manifest, Topology

#: The environment variable that, in the guest, points at the manifest.
MANIFEST_ENV = "PYVFIO_LAB_MANIFEST"


@dataclass(frozen=True)
class LabResult:
    """How a command ended in the guest."""

    returncode: int
    output: str
    accel: str
    kernel: str
    seconds: float

    def __str__(self) -> str:
        return (
            f"exit {self.returncode} after {self.seconds:.1f} s "
            f"({self.accel.upper()}, kernel {self.kernel})"
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
) -> list[str]:
    """The virtme-ng command line that boots ``topology``."""
    argv = [
        _vng(),
        "--run",
        str(kernel),
        "--disable-microvm",
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
    if manifest.accel == "tcg":
        argv.append("--disable-kvm")
    append = topology.kernel_args()
    if append:
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
) -> tuple[Manifest, Path]:
    _require(QEMU, f"Debian: apt-get install {QEMU_PACKAGE}")
    if kernel in (None, "stock") and not shutil.which("busybox"):
        # A modular kernel needs virtme-ng's initramfs to load 9p/virtio, built from busybox.
        raise LabUnavailableError(
            "busybox is missing: virtme-ng builds the guest's initramfs "
            "with it (Debian: apt-get install busybox-static)"
        )
    image = resolve_kernel(kernel)
    chosen = choose_accel(accel)
    say(f"lab: booting {topology.name} on {image.name} under {chosen.upper()}")
    devices = topology.layout(scratch)
    for dev in devices:
        if dev.backing_file:
            with open(dev.backing_file, "wb") as f:
                f.truncate(NVME_BACKING_SIZE)
    manifest = Manifest(topology=topology.name, accel=chosen, kernel=image.name, devices=devices)
    manifest.dump(scratch / "manifest.json")
    return manifest, image


def run(
    command: Sequence[str] | str,
    topology: Topology | None = None,
    *,
    kernel: str | None = None,
    accel: str | None = None,
    timeout: float = 1800,
    cwd: str | os.PathLike[str] | None = None,
    on_output: Callable[[str], None] | None = None,
    scratch: Path | None = None,
    cancel: threading.Event | None = None,
    cpus: int = 2,
) -> LabResult:
    """Boot the lab, run ``command`` as root in the guest, and return how it ended.

    ``on_output`` receives the guest's output line by line as it comes (progress);
    ``scratch`` is a host folder to share read-write (a temporary one by default);
    setting ``cancel`` kills the guest (a run stopped from another thread); ``cpus``
    is the guest's number of virtual CPUs.
    Raises LabUnavailableError when QEMU, virtme-ng or a kernel is missing, and
    LabError when the guest does not finish within ``timeout`` seconds.
    """
    topology = topology or Topology()
    say = on_output or (lambda line: None)
    with contextlib.ExitStack() as stack:
        if scratch is None:
            scratch = stack.enter_context(scratch_dir())
        manifest, image = _prepare(topology, scratch, kernel, accel, say)
        precompile(Path(cwd or os.getcwd()))
        cmd = command if isinstance(command, str) else shlex.join(command)
        script = scratch / "run.sh"
        script.write_text(
            "#!/bin/sh\n"
            f"export {MANIFEST_ENV}={shlex.quote(str(scratch / 'manifest.json'))}\n"
            "export PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1\n"
            f"export PATH={shlex.quote(str(Path(sys.executable).parent))}:$PATH\n"
            f"cd {shlex.quote(str(cwd or os.getcwd()))} || exit 125\n"
            f"{cmd}\n"
        )
        argv = vng_argv(
            topology, manifest, image, scratch, f"sh {shlex.quote(str(script))}", cpus=cpus
        )
        return _execute(argv, manifest, timeout, say, cancel)
    raise AssertionError("unreachable")  # pragma: no cover - ExitStack never swallows


def _execute(
    argv: list[str],
    manifest: Manifest,
    timeout: float,
    say: Callable[[str], None],
    cancel: threading.Event | None = None,
) -> LabResult:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    start = time.monotonic()
    lines: list[str] = []
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
    expired = threading.Event()

    def kill() -> None:
        expired.set()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    # A hung guest prints nothing, so the deadline cannot wait for the next line.
    watchdog = threading.Timer(timeout, kill)
    watchdog.start()
    finished = threading.Event()

    def kill_on_cancel() -> None:
        assert cancel is not None
        while not finished.wait(0.5):
            if cancel.is_set():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                return

    if cancel is not None:
        threading.Thread(target=kill_on_cancel, daemon=True).start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            say(line.rstrip("\n"))
        returncode = proc.wait()
    finally:
        watchdog.cancel()
        finished.set()
        if proc.poll() is None:
            kill()
            proc.wait()
    if expired.is_set():
        tail = "".join(lines[-5:]).strip() or "(no output)"
        raise LabError(
            f"the lab guest did not finish within {timeout:.0f} s and was "
            f"killed; last output: {tail}"
        )
    return LabResult(
        returncode, "".join(lines), manifest.accel, manifest.kernel, time.monotonic() - start
    )


def shell(
    topology: Topology | None = None, *, kernel: str | None = None, accel: str | None = None
) -> int:
    """Boot the lab with an interactive root shell on this terminal; return its status."""
    topology = topology or Topology()
    with scratch_dir() as scratch:
        manifest, image = _prepare(
            topology, scratch, kernel, accel, lambda line: print(line, file=sys.stderr)
        )
        argv = vng_argv(topology, manifest, image, scratch, None)
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
        return subprocess.call(argv, env=env)
