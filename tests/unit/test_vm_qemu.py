"""pyvfio vm qemu without a host: argv golden files, pre-flight, QMP matching, a fake QEMU.

The hosts are the hand-made sysfs trees of :mod:`pyvfio.testing`; the golden
files in tests/data/vm/ are the reviewed argv (``PYVFIO_UPDATE_GOLDEN=1`` rewrites them).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from pyvfio import testing as synthetic
from pyvfio.cli import app
from pyvfio.host import accel as host_accel
from pyvfio.host import journal
from pyvfio.testing import SimulatedKernel
from pyvfio.vm import qemu
from pyvfio.vm.layout import layout
from pyvfio.vm.qmp import Monitor, walk_query_pci

#: The tests that run the installed QEMU (qemu-system-x86_64) need it.
needs_qemu = pytest.mark.needs_tool(qemu.QEMU, host_accel.QEMU_PACKAGE)

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


#: What Debian 12's QEMU 7.2 offers: seccomp, and -runas (deprecated in 9.1).
QEMU_7_2 = qemu.QemuFeatures(found=True, sandbox=True, drop="-runas")
#: QEMU 9.1 and later: -run-with user= instead of -runas.
QEMU_9_1 = qemu.QemuFeatures(found=True, sandbox=True, drop="-run-with")
#: A build without seccomp that cannot change user either.
BARE_QEMU = qemu.QemuFeatures(found=True)


def test_gpu_and_audio_share_one_slot_with_gpu_options(amd: SimulatedKernel) -> None:
    gpu = qemu.GpuOptions(x_vga=True, romfile="/usr/share/vgabios/gtx1080.rom")
    plan = qemu.build(["0a:00.1", "0a:00.0"], memory="8G", gpu=gpu, features=QEMU_7_2, sysfs=amd)
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
        features=QEMU_9_1,
        sysfs=intel,
    )
    golden("qemu-nvme.sh", plan.shell() + "\n")


def test_nic_behind_a_root_port(lab: SimulatedKernel) -> None:
    plan = qemu.build(["01:00.0"], memory="2G", accel="tcg", features=BARE_QEMU, sysfs=lab)
    golden("qemu-nic.sh", plan.shell() + "\n")
    assert plan.confinement == qemu.Confinement(notes=plan.confinement.notes)
    assert "this QEMU cannot change user" in str(plan)
    assert "this QEMU is built without seccomp" in str(plan)


def test_functions_without_function_0_are_renumbered(amd: SimulatedKernel) -> None:
    # (00:02.1 and 00:02.2 of the intel server are SR-IOV VFs: a port each, see
    # tests/unit/test_vm_sriov.py; here functions of one device without its function 0.)
    placed = layout(["0a:00.1"], amd)
    assert [(d.address, d.port, d.function, d.multifunction) for d in placed] == [
        ("0000:0a:00.1", 1, 0, False),
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


#: A stand-in for qemu-system-x86_64: serves QMP on the -chardev socket and answers
#: query-pci with $FAKE_QEMU_ANSWER, or fails the way QEMU does when $FAKE_QEMU_FAIL is set.
FAKE_QEMU = r"""
import json, os, pwd, re, socket, sys
if os.environ.get("FAKE_QEMU_FAIL"):
    sys.stderr.write(os.environ["FAKE_QEMU_FAIL"] + "\n")
    sys.exit(1)
if "-help" in sys.argv:  # as a build without seccomp; -runas only when asked
    if "-sandbox" in sys.argv:
        sys.exit("-sandbox support is not enabled in this QEMU binary")
    print("-runas user     change to user id user just before starting the VM"
          if os.environ.get("FAKE_QEMU_RUNAS") else "-m megs")
    sys.exit(0)
with open(os.environ["FAKE_QEMU_ARGV"], "w") as f:
    json.dump(sys.argv[1:], f)
# The socket path as QEMU reads it: each option ends at a single comma, ",," is a comma.
chardev = re.findall(r"(?:[^,]|,,)+", sys.argv[sys.argv.index("-chardev") + 1])
path = next(o for o in chardev if o.startswith("path=")).removeprefix("path=")
path = path.replace(",,", ",")
server = socket.socket(socket.AF_UNIX)
server.bind(path)
server.listen(1)
answer = json.load(open(os.environ["FAKE_QEMU_ANSWER"])) if "FAKE_QEMU_ANSWER" in os.environ else []
if "-runas" in sys.argv and not os.environ.get("FAKE_QEMU_KEEP_ROOT"):
    user = pwd.getpwnam(sys.argv[sys.argv.index("-runas") + 1])
    os.setgid(user.pw_gid)
    os.setgroups([])
    os.setuid(user.pw_uid)
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
        send({"return": answer, "id": mid})
    else:
        send({"return": {}, "id": mid})
    if cmd == "cont" and os.environ.get("FAKE_QEMU_CTRL_C"):
        # Ctrl-C at the terminal: SIGINT to pyvfio and to QEMU, which exits 0 on it.
        import signal
        signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
        os.kill(os.getppid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
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


@needs_qemu
def test_query_devices_sees_behind_a_root_port_of_a_real_qemu(
    lab: SimulatedKernel, tmp_path: Path
) -> None:
    """QEMU's emulated edu stands in for the passed one: with -S a root port has no
    secondary bus yet and query-pci leaves its devices out, until firmware numbers it."""
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


# -- User values inside QEMU option strings ---------------------------------------------------

#: Values a user (or a script fed by someone else) can put where pyvfio writes a QEMU
#: option: each must come back whole as the value of its own key, never as a new key.
HOSTILE = [
    "card.rom,host=0000:00:14.0",
    "rom,id=evil,bus=pcie.0,addr=1f.7",
    "a,,b",
    "ends with a comma,",
    ",starts with one",
    ",",
    "=",
    "romfile=other.rom",
    "x,romfile=",
    "dir with spaces/ä ö.rom",
    "back\\slash,x-vga=on",
    "help",
    "x,help",
]


def qemu_opts(text: str) -> list[tuple[str, str]]:
    """Split a QEMU option string the way QEMU does (util/qemu-option.c get_opt_value,
    util/keyval.c): a single ',' ends a value, ',,' is a comma inside it. A first
    element without '=' is the implied key (the driver): ``("", name)``."""
    items, item, i = [], "", 0
    while i < len(text):
        if text[i] == ",":
            if text[i + 1 : i + 2] == ",":
                item, i = item + ",", i + 2
                continue
            items.append(item)
            item, i = "", i + 1
            continue
        item, i = item + text[i], i + 1
    items.append(item)
    pairs = []
    for n, part in enumerate(items):
        key, eq, value = part.partition("=")
        pairs.append((key, value) if eq else ("" if n == 0 else key, part if n == 0 else ""))
    return pairs


def option_after(argv: Sequence[str], flag: str, starts: str) -> str:
    return next(v for f, v in itertools.pairwise(argv) if f == flag and v.startswith(starts))


def mangle(path: str) -> str:
    """A path as the kernel writes it into /proc/mounts (fs/proc_namespace.c)."""
    return "".join(f"\\{ord(c):03o}" if c in " \t\n\\" else c for c in path)


@pytest.mark.parametrize("value", HOSTILE)
def test_romfile_stays_the_romfile(amd: SimulatedKernel, value: str) -> None:
    gpu = qemu.GpuOptions(romfile=value)
    plan = qemu.build(["0a:00.0"], gpu=gpu, features=QEMU_7_2, sysfs=amd)
    pairs = qemu_opts(option_after(plan.argv, "-device", "vfio-pci"))
    assert pairs == [
        ("", "vfio-pci"),
        ("host", "0000:0a:00.0"),
        ("id", "hostdev1-0"),
        ("bus", "rp1"),
        ("addr", "00.0"),
        ("romfile", value),
    ]


@pytest.mark.parametrize("value", HOSTILE)
def test_hugetlbfs_mount_point_stays_the_mem_path(tmp_path: Path, value: str) -> None:
    kernel = synthetic.intel_server(tmp_path)
    point = f"/mnt/{value}"
    kernel.host.add_mount("hugetlbfs", mangle(point), "hugetlbfs")
    plan = qemu.build(["03:00.0"], hugepages=True, features=QEMU_7_2, sysfs=kernel)
    assert plan.hugepages == point
    pairs = qemu_opts(option_after(plan.argv, "-object", "memory-backend-file"))
    assert pairs == [
        ("", "memory-backend-file"),
        ("id", "ram0"),
        ("size", "4096M"),
        ("mem-path", point),
        ("prealloc", "on"),
    ]


@pytest.mark.parametrize("value", HOSTILE)
def test_qmp_socket_path_stays_the_path(value: str) -> None:
    path = Path("/tmp") / value.replace("/", "_") / "qmp.sock"
    chardev, arg, mon, control = qemu.qmp_args(path)
    assert (chardev, mon) == ("-chardev", "-mon")
    assert qemu_opts(arg) == [
        ("", "socket"),
        ("id", qemu.QMP_CHARDEV),
        ("path", str(path)),
        ("server", "on"),
        ("wait", "off"),
    ]
    assert qemu_opts(control) == [("chardev", qemu.QMP_CHARDEV), ("mode", "control")]


@pytest.mark.parametrize("value", HOSTILE)
def test_run_with_user_stays_the_user(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """QEMU 9.1's -run-with user=NAME is an option string too (a user database can hold
    any name); -runas takes the name as a whole argument."""
    entry = pwd.struct_passwd((value, "x", 1234, 1234, "", "/", "/bin/false"))
    monkeypatch.setattr("pyvfio.vm.qemu.pwd.getpwnam", lambda name: entry)
    jail = qemu.confinement(QEMU_9_1, run_as=value)
    assert jail.args[:2] == ("-sandbox", qemu.sandbox_option(drop=True))
    assert jail.args[2] == "-run-with"
    assert qemu_opts(jail.args[3]) == [("user", value)]
    assert qemu.confinement(QEMU_7_2, run_as=value).args[2:] == ("-runas", value)


#: What cannot be escaped, and what QEMU would read as something else: refused.
REFUSED = [
    ("", "is empty"),
    ("a\nb", "control character"),
    ("a\x00b", "control character"),
    ("x\x1b[2J", "control character"),
    ("tab\there", "control character"),
    ("del\x7f", "control character"),
]


@pytest.mark.parametrize(("value", "match"), REFUSED)
def test_unescapable_values_are_refused_everywhere(
    amd: SimulatedKernel, tmp_path: Path, value: str, match: str
) -> None:
    with pytest.raises(ValueError, match=f"--romfile .*{match}|--romfile {match}"):
        qemu.build(["0a:00.0"], gpu=qemu.GpuOptions(romfile=value), features=QEMU_7_2, sysfs=amd)
    with pytest.raises(ValueError, match=match):
        qemu.confinement(QEMU_7_2, run_as=value)
    if value:  # no path is empty; an empty mount point is none (/dev/hugepages is used)
        with pytest.raises(ValueError, match=match):
            qemu.qmp_args(Path(f"/tmp/{value}"))
        kernel = synthetic.intel_server(tmp_path / "intel")
        kernel.host.add_mount("hugetlbfs", mangle(f"/mnt/{value}"), "hugetlbfs")
        with pytest.raises(ValueError, match="hugetlbfs mount point .*" + match):
            qemu.build(["03:00.0"], hugepages=True, features=QEMU_7_2, sysfs=kernel)


def test_a_qmp_socket_path_longer_than_sun_path_is_refused() -> None:
    with pytest.raises(ValueError, match="set TMPDIR to a shorter folder"):
        qemu.qmp_args(Path("/tmp") / ("d" * 100) / "qmp.sock")


def test_cli_refuses_a_hostile_romfile_with_one_line(tmp_path: Path) -> None:
    synthetic.amd_desktop(tmp_path)
    base = ["vm", "qemu", "0a:00.0", "--dry-run", "--root", str(tmp_path)]
    done = runner.invoke(app, [*base, "--romfile", "card.rom\n-device evil"])
    assert done.exit_code == 2
    assert done.stderr.count("\n") == 1 and "control character" in done.stderr
    done = runner.invoke(app, [*base, "--romfile", "card.rom,host=0000:00:14.0", "--json"])
    assert done.exit_code == 0, done.output
    argv = json.loads(done.stdout)["argv"]
    device = option_after(argv, "-device", "vfio-pci")
    assert device.endswith(",romfile=card.rom,,host=0000:00:14.0")


def real_qemu() -> str:
    found = shutil.which(qemu.QEMU)
    assert found is not None, "a test that runs QEMU is marked needs_qemu"
    return found


@needs_qemu
def test_real_qemu_opens_the_passed_host_not_one_a_romfile_names(amd: SimulatedKernel) -> None:
    """The plan's own argv, run: QEMU looks for the device named by host=, and the
    host=0000:00:14.0 inside --romfile stays part of the file name."""
    real_qemu()
    gpu = qemu.GpuOptions(romfile="card.rom,host=0000:00:14.0")
    plan = qemu.build(["0a:00.0"], memory="64M", accel="tcg", gpu=gpu, run_as="root", sysfs=amd)
    argv = [*plan.argv, "-S", "-nodefaults", "-display", "none"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1
    assert "devices/0000:0a:00.0: no such host device" in done.stderr, done.stderr
    assert "devices/0000:00:14.0" not in done.stderr


@needs_qemu
def test_real_qemu_reads_hostile_paths_whole(tmp_path: Path) -> None:
    """The plan's argv with edu standing in for vfio-pci (same bus, slot and romfile
    options): QMP, served on a socket in a folder with commas in its name, reports the
    romfile and the hugetlbfs mem-path exactly as given. As root the plan also drops
    QEMU to nobody under seccomp, after it opened those files."""
    real_qemu()
    hostile = tmp_path / "d,id=evil,host=0000:00:14.0 x"
    hostile.mkdir()
    romfile = hostile / "card.rom,host=0000:00:14.0"
    romfile.write_bytes(bytes(4096))
    romfile.chmod(0o644)
    kernel = synthetic.amd_desktop(tmp_path / "amd")
    kernel.host.add_mount("hugetlbfs", mangle(str(hostile)), "hugetlbfs")
    root = os.geteuid() == 0
    plan = qemu.build(
        ["0a:00.0"],
        memory="64M",
        accel="tcg",
        hugepages=True,
        gpu=qemu.GpuOptions(romfile=str(romfile)),
        run_as=None if root else "root",
        sysfs=kernel,
    )
    argv = list(plan.argv)
    n = argv.index(option_after(argv, "-device", "vfio-pci"))
    argv[n] = argv[n].replace("vfio-pci,host=0000:0a:00.0,", "edu,")
    sock = hostile / "qmp.sock"
    argv += [*qemu.qmp_args(sock), "-S", "-nodefaults", "-display", "none"]
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not sock.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()[1]
        with Monitor(str(sock), timeout=60) as monitor:
            device = "/machine/peripheral/hostdev1-0"
            assert monitor.execute("qom-get", path=device, property="romfile") == str(romfile)
            mem = monitor.execute("qom-get", path="/objects/ram0", property="mem-path")
            assert mem == str(hostile)
            process = qemu.read_process(proc.pid)
            assert process.problems(plan.confinement) == []
            if root and plan.confinement.user is not None:
                assert set(process.uids) == {pwd.getpwnam("nobody").pw_uid}
                assert process.seccomp == 2
            monitor.execute("quit")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


# -- Confinement --------------------------------------------------------------------------------


def test_confinement_follows_what_qemu_offers(monkeypatch: pytest.MonkeyPatch) -> None:
    nobody = pwd.getpwnam("nobody")
    jail = qemu.confinement(QEMU_7_2)
    assert jail.user == "nobody" and jail.uid == nobody.pw_uid and jail.sandbox
    assert jail.args == ("-sandbox", qemu.sandbox_option(drop=True), "-runas", "nobody")
    assert "elevateprivileges=allow" in jail.args[1]  # the drop's setuid comes after it
    kept = qemu.confinement(QEMU_7_2, run_as="root")
    assert kept.args == ("-sandbox", qemu.sandbox_option(drop=False)) and kept.user is None
    assert "elevateprivileges=deny" in kept.args[1]
    assert qemu.confinement(QEMU_7_2, sandbox=False).args == ("-runas", "nobody")
    assert qemu.confinement(QEMU_7_2, euid=1000).args == ("-sandbox", kept.args[1])
    assert "nothing to drop" in qemu.confinement(QEMU_7_2, euid=1000).notes[0]
    assert qemu.confinement(qemu.QemuFeatures(found=False)).args == ()
    with pytest.raises(ValueError, match="no such user"):
        qemu.confinement(QEMU_7_2, run_as="pyvfio-no-such-user")
    with pytest.raises(ValueError, match="only root can make QEMU change user"):
        qemu.confinement(QEMU_7_2, run_as="nobody", euid=1000)
    with pytest.raises(ValueError, match="cannot change user"):
        qemu.confinement(BARE_QEMU, run_as="nobody")


HELP_7_2 = """\
-runas user     change to user id user just before starting the VM
                user can be numeric uid:gid instead
-sandbox on[,obsolete=allow|deny][,elevateprivileges=allow|deny|children]
"""
HELP_9_1 = """\
-runas user     change to user id user just before starting the VM
-run-with [async-teardown=on|off][,chroot=dir][user=username|uid:gid]
                Set miscellaneous QEMU process lifecycle options:
"""
HELP_8_1 = "-run-with [async-teardown=on|off][,chroot=dir]\n"


def test_drop_option_from_help() -> None:
    assert qemu.drop_option(HELP_7_2) == "-runas"
    assert qemu.drop_option(HELP_9_1) == "-run-with"
    assert qemu.drop_option(HELP_8_1) is None
    assert qemu.drop_option("") is None


@needs_qemu
def test_features_of_the_installed_qemu() -> None:
    """Debian 12's QEMU 7.2 is built with seccomp and has -runas."""
    features = qemu.qemu_features(real_qemu())
    assert features == QEMU_7_2
    assert qemu.qemu_features("/nonexistent/qemu") == qemu.QemuFeatures(found=False)


def test_process_problems_name_a_missing_drop_and_filter(tmp_path: Path) -> None:
    jail = qemu.confinement(QEMU_7_2)
    status = tmp_path / "42" / "status"
    status.parent.mkdir()
    status.write_text(f"Name:\tqemu\nUid:\t0\t{jail.uid}\t0\t0\nSeccomp:\t0\n")
    process = qemu.read_process(42, proc=tmp_path)
    assert process.uids == (0, jail.uid, 0, 0) and process.seccomp == 0
    problems = process.problems(jail)
    assert "did not drop root" in problems[0] and "-sandbox is not in force" in problems[1]
    status.write_text(f"Uid:\t{jail.uid}\t{jail.uid}\t{jail.uid}\t{jail.uid}\nSeccomp:\t2\n")
    assert qemu.read_process(42, proc=tmp_path).problems(jail) == []
    assert "uid" in str(qemu.read_process(42, proc=tmp_path))


# -- --check: small, and on an accelerator that works -------------------------------------------


@pytest.mark.parametrize(
    ("kvm", "accel", "note"),
    [((True, ""), "kvm", None), ((False, "no /dev/kvm"), "tcg", "KVM does not work here")],
)
def test_check_plan_is_small_and_on_an_accelerator_that_works(
    lab: SimulatedKernel,
    monkeypatch: pytest.MonkeyPatch,
    kvm: tuple[bool, str],
    accel: str,
    note: str | None,
) -> None:
    monkeypatch.setattr(host_accel, "kvm_usable", lambda qemu_binary: kvm)
    plan = qemu.build(["00:10.0"], check=True, features=QEMU_7_2, sysfs=lab)
    assert plan.memory == 64 << 20 and plan.hugepages is None
    assert plan.argv[plan.argv.index("-m") + 1] == "64M"
    assert [v for f, v in itertools.pairwise(plan.argv) if f == "-accel"] == [accel]
    assert plan.accel == accel
    assert not any("prealloc" in a for a in plan.argv)
    assert (note is None) == all("KVM" not in n for n in plan.notes)
    assert qemu.build(["00:10.0"], features=QEMU_7_2, sysfs=lab).memory == 4 << 30
    explicit = qemu.build(["00:10.0"], check=True, accel="kvm", features=QEMU_7_2, sysfs=lab)
    assert explicit.accel == "kvm"


def test_check_json_says_which_accelerator_and_why(
    lab: SimulatedKernel, fake_qemu: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(host_accel, "kvm_usable", lambda qemu_binary: (False, "no /dev/kvm"))
    plan = qemu.build(["00:11.0"], check=True, qemu=str(fake_qemu), sysfs=lab)
    answer = tmp_path / "answer.json"
    answer.write_text(json.dumps(query_pci_answer(plan)))
    monkeypatch.setenv("FAKE_QEMU_ANSWER", str(answer))
    report = qemu.run(plan, check=True, timeout=30, sysfs=lab, journal_dir=tmp_path / "state")
    assert report.ok, str(report)
    data = report.to_json()
    assert data["accel"] == "tcg"
    assert any("KVM does not work here (no /dev/kvm)" in n for n in data["notes"])
    assert "note: KVM does not work here" in str(report)


# -- run() with the confinement, against the fake QEMU ------------------------------------------


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A folder of its own right under /tmp: a socket path has 107 bytes at most."""
    where = Path(tempfile.mkdtemp(prefix="pv-", dir="/tmp"))
    yield where
    shutil.rmtree(where)


def test_qmp_socket_in_a_tmpdir_with_commas(
    lab: SimulatedKernel,
    fake_qemu: Path,
    tmp_path: Path,
    short_tmp: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tmpdir = short_tmp / "a=b,server=off,path=x"
    tmpdir.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    monkeypatch.setattr(tempfile, "tempdir", None)  # read TMPDIR again
    plan = qemu.build(["00:11.0"], memory="128M", qemu=str(fake_qemu), sysfs=lab)
    answer = tmp_path / "answer.json"
    answer.write_text(json.dumps(query_pci_answer(plan)))
    monkeypatch.setenv("FAKE_QEMU_ANSWER", str(answer))
    report = qemu.run(plan, check=True, timeout=30, sysfs=lab, journal_dir=tmp_path / "state")
    assert report.ok, str(report)
    assert list(tmpdir.iterdir()) == []


def test_a_refused_tmpdir_changes_nothing(
    lab: SimulatedKernel, fake_qemu: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tmpdir = tmp_path / "t\nx"
    tmpdir.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    monkeypatch.setattr(tempfile, "tempdir", None)
    plan = qemu.build(["00:11.0"], memory="128M", qemu=str(fake_qemu), sysfs=lab)
    with pytest.raises(ValueError, match=r"QMP socket path .*control character"):
        qemu.run(plan, check=True, timeout=30, sysfs=lab, journal_dir=tmp_path / "state")
    assert lab.writes == []
    assert list(tmpdir.iterdir()) == []


@pytest.mark.needs_root("the fake QEMU changes user")
@pytest.mark.parametrize("keeps_root", [False, True])
def test_run_reports_the_user_qemu_runs_as_and_fails_if_it_kept_root(
    lab: SimulatedKernel,
    fake_qemu: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    keeps_root: bool,
) -> None:
    monkeypatch.setenv("FAKE_QEMU_RUNAS", "1")
    if keeps_root:
        monkeypatch.setenv("FAKE_QEMU_KEEP_ROOT", "1")
    plan = qemu.build(["00:11.0"], memory="128M", qemu=str(fake_qemu), sysfs=lab)
    assert plan.confinement.user == "nobody"
    answer = tmp_path / "answer.json"
    answer.write_text(json.dumps(query_pci_answer(plan)))
    monkeypatch.setenv("FAKE_QEMU_ANSWER", str(answer))
    report = qemu.run(plan, check=True, timeout=30, sysfs=lab, journal_dir=tmp_path / "state")
    assert report.process is not None
    assert lab.driver("00:11.0") == "nvme"
    if keeps_root:
        assert not report.ok
        assert report.error is not None and "did not drop root" in report.error
    else:
        assert report.ok, str(report)
        assert set(report.process.uids) == {pwd.getpwnam("nobody").pw_uid}
        assert "runs as uid" in str(report) and "(nobody)" in str(report)


def test_qemu_killed_by_its_sandbox_says_so(
    lab: SimulatedKernel, fake_qemu: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_qemu.write_text("#!/bin/sh\nkill -SYS $$\n")
    plan = qemu.build(
        ["00:11.0"], memory="128M", qemu=str(fake_qemu), features=BARE_QEMU, sysfs=lab
    )
    report = qemu.run(plan, check=True, timeout=30, sysfs=lab, journal_dir=tmp_path / "state")
    assert report.qemu_exit == -signal.SIGSYS
    assert report.error is not None and "killed by its seccomp filter" in report.error
    assert "--no-sandbox" in report.error
    assert lab.driver("00:11.0") == "nvme"


@pytest.mark.parametrize(
    ("jail", "status", "says"),
    [
        (qemu.confinement(QEMU_7_2), "PASS", "a seccomp filter; runs as nobody (uid "),
        (qemu.confinement(QEMU_7_2, euid=1000), "PASS", "runs as uid 1000, not root"),
        (qemu.confinement(QEMU_7_2, run_as="root"), "WARN", "a seccomp filter; runs as root"),
        (qemu.confinement(QEMU_7_2, sandbox=False), "WARN", "no seccomp filter; runs as nobody"),
        (qemu.confinement(BARE_QEMU), "WARN", "no seccomp filter; runs as root"),
    ],
)
def test_preflight_says_how_qemu_is_confined(
    lab: SimulatedKernel, jail: qemu.Confinement, status: str, says: str
) -> None:
    plan = qemu.build(["00:10.0"], features=QEMU_7_2, sysfs=lab)
    plan = dataclasses.replace(plan, confinement=jail)
    (found,) = [c for c in qemu.preflight(plan, lab) if c.name == "QEMU confinement"]
    assert found.status.value == status and says in found.message
    assert (found.hint == "") == (status == "PASS")


def test_run_lets_the_guest_run_until_qemu_exits_then_gives_back(
    lab: SimulatedKernel, fake_qemu: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --check the CPUs run on (QMP cont) until QEMU exits (the fake one does
    at cont); then, as after a check, the devices go back and nothing is left in TMPDIR."""
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", None)
    plan = qemu.build(["00:11.0"], memory="128M", qemu=str(fake_qemu), sysfs=lab)
    answer = tmp_path / "answer.json"
    answer.write_text(json.dumps(query_pci_answer(plan)))
    monkeypatch.setenv("FAKE_QEMU_ANSWER", str(answer))
    report = qemu.run(plan, timeout=30, sysfs=lab, journal_dir=tmp_path / "state")
    assert report.ok, str(report)
    assert report.qemu_exit == 0 and report.started
    argv = json.loads((tmp_path / "argv.json").read_text())
    assert "-S" in argv and "-nodefaults" not in argv
    assert lab.driver("00:11.0") == "nvme"
    assert [r.address for r in report.restored] == ["0000:00:11.0"]
    assert journal.read_journal(tmp_path / "state") == {}
    assert list((tmp_path / "tmp").iterdir()) == []
