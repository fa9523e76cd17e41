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


def wait_dmar_faults(address: str, since: str, iova: int | None = None) -> list[str]:
    """The DMAR faults logged for ``address`` after the log ``since`` (at ``iova``'s page
    if given), waiting up to 5 s for the first; [] when none came."""
    deadline = time.monotonic() + 5
    while True:
        faults = dmar_faults(address, kernel_log()[len(since) :])
        if iova is not None:
            page = re.compile(rf"fault addr {iova & ~0xFFF:#x}\b")
            faults = [line for line in faults if page.search(line)]
        if faults or time.monotonic() > deadline:
            return faults
        time.sleep(0.1)
