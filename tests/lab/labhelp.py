"""What several lab test modules share (importable: tests/lab is on sys.path)."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator

import pytest

from pyvfio.host import bind

#: The topology most lab tests share (one boot for all of them): edu and nvme on the
#: root bus, an e1000e behind a root port, a second edu behind a PCIe switch.
MAIN_TOPOLOGY = ("edu", "nvme", "e1000e@rootport", "edu@switch")
main_lab = pytest.mark.lab(devices=MAIN_TOPOLOGY)


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


def dmar_faults(address: str, log: str) -> list[str]:
    """DMAR fault lines naming the device (intel-iommu: 'Request device [00:10.0]')."""
    short = address.split(":", 1)[1]
    return [
        line
        for line in log.splitlines()
        if "DMAR" in line and "fault" in line.lower() and re.search(re.escape(short), line)
    ]


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
            page = re.compile(rf"fault addr {iova & ~0xFFF:#x}\b")
            faults = [line for line in faults if page.search(line)]
        if faults and _window_seen[0] is None:
            _window_seen[0] = time.monotonic()  # no earlier than the window opened
        if faults or time.monotonic() > deadline:
            return faults
        time.sleep(0.1)


def no_fault_seen(address: str, since: str, iova: int) -> str:
    """Why wait_dmar_faults found nothing: the DMAR lines logged since."""
    lines = [ln for ln in kernel_log()[len(since) :].splitlines() if "DMAR" in ln or "dmar" in ln]
    return f"no DMAR fault for {address} at {iova:#x}; the DMAR log since: {lines}"
