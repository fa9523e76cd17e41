"""The lab's ``numa1`` place: a pxb-pcie expander bridge on NUMA node 1, two guest nodes,
and the guest finding a device on the expander's root bus."""

from __future__ import annotations

from pathlib import Path

from pyvfio.lab import guest
from pyvfio.lab.runner import vng_argv
from pyvfio.lab.topology import ROOT_PORT_LINK, Manifest, Topology


def test_a_device_on_numa1_sits_below_a_root_port_of_an_expander_on_node_1() -> None:
    topo = Topology(devices=("edu", "edu@numa1"))
    devices = topo.layout(Path("/tmp"))
    assert [d.path for d in devices] == [("10.0",), ("80:00.0", "00.0")]
    args = topo.qemu_args(devices)
    assert "pxb-pcie,id=pxb_numa1,bus_nr=128,numa_node=1,bus=pcie.0,addr=17.0" in args
    port = "pcie-root-port,id=rp_edu1,bus=pxb_numa1,chassis=1,slot=1,addr=00.0"
    assert f"{port},{ROOT_PORT_LINK}" in args
    assert "edu,id=edu1,bus=rp_edu1" in args
    assert "edu,id=edu0,addr=10.0,bus=pcie.0" in args  # not on the expander's bus
    assert topo.numa_nodes == 2
    assert topo.numa_args(2)[:4] == ["--numa", "1024M,cpus=0-1", "--numa", "1024M"]
    assert "--append=no_timer_check" in topo.numa_args(2)


def test_without_numa1_there_is_one_node_and_no_expander() -> None:
    topo = Topology(devices=("edu", "nvme@rootport"))
    args = topo.qemu_args(topo.layout(Path("/tmp")))
    assert not any("pxb" in a for a in args)
    assert topo.numa_nodes == 1 and topo.numa_args(2) == []


def test_vng_gets_the_numa_nodes(tmp_path: Path) -> None:
    topo = Topology(devices=("edu@numa1",), memory="4G")
    devices = topo.layout(tmp_path)
    manifest = Manifest(topology=topo.name, accel="tcg", kernel="k", devices=devices)
    argv = vng_argv(topo, manifest, tmp_path / "k", tmp_path, None, cpus=1)
    i = argv.index("--numa")
    assert argv[i : i + 4] == ["--numa", "2048M,cpus=0-0", "--numa", "2048M"]


def test_the_guest_finds_a_device_on_another_root_bus(tmp_path: Path) -> None:
    root0 = tmp_path / "devices" / "pci0000:00"
    (root0 / "0000:00:10.0").mkdir(parents=True)
    (tmp_path / "devices" / "pci0000:80" / "0000:80:00.0" / "0000:81:00.0").mkdir(parents=True)
    devices = Topology(devices=("edu", "edu@numa1")).layout(tmp_path)
    assert [guest.address_of(d, root0) for d in devices] == ["0000:00:10.0", "0000:81:00.0"]
