"""Messages that must not mislead (issue 19): each CLI answer says what is really the case
and what to type next, checked against synthetic hosts."""

from __future__ import annotations

import functools
import importlib
import json
import os
import pwd
import re
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar

import pytest
import typer.main
from typer.testing import CliRunner, Result

from pyvfio.cli import app
from pyvfio.errors import PyvfioError, UnsupportedError
from pyvfio.host import bind, doctor, snapshot
from pyvfio.host.doctor import CheckResult, Status
from pyvfio.host.journal import STATE_DIR_ENV
from pyvfio.host.sysfs import LIVE
from pyvfio.interrupt import Interrupt
from pyvfio.testing import SimulatedKernel, q35_lab
from pyvfio.vm import qemu

runner = CliRunner()
#: test_vm_qemu, for its fake QEMU (a sibling test module: imported by name, as pytest's
#: rootdir-relative sys.path finds it; mypy sees no package to resolve it in).
vm_tests = importlib.import_module("test_vm_qemu")

#: /proc/self/limits of a user with the common 8 MiB default.
LIMITS_8M = "Max locked memory         8388608              8388608              bytes\n"


def by_name(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {r.name: r for r in results}


@pytest.fixture
def q35(tmp_path: Path) -> SimulatedKernel:
    return q35_lab(tmp_path / "q35")


# -- ls: a filter that matches nothing is not an IOMMU that is off ---------------------------


@pytest.mark.parametrize(
    "flags",
    [
        ["--group", "999"],
        ["--class", "gpu"],
        ["--vendor", "abcd"],
        ["--group", "2", "--class", "net"],
    ],
)
def test_ls_with_a_filter_that_matches_nothing_names_the_filter(
    q35: SimulatedKernel, flags: list[str]
) -> None:
    done = runner.invoke(app, ["ls", *flags, "--root", str(q35.root)])
    assert done.exit_code == 0, done.output
    assert "IOMMU is off" not in done.stdout
    assert f"no group matches {' '.join(flags)}" in done.stdout
    as_json = runner.invoke(app, ["ls", *flags, "--json", "--root", str(q35.root)])
    assert json.loads(as_json.stdout)["groups"] == []


def test_ls_on_a_host_without_groups_still_says_the_iommu_is_off(tmp_path: Path) -> None:
    (tmp_path / "sys/bus/pci/devices").mkdir(parents=True)
    for flags in ([], ["--group", "3"]):
        done = runner.invoke(app, ["ls", *flags, "--root", str(tmp_path)])
        assert "none: the IOMMU is off (pyvfio doctor says why)" in done.stdout, done.output


# -- doctor: a device on its host driver is not bound yet; memlock lines for the real user ----


def test_doctor_on_a_device_alone_in_its_group_says_bind_it(q35: SimulatedKernel) -> None:
    check = by_name(doctor.device_checks("01:00.0", q35))["0000:01:00.0 group"]
    assert check.status is Status.FAIL
    assert "not viable" not in check.message and "--group" not in check.hint
    assert (
        check.message
        == "0000:01:00.0 is not bound to vfio-pci yet: it is on e1000e (alone in group 5)"
    )
    assert check.hint == "bind it: pyvfio bind 0000:01:00.0"
    done = runner.invoke(app, ["doctor", "01:00.0", "--root", str(q35.root)])
    assert "pyvfio bind 0000:01:00.0" in done.stdout and "--group" not in done.stdout


def test_doctor_still_says_bind_the_group_when_another_member_is_in_the_way(
    q35: SimulatedKernel,
) -> None:
    check = by_name(doctor.device_checks("00:1f.2", q35))["0000:00:1f.2 group"]
    assert "not viable" in check.message and "0000:00:1f.0 on lpc_ich" in check.message
    assert check.hint == "bind the whole group: pyvfio bind --group 0000:00:1f.2"


def test_doctor_memlock_hint_names_the_user_in_kib(
    q35: SimulatedKernel, monkeypatch: pytest.MonkeyPatch
) -> None:
    q35.host.write(snapshot.META, json.dumps({"euid": 1000}))
    q35.host.write("proc/self/limits", LIMITS_8M)
    monkeypatch.setattr(doctor, "limits_user", lambda sysfs: "alice")
    check = doctor.check_memlock(q35, 16 << 30)
    assert check.status is Status.FAIL and "@USER" not in check.hint
    # 16 GiB is 16777216 KiB: limits.conf counts memlock in KiB, LimitMEMLOCK= in bytes
    assert "'alice soft memlock 16777216' and 'alice hard memlock 16777216' (KiB)" in check.hint
    assert f"LimitMEMLOCK={16 << 30}" in check.hint


def test_doctor_memlock_hint_on_a_snapshot_says_whose_name_to_write(q35: SimulatedKernel) -> None:
    q35.host.write(snapshot.META, json.dumps({"euid": 1000}))
    q35.host.write("proc/self/limits", LIMITS_8M)
    check = doctor.check_memlock(q35, 64 << 20)
    assert "'NAME soft memlock 65536'" in check.hint and "the name of uid 1000" in check.hint


def test_the_limits_user_is_the_one_behind_sudo_else_the_real_uid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SUDO_USER", "alice")
    assert doctor.limits_user(LIVE) == "alice"
    monkeypatch.delenv("SUDO_USER")
    monkeypatch.setattr(os, "getuid", lambda: pwd.getpwnam("nobody").pw_uid)
    assert doctor.limits_user(LIVE) == "nobody"


# -- nvme read -o: the output is opened before the device is touched -------------------------


class FakeController:
    """Controller.open's stand-in: records that the device was touched, reads zeros."""

    opened: ClassVar[list[str]] = []

    @classmethod
    def open(cls, address: str, **_: object) -> FakeController:
        cls.opened.append(address)
        return cls()

    def __enter__(self) -> FakeController:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def read(self, lba: int, count: int, *, nsid: int = 1) -> bytes:
        if lba == 666:
            raise PyvfioError("the controller failed the read")
        return bytes(512 * count)


@pytest.fixture
def fake_nvme(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    from pyvfio.drivers import nvme

    FakeController.opened = []
    monkeypatch.setattr(nvme, "Controller", FakeController)
    return FakeController.opened


def nvme_read(output: str, lba: int = 0) -> Result:
    return runner.invoke(
        app, ["nvme", "read", "0000:00:11.0", "--lba", str(lba), "--count", "2", "-o", output]
    )


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("/nonexistent/x.bin", "cannot write /nonexistent/x.bin: No such file or directory"),
        ("{tmp}", "is a folder: name a file to write"),
    ],
)
def test_nvme_read_to_an_unwritable_output_is_one_line_before_the_device(
    fake_nvme: list[str], tmp_path: Path, where: str, message: str
) -> None:
    done = nvme_read(where.format(tmp=tmp_path))
    assert done.exit_code == 2, done.output
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert message in done.stderr and "Traceback" not in done.output
    assert fake_nvme == []  # the device was never opened


def test_nvme_read_writes_the_blocks_and_a_failed_read_keeps_the_old_file(
    fake_nvme: list[str], tmp_path: Path
) -> None:
    out = tmp_path / "x.bin"
    assert nvme_read(str(out)).exit_code == 0 and out.read_bytes() == bytes(1024)
    out.write_bytes(b"before")
    assert nvme_read(str(out), lba=666).exit_code == 1
    assert out.read_bytes() == b"before" and sorted(tmp_path.iterdir()) == [out]
    assert nvme_read(os.devnull).exit_code == 0  # a device node is written in place


# -- irq.unmask(): only INTx is ever masked -------------------------------------------------


class IrqOwner:
    bdf = "0000:00:10.0"

    def __init__(self) -> None:
        self.unmasked: list[str] = []

    def _unmask_irq(self, irq: Interrupt) -> None:
        self.unmasked.append(irq.kind)


@pytest.mark.parametrize("kind", ["msi", "msix", "err", "req"])
def test_unmask_of_anything_but_intx_says_only_intx_before_the_kernel(kind: str) -> None:
    owner = IrqOwner()
    with Interrupt(owner, kind, 0) as irq, pytest.raises(UnsupportedError) as caught:
        irq.unmask()
    assert "only INTx can be unmasked (vfio-pci masks an INTx line each time it fires); " in str(
        caught.value
    )
    assert f"it never masks {kind} vectors" in str(caught.value)
    assert "does not support" not in str(caught.value)
    assert owner.unmasked == []  # no ioctl was asked for
    with Interrupt(owner, "intx", 0) as intx:
        intx.unmask()
    assert owner.unmasked == ["intx"]


# -- vm qemu: a run stopped by Ctrl-C does not answer "yes" --------------------------------


@pytest.fixture
def fake_qemu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """test_vm_qemu's fake QEMU (QMP over its socket, query-pci from $FAKE_QEMU_ANSWER)."""
    script = tmp_path / "fake_qemu.py"
    script.write_text(vm_tests.FAKE_QEMU)
    wrapper = tmp_path / "qemu-system-x86_64"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} {script} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("FAKE_QEMU_ARGV", str(tmp_path / "argv.json"))
    return wrapper


def test_a_run_stopped_by_ctrl_c_says_so_not_yes(
    q35: SimulatedKernel, fake_qemu: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """QEMU exits 0 on SIGINT, as on a clean shutdown, and the run's report said "yes:
    passthrough works" as a --check does; it says how the run ended instead."""
    q35.host.write("sys/devices/virtual/iommu/dmar0/intel-iommu/ecap", "f020de\n")
    q35.host.link("sys/class/iommu/dmar0", "sys/devices/virtual/iommu/dmar0")  # a vIOMMU
    plan = qemu.build(["00:11.0"], memory="128M", qemu=str(fake_qemu), sysfs=q35)
    answer = tmp_path / "answer.json"
    answer.write_text(json.dumps(vm_tests.query_pci_answer(plan)))
    monkeypatch.setenv("FAKE_QEMU_ANSWER", str(answer))
    monkeypatch.setenv("FAKE_QEMU_CTRL_C", "1")
    report = qemu.run(plan, timeout=30, sysfs=q35, journal_dir=tmp_path / "state")
    assert report.interrupted and report.qemu_exit == 0
    text = str(report)
    assert "yes: passthrough works" not in text
    assert text.endswith("QEMU had the devices (confirmed over QMP) and exited with status 0")
    assert "stopped by Ctrl-C after" in text and report.to_json()["interrupted"] is True
    assert q35.driver("00:11.0") == "nvme"  # given back all the same
    assert [r.address for r in report.restored] == ["0000:00:11.0"]


def test_bind_of_a_device_already_on_vfio_pci_says_nothing_to_do_once(
    q35: SimulatedKernel, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(STATE_DIR_ENV, str(tmp_path / "state"))
    q35.host.bind("0000:00:10.0", "vfio-pci")
    monkeypatch.setattr(bind, "plan_bind", functools.partial(bind.plan_bind, sysfs=q35))
    done = runner.invoke(app, ["bind", "00:10.0"])
    assert done.exit_code == 0, done.output
    assert done.stdout == "0000:00:10.0 (vfio-pci): already on vfio-pci: nothing to do\n"


def test_revoke_help_says_whose_grant_it_takes_back() -> None:
    text = runner.invoke(app, ["revoke", "--help"], terminal_width=200).stdout
    assert "to give it to" not in text and "whose grant to take back" in text


# -- help the click way: metavars, an example per command, --version, completion -------------


def command_paths() -> list[list[str]]:
    """Every command and group of the CLI, as the words that name it."""

    def walk(command: Any, path: list[str]) -> Iterator[list[str]]:
        yield path
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            yield from walk(sub, [*path, name])

    return list(walk(typer.main.get_command(app), []))


def test_the_walk_finds_every_command() -> None:
    paths = {" ".join(p) for p in command_paths()}
    assert {"", "ls", "vm qemu", "lab kernel build", "nvme read", "revoke"} <= paths
    assert len(paths) >= 28


@pytest.mark.parametrize("path", command_paths(), ids=lambda p: " ".join(p) or "pyvfio")
def test_help_has_no_type_tags_no_brace_metavars_and_an_example(path: list[str]) -> None:
    done = runner.invoke(app, [*path, "--help"], terminal_width=120)
    assert done.exit_code == 0, done.output
    text = done.stdout
    assert not re.search(r"<(bool|str|int|float|path|list)\b[^>]*>", text), text
    assert not re.search(r"\{[A-Za-z_]+\}", text), text
    assert re.search(r"^ *Example: pyvfio ", text, re.MULTILINE), text


def test_version_is_the_package_version() -> None:
    done = runner.invoke(app, ["--version"])
    assert done.exit_code == 0 and done.stdout == f"pyvfio {metadata.version('pyvfio')}\n"


def test_shell_completion_is_offered() -> None:
    text = runner.invoke(app, ["--help"], terminal_width=120).stdout
    assert "--install-completion" in text and "--show-completion" in text
    # (--show-completion finds the shell from the process tree, which a test does not
    # control.) What the bash function it prints asks: the words so far, the one to complete.
    asked = {"_PYVFIO_COMPLETE": "complete_bash", "COMP_WORDS": "pyvfio ls --cl", "COMP_CWORD": "2"}
    done = runner.invoke(app, [], prog_name="pyvfio", env=asked)
    assert done.exit_code == 0 and done.stdout.split() == ["--class"], done.output


def test_vm_qemu_without_devices_says_what_to_pass() -> None:
    done = runner.invoke(app, ["vm", "qemu"])
    assert done.exit_code == 2
    assert done.stderr.count("\n") == 1 and "Missing argument" not in done.stderr
    assert "name the devices to pass through" in done.stderr, done.stderr


# docs/host-tools.md's grant samples are checked with the docs' other samples, in
# tests/unit/test_docs_examples.py.


# -- persist --root: a copy of /etc, a snapshot beside it -----------------------------------


def etc_copy(tree: Path) -> None:
    """A Debian /etc as ``cp -a /etc`` copies it: os-release the usual relative link."""
    (tree / "etc/default").mkdir(parents=True)
    (tree / "etc/default/grub").write_text('GRUB_CMDLINE_LINUX_DEFAULT="quiet"\n')
    (tree / "etc/os-release").symlink_to("../usr/lib/os-release")


def test_persist_on_a_copy_of_etc_names_the_dangling_os_release_link(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    q35_lab(tree)
    etc_copy(tree)
    done = runner.invoke(app, ["persist", "0000:01:00.0", "--root", str(tree)])
    assert done.exit_code == 2 and done.stderr.count("\n") == 1, done.output
    assert "not no /etc/os-release" not in done.stderr
    assert f"{tree}/etc/os-release links to ../usr/lib/os-release, which {tree} does not hold" in (
        done.stderr
    )
    assert "cp --remove-destination -L /etc/os-release" in done.stderr


def test_persist_on_a_tree_without_sys_says_what_the_tree_lacks(tmp_path: Path) -> None:
    tree = tmp_path / "etconly"
    etc_copy(tree)
    (tree / "usr/lib").mkdir(parents=True)
    (tree / "usr/lib/os-release").write_text("ID=debian\n")
    done = runner.invoke(app, ["persist", "0000:01:00.0", "--root", str(tree)])
    assert done.exit_code == 2 and done.stderr.count("\n") == 1, done.output
    assert "on this host" not in done.stderr
    assert f"{tree} has no sys/bus/pci/devices/ to read 0000:01:00.0 from" in done.stderr
    assert "pyvfio snapshot" in done.stderr


def test_the_persist_recipe_of_the_docs_works(tmp_path: Path) -> None:
    """docs/vm.md: a snapshot, unpacked, with a copy of /etc whose os-release is copied
    through its link (``cp -L``)."""
    recipe = (Path(__file__).parents[2] / "docs" / "vm.md").read_text()
    assert "cp --remove-destination -L /etc/os-release tree/etc/os-release" in recipe
    machine = q35_lab(tmp_path / "machine")
    snapshot.record(tmp_path / "host.tar.gz", machine)  # pyvfio snapshot host.tar.gz
    tree = tmp_path / "tree"
    tree.mkdir()
    subprocess.run(["tar", "-xzf", str(tmp_path / "host.tar.gz"), "-C", str(tree)], check=True)
    etc_copy(tree)  # cp -a /etc tree/
    (tree / "etc/os-release").unlink()  # cp --remove-destination -L /etc/os-release ...
    (tree / "etc/os-release").write_text("ID=debian\n")
    done = runner.invoke(app, ["persist", "0000:01:00.0", "--root", str(tree)])
    assert done.exit_code == 0, done.output
    assert 'KERNEL=="0000:01:00.0", ATTR{driver_override}="vfio-pci"' in done.stdout
    assert "softdep e1000e pre: vfio-pci" in done.stdout
