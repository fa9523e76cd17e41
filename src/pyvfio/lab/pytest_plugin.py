"""pytest support for tests that run on the real kernel inside the lab guest.

Mark a test (or a module, with ``pytestmark``) ``@pytest.mark.lab(devices=("edu",))``.
On the host, the plugin groups the marked tests by topology, boots the lab once per
topology, runs that group's tests in the guest as root with this same pytest, and
replays each test's reports in the host's run, so unit and lab tests are reported
together. In the guest (``--lab-results FILE``) tests run normally and each report is
written to FILE as JSON.

``--lab auto`` (default) skips lab tests, with the reason, where the lab cannot run;
``--lab require`` makes that a failure (CI); ``--lab no`` skips them.

The guests boot in the background from the end of collection, ``--lab-jobs`` at a time
(the topologies with the most tests first), while the unit tests run: under TCG a guest
keeps about one host CPU busy, so a two-CPU host runs two of them, or one and the unit
tests, side by side. Each test's reports are replayed in collection order, waiting for
its topology's guest where it has not finished yet.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import queue
import shlex
import signal
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

from pyvfio.errors import LabError, LabUnavailableError
from pyvfio.lab import guest
from pyvfio.lab.runner import log_dir, precompile, run, scratch_dir
from pyvfio.lab.topology import Manifest, Topology

_TOPOLOGY_ARGS = ("devices", "viommu", "intremap", "iommu_cmdline", "memory", "kernel", "iommu")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pyvfio-lab", "pyvfio lab (tests on the real kernel in a VM)")
    group.addoption(
        "--lab",
        choices=("auto", "require", "no"),
        default="auto",
        help="run lab tests in the VM: auto (skip if the lab cannot run), "
        "require (fail if it cannot), no (skip them)",
    )
    group.addoption(
        "--lab-kernel",
        default=None,
        metavar="KERNEL",
        help="kernel for every lab guest, overriding each test's: stock, iommufd or a bzImage path",
    )
    group.addoption(
        "--lab-timeout",
        type=float,
        default=1500.0,
        metavar="SECONDS",
        help="limit for one topology's whole run in the guest",
    )
    group.addoption(
        "--lab-jobs",
        type=int,
        default=None,
        metavar="N",
        help="guests booted at once (default: 2 on a host with 2 or more CPUs, else 1)",
    )
    group.addoption(
        "--no-skips",
        action="store_true",
        help="fail the run if any test was skipped (CI: nothing it should run may be skipped)",
    )
    group.addoption("--lab-results", default=None, help=argparse.SUPPRESS)


def topology_of(item: pytest.Item) -> Topology | None:
    marker = item.get_closest_marker("lab")
    if marker is None:
        return None
    kwargs = {k: v for k, v in marker.kwargs.items() if k in _TOPOLOGY_ARGS}
    if marker.args:
        kwargs["devices"] = marker.args[0]
    if "devices" in kwargs:
        kwargs["devices"] = tuple(kwargs["devices"])
    return Topology(**kwargs)


@dataclass
class _GuestRun:
    """What one boot of a topology reported."""

    reports: dict[str, list[Any]] = field(default_factory=dict)
    output: str = ""
    error: str | None = None
    unavailable: bool = False
    log: str = ""


def _save_log(topo: Topology, output: str) -> str:
    """Keep the guest's whole output (QEMU's last words included) for a failure report."""
    folder = log_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{topo.name.replace('/', '_')}.log"
    path.write_text(output)
    return str(path)


class SkipGuard:
    """``--no-skips``: a skipped test (unit or lab) fails the whole run, listed by reason."""

    def __init__(self) -> None:
        self.skipped: list[tuple[str, str]] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.skipped:
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else ""
            self.skipped.append((report.nodeid, str(reason)))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.skipped:
            terminalreporter.section("skipped tests (--no-skips makes them failures)")
            for nodeid, reason in self.skipped:
                terminalreporter.write_line(f"{nodeid}: {reason}")

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.skipped and session.exitstatus == 0:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


class LabScheduler:
    """Host side: one guest boot per topology, reports replayed per test."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.mode: str = config.getoption("--lab")
        self.runs: dict[Topology, Future[_GuestRun]] = {}
        self.items: dict[Topology, list[pytest.Item]] = {}
        self.pool: ThreadPoolExecutor | None = None
        self.cpus = 2
        self.cancel = threading.Event()
        # Progress lines from the guests' threads, printed by the main thread between
        # tests: written from a thread, a line would land in the captured output of
        # whatever unit test was running.
        self.pending: queue.SimpleQueue[str] = queue.SimpleQueue()

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        plain = [i for i in items if topology_of(i) is None]
        lab = [i for i in items if topology_of(i) is not None]
        for item in lab:
            topo = topology_of(item)
            assert topo is not None
            self.items.setdefault(topo, []).append(item)
        # Unit tests first, then each topology's tests together (one boot each).
        items[:] = plain + [i for group in self.items.values() for i in group]

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        if self.mode == "no" or not self.items or session.config.option.collectonly:
            return
        jobs = self.config.getoption("--lab-jobs") or (2 if (os.cpu_count() or 1) >= 2 else 1)
        if jobs < 1:
            raise pytest.UsageError("--lab-jobs must be 1 or more")
        # No more virtual CPUs than host CPUs in all: under TCG a guest's vCPU that spins
        # on a lock whose holder's vCPU the host has descheduled burns its time slice,
        # and two 2-vCPU guests on a 2-CPU host ran each topology 2-3 times slower.
        self.cpus = max(1, min(2, (os.cpu_count() or 1) // jobs))
        precompile(self.config.invocation_params.dir)  # once, before guests race to it
        if threading.current_thread() is threading.main_thread() and (
            signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        ):
            # The guests run in sessions of their own, so a plain SIGTERM would leave
            # them running: end the run as Ctrl-C does, which kills them on the way out.
            signal.signal(signal.SIGTERM, _interrupt)
        self.pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="lab")
        # The longest runs first, so that the last guest to finish is a short one.
        for topo in sorted(self.items, key=lambda t: -len(self.items[t])):
            self.runs[topo] = self.pool.submit(self._boot, topo)

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.pool is not None:
            self.cancel.set()  # interrupted or failed early: guests still running are killed
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_protocol(
        self, item: pytest.Item, nextitem: pytest.Item | None
    ) -> bool | None:
        topo = topology_of(item)
        if topo is None:
            return None  # firstresult hook: None lets pytest run it here
        ihook = item.ihook
        ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
        for report in self._reports_for(item, topo):
            ihook.pytest_runtest_logreport(report=report)
        ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
        return True

    def _reports_for(self, item: pytest.Item, topo: Topology) -> list[Any]:
        if self.mode == "no":
            return [_report(item, "skipped", "lab tests disabled (--lab no)")]
        future = self.runs[topo]
        while True:
            self._flush()
            try:
                done = future.result(timeout=1)
                break
            except concurrent.futures.TimeoutError:
                continue
        self._flush()
        if done.unavailable:
            why = f"lab unavailable: {done.error}"
            if self.mode == "require":
                return [_report(item, "failed", f"{why} (--lab require)")]
            return [_report(item, "skipped", why)]
        reports = done.reports.get(item.nodeid)
        if reports:
            return reports
        why = done.error or "the guest did not report this test"
        tail = "\n".join(done.output.splitlines()[-40:])
        return [
            _report(
                item,
                "failed",
                f"{why} (whole output: {done.log})\n--- guest output (tail) ---\n{tail}",
            )
        ]

    def _boot(self, topo: Topology) -> _GuestRun:
        nodeids = [i.nodeid for i in self.items[topo]]
        result = self._boot_once(topo, nodeids)
        unfinished = [n for n in nodeids if not _finished(result.reports.get(n, []))]
        if unfinished and result.error and not result.unavailable:
            # The guest died before these tests finished (seen on a host overloaded
            # with other VMs: vng exits 255, the guest's output just stops). They run
            # once more in a new boot; a test that takes the guest down twice fails.
            self._say(
                f"lab: {topo.name}: the guest died ({result.error}) "
                f"with {len(unfinished)} test(s) unfinished; "
                "booting once more for them"
            )
            again = self._boot_once(topo, unfinished)
            for nodeid in unfinished:
                result.reports[nodeid] = again.reports.get(nodeid, [])
            result.error, result.output, result.log = again.error, again.output, again.log
        return result

    def _say(self, line: str) -> None:
        """Queue a progress line of a guest's (called from its thread)."""
        if line.startswith("lab:"):
            self.pending.put(line)

    def _flush(self) -> None:
        """Print the guests' progress lines so far (main thread only)."""
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        while True:
            try:
                line = self.pending.get_nowait()
            except queue.Empty:
                return
            if reporter is not None:
                reporter.write_line(line)

    def pytest_runtest_logfinish(self, nodeid: str, location: tuple[str, int | None, str]) -> None:
        self._flush()

    def _boot_once(self, topo: Topology, nodeids: list[str]) -> _GuestRun:
        say = self._say
        result = _GuestRun()
        if self.cancel.is_set():
            result.error = "the run was stopped before this guest booted"
            return result
        with scratch_dir() as scratch:
            results = scratch / "results.jsonl"
            argv = [
                sys.executable,
                "-m",
                "pytest",
                "-p",
                "no:cacheprovider",
                "-q",
                "--rootdir",
                str(self.config.rootpath),
                "--lab-results",
                str(results),
                "-o",
                "addopts=-ra",
            ]
            if self.config.inipath:
                argv += ["-c", str(self.config.inipath)]
            started = time.monotonic()
            try:
                lab = run(
                    shlex.join(argv + nodeids) + " 2>&1",
                    topo,
                    kernel=self.config.getoption("--lab-kernel") or topo.kernel,
                    timeout=self.config.getoption("--lab-timeout"),
                    cwd=self.config.invocation_params.dir,
                    on_output=say,
                    scratch=scratch,
                    cancel=self.cancel,
                    cpus=self.cpus,
                )
                result.output = lab.output
                # The runner keeps the whole output (boot console included) itself.
                result.log = str(lab.log) if lab.log else _save_log(topo, lab.output)
                if lab.failure:
                    result.error = lab.failure
                elif lab.returncode not in (0, 1):
                    result.error = f"the guest's pytest exited with {lab.returncode}"
                say(f"lab: {topo.name}: {len(nodeids)} tests, {lab}")
            except LabUnavailableError as err:
                result.unavailable, result.error = True, str(err)
            except LabError as err:
                result.error = str(err)
                say(f"lab: {topo.name} failed after {time.monotonic() - started:.0f} s: {err}")
            if results.exists():
                for line in results.read_text().splitlines():
                    report = self.config.hook.pytest_report_from_serializable(
                        config=self.config, data=json.loads(line)
                    )
                    if isinstance(report.longrepr, list):  # JSON has no tuples
                        report.longrepr = tuple(report.longrepr)
                    result.reports.setdefault(report.nodeid, []).append(report)
        return result


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"stopped by signal {signum}")


def _finished(reports: list[Any]) -> bool:
    """A test whose teardown was reported, or that was skipped or failed in setup."""
    return any(r.when == "teardown" or (r.when == "setup" and not r.passed) for r in reports)


def _report(
    item: pytest.Item, outcome: Literal["passed", "failed", "skipped"], message: str
) -> pytest.TestReport:
    longrepr: Any = message
    if outcome == "skipped":
        path, lineno, _ = item.location
        longrepr = (str(path), (lineno or 0) + 1, f"Skipped: {message}")
    return pytest.TestReport(
        nodeid=item.nodeid,
        location=item.location,
        keywords=dict.fromkeys(item.keywords, 1),
        outcome=outcome,
        longrepr=longrepr,
        when="setup" if outcome == "skipped" else "call",
    )


class GuestReporter:
    """Guest side: write every report of this run to the results file."""

    def __init__(self, config: pytest.Config, path: Path) -> None:
        self.config = config
        self.file = path.open("a")

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        data = self.config.hook.pytest_report_to_serializable(config=self.config, report=report)
        self.file.write(json.dumps(data) + "\n")
        self.file.flush()

    def pytest_unconfigure(self) -> None:
        self.file.close()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "lab(devices=..., viommu=True, iommu_cmdline=True, kernel='stock', iommu='intel'): runs "
        "as root in the lab guest on the real kernel (one boot per topology)",
    )
    results = config.getoption("--lab-results")
    if config.getoption("--no-skips") and not results:
        config.pluginmanager.register(SkipGuard(), "pyvfio-no-skips")
    if results:
        config.pluginmanager.register(GuestReporter(config, Path(results)), "pyvfio-lab-guest")
    else:
        config.pluginmanager.register(LabScheduler(config), "pyvfio-lab-scheduler")


class LabFixture:
    """What a lab test sees: the manifest, and the addresses of the lab's devices."""

    def __init__(self) -> None:
        self.manifest: Manifest = guest.manifest()

    def address(self, name: str, index: int = 0) -> str:
        return guest.address(name, index)

    def addresses(self, name: str) -> list[str]:
        return [addr for _, addr in guest.devices(name)]


@pytest.fixture(scope="session")
def lab() -> LabFixture:
    """The lab guest this test runs in (only inside a ``lab``-marked test)."""
    return LabFixture()
