"""pyvfio vm qemu without a host: argv golden files, pre-flight, QMP matching, a fake QEMU.

The hosts are the hand-made sysfs trees of :mod:`pyvfio.host.synthetic`; the golden
files in tests/data/vm/ are the reviewed argv (``PYVFIO_UPDATE_GOLDEN=1`` rewrites them).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from pyvfio.cli import app
from pyvfio.host import journal, synthetic
from pyvfio.host.synthetic import SimulatedKernel
from pyvfio.vm import qemu
from pyvfio.vm.layout import layout
from pyvfio.vm.qmp import Monitor, walk_query_pci

DATA = Path(__file__).parent.parent / "data" / "vm"
runner = CliRunner()


def golden(name: str, text: str) -> None:
    path = DATA / name
    if os.environ.get("PYVFIO_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"{name} changed; review it, then PYVFIO_UPDATE_GOLDEN=1"


@pytest.fixture
def amd(tmp_path: Path) -> SimulatedKernel:
    return synthetic.amd_desktop(tmp_path / "amd")


@pytest.fixture
def intel(tmp_path: Path) -> SimulatedKernel:
    return synthetic.intel_server(tmp_path / "intel")


@pytest.fixture
def lab(tmp_path: Path) -> SimulatedKernel:
    """The lab guest with its vIOMMU unit (interrupt remapping on), as the live one has."""
    kernel = synthetic.q35_lab(tmp_path / "lab")
    kernel.host.write("sys/devices/virtual/iommu/dmar0/intel-iommu/ecap", "f020de\n")
    kernel.host.link("sys/class/iommu/dmar0", "sys/devices/virtual/iommu/dmar0")
    return kernel


def test_gpu_and_audio_share_one_slot_with_gpu_options(amd: SimulatedKernel) -> None:
    gpu = qemu.GpuOptions(x_vga=True, romfile="/usr/share/vgabios/gtx1080.rom")
    plan = qemu.build(["0a:00.1", "0a:00.0"], memory="8G", gpu=gpu, sysfs=amd)
    golden("qemu-gpu-audio.sh", plan.shell() + "\n")
    assert [(d.address, d.port, d.function) for d in plan.devices] == [
        ("0000:0a:00.0", 1, 0),
        ("0000:0a:00.1", 1, 1),
    ]
    assert plan.memlock.need == 9 << 30


def test_nvme_with_hugepages_and_extra_args(intel: SimulatedKernel) -> None:
    plan = qemu.build(
        ["0000:03:00.0"],
        memory="4G",
        hugepages=True,
        accel="kvm",
        extra=["-drive", "file=disk.qcow2,if=virtio"],
        sysfs=intel,
    )
    golden("qemu-nvme.sh", plan.shell() + "\n")


def test_nic_behind_a_root_port(lab: SimulatedKernel) -> None:
    plan = qemu.build(["01:00.0"], memory="2G", accel="tcg", sysfs=lab)
    golden("qemu-nic.sh", plan.shell() + "\n")


def test_functions_without_function_0_are_renumbered(intel: SimulatedKernel) -> None:
    placed = layout(["00:02.2", "00:02.1", "03:00.0"], intel)
    assert [(d.address, d.port, d.function, d.multifunction) for d in placed] == [
        ("0000:00:02.1", 1, 0, True),
        ("0000:00:02.2", 1, 1, False),
        ("0000:03:00.0", 2, 0, False),
    ]


def test_bad_input(amd: SimulatedKernel, lab: SimulatedKernel) -> None:
    with pytest.raises(ValueError, match="bridge"):
        qemu.build(["00:03.1"], sysfs=amd)
    with pytest.raises(ValueError, match="apply to GPUs"):
        qemu.build(["00:10.0"], gpu=qemu.GpuOptions(rombar=False), sysfs=lab)
    with pytest.raises(ValueError, match="size"):
        qemu.build(["00:10.0"], memory="lots", sysfs=lab)
    assert qemu.parse_size("512") == 512 << 20
    assert qemu.parse_size("2GiB") == 2 << 30


def test_memlock_too_low_for_a_user_cannot_be_raised(tmp_path: Path) -> None:
    kernel = synthetic.intel_server(tmp_path)
    kernel.host.write("pyvfio/snapshot.json", json.dumps({"euid": 1000}))
    plan = qemu.build(["00:05.0"], memory="4G", sysfs=kernel)
    assert not plan.memlock.can_raise
    found = {c.name: c for c in qemu.preflight(plan, kernel)}
    assert found["RLIMIT_MEMLOCK"].failed
    assert "5 GiB" in found["RLIMIT_MEMLOCK"].message


def test_preflight_names_the_peers_of_a_group_that_stays_not_viable(
    intel: SimulatedKernel,
) -> None:
    plan = qemu.build(["03:00.0"], sysfs=intel)
    found = {c.name: c for c in qemu.preflight(plan, intel)}
    assert found["0000:03:00.0 group"].failed
    assert "0000:04:00.0 on igb" in found["0000:03:00.0 group"].message
    both = qemu.build(["03:00.0", "04:00.0"], sysfs=intel)
    assert not any(c.failed for c in qemu.preflight(both, intel) if "group" in c.name)


def query_pci_answer(plan: qemu.QemuPlan, *, wrong_bar: bool = False) -> list[dict[str, Any]]:
    """What QEMU's query-pci says of the plan's devices, each below its root port."""
    ports = []
    for port in sorted({d.port for d in plan.devices}):
        devices = []
        for d in plan.devices:
            if d.port != port:
                continue
            regions = [
                {
                    "bar": b.index,
                    "type": "io" if b.kind == "io" else "memory",
                    "address": -1,
                    "size": b.size * (2 if wrong_bar else 1),
                    "prefetch": b.prefetchable,
                    "mem_type_64": b.kind == "mem64",
                }
                for b in d.bars
            ]
            devices.append(
                {
                    "bus": port,
                    "slot": 0,
                    "function": d.function,
                    "class_info": {"class": d.info.class_code >> 8},
                    "id": {"vendor": d.info.vendor_id, "device": d.info.device_id},
                    "qdev_id": d.qdev_id,
                    "regions": regions,
                }
            )
        ports.append(
            {
                "bus": 0,
                "slot": port + 1,
                "function": 0,
                "class_info": {"class": 0x0604},
                "id": {"vendor": 0x1B36, "device": 0x000C},
                "qdev_id": f"rp{port}",
                "regions": [],
                "pci_bridge": {"bus": {"number": 0, "secondary": port}, "devices": devices},
            }
        )
    return [{"bus": 0, "devices": ports}]


def test_confirm_matches_ids_and_bars(amd: SimulatedKernel) -> None:
    plan = qemu.build(["0a:00.0", "0a:00.1"], sysfs=amd)
    assert all(c.ok for c in qemu.confirm(plan.devices, query_pci_answer(plan)))
    bad = qemu.confirm(plan.devices, query_pci_answer(plan, wrong_bar=True))
    assert not bad[0].ok and "BAR 0: guest memory 0x2000000, host memory 0x1000000" in str(bad[0])
    missing = qemu.confirm(plan.devices, [])
    assert "query-pci has no hostdev1-0" in str(missing[0])


#: A stand-in for qemu-system-x86_64: serves QMP on the -qmp socket and answers
#: query-pci with $FAKE_QEMU_ANSWER, or fails the way QEMU does when $FAKE_QEMU_FAIL is set.
FAKE_QEMU = r"""
import json, os, socket, sys
if os.environ.get("FAKE_QEMU_FAIL"):
    sys.stderr.write(os.environ["FAKE_QEMU_FAIL"] + "\n")
    sys.exit(1)
with open(os.environ["FAKE_QEMU_ARGV"], "w") as f:
    json.dump(sys.argv[1:], f)
path = sys.argv[sys.argv.index("-qmp") + 1].split(",")[0].removeprefix("unix:")
server = socket.socket(socket.AF_UNIX)
server.bind(path)
server.listen(1)
conn, _ = server.accept()
out = conn.makefile("w")
send = lambda msg: (out.write(json.dumps(msg) + "\r\n"), out.flush())
send({"QMP": {"version": {"qemu": {"major": 7, "minor": 2, "micro": 0}, "package": ""},
              "capabilities": []}})
# qemu.qmp sends each command without a newline: decode the stream as it comes.
decoder, buffer = json.JSONDecoder(), ""
while True:
    chunk = conn.recv(65536).decode()
    if not chunk:
        break
    buffer += chunk
    try:
        msg, end = decoder.raw_decode(buffer.lstrip())
    except ValueError:
        continue
    buffer = buffer.lstrip()[end:]
    cmd, mid = msg["execute"], msg.get("id")
    if cmd == "query-pci":
        send({"return": json.load(open(os.environ["FAKE_QEMU_ANSWER"])), "id": mid})
    else:
        send({"return": {}, "id": mid})
    if cmd in ("quit", "cont"):
        break
"""


@pytest.fixture
def fake_qemu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    script = tmp_path / "fake_qemu.py"
    script.write_text(FAKE_QEMU)
    wrapper = tmp_path / "qemu-system-x86_64"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} {script} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("FAKE_QEMU_ARGV", str(tmp_path / "argv.json"))
    return wrapper


def test_check_binds_confirms_and_gives_back(
    lab: SimulatedKernel, fake_qemu: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = qemu.build(["00:11.0"], memory="128M", qemu=str(fake_qemu), sysfs=lab)
    answer = tmp_path / "answer.json"
    answer.write_text(json.dumps(query_pci_answer(plan)))
    monkeypatch.setenv("FAKE_QEMU_ANSWER", str(answer))
    report = qemu.run(plan, check=True, timeout=30, sysfs=lab, journal_dir=tmp_path / "state")
    assert report.ok, str(report)
    assert "yes: passthrough works" in str(report)
    argv = json.loads((tmp_path / "argv.json").read_text())
    assert "-S" in argv and "-nodefaults" in argv
    assert ("sys/bus/pci/devices/0000:00:11.0/driver_override", "vfio-pci") in lab.writes
    assert lab.driver("00:11.0") == "nvme"
    assert [r.address for r in report.restored] == ["0000:00:11.0"]
    assert journal.read_journal(tmp_path / "state") == {}


def test_qemu_that_dies_is_reported_and_devices_go_back(
    lab: SimulatedKernel, fake_qemu: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_QEMU_FAIL", "vfio 0000:00:11.0: failed to setup container")
    plan = qemu.build(["00:11.0"], memory="128M", qemu=str(fake_qemu), sysfs=lab)
    report = qemu.run(plan, check=True, timeout=30, sysfs=lab, journal_dir=tmp_path / "state")
    assert not report.ok
    assert report.error is not None and "failed to setup container" in report.error
    assert report.qemu_exit == 1
    assert lab.driver("00:11.0") == "nvme"


def test_preflight_failure_binds_nothing(lab: SimulatedKernel, tmp_path: Path) -> None:
    plan = qemu.build(["00:1f.3"], memory="128M", sysfs=lab)
    report = qemu.run(plan, check=True, sysfs=lab, journal_dir=tmp_path / "state")
    assert not report.ok and not report.started
    assert "0000:00:1f.0 on lpc_ich" in " ".join(report.reasons())
    assert lab.writes == []


def test_cli_dry_run_json_and_extra_args(tmp_path: Path) -> None:
    synthetic.q35_lab(tmp_path)
    args = ["vm", "qemu", "00:10.0", "--dry-run", "--json", "--root", str(tmp_path)]
    done = runner.invoke(app, [*args, "--", "-nographic", "-smp", "2"])
    assert done.exit_code == 0, done.output
    data = json.loads(done.stdout)
    assert data["argv"][-3:] == ["-nographic", "-smp", "2"]
    assert data["devices"][0]["qdev_id"] == "hostdev1-0"
    done = runner.invoke(app, ["vm", "qemu", "00:10.0", "--root", str(tmp_path)])
    assert done.exit_code == 2 and "only --dry-run" in done.output


def test_query_devices_sees_behind_a_root_port_of_a_real_qemu(
    lab: SimulatedKernel, tmp_path: Path
) -> None:
    """QEMU's emulated edu stands in for the passed one: with -S a root port has no
    secondary bus yet and query-pci leaves its devices out, until firmware numbers it."""
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("qemu-system-x86_64 is missing: apt-get install qemu-system-x86")
    devices = layout(["00:10.0"], lab)
    sock = tmp_path / "qmp.sock"
    argv = ["qemu-system-x86_64", "-machine", "q35", "-accel", "tcg", "-m", "64M", "-S"]
    argv += ["-nodefaults", "-display", "none", "-qmp", f"unix:{sock},server=on,wait=off"]
    argv += ["-device", "pcie-root-port,id=rp1,bus=pcie.0,chassis=1"]
    argv += ["-device", f"edu,id={devices[0].qdev_id},bus=rp1,addr=00.0"]
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not sock.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        with Monitor(str(sock), timeout=30) as monitor:
            first = monitor.execute("query-pci")
            assert devices[0].qdev_id not in {d.qdev_id for d in walk_query_pci(first)}
            answer, resumed = qemu.query_devices(monitor, devices, deadline)
            assert resumed
            (found,) = qemu.confirm(devices, answer)
            assert found.ok, str(found)
            assert found.guest is not None and found.guest.bus != 0
            monitor.execute("quit")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()


def test_qemu_that_cannot_start_raises_and_devices_go_back(
    lab: SimulatedKernel, tmp_path: Path
) -> None:
    plan = qemu.build(["00:11.0"], memory="128M", qemu=str(tmp_path / "no-qemu"), sysfs=lab)
    with pytest.raises(qemu.QemuError, match="cannot start"):
        qemu.run(plan, check=True, sysfs=lab, journal_dir=tmp_path / "state")
    assert lab.driver("00:11.0") == "nvme"
    assert journal.read_journal(tmp_path / "state") == {}
