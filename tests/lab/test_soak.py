"""The long reliability runs (marked ``soak``, outside CI); their figures are in
docs/robustness.md. Run them with::

    pytest --lab require -m soak -rP tests/lab/test_soak.py --lab-timeout 3000
"""

from __future__ import annotations

import pytest

import pyvfio
from pyvfio.drivers.edu import Edu
from pyvfio.drivers.nvme import Controller
from pyvfio.host import bind

from .labhelp import main_lab
from .loadwork import interrupt_storm, map_many_and_back, nvme_write_verify, report

pytestmark = [main_lab, pytest.mark.soak]


def test_soak_30000_live_mappings_three_times(edu_addr: str) -> None:
    bind.load_module("vfio-pci")
    with pyvfio.Iommu("type1") as iommu, iommu.open(edu_addr):
        for seed in (1, 2, 3):
            report(f"mappings round {seed}", map_many_and_back(iommu, 30_000, seed))


def test_soak_100000_interrupts_counted_none_lost(edu_addr: str) -> None:
    with Edu.open(edu_addr) as edu:
        report("interrupts", interrupt_storm(edu, 100_000))


def test_soak_nvme_write_verify_10_minutes(nvme_addr: str) -> None:
    with Controller.open(nvme_addr) as ctrl:
        figures = nvme_write_verify(ctrl, 600)
        smart = ctrl.smart_log()
    report("nvme", figures)
    print(f"nvme smart: {smart}", flush=True)
    assert figures.mismatches == 0
    assert figures.bytes_verified >= figures.bytes_written > 0
