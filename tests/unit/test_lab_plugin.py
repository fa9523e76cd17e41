"""The lab's pytest plugin, with the VM replaced by running the 'guest' pytest here."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pyvfio.errors import LabUnavailableError
from pyvfio.lab import pytest_plugin
from pyvfio.lab.runner import LabResult

LAB_TESTS = """
import pytest
pytestmark = pytest.mark.lab(devices=("edu",))

def test_passes():
    assert 1 + 1 == 2

def test_fails():
    assert 1 + 1 == 3

@pytest.mark.skip(reason="not today")
def test_skipped():
    pass

def test_unit_like_but_in_lab(tmp_path):
    assert tmp_path.exists()
"""

UNIT_TEST = """
def test_unit():
    pass
"""


@pytest.fixture(autouse=True)
def log_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The guest logs these fake boots save go here, not over the real lab's."""
    folder = tmp_path / "lab-logs"
    monkeypatch.setenv("PYVFIO_LAB_LOG_DIR", str(folder))
    return folder


def _fake_run(calls: list[tuple[str, str]]):  # type: ignore[no-untyped-def]
    def run(command, topology, **kwargs):  # type: ignore[no-untyped-def]
        calls.append((topology.name, command))
        done = subprocess.run(
            command, shell=True, cwd=kwargs["cwd"], capture_output=True, text=True, check=False
        )
        return LabResult(done.returncode, done.stdout, "tcg", "fake", 0.1)

    return run


def test_lab_tests_replay_in_the_host_run(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_lab=LAB_TESTS, test_unit=UNIT_TEST)
    calls: list[tuple[str, str]] = []
    monkeypatch.setattr(pytest_plugin, "run", _fake_run(calls))
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(passed=3, failed=1, skipped=1)
    assert len(calls) == 1, "one boot for the topology, not one per test"
    assert calls[0][0] == "edu"
    result.stdout.fnmatch_lines(["*assert (1 + 1) == 3*", "*not today*"])


def test_lab_unavailable_skips_or_fails(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_lab=LAB_TESTS)

    def unavailable(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise LabUnavailableError("qemu-system-x86_64 is missing: install it")

    monkeypatch.setattr(pytest_plugin, "run", unavailable)
    auto = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-rs")
    auto.assert_outcomes(skipped=4)
    auto.stdout.fnmatch_lines(["*lab unavailable: qemu-system-x86_64 is missing*"])
    required = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--lab", "require")
    required.assert_outcomes(failed=4)


def test_the_guest_output_is_kept_in_the_log_dir(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, log_dir: Path
) -> None:
    pytester.makepyfile(test_lab=LAB_TESTS)
    monkeypatch.setattr(pytest_plugin, "run", _fake_run([]))
    pytester.runpytest_inprocess("-p", "no:cacheprovider")
    assert "test_lab.py::test_fails" in (log_dir / "edu.log").read_text()


def test_lab_no_skips_without_booting(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_lab=LAB_TESTS, test_unit=UNIT_TEST)
    calls: list[tuple[str, str]] = []
    monkeypatch.setattr(pytest_plugin, "run", _fake_run(calls))
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--lab", "no")
    result.assert_outcomes(passed=1, skipped=4)
    assert calls == []


def test_no_skips_turns_a_skip_into_a_failed_run(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_s="import pytest\n\n@pytest.mark.skip(reason='needs a GPU')\ndef test_x(): pass\n"
    )
    assert pytester.runpytest_inprocess("-p", "no:cacheprovider").ret == 0
    strict = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--no-skips")
    assert strict.ret == pytest.ExitCode.TESTS_FAILED
    strict.stdout.fnmatch_lines(["*test_s.py::test_x: Skipped: needs a GPU*"])


def test_a_guest_that_dies_mid_run_reruns_the_unfinished_tests_once(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_lab=LAB_TESTS)
    calls: list[tuple[str, str]] = []
    real = _fake_run(calls)

    def flaky(command, topology, **kwargs):  # type: ignore[no-untyped-def]
        if not calls:  # the first boot runs one test, then the guest "dies"
            first = command.split(" test_lab.py::")[0] + " test_lab.py::test_passes 2>&1"
            real(first, topology, **kwargs)
            return LabResult(255, "", "tcg", "fake", 0.1)
        return real(command, topology, **kwargs)

    monkeypatch.setattr(pytest_plugin, "run", flaky)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=1, skipped=1)
    assert len(calls) == 2
    rerun = calls[1][1]
    assert "test_lab.py::test_passes" not in rerun and "test_lab.py::test_fails" in rerun
    result.stdout.fnmatch_lines(["*the guest died*3 test(s) unfinished*"])


def test_a_test_that_kills_the_guest_twice_fails(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_lab=LAB_TESTS)
    calls: list[str] = []

    def dead(command, topology, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(command)
        return LabResult(255, "Kernel panic", "tcg", "fake", 0.1)

    monkeypatch.setattr(pytest_plugin, "run", dead)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=4)
    assert len(calls) == 2


def test_a_panicked_guest_fails_its_tests_with_the_panic_and_the_runners_log(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The runner's one-line failure and its whole log (boot console included) are what
    a test the guest never reported fails with."""
    pytester.makepyfile(test_lab=LAB_TESTS)
    log = tmp_path / "edu.log"
    why = (
        "the guest's kernel panicked while booting (the command had not started): "
        "Kernel panic - not syncing: timer doesn't work through Interrupt-remapped IO-APIC"
    )

    def panicked(command, topology, **kwargs):  # type: ignore[no-untyped-def]
        return LabResult(255, "", "tcg", "fake", 0.1, failure=why, log=log)

    monkeypatch.setattr(pytest_plugin, "run", panicked)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=4)
    result.stdout.fnmatch_lines([f"*{why} (whole output: {log})*"])


SECOND_TOPOLOGY = """
import pytest
pytestmark = pytest.mark.lab(devices=("edu", "nvme"))

def test_other():
    pass
"""


def test_guests_boot_side_by_side_while_the_unit_tests_run(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both topologies' guests are under way at once, and before the unit test runs;
    each test's reports still come back in collection order."""
    pytester.makepyfile(
        test_lab=LAB_TESTS,
        test_lab2=SECOND_TOPOLOGY,
        test_unit="import threading\n\ndef test_unit():\n    pass\n",
    )
    calls: list[tuple[str, str]] = []
    real = _fake_run(calls)
    both_started = threading.Barrier(2, timeout=60)

    cpus: list[int] = []

    def side_by_side(command, topology, **kwargs):  # type: ignore[no-untyped-def]
        both_started.wait()  # breaks (a failed boot) unless the other guest runs too
        cpus.append(kwargs["cpus"])
        return real(command, topology, **kwargs)

    monkeypatch.setattr(pytest_plugin, "run", side_by_side)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-v", "--lab-jobs", "2")
    result.assert_outcomes(passed=4, failed=1, skipped=1)
    assert sorted(name for name, _ in calls) == ["edu", "edu+nvme"]
    # Two guests share the host's CPUs: never more vCPUs than host CPUs in all.
    assert cpus == [max(1, min(2, (os.cpu_count() or 1) // 2))] * 2
    result.stdout.fnmatch_lines(
        ["*test_unit.py::test_unit PASSED*", "*test_lab.py::test_passes PASSED*"]
    )


def test_one_job_boots_one_guest_at_a_time(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_lab=LAB_TESTS, test_lab2=SECOND_TOPOLOGY)
    calls: list[tuple[str, str]] = []
    real = _fake_run(calls)
    running = threading.Semaphore(1)

    def alone(command, topology, **kwargs):  # type: ignore[no-untyped-def]
        assert running.acquire(blocking=False), "two guests at once with --lab-jobs 1"
        assert kwargs["cpus"] == min(2, os.cpu_count() or 1)
        try:
            return real(command, topology, **kwargs)
        finally:
            running.release()

    monkeypatch.setattr(pytest_plugin, "run", alone)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--lab-jobs", "1")
    result.assert_outcomes(passed=3, failed=1, skipped=1)
    assert len(calls) == 2


def test_stopping_the_run_cancels_the_running_guests(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """-x after the first failure: the session ends, and the guest still running is
    told to stop (the cancel event run() kills the VM on) instead of being waited out."""
    pytester.makepyfile(test_lab=LAB_TESTS, test_lab2=SECOND_TOPOLOGY)
    calls: list[tuple[str, str]] = []
    real = _fake_run(calls)
    cancelled: list[bool] = []

    def slow_second(command, topology, **kwargs):  # type: ignore[no-untyped-def]
        if topology.name == "edu+nvme":
            cancelled.append(kwargs["cancel"].wait(60))
            return LabResult(-9, "", "tcg", "fake", 0.1)
        return real(command, topology, **kwargs)

    monkeypatch.setattr(pytest_plugin, "run", slow_second)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-x", "--lab-jobs", "2")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert cancelled == [True]


def test_a_guests_progress_is_printed_even_while_a_unit_test_runs(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    """A line the guest's thread says while a unit test runs must not vanish into that
    test's captured output (fd capture swaps the terminal's fd 1 during a test, so this
    runs pytest as a process of its own, as CI does)."""
    said = tmp_path / "said"
    pytester.makeconftest(
        f"""
import os
import signal
import subprocess
import sys
from pathlib import Path

from pyvfio.lab import pytest_plugin
from pyvfio.lab.runner import LabResult


def chatty(command, topology, **kwargs):
    kwargs["on_output"]("lab: booting edu on fake under TCG")
    Path({str(said)!r}).touch()
    done = subprocess.run(
        command, shell=True, cwd=kwargs["cwd"], capture_output=True, text=True, check=False
    )
    return LabResult(done.returncode, done.stdout, "tcg", "fake", 0.1)


pytest_plugin.run = chatty
"""
    )
    pytester.makepyfile(
        test_lab=LAB_TESTS,
        test_unit=(
            "import time\nfrom pathlib import Path\n\n"
            "def test_unit():\n"
            "    deadline = time.monotonic() + 60\n"
            f"    while not Path({str(said)!r}).exists() and time.monotonic() < deadline:\n"
            "        time.sleep(0.05)\n"
        ),
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, failed=1, skipped=1)
    result.stdout.fnmatch_lines(["lab: booting edu on fake under TCG"])


def test_sigterm_ends_the_run_and_kills_the_guests(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    """The guests live in sessions of their own: a SIGTERM to pytest must still reach
    them (the run ends as on Ctrl-C, and the guests' cancel event is set)."""
    booted, cancelled = tmp_path / "booted", tmp_path / "cancelled"
    pytester.makeconftest(
        f"""
from pathlib import Path

from pyvfio.lab import pytest_plugin
from pyvfio.lab.runner import LabResult


def hanging(command, topology, **kwargs):
    Path({str(booted)!r}).touch()
    if kwargs["cancel"].wait(120):
        Path({str(cancelled)!r}).touch()
    return LabResult(-9, "", "tcg", "fake", 0.1)


pytest_plugin.run = hanging
"""
    )
    pytester.makepyfile(test_lab=LAB_TESTS)
    proc = pytester.popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider"],
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not booted.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert booted.exists()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert cancelled.exists(), "the guest was left running after SIGTERM"
