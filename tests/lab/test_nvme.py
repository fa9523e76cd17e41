"""The userspace NVMe driver on QEMU's emulated controller, on the real kernel."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyvfio.drivers import nvme_spec as spec
from pyvfio.drivers.nvme import Controller, NvmeStatusError
from pyvfio.host import bind
from pyvfio.lab.topology import NVME_BACKING_SIZE, NVME_MODEL, NVME_SERIAL

from .labhelp import main_lab

pytestmark = main_lab

KIB = 1024


def pattern(seed: int, size: int) -> bytes:
    """Bytes that differ per block and per run, so a stale block cannot pass."""
    return b"".join((seed * 0x9E3779B1 + i).to_bytes(8, "little") * 64 for i in range(size // 512))


@pytest.fixture
def ctrl(nvme_addr: str) -> Iterator[Controller]:
    with Controller.open(nvme_addr) as controller:
        yield controller


def test_identify_gives_the_labs_serial_and_model(ctrl: Controller) -> None:
    assert ctrl.info.serial == NVME_SERIAL
    assert ctrl.info.model == NVME_MODEL
    assert ctrl.info.firmware
    assert ctrl.cap.doorbell_stride >= 4


def test_namespace_size_matches_the_backing_file(ctrl: Controller) -> None:
    assert list(ctrl.namespaces) == ctrl.active_namespaces() == [1]
    ns = ctrl.namespaces[1]
    assert ns.block_size == 512
    assert ns.size_bytes == NVME_BACKING_SIZE


@pytest.mark.parametrize("size", [4 * KIB, 64 * KIB, 1024 * KIB])
def test_write_then_read_back(ctrl: Controller, size: int) -> None:
    blocks = NVME_BACKING_SIZE // 512
    for n, lba in enumerate((0, 8 + 1, blocks // 2 + 3, blocks - size // 512)):
        data = pattern(size + n, size)
        ctrl.write(lba, data)
        assert ctrl.read(lba, size // 512) == data, f"{size} bytes at LBA {lba}"


def test_unaligned_buffer_and_prp_list(ctrl: Controller) -> None:
    """A transfer starting mid-page needs PRP1 with an offset and a PRP list."""
    qp = ctrl.queues[0]
    with ctrl.device.dma_alloc(256 * KIB) as buf:
        data = pattern(77, 64 * KIB)
        buf.write(data, 512)
        qp.wait(qp.submit_io(spec.IoOpcode.WRITE, 1, 4096, 128, buf.iova + 512, 64 * KIB))
        buf.view[:] = bytes(buf.size)
        qp.wait(qp.submit_io(spec.IoOpcode.READ, 1, 4096, 128, buf.iova + 1024, 64 * KIB))
        assert buf.read(1024, 64 * KIB) == data


def test_write_zeroes_and_flush(ctrl: Controller) -> None:
    ctrl.write(100, pattern(5, 8 * KIB))
    ctrl.write_zeroes(100, 16)
    ctrl.flush()
    assert ctrl.read(100, 16) == bytes(8 * KIB)


def test_out_of_range_lba_is_decoded_and_the_driver_stays_usable(ctrl: Controller) -> None:
    end = ctrl.namespaces[1].size
    with pytest.raises(NvmeStatusError) as info:
        ctrl.read(end, 8)
    err = info.value
    assert (err.sct, err.sc) == (0, 0x80)
    assert "LBA Out of Range" in str(err)
    data = pattern(9, 4 * KIB)
    ctrl.write(64, data)
    assert ctrl.read(64, 8) == data
    # The controller logged it (QEMU keeps an error log; it may be empty on some versions).
    assert isinstance(ctrl.error_log(), list)


def test_smart_log(ctrl: Controller) -> None:
    ctrl.write(0, pattern(1, 4 * KIB))
    smart = ctrl.smart_log()
    assert smart.host_write_commands >= 1
    assert 200 < smart.temperature_kelvin < 400


def test_several_queue_pairs_at_once(nvme_addr: str) -> None:
    with Controller.open(nvme_addr, io_queues=4, queue_size=32) as ctrl:
        assert len({q.qid for q in ctrl.queues}) == 4
        bufs = [ctrl.device.dma_alloc(32 * 4 * KIB) for _ in ctrl.queues]
        try:
            # Writes on every queue in flight together, then reads, then compare.
            expected = {}
            for q, (qp, buf) in enumerate(zip(ctrl.queues, bufs, strict=True)):
                for i in range(16):
                    data = pattern(1000 * q + i, 4 * KIB)
                    buf.write(data, i * 4 * KIB)
                    lba = 20000 + (q * 16 + i) * 8
                    expected[lba] = data
                    qp.submit_io(
                        spec.IoOpcode.WRITE, 1, lba, 8, buf.iova + i * 4 * KIB, 4 * KIB, ring=False
                    )
            for qp in ctrl.queues:
                qp.ring()
            for qp in ctrl.queues:
                _drain(qp, 16)
            for buf in bufs:
                buf.view[:] = bytes(buf.size)
            for q, (qp, buf) in enumerate(zip(ctrl.queues, bufs, strict=True)):
                for i in range(16):
                    lba = 20000 + (q * 16 + i) * 8
                    qp.submit_io(spec.IoOpcode.READ, 1, lba, 8, buf.iova + i * 4 * KIB, 4 * KIB)
            for q, (qp, buf) in enumerate(zip(ctrl.queues, bufs, strict=True)):
                _drain(qp, 16)
                for i in range(16):
                    assert buf.read(i * 4 * KIB, 4 * KIB) == expected[20000 + (q * 16 + i) * 8]
        finally:
            for buf in bufs:
                buf.free()


def _drain(qp: object, count: int, timeout: float = 10.0) -> None:
    from pyvfio.drivers.nvme import QueuePair

    assert isinstance(qp, QueuePair)
    deadline = time.monotonic() + timeout
    done = 0
    while done < count:
        for cid, status, _ in qp.reap():
            qp.check(cid, status)
            done += 1
        assert time.monotonic() < deadline, f"{done} of {count} completions"


def test_msix_completion(nvme_addr: str) -> None:
    with Controller.open(nvme_addr, msix=True) as ctrl:
        qp = ctrl.queues[0]
        assert qp.irq is not None and qp.vector == 1
        qp.irq.poll()
        data = pattern(3, 4 * KIB)
        ctrl.write(300, data)
        with ctrl.device.dma_alloc(4 * KIB) as buf:
            qp.irq.poll()
            qp.submit_io(spec.IoOpcode.READ, 1, 300, 8, buf.iova, 4 * KIB)
            assert qp.irq.wait(timeout=10.0) >= 1
            done = qp.reap()
            assert len(done) == 1 and done[0][1] == 0
            assert buf.read() == data
        # And the blocking path on interrupts.
        assert ctrl.read(300, 8) == data


def test_the_kernel_driver_reads_what_pyvfio_wrote(lab: object) -> None:
    from pyvfio.lab.pytest_plugin import LabFixture

    assert isinstance(lab, LabFixture)
    addr = lab.address("nvme")
    data = pattern(42, 64 * KIB)
    lba = 12345
    original = bind.bind_vfio(addr)
    try:
        with Controller.open(addr) as ctrl:
            ctrl.write(lba, data)
            ctrl.flush()
    finally:
        bind.give_back(addr, "nvme")
    try:
        node = _wait_for_block_device(addr)
        fd = os.open(node, os.O_RDONLY)
        try:
            # O_DIRECT is not needed: the kernel driver has not cached this device yet.
            got = os.pread(fd, len(data), lba * 512)
        finally:
            os.close(fd)
        assert got == data
    finally:
        bind.give_back(addr, original)


def _wait_for_block_device(addr: str, timeout: float = 30.0) -> str:
    """The kernel's block device for the lab's only NVMe namespace, once it appears."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        nodes = sorted(glob.glob("/dev/nvme[0-9]*n1"))
        if nodes:
            return nodes[0]
        time.sleep(0.1)
    raise AssertionError(f"no /dev/nvme*n1 for {addr} after {timeout} s")


CRASH = textwrap.dedent(
    """
    import os, signal, sys
    from pyvfio.drivers.nvme import Controller
    ctrl = Controller.open(sys.argv[1], io_queues=2, msix=True)
    ctrl.write(777, bytes([0xA5]) * 4096)
    sys.stdout.write("written\\n"); sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)  # no shutdown, no close: the controller stays enabled
    """
)


def test_a_controller_left_enabled_is_recovered(nvme_addr: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", CRASH, nvme_addr], capture_output=True, text=True, timeout=120
    )
    assert out.stdout.strip() == "written", out.stderr
    assert out.returncode == -signal.SIGKILL
    with Controller.open(nvme_addr) as ctrl:
        assert ctrl.read(777, 8) == bytes([0xA5]) * 4096
        data = pattern(8, 4 * KIB)
        ctrl.write(800, data)
        assert ctrl.read(800, 8) == data


def pyvfio_cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "pyvfio", "nvme", *args], capture_output=True, timeout=300
    )


def test_cli_identify_smart_read_write(nvme_addr: str, tmp_path: Path) -> None:
    out = pyvfio_cli("identify", nvme_addr, "--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["serial"] == NVME_SERIAL
    assert info["namespaces"][0]["bytes"] == NVME_BACKING_SIZE
    data = pattern(11, 8 * KIB)
    (tmp_path / "in").write_bytes(data)
    out = pyvfio_cli("write", nvme_addr, "--lba", "2048", "-i", str(tmp_path / "in"))
    assert out.returncode == 0, out.stderr
    out = pyvfio_cli("read", nvme_addr, "--lba", "2048", "--count", "16", "-o", "-")
    assert out.returncode == 0, out.stderr
    assert out.stdout == data
    out = pyvfio_cli("smart", nvme_addr, "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["host_write_commands"] >= 1
    (tmp_path / "odd").write_bytes(b"123")
    out = pyvfio_cli("write", nvme_addr, "--lba", "0", "-i", str(tmp_path / "odd"))
    assert out.returncode == 2 and b"512-byte blocks" in out.stderr


def test_cli_says_bind_when_the_kernel_has_the_device(lab: object) -> None:
    from pyvfio.lab.pytest_plugin import LabFixture

    assert isinstance(lab, LabFixture)
    addr = lab.address("nvme")
    original = bind.bind_to(addr, "nvme")
    try:
        out = pyvfio_cli("identify", addr)
    finally:
        bind.give_back(addr, original)
    assert out.returncode == 1
    lines = out.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and f"pyvfio bind {addr}" in lines[0]
