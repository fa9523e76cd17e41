"""The docs' ``run lab`` examples, in the lab guest, in the order the docs give them
(issue 19). How blocks are marked and run: tests/docs_examples.py.

The docs name the lab's addresses: edu at 0000:00:10.0, the NVMe controller at
0000:00:11.0, a second edu behind a root port at 0000:01:00.0. This topology has just
those (a boot of its own rather than more minutes on the main topology, the CI's
critical path). ``pyvfio`` commands run in this process (a new pyvfio process costs
30-45 s under TCG), each block leaves the devices on the drivers it found them on.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
import pwd
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import docs_examples as dx
import pyvfio
from docs_examples import Block
from pyvfio.drivers.edu import Edu
from pyvfio.host import journal
from pyvfio.host.sysfs import LIVE
from pyvfio.lab.pytest_plugin import LabFixture

from .labhelp import nvme_settled, on_vfio

DOCS_TOPOLOGY = ("edu", "nvme", "edu@rootport")
pytestmark = pytest.mark.lab(devices=DOCS_TOPOLOGY)

EDU, NVME, EDU_PORT = "0000:00:10.0", "0000:00:11.0", "0000:01:00.0"
BLOCKS = list(dx.iter_marked("run", "lab"))


def test_the_lab_has_the_addresses_the_docs_name(lab: LabFixture) -> None:
    assert (lab.address("edu"), lab.address("nvme"), lab.address("edu", 1)) == (
        EDU,
        NVME,
        EDU_PORT,
    )


@contextlib.contextmanager
def _bound() -> Iterator[None]:
    nvme_settled(NVME)
    with contextlib.ExitStack() as stack:
        for address in (EDU, NVME):
            stack.enter_context(contextlib.contextmanager(on_vfio)(address))
        yield
    nvme_settled(NVME)


@contextlib.contextmanager
def _hugepages(count: int) -> Iterator[None]:
    knob = Path("/proc/sys/vm/nr_hugepages")
    before = int(knob.read_text())
    knob.write_text(f"{max(before, count)}\n")
    try:
        yield
    finally:
        knob.write_text(f"{before}\n")


def _address_of(memory: mmap.mmap, align: int) -> int:
    start = ctypes.addressof(ctypes.c_char.from_buffer(memory))
    return (start + align - 1) // align * align


@contextlib.contextmanager
def context(name: str | None) -> Iterator[dict[str, Any]]:
    """The namespace a block runs in, after what dx.CONTEXTS says ``name`` prepares."""
    namespace: dict[str, Any] = {"__name__": "__main__"}
    if name is None:
        yield namespace
        return
    with contextlib.ExitStack() as stack:
        stack.enter_context(_bound())
        if name == "config":
            dev = stack.enter_context(pyvfio.open(NVME))
            namespace.update(dev=dev, cmd=dev.config.read16(0x04))
        elif name == "dma":
            stack.enter_context(_hugepages(2))
            dev = stack.enter_context(pyvfio.open(EDU))
            memory = mmap.mmap(-1, 66 << 20)  # 64 MiB at a 2 MiB boundary inside
            my_mmap = mmap.mmap(-1, 1 << 20)
            namespace.update(
                dev=dev, iommu=dev.iommu, my_mmap=my_mmap, address=_address_of(memory, 2 << 20)
            )
            namespace.update(size=1 << 20, _memory=memory)
        elif name == "irq":
            dev = stack.enter_context(pyvfio.open(EDU))
            namespace.update(dev=dev, edu=Edu(dev))
        else:
            assert name == "bound", name
        yield namespace


#: How long one command or Python block may take before the test says which one hangs
#: (a nested QEMU under TCG on a loaded host takes minutes; a hang would take the
#: guest's whole timeout and say nothing).
DEADLINE = 600


@contextlib.contextmanager
def deadline(what: str, seconds: int = DEADLINE) -> Iterator[None]:
    """TimeoutError naming ``what`` (with the traceback of where it waits) after ``seconds``."""

    def expired(signum: int, frame: object) -> None:
        raise TimeoutError(f"{what} did not finish in {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _drivers() -> dict[str, str | None]:
    return {address: LIVE.driver(address) for address in (EDU, NVME, EDU_PORT)}


@pytest.mark.parametrize("block", BLOCKS, ids=[b.where for b in BLOCKS])
def test_a_doc_example_runs_in_the_lab(block: Block, tmp_path: Path, lab: LabFixture) -> None:
    assert block.marker is not None
    nvme_settled(NVME)
    before = _drivers()
    with context(block.marker.options.get("context")) as namespace:
        if block.shell:
            try:
                for command in dx.commands(block):
                    with deadline(f"{block.where}: {command.line}"):
                        ran = dx.run_command(command, tmp_path)
                    print(f"$ {command.line}\n{ran.output}")
                    assert ran.problem() is None, f"{block.where}: {ran.problem()}"
            finally:
                if journal.read_journal():  # a failed block: the next one starts clean
                    restore = dx.Command(
                        "pyvfio restore --all", ("pyvfio", "restore", "--all"), None
                    )
                    print(dx.run_command(restore, tmp_path).output)
        else:
            assert block.lang == "python", f"{block.where}: run lab is for sh and python"
            with deadline(block.where):
                dx.run_python(block.text, namespace, block.where)
    nvme_settled(NVME)
    assert _drivers() == before, f"{block.where} left the devices on other drivers"
    assert journal.read_journal() == {}, f"{block.where} left devices in the bind journal"


def _refused_as(user: str, address: str) -> str:
    """What ``pyvfio.open(address)`` raises in a process of ``user``: its type and text."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child leaves through os._exit
        text = "opened"
        try:
            pw = pwd.getpwnam(user)
            os.setgroups([])
            os.setresgid(pw.pw_gid, pw.pw_gid, pw.pw_gid)
            os.setresuid(pw.pw_uid, pw.pw_uid, pw.pw_uid)
            pyvfio.open(address).close()
        except BaseException as err:  # whatever it is, the parent reads it
            text = f"{type(err).__name__}: {err}"
        finally:
            os.write(write, text.encode())
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        text = pipe.read().decode()
    os.waitpid(pid, 0)
    return text


def test_the_permission_denied_sample_is_what_open_raises(lab: LabFixture) -> None:
    (block,) = [
        b for b in dx.iter_marked("output") if b.marker and b.marker.name == "permission-denied"
    ]
    with contextlib.contextmanager(on_vfio)(EDU):
        real = _refused_as("daemon", EDU)
    assert dx.text_matches(" ".join(block.text.split()), " ".join(real.split())), (
        f"{block.where} shows\n{block.text}\nopen raises\n{real}"
    )
