"""dma_alloc(numa_node=) on the real kernel: a guest with two NUMA nodes and an edu behind
a pxb-pcie expander bridge on node 1 (the Debian kernel, which has CONFIG_NUMA)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pyvfio.cli import app
from pyvfio.drivers.edu import DMA_MASK, Edu
from pyvfio.host.sysfs import LIVE
from pyvfio.lab import guest
from pyvfio.lab.pytest_plugin import LabFixture

from .labhelp import on_vfio

pytestmark = pytest.mark.lab(devices=("edu@numa1",))


def edu_numa1() -> str:
    """The edu behind the expander bridge (the topology may hold other edus)."""
    return next(addr for dev, addr in guest.devices("edu") if dev.place == "numa1")


@pytest.fixture
def edu_on_node1(lab: LabFixture) -> Iterator[str]:
    yield from on_vfio(edu_numa1())


def pages_on(address: int) -> tuple[str, dict[int, int]]:
    """The policy of the mapping at ``address`` and its pages per node (/proc/self/numa_maps)."""
    for line in Path("/proc/self/numa_maps").read_text().splitlines():
        fields = line.split()
        if int(fields[0], 16) == address:
            nodes = {
                int(f[1 : f.index("=")]): int(f.split("=")[1])
                for f in fields
                if f.startswith("N") and "=" in f
            }
            return fields[1], nodes
    raise AssertionError(f"no mapping at {address:#x}")


def test_the_guest_has_two_nodes_and_the_edu_is_on_node_1(lab: LabFixture) -> None:
    assert LIVE.read_attr("sys/devices/system/node/has_memory") == "0-1"
    addr = edu_numa1()
    assert addr.startswith("0000:81:")  # below the expander's root port on bus 0x80
    assert LIVE.numa_node(addr) == 1
    done = CliRunner().invoke(app, ["show", addr, "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["numa_node"] == 1


def test_a_buffer_on_the_devices_node_is_placed_there_and_the_device_reaches_it(
    edu_on_node1: str,
) -> None:
    with Edu.open(edu_on_node1) as edu:
        dev = edu.device
        assert dev.numa_node == 1
        size = 64 << 10
        with dev.dma_alloc(size, max_iova=DMA_MASK, numa_node=dev.numa_node) as buf:
            assert pages_on(buf.address) == ("bind:1", {1: size // 4096})
            buf.write(bytes(range(256)) * 8)
            edu.to_device(buf, 2048)  # edu's buffer takes 4095 bytes at most
            with dev.dma_alloc(4096, max_iova=DMA_MASK, numa_node=0) as back:
                assert pages_on(back.address) == ("bind:0", {0: 1})
                edu.from_device(back, 2048)
                assert back.read(0, 2048) == bytes(range(256)) * 8


def test_without_numa_node_the_kernel_places_the_buffer(edu_on_node1: str) -> None:
    with Edu.open(edu_on_node1) as edu, edu.device.dma_alloc(4096, max_iova=DMA_MASK) as buf:
        assert buf.numa_node is None and pages_on(buf.address)[0] == "default"
