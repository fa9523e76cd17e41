"""``pyvfio nvme``: bad input exits 2 before any device is touched."""

from __future__ import annotations

from typer.testing import CliRunner

from pyvfio.cli import app


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["nvme", *args])
    return result.exit_code, result.output


def test_nvme_help_lists_the_commands() -> None:
    code, out = run("--help")
    assert code == 0
    for command in ("identify", "read", "write", "smart"):
        assert command in out


def test_bad_address_exits_2() -> None:
    code, out = run("identify", "not-an-address")
    assert code == 2
    assert "not a PCI address" in out


def test_missing_device_exits_2() -> None:
    code, _ = run("smart", "0000:7f:1f.7")
    assert code == 2


def test_unreadable_input_exits_2() -> None:
    code, out = run("write", "0000:00:10.0", "--lba", "0", "-i", "/nonexistent/file")
    assert code == 2
    assert "cannot read /nonexistent/file" in out


def test_negative_count_exits_2() -> None:
    code, _ = run("read", "0000:00:10.0", "--lba", "0", "--count", "0", "-o", "-")
    assert code == 2
