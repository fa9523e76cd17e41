"""Short load runs for CI (the long ones are test_soak.py, marked ``soak``): many live
DMA mappings and back to zero, thousands of interrupts counted, an NVMe write/verify."""

from __future__ import annotations

import pyvfio
from pyvfio.drivers.edu import Edu
from pyvfio.drivers.nvme import Controller
from pyvfio.host import bind

from .labhelp import main_lab
from .loadwork import interrupt_storm, map_many_and_back, nvme_write_verify, report

pytestmark = main_lab


def test_30000_live_mappings_and_back_to_zero(edu_addr: str) -> None:
    # About 10 s under TCG on a quiet host (46 s on a host running 3 other guests).
    bind.load_module("vfio-pci")
    with pyvfio.Iommu("type1") as iommu, iommu.open(edu_addr):
        figures = map_many_and_back(iommu, 30_000)
    report("mappings", figures)


def test_20000_interrupts_counted_none_lost(edu_addr: str) -> None:
    with Edu.open(edu_addr) as edu:
        report("interrupts", interrupt_storm(edu, 20_000))


def test_nvme_write_verify_10_s(nvme_addr: str) -> None:
    with Controller.open(nvme_addr) as ctrl:
        figures = nvme_write_verify(ctrl, 10)
    report("nvme", figures)
    assert figures.mismatches == 0
    assert figures.bytes_verified >= figures.bytes_written > 0
