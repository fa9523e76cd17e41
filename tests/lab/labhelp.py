"""What several lab test modules share (imported relatively: `from .labhelp import on_vfio`)."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import resource
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest

from pyvfio.host import bind

#: The topology most lab tests share (one boot for all of them): edu and nvme on the
#: root bus, an e1000e behind a root port, a second edu behind a PCIe switch.
MAIN_TOPOLOGY = ("edu", "nvme", "e1000e@rootport", "edu@switch")
main_lab = pytest.mark.lab(devices=MAIN_TOPOLOGY)
# No vIOMMU, on the lab's kernel (it has CONFIG_VFIO_NOIOMMU): the no-IOMMU mode's tests
# and doctor's no-IOMMU checks share one boot.
NOIOMMU_LAB = pytest.mark.lab(devices=("edu", "edu@rootport"), viommu=False, kernel="iommufd")
# Two edus, one below a root port, on the lab's kernel (IOMMUFD and the device cdev).
IOMMUFD_LAB = pytest.mark.lab(devices=("edu", "edu@rootport"), kernel="iommufd")
# The other vIOMMUs (issue 17), on the lab's kernel (iommufd, and Debian's 6.1 has no
# virtio-iommu driver): the edu suite's devices, so the whole suite runs on each.
AMD_LAB = pytest.mark.lab(devices=MAIN_TOPOLOGY, iommu="amd", kernel="iommufd")
VIRTIO_LAB = pytest.mark.lab(devices=MAIN_TOPOLOGY, iommu="virtio", kernel="iommufd")


def on_vfio(address: str) -> Iterator[str]:
    """Bind ``address`` to vfio-pci for a test, then give it back."""
    original = bind.bind_vfio(address)
    try:
        yield address
    finally:
        bind.give_back(address, original)


def nvme_settled(address: str, timeout: float = 120.0) -> None:
    """Wait until the kernel's nvme driver is done with ``address`` after a bind.

    nvme initialises the controller in a work item after its probe returns; if that
    fails, a second work item releases the driver later (nvme_remove_dead_ctrl), and
    would take whatever driver holds the device by then, vfio-pci included. So before
    a test takes the controller from nvme, that work must be over: the controller
    live, or the driver gone.
    """
    import glob
    import time
    from pathlib import Path

    from pyvfio.host.sysfs import LIVE

    deadline = time.monotonic() + timeout
    while LIVE.driver(address) == "nvme":
        states = glob.glob(f"/sys/bus/pci/devices/{address}/nvme/nvme*/state")
        state = Path(states[0]).read_text().strip() if states else "new"
        if state == "live":  # dead or deleting: wait for the driver to let go
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the nvme driver did not settle on {address}: {state}")
        time.sleep(0.1)


def open_fds() -> set[str]:
    import os

    return set(os.listdir("/proc/self/fd"))


def kernel_log() -> str:
    return subprocess.run(["dmesg"], capture_output=True, text=True, check=True).stdout


def _requester(address: str) -> tuple[str, int]:
    """``0000:00:10.0`` -> (``00:10.0``, the PCI requester id 0x80)."""
    short = address.split(":", 1)[1]
    bus, rest = short.split(":")
    slot, func = rest.split(".")
    return short, int(bus, 16) << 8 | int(slot, 16) << 3 | int(func, 16)


#: Where each IOMMU driver's fault line puts the faulting address.
_FAULT_ADDRESS = re.compile(r"fault addr (0x[0-9a-f]+)|address=(0x[0-9a-f]+)| at (0x[0-9a-f]+)")


def dmar_faults(address: str, log: str) -> list[str]:
    """The IOMMU's fault lines naming the device: intel-iommu's DMAR ('Request device
    [00:10.0] fault addr 0x...'), AMD-Vi's ('vfio-pci 0000:00:10.0: AMD-Vi: Event logged
    [IO_PAGE_FAULT ... address=0x...]'), virtio-iommu's ('mapping fault from EP 128 at
    0x...', EP being the requester id)."""
    short, rid = _requester(address)
    here = re.compile(rf"{re.escape(short)}\b|\bEP {rid}\b")
    return [
        line
        for line in log.splitlines()
        if (
            ("DMAR" in line and "fault" in line.lower())
            or "IO_PAGE_FAULT" in line
            or re.search(r"fault from EP \d+", line)
        )
        and here.search(line)
    ]


def fault_page(line: str) -> int | None:
    """The page of the address a fault line names (None: it names none)."""
    m = _FAULT_ADDRESS.search(line)
    return None if m is None else int(next(g for g in m.groups() if g), 16) & ~0xFFF


#: When the first fault of the current rate-limit window was seen (None: not yet).
_window_seen: list[float | None] = [None]


def fresh_dmar_window() -> None:
    """Call before a test's first DMA that must fault, so that the kernel logs them all.

    intel-iommu's dmar_fault() rate-limits its log: 10 lines per 5 s window, the
    window opening at the first line; the lab's faults take 3 lines each (seen in the
    guest), so the 4th of a window is dropped. This waits until the window opened by
    the previous test's faults has closed; a test may then make up to 3.
    """
    seen = _window_seen[0]
    if seen is not None:
        time.sleep(max(0.0, seen + 5.2 - time.monotonic()))
    _window_seen[0] = None


def wait_dmar_faults(address: str, since: str, iova: int | None = None) -> list[str]:
    """The DMAR faults logged for ``address`` after the log ``since`` (at ``iova``'s page
    if given), waiting up to 5 s for the first; [] when none came."""
    deadline = time.monotonic() + 5
    while True:
        faults = dmar_faults(address, kernel_log()[len(since) :])
        if iova is not None:
            faults = [line for line in faults if fault_page(line) == iova & ~0xFFF]
        if faults and _window_seen[0] is None:
            _window_seen[0] = time.monotonic()  # no earlier than the window opened
        if faults or time.monotonic() > deadline:
            return faults
        time.sleep(0.1)


def no_fault_seen(address: str, since: str, iova: int) -> str:
    """Why wait_dmar_faults found nothing: the IOMMU's lines logged since."""
    words = ("DMAR", "dmar", "AMD-Vi", "IO_PAGE_FAULT", "virtio_iommu", "fault")
    lines = [ln for ln in kernel_log()[len(since) :].splitlines() if any(w in ln for w in words)]
    return f"no IOMMU fault for {address} at {iova:#x}; the IOMMU's log since: {lines}"


class DeviceHolder:
    """A child process that holds ``address`` open through VFIO (``Edu.open``), as a
    program of ``user`` (None: root) that opened it while it could; it answers commands
    over a pipe: ``dma`` (a round trip through the open device), ``close-group`` (close
    its group node fd, keeping only the device fd: invisible in /proc/PID/fd before
    Linux 6.18), ``exit``. A fork, not a new interpreter: a Python start under TCG takes
    seconds."""

    def __init__(self, address: str, user: str | None = None, memlock: int = 1 << 20) -> None:
        self._cmd_r, self._cmd_w = os.pipe()
        self._out_r, self._out_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # pragma: no cover - the child leaves through os._exit
            code = 1
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                os.close(self._cmd_w)
                os.close(self._out_r)
                resource.setrlimit(resource.RLIMIT_MEMLOCK, (memlock, memlock))
                if user is not None:
                    pw = pwd.getpwnam(user)
                    os.setgroups([])
                    os.setresgid(pw.pw_gid, pw.pw_gid, pw.pw_gid)
                    os.setresuid(pw.pw_uid, pw.pw_uid, pw.pw_uid)
                self._serve(address)
                code = 0
            except BaseException as err:
                with contextlib.suppress(OSError):
                    os.write(self._out_w, (json.dumps({"error": repr(err)}) + "\n").encode())
            finally:
                os._exit(code)
        os.close(self._cmd_r)
        os.close(self._out_w)
        self._out = os.fdopen(self._out_r)
        ready = self._answer()
        assert ready.get("ready"), ready

    def _serve(self, address: str) -> None:
        from pyvfio.drivers import edu as edu_mod
        from pyvfio.drivers.edu import Edu

        def say(data: dict[str, object]) -> None:
            os.write(self._out_w, (json.dumps(data) + "\n").encode())

        edu = Edu.open(address)
        say({"ready": True})
        commands = os.fdopen(self._cmd_r)
        for line in commands:
            command = line.strip()
            if command == "dma":
                payload = bytes(range(256)) * 8
                dev = edu.device
                with (
                    dev.dma_alloc(4096, max_iova=edu_mod.DMA_MASK) as out,
                    dev.dma_alloc(4096, max_iova=edu_mod.DMA_MASK) as back,
                ):
                    out.write(payload)
                    edu.to_device(out, len(payload))
                    edu.from_device(back, len(payload))
                    say({"round_trip": back.read(0, len(payload)) == payload})
            elif command == "close-group":
                closed = []
                for fd in os.listdir("/proc/self/fd"):
                    with contextlib.suppress(OSError):
                        target = os.readlink(f"/proc/self/fd/{fd}")
                        if re.fullmatch(r"/dev/vfio/\d+", target):
                            os.close(int(fd))
                            closed.append(target)
                say({"closed": closed})
            else:
                return

    def _answer(self) -> dict[str, object]:

        line = self._out.readline()
        assert line, "the holder died"
        data: dict[str, object] = json.loads(line)
        return data

    def ask(self, command: str) -> dict[str, object]:

        os.write(self._cmd_w, f"{command}\n".encode())
        return self._answer()

    def end(self) -> int:
        """Tell it to exit (if it still runs) and return its wait status."""

        with contextlib.suppress(OSError):
            os.write(self._cmd_w, b"exit\n")
        with contextlib.suppress(OSError):
            os.close(self._cmd_w)
        self._out.close()
        _, status = os.waitpid(self.pid, 0)
        return status
