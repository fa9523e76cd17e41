"""``pyvfio serve``: the real command in a subprocess, spoken to over its socket."""

from __future__ import annotations

import grp
import os
import random
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from rawclient import RawClient

import pyvfio
from pyvfio.drivers import edu as edu_driver
from pyvfio.drivers.edu import Edu


def start(
    path: Path, *extra: str, setup: Callable[[], object] | None = None
) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyvfio", "serve", "edu", "--socket", str(path), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=setup,
    )
    assert proc.stdout is not None and proc.stderr is not None
    line = proc.stdout.readline()  # printed once it listens
    assert line.startswith(f"serving edu on {path}"), line + proc.stderr.read()
    return proc


def connect(path: Path) -> RawClient:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(path))
    return RawClient(sock)


def test_serve_once_answers_a_client_then_exits(tmp_path: Path) -> None:
    path = tmp_path / "edu.sock"
    proc = start(path, "--once")
    try:
        client = connect(path)
        client.negotiate()
        assert client.read32(edu_driver.REG_ID) == 0x010000ED
        client.write32(edu_driver.REG_LIVENESS, 1)
        assert client.read32(edu_driver.REG_LIVENESS) == 0xFFFFFFFE
        client.sock.close()
        assert proc.wait(timeout=30) == 0
        assert not path.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize(
    "inherited", [None, _ignore_sigint], ids=["default", "SIGINT-ignored-by-the-parent"]
)
@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGINT])
def test_serve_stops_on_a_signal_and_removes_its_socket(
    tmp_path: Path, how: int, inherited: Callable[[], None] | None
) -> None:
    """A shell's background job (``pytest &`` in a script, a CI step) starts with SIGINT
    ignored, and Python keeps an inherited "ignore": the server must install its own."""
    path = tmp_path / "edu.sock"
    proc = start(path, setup=inherited)
    try:
        client = connect(path)  # a connected client does not keep it alive
        client.negotiate()
        proc.send_signal(how)
        assert proc.wait(timeout=30) == 0
        assert client.closed_by_server()
        assert not path.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pyvfio", "serve", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_serve_errors_are_one_line_and_non_zero(tmp_path: Path) -> None:
    unknown = run("nvme", "--socket", str(tmp_path / "x.sock"))
    assert unknown.returncode == 2
    assert "no device 'nvme' to serve; known: edu" in unknown.stderr
    missing = run("edu", "--socket", str(tmp_path / "nowhere" / "x.sock"))
    assert missing.returncode == 1
    assert "does not exist; create it or choose another --socket path" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
    path = tmp_path / "edu.sock"
    proc = start(path)
    try:
        busy = run("edu", "--socket", str(path))
        assert busy.returncode == 1 and "a server is already listening there" in busy.stderr
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0
    assert not path.exists()


def test_pyvfios_edu_driver_drives_the_served_edu_in_another_process(tmp_path: Path) -> None:
    path = tmp_path / "edu.sock"
    proc = start(path, "--once")
    try:
        with pyvfio.open(f"vfio-user:{path}") as dev:
            edu = Edu(dev)
            assert edu.ident == 0x010000ED and edu.is_alive()
            assert edu.factorial(10) == 3628800
            irq = dev.enable_irqs("msi")[0]
            assert edu.factorial(5, irq=irq) == 120
            payload = random.Random(3).randbytes(edu_driver.DMA_LIMIT)
            with (
                dev.dma_alloc(4096, max_iova=edu_driver.DMA_MASK) as out,
                dev.dma_alloc(4096, max_iova=edu_driver.DMA_MASK) as back,
            ):
                out.write(payload)
                edu.to_device(out, irq=irq)
                edu.from_device(back, irq=irq)
                assert back.read(0, edu_driver.DMA_LIMIT) == payload
        assert proc.wait(timeout=30) == 0  # --once: the client left, the server exits
        assert not path.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _umask(mask: int) -> Callable[[], object]:
    return lambda: os.umask(mask)


@pytest.mark.parametrize("umask", [0o002, 0o000, 0o077], ids=["002", "000", "077"])
def test_the_socket_is_this_users_alone_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    path = tmp_path / "edu.sock"
    proc = start(path, setup=_umask(umask))
    try:
        assert stat.S_IMODE(path.lstat().st_mode) == 0o600
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0


def test_mode_and_group_share_the_socket_deliberately(tmp_path: Path) -> None:
    path = tmp_path / "edu.sock"
    group = grp.getgrgid(os.getegid()).gr_name
    proc = start(path, "--mode", "660", "--group", group, setup=_umask(0o077))
    try:
        made = path.lstat()
        assert stat.S_IMODE(made.st_mode) == 0o660 and made.st_gid == os.getegid()
        client = connect(path)
        client.negotiate()
        client.sock.close()
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--mode", "999"), "--mode '999' is not octal permission bits"),
        (("--mode", "rw"), "--mode 'rw' is not octal permission bits"),
        (("--mode", "1777"), "--mode '1777' is not octal permission bits"),
        (("--mode", "-1"), "--mode '-1' is not octal permission bits"),
        (("--group", "no-such-group-here"), "no group 'no-such-group-here' on this host"),
    ],
)
def test_bad_mode_or_group_is_one_line_exit_2_and_no_socket(
    tmp_path: Path, args: tuple[str, ...], says: str
) -> None:
    path = tmp_path / "edu.sock"
    result = run("edu", "--socket", str(path), *args)
    assert result.returncode == 2, result.stderr
    assert says in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []  # nothing created
