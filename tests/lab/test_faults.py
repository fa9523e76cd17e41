"""Faults on the real kernel that need no guest of their own: signals during waits.

(The others: kill -9 of bind/restore at every step, test_host_lab.py; a process
killed with live DMA and IRQs, edu_suite.py; an NVMe controller left enabled by a
killed process, test_nvme.py; a device removed while open, test_removal.py.)
"""

from __future__ import annotations

import signal
import threading

import pytest

from pyvfio.drivers.edu import Edu

from .labhelp import main_lab

pytestmark = main_lab


def test_interrupt_waits_survive_a_signal_storm(edu_addr: str) -> None:
    """EINTR on a real MSI eventfd: SIGALRM every millisecond while waiting."""
    ticks: list[int] = []
    with Edu.open(edu_addr) as edu:
        irq = edu.device.enable_irqs("msi")[0]
        old = signal.signal(signal.SIGALRM, lambda *a: ticks.append(1))
        signal.setitimer(signal.ITIMER_REAL, 0.001, 0.001)
        try:
            for _ in range(40):
                raiser = threading.Timer(0.02, edu.raise_interrupt, (1,))
                raiser.start()
                assert irq.wait(timeout=10) == 1
                raiser.join()
                edu.acknowledge(1)
            with pytest.raises(TimeoutError):
                irq.wait(timeout=0.1)  # the deadline holds through the storm too
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
    assert len(ticks) >= 40, "the storm did not interrupt the waits"
