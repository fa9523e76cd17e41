"""The markers that say what a test needs (tests/conftest.py, registered in pyproject.toml):
a need this machine does not meet is a skip with the reason, and ``--no-skips`` (CI) makes
that skip fail the run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

NEEDY = """
import pytest

@pytest.mark.needs_root("it changes user")
def test_as_root():
    pass

@pytest.mark.needs_tool("pyvfio-no-such-program", "pyvfio-no-such-package")
def test_with_a_missing_tool():
    pass

@pytest.mark.needs_tool("sh")
def test_with_sh():
    pass

@pytest.mark.sid_qemu
def test_labelled_only():
    pass

def test_needing_nothing():
    pass
"""


@pytest.fixture
def needy(pytester: pytest.Pytester) -> pytest.Pytester:
    """A project with this one's pytest settings (strict markers) and root conftest."""
    pytester.makepyprojecttoml((ROOT / "pyproject.toml").read_text())
    pytester.makeconftest((ROOT / "tests" / "conftest.py").read_text())
    pytester.makepyfile(test_needy=NEEDY)
    return pytester


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_inprocess("-p", "no:cacheprovider", "--lab", "no", *args)


@pytest.mark.parametrize(
    ("option", "status", "lines"),
    [
        (
            "-rs",  # a developer's run: the skips, each with its reason
            pytest.ExitCode.OK,
            [
                "SKIPPED*needs root: it changes user",
                "SKIPPED*needs pyvfio-no-such-program, which is missing: "
                "apt-get install pyvfio-no-such-package",
            ],
        ),
        (
            "--no-skips",  # CI's: the same skips fail the run
            pytest.ExitCode.TESTS_FAILED,
            [
                "*skipped tests (--no-skips makes them failures)*",
                "test_needy.py::test_as_root: *needs root: it changes user",
                "test_needy.py::test_with_a_missing_tool: *needs pyvfio-no-such-program*",
            ],
        ),
    ],
    ids=["skips", "no-skips"],
)
def test_an_unmet_need_is_a_skip_that_says_what_is_missing(
    needy: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    option: str,
    status: pytest.ExitCode,
    lines: list[str],
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    result = run(needy, option)
    result.assert_outcomes(passed=3, skipped=2)
    assert result.ret == status
    result.stdout.fnmatch_lines_random(lines)


def test_a_met_need_runs_the_test(needy: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    result = run(needy, "--no-skips", "-k", "not missing_tool")
    result.assert_outcomes(passed=4, deselected=1)
    assert result.ret == pytest.ExitCode.OK
