"""pyvfio.testing: the simulated hosts' configuration spaces say what each host declares,
to pyvfio's parser and to lspci alike, and agree with the hosts' sysfs files."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

import pyvfio.host.synthetic
import pyvfio.testing
from pyvfio.host import details
from pyvfio.host.sysfs import Sysfs
from pyvfio.pci.config import (
    AccessControlServices,
    AcsFlags,
    ConfigSpace,
    PortType,
    SrIov,
    parse_config,
)
from pyvfio.testing import SimulatedKernel, amd_desktop, intel_server, q35_lab


def _space(kernel: Sysfs, address: str) -> ConfigSpace:
    return parse_config(kernel.read_bytes(f"{kernel.device_dir(address)}/config") or b"")


def test_the_sriov_pf_shows_the_vfs_it_declares(tmp_path: Path) -> None:
    kernel = intel_server(tmp_path)
    sriov = _space(kernel, "0000:00:02.0").find_extended(0x10)
    assert isinstance(sriov, SrIov)
    assert (sriov.total_vfs, sriov.num_vfs, sriov.initial_vfs) == (7, 2, 7)
    assert sriov.vf_enable and sriov.vf_memory_space_enable
    assert (sriov.vf_offset, sriov.vf_stride, sriov.vf_device_id) == (0x80, 1, 0x1520)


def test_ports_and_endpoints_are_what_the_hosts_say(tmp_path: Path) -> None:
    kernel = intel_server(tmp_path)
    expected = {
        "0000:00:01.0": PortType.ROOT_PORT,
        "0000:01:00.0": PortType.UPSTREAM_PORT,
        "0000:02:08.0": PortType.DOWNSTREAM_PORT,
        "0000:03:00.0": PortType.ENDPOINT,
    }
    for address, port_type in expected.items():
        space = _space(kernel, address)
        assert not space.problems, address
        assert space.express is not None and space.express.port_type == port_type
        assert space.header.is_bridge == (port_type != PortType.ENDPOINT)
    acs = _space(kernel, "0000:00:01.0").find_extended(0x0D)
    assert isinstance(acs, AccessControlServices)
    assert acs.control == AcsFlags.SV | AcsFlags.RR | AcsFlags.CR | AcsFlags.UF
    assert _space(kernel, "0000:03:00.0").flr_capable
    old = _space(kernel, "0000:00:05.0").power_management
    assert old is not None and old.no_soft_reset


@pytest.mark.parametrize("build", [q35_lab, intel_server, amd_desktop])
def test_config_bars_are_where_the_resource_file_puts_them(
    tmp_path: Path, build: Callable[[Path], SimulatedKernel]
) -> None:
    kernel = build(tmp_path)
    for address in kernel.pci_devices():
        space = _space(kernel, address)
        if space.header.vendor_id == 0xFFFF:  # an SR-IOV VF: the PF places its BARs
            continue
        in_config = {bar.index: bar.address for bar in space.header.bars}
        in_sysfs = {r.index: r.start for r in details.resources(address, kernel) if r.index < 6}
        assert in_config == in_sysfs, address


def test_lspci_reads_a_simulated_device_as_declared(tmp_path: Path) -> None:
    lspci = shutil.which("lspci") or "/usr/bin/lspci"
    if not Path(lspci).exists():
        pytest.fail("lspci is the oracle here: apt-get install -y pciutils")
    kernel = intel_server(tmp_path / "host")
    data = kernel.read_bytes(f"{kernel.device_dir('0000:00:02.0')}/config") or b""
    lines = ["00:02.0 Ethernet controller: simulated"]
    lines += [
        f"{offset:03x}: " + " ".join(f"{b:02x}" for b in data[offset : offset + 16])
        for offset in range(0, len(data), 16)
    ]
    dump = tmp_path / "dump"
    dump.write_text("\n".join(lines) + "\n")
    out = subprocess.run(
        [lspci, "-F", str(dump), "-vvv"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "Initial VFs: 7, Total VFs: 7, Number of VFs: 2" in out
    assert "VF offset: 128, stride: 1, Device ID: 1520" in out
    assert "MSI-X: Enable- Count=10" in out
    assert "Memory at f6000000 (32-bit, non-prefetchable)" in out


def test_the_old_module_path_still_imports() -> None:
    for name in pyvfio.host.synthetic.__all__:
        assert getattr(pyvfio.host.synthetic, name) is getattr(pyvfio.testing, name)
