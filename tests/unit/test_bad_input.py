"""Bad input that needs no device: each case of tests/robustness_cases.py's UNIT and CLI
lists gives one clear error of the documented type and changes nothing."""

from __future__ import annotations

import gc
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pyvfio.cli import app
from pyvfio.host import journal
from pyvfio.host.sysfs import LIVE, PCI_DEVICES
from robustness_cases import CLI, UNIT, Case, CliCase

ROOT = Path(__file__).parents[2]
SNAPSHOT = ROOT / "tests/data/snapshots/lab-main.tar.gz"


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def host_drivers() -> dict[str, str | None]:
    return {addr: LIVE.driver(addr) for addr in LIVE.listdir(PCI_DEVICES)}


@pytest.mark.parametrize("case", UNIT, ids=[c.id for c in UNIT])
def test_bad_call_gives_one_clear_error(case: Case, tmp_path: Path) -> None:
    gc.collect()
    fds = open_fds()
    if case.error is None:
        case.call(str(tmp_path))
    else:
        with pytest.raises(case.error, match=re.escape(case.match)) as info:
            case.call(str(tmp_path))
        assert "\n" not in str(info.value), "an error is one line"
    gc.collect()
    assert open_fds() == fds, "a file descriptor leaked"


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("case", CLI, ids=[c.id for c in CLI])
def test_bad_command_line_is_one_line_and_changes_nothing(
    case: CliCase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    work = tmp_path / "work"
    work.mkdir()
    (work / "etc").mkdir()
    (work / "etc/os-release").write_text("ID=debian\n")
    monkeypatch.setenv(journal.STATE_DIR_ENV, str(state))
    args = [a.format(snap=SNAPSHOT, tmp=work) for a in case.args]
    before, drivers = _tree(work), host_drivers()
    done = CliRunner().invoke(app, args)
    assert done.exit_code == case.code, (done.stdout, done.stderr)
    assert done.exception is None or isinstance(done.exception, SystemExit), done.exception
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ") and case.match in lines[0], lines[0]
    assert "Traceback" not in done.stdout + done.stderr
    assert not state.exists() or list(state.iterdir()) == [], "the journal was touched"
    assert _tree(work) == before, "files changed"
    assert host_drivers() == drivers, "a driver binding changed"


def test_the_installed_command_prints_no_traceback_either(tmp_path: Path) -> None:
    """One case end to end through the console script's main(), in a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-m", "pyvfio", "ls", "--group", "x", "--root", str(SNAPSHOT)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, journal.STATE_DIR_ENV: str(tmp_path)},
    )
    assert done.returncode == 2
    assert done.stderr.startswith("error: Invalid value for '--group'")
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_the_table_in_docs_is_up_to_date() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts/robustness_table.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_every_case_is_counted_once() -> None:
    from robustness_cases import ALL

    ids = [case.id for case in ALL]
    assert len(ids) == len(set(ids)), "two cases share an id: the table would hide one"
    assert all(case.tier in ("unit", "cli", "lab", "nvme") for case in ALL)
