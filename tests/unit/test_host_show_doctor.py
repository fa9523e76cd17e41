"""show, doctor and snapshots on hand-made hosts: what QEMU cannot build."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pyvfio.cli import app
from pyvfio.host import bind, details, doctor, kcmdline, snapshot, usage
from pyvfio.host.doctor import Status
from pyvfio.host.inventory import devices as inventory_devices
from pyvfio.host.inventory import iommu_groups
from pyvfio.host.sysfs import Sysfs
from pyvfio.testing import SimulatedKernel, amd_desktop, intel_server, q35_lab, virtio_guest

runner = CliRunner()


@pytest.fixture
def intel(tmp_path: Path) -> SimulatedKernel:
    return intel_server(tmp_path / "intel")


@pytest.fixture
def amd(tmp_path: Path) -> SimulatedKernel:
    return amd_desktop(tmp_path / "amd")


def by_name(results: list[doctor.CheckResult]) -> dict[str, doctor.CheckResult]:
    return {r.name: r for r in results}


# -- show ------------------------------------------------------------------------------------


def test_acs_less_switch_path_and_shared_group(intel: SimulatedKernel) -> None:
    info = details.describe("03:00.0", intel)
    assert [(h.address, h.port_type, h.acs, h.isolates) for h in info.acs_path] == [
        ("0000:02:08.0", "downstream port", False, False),
        ("0000:01:00.0", "upstream port", False, False),
        ("0000:00:01.0", "root port", True, True),
    ]
    members = {m.address for m in info.group_members}
    assert members == {"0000:02:08.0", "0000:02:10.0", "0000:03:00.0", "0000:04:00.0"}
    assert "not viable" in info.group_verdict


def test_group_bind_behind_an_acs_less_switch_takes_both_endpoints_not_the_ports(
    intel: SimulatedKernel,
) -> None:
    plan = bind.plan_bind(["03:00.0"], group=True, sysfs=intel)
    assert sorted(a.address for a in plan.changes) == ["0000:03:00.0", "0000:04:00.0"]
    assert all("bridge" in a.reason for a in plan.actions if a.address.startswith("0000:02"))


def test_sriov_pf_lists_its_vfs_and_a_vf_names_its_pf(intel: SimulatedKernel) -> None:
    pf = details.describe("00:02.0", intel)
    assert (pf.sriov_total_vfs, pf.sriov_num_vfs) == (7, 2)
    assert pf.virtual_functions == ("0000:00:02.1", "0000:00:02.2")
    assert "Single Root I/O Virtualization" in pf.extended_capabilities
    vf = details.describe("00:02.1", intel)
    assert vf.physical_function == "0000:00:02.0"
    assert vf.interrupt_pin is None and vf.msix_vectors == 3
    assert vf.reset.flr  # parsed although the VF's ID registers read all ones


def test_device_without_reset_method(intel: SimulatedKernel) -> None:
    info = details.describe("00:05.0", intel)
    assert info.reset.kernel == ()
    assert not (info.reset.flr or info.reset.pm or info.reset.bus)  # NoSoftRst, root bus
    checks = by_name(doctor.device_checks("00:05.0", intel))
    assert checks["0000:00:05.0 reset"].status is Status.WARN


def test_bars_rom_interrupts_and_bus_peers_of_a_gpu(amd: SimulatedKernel) -> None:
    info = details.describe("0a:00.0", amd)
    assert [(r.name, r.size) for r in info.resources] == [
        ("BAR 0", 16 << 20),
        ("BAR 1", 256 << 20),
        ("ROM", 512 << 10),
    ]
    assert (info.interrupt_pin, info.msi_vectors, info.msix_vectors) == ("A", 1, None)
    assert info.reset.bus_peers == ("0000:0a:00.1",) and not info.reset.bus
    text = str(info)
    assert "a bus reset also resets 0000:0a:00.1" in text and "GP104" in text
    json.dumps(info.to_json())


def test_gpu_holding_the_console_is_refused_with_its_audio(amd: SimulatedKernel) -> None:
    plan = bind.plan_bind(["0a:00.0"], group=True, sysfs=amd)
    assert sorted(a.address for a in plan.changes) == ["0000:0a:00.0", "0000:0a:00.1"]
    with pytest.raises(bind.DeviceInUseError, match="console framebuffer fb0"):
        bind.bind_devices(plan, sysfs=amd)
    assert amd.writes == []


# -- doctor -----------------------------------------------------------------------------------


def test_doctor_passes_iommu_and_interrupt_remapping_on_intel(intel: SimulatedKernel) -> None:
    checks = by_name(doctor.run(sysfs=intel))
    for name in ("ACPI IOMMU table", "IOMMU active", "kernel command line", "interrupt remapping"):
        assert checks[name].status is Status.PASS, checks[name]
    assert "ECAP.IR set on dmar0" in checks["interrupt remapping"].message


def test_doctor_on_amd_reads_ivrs_and_the_log_and_warns_of_the_boot_framebuffer(
    amd: SimulatedKernel,
) -> None:
    checks = by_name(doctor.run(["0a:00.0"], sysfs=amd))
    assert checks["IOMMU active"].status is Status.PASS
    assert checks["interrupt remapping"].status is Status.PASS
    assert checks["kernel command line"].status is Status.PASS
    assert checks["boot framebuffer"].status is Status.WARN
    assert "video=efifb:off" in checks["boot framebuffer"].hint
    assert checks["0000:0a:00.0 in use"].status is Status.FAIL
    assert (
        checks["0000:0a:00.0 group"].hint
        == "bind the whole group: pyvfio bind --group 0000:0a:00.0"
    )


def test_doctor_without_the_iommu_on_the_command_line(intel: SimulatedKernel) -> None:
    intel.host.write("proc/cmdline", "root=/dev/sda1\n")
    for unit in ("sys/class/iommu/dmar0",):
        intel.path(unit).unlink()
    checks = by_name(doctor.run(sysfs=intel))
    assert checks["ACPI IOMMU table"].status is Status.PASS
    for name in ("IOMMU active", "kernel command line", "interrupt remapping"):
        assert checks[name].status is Status.FAIL
        assert "add intel_iommu=on iommu=pt" in checks[name].hint


def test_doctor_without_an_iommu_in_the_firmware(tmp_path: Path) -> None:
    kernel = q35_lab(tmp_path)
    kernel.path("sys/firmware/acpi/tables/DMAR").unlink()
    checks = by_name(doctor.run(sysfs=kernel))
    for name in ("ACPI IOMMU table", "IOMMU active", "interrupt remapping"):
        assert checks[name].status is Status.FAIL
        assert "virtual IOMMU" in checks[name].hint


def test_iommu_without_interrupt_remapping_fails(intel: SimulatedKernel) -> None:
    intel.host.write("sys/devices/virtual/iommu/dmar0/intel-iommu/ecap", "f020d6\n")
    check = doctor.check_interrupt_remapping(intel)
    assert check.status is Status.FAIL and "ECAP.IR is 0" in check.message
    assert "allow_unsafe_interrupts" in check.hint


def test_memlock_against_the_planned_use_for_a_user(intel: SimulatedKernel) -> None:
    intel.host.write(snapshot.META, json.dumps({"euid": 1000}))
    assert doctor.check_memlock(intel, 4 << 20).status is Status.PASS
    check = doctor.check_memlock(intel, 16 << 30)
    assert check.status is Status.FAIL and "8 MiB" in check.message and "limits.conf" in check.hint


# -- snapshots and the CLI ------------------------------------------------------------------------


def cli_json(*args: str) -> object:
    done = runner.invoke(app, list(args))
    assert done.exit_code in (0, 1), done.output
    return json.loads(done.stdout)


@pytest.mark.parametrize("build", [intel_server, amd_desktop, q35_lab, virtio_guest])
def test_a_snapshot_replays_the_same_answers(
    tmp_path: Path, build: Callable[[Path], SimulatedKernel]
) -> None:
    folder = tmp_path / "host"
    build(folder)
    tarball = tmp_path / "snap.tar.gz"
    snapshot.record(tarball, Sysfs(folder))
    addrs = Sysfs(folder).pci_devices()
    for cmd in (["ls", "--json"], ["doctor", "--json", *addrs]):
        assert cli_json(*cmd, "--root", str(folder)) == cli_json(*cmd, "--root", str(tarball))
    for addr in addrs:
        direct = cli_json("show", addr, "--json", "--root", str(folder))
        assert direct == cli_json("show", addr, "--json", "--root", str(tarball))


def test_snapshot_keeps_capabilities_and_drops_the_rest_of_config_space() -> None:
    from pyvfio.testing import config_bytes, pcie_cap, pm_cap

    data = bytearray(config_bytes(0x8086, 0x1234, 0x020000, capabilities=[pm_cap(), pcie_cap(0)]))
    data[0xF0:0xF4] = b"\xde\xad\xbe\xef"  # a device-specific register, not a capability
    data[0x100:0x10C] = bytes([0x03, 0, 0x01, 0]) + b"SERIALNO"  # DSN, the last ext cap
    kept = snapshot.scrub_config(bytes(data))
    assert kept[:64] == data[:64] and kept[0x40:0x48] == data[0x40:0x48]
    assert kept[0xF0:0xF4] == bytes(4)
    assert kept[0x100:0x104] == data[0x100:0x104] and kept[0x104:0x10C] == bytes(8)


def test_recorded_snapshots_in_tests_data_replay() -> None:
    folder = Path(__file__).parent.parent / "data" / "snapshots"
    tarballs = sorted(folder.glob("*.tar.gz"))
    if not tarballs:
        pytest.skip("no recorded snapshots in tests/data/snapshots")
    for tarball in tarballs:
        data = cli_json("ls", "--json", "--root", str(tarball))
        assert isinstance(data, dict) and data["groups"], tarball
        golden = tarball.with_name(tarball.name.removesuffix(".tar.gz") + ".ls.json")
        if golden.exists():
            assert data == json.loads(golden.read_text()), tarball


@pytest.mark.parametrize(
    "args",
    [
        ["show", "0000:00:1f.9"],
        ["show", "zz:00.0"],
        ["show", ""],
        ["show", "0000:00:09.0"],
        ["doctor", "00:1f.9"],
        ["ls", "--root", "/nonexistent/snap.tar.gz"],
        ["restore"],
        ["unbind", "zz:00.0"],
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str]) -> None:
    q35_lab(tmp_path)
    if args[0] in ("show", "doctor"):
        args = [*args, "--root", str(tmp_path)]
    done = runner.invoke(app, args)
    assert done.exit_code == 2, done.output
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_doctor_exit_1_on_a_fail_and_0_when_all_pass(intel: SimulatedKernel) -> None:
    assert runner.invoke(app, ["doctor", "--root", str(intel.root)]).exit_code == 0
    done = runner.invoke(app, ["doctor", "03:00.0", "--root", str(intel.root)])
    assert done.exit_code == 1 and "FAIL 0000:03:00.0 group" in done.stdout


LAB_SNAPSHOT = Path(__file__).parent.parent / "data" / "snapshots" / "lab-main.tar.gz"


def test_the_snapshot_recorded_in_the_lab_replays_its_topology() -> None:
    """Recorded in the lab's main topology (tests/data/snapshots/README.md says how)."""
    if not LAB_SNAPSHOT.exists():
        pytest.skip(f"{LAB_SNAPSHOT} has not been recorded")
    sysfs = snapshot.open_root(LAB_SNAPSHOT)
    groups = {g.number: g for g in iommu_groups(sysfs)}
    chipset = next(g for g in groups.values() if g.devices[0].address == "0000:00:1f.0")
    assert [(d.address, d.driver) for d in chipset.devices] == [
        ("0000:00:1f.0", "lpc_ich"),
        ("0000:00:1f.2", "ahci"),
        ("0000:00:1f.3", "i801_smbus"),
    ]
    plan = bind.plan_bind(["00:1f.2"], group=True, sysfs=sysfs)
    assert len(plan.changes) == 3
    edus = [d for g in groups.values() for d in g.devices if d.ids == "1234:11e8"]
    alone, switched = edus
    assert len(groups[alone.iommu_group].devices) == 1  # type: ignore[index]
    shared = groups[switched.iommu_group].devices  # type: ignore[index]
    assert len(shared) == 2 and shared[0].is_bridge
    hops = details.describe(switched.address, sysfs).acs_path
    assert [h.port_type for h in hops] == ["downstream port", "upstream port", "root port"]
    assert not hops[0].acs and hops[-1].acs
    checks = by_name(doctor.run(sysfs=sysfs))
    for name in ("ACPI IOMMU table", "IOMMU active", "interrupt remapping"):
        assert checks[name].status is Status.PASS, checks[name]
    nine_p = [d.address for d in inventory_devices(sysfs) if d.driver == "virtio-pci"]
    assert any(usage.device_users(a, sysfs) for a in nine_p)


def test_ls_text_shows_a_half_done_bind_from_the_snapshot_journal(intel: SimulatedKernel) -> None:
    state = intel.path("run/pyvfio")
    state.mkdir(parents=True)
    entry = {"original_driver": "nvme", "original_override": None, "target": "vfio-pci"}
    (state / "journal.json").write_text(
        json.dumps({"version": 1, "devices": {"0000:03:00.0": {**entry, "step": "unbound"}}})
    )
    done = runner.invoke(app, ["ls", "--root", str(intel.root)])
    assert done.exit_code == 0
    assert "0000:03:00.0 half-done: stopped after 'unbound' (was nvme)" in done.stdout
    assert "pyvfio restore --all" in done.stdout
    data = cli_json("ls", "--json", "--root", str(intel.root))
    assert data["journal"][0]["done"] is False  # type: ignore[index]


# The kernel reads every intel_iommu=/amd_iommu=/iommu= word, each a comma list, the last
# on/off winning; the other vendor's option does nothing (kcmdline.review, which persist
# uses too). Before doctor used it, it matched whole words: the first three rows were
# FAIL and the next two passed.
CMDLINES = [
    ("intel", "intel_iommu=off intel_iommu=on", False),
    ("intel", "amd_iommu=off intel_iommu=on", False),
    ("amd", "intel_iommu=off", False),
    ("intel", "intel_iommu=off,sm_on", True),
    ("intel", "iommu=pt,off", True),
    ("intel", "intel_iommu=on intel_iommu=off", True),
    ("amd", "amd_iommu=off", True),
    ("intel", "intel_iommu=on iommu=pt", False),
]


@pytest.mark.parametrize(("host", "cmdline", "off"), CMDLINES)
def test_doctor_reads_the_command_line_as_the_kernel_does(
    request: pytest.FixtureRequest, host: str, cmdline: str, off: bool
) -> None:
    kernel: SimulatedKernel = request.getfixturevalue(host)
    kernel.host.write("proc/cmdline", f"root=/dev/sda1 {cmdline}\n")
    check = by_name(doctor.run(sysfs=kernel))["kernel command line"]
    assert (check.status is Status.FAIL) is off, check
    if off:
        assert "the IOMMU is switched off" in check.message
        assert check.hint.startswith("remove ") and "=off" not in check.hint.split("(add")[1]


def test_a_hygon_cpu_gets_the_amd_options(intel: SimulatedKernel) -> None:
    """Hygon's Dhyana CPUs have AMD-Vi: doctor and persist both say so (kcmdline.is_amd)."""
    cpuinfo = intel.read_attr("proc/cpuinfo") or ""
    intel.host.write("proc/cpuinfo", cpuinfo.replace("GenuineIntel", "HygonGenuine") + "\n")
    assert kcmdline.is_amd(intel)
    assert doctor._iommu_option(intel) == " ".join(kcmdline.iommu_options(True))
