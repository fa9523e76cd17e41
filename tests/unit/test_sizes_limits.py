"""One size formatter, one size parser, one reader of the memlock limits: every command
says a size the same way, and exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pyvfio import _limits, _sizes
from pyvfio.host import details, doctor, grant, snapshot
from pyvfio.host.doctor import Status
from pyvfio.host.synthetic import SimulatedKernel, intel_server
from pyvfio.vm import qemu

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30


@pytest.fixture
def intel(tmp_path: Path) -> SimulatedKernel:
    return intel_server(tmp_path / "intel")


def limits_file(kernel: SimulatedKernel, soft: str, hard: str) -> None:
    kernel.host.write(
        "proc/self/limits",
        "Limit                     Soft Limit           Hard Limit           Units     \n"
        f"Max locked memory         {soft:<20} {hard:<20} bytes     \n",
    )


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1536, "1536 B"),
        (64 * KiB, "64 KiB"),
        (1536 * MiB, "1536 MiB"),
        (3 * GiB, "3 GiB"),
        (GiB + MiB, "1025 MiB"),
        (1 << 60, "1 EiB"),
        (1 << 70, "1024 EiB"),
    ],
)
def test_size_text_is_exact(n: int, text: str) -> None:
    assert _sizes.size_text(n) == text


@pytest.mark.parametrize(
    ("n", "text"),
    [(1000, "1000 B"), (1536, "1.5 KiB"), (2 * MiB, "2 MiB"), (3 * GiB + GiB // 10, "3.1 GiB")],
)
def test_size_text_rounded(n: int, text: str) -> None:
    assert _sizes.size_text(n, exact=False) == text


def test_parse_size_units_and_refusals() -> None:
    assert _sizes.parse_size("512M") == 512 * MiB
    assert _sizes.parse_size(" 2gib ") == 2 * GiB
    assert _sizes.parse_size("1.5K") == 1536
    assert _sizes.parse_size("4096") == 4096
    assert _sizes.parse_size("4", unit=MiB) == 4 * MiB
    for bad in ("", "M", "inf", "nan", "12X"):
        with pytest.raises(ValueError, match="like 1M or 2G"):
            _sizes.parse_size(bad, examples="1M or 2G")


def test_memlock_limits_read_from_proc_lines() -> None:
    lines = [
        "Limit                     Soft Limit           Hard Limit           Units     ",
        "Max locked memory         65536                unlimited            bytes     ",
    ]
    assert _limits.memlock_limits(lines) == (65536, None)
    assert _limits.memlock_limits(lines[:1]) is None


def test_cap_ipc_lock_from_capeff_else_root() -> None:
    held = ["Name:\tqemu", "CapEff:\t0000000000004000"]
    assert _limits.holds_cap_ipc_lock(held, 1000)
    assert not _limits.holds_cap_ipc_lock(["CapEff:\t000001ffffffbfff"], 0)
    assert _limits.holds_cap_ipc_lock([], 0) and not _limits.holds_cap_ipc_lock([], 1000)
    assert _limits.memlock_kib(1) == 1 and _limits.memlock_kib(2048) == 2


# -- the bugs: a size shown rounded down ---------------------------------------------------


def test_doctor_shows_a_limit_of_1536_bytes_as_it_is(intel: SimulatedKernel) -> None:
    """doctor printed 1,536 bytes as "1 KiB" (and 1.5 GiB as "1 GiB")."""
    intel.host.write(snapshot.META, json.dumps({"euid": 1000}))
    limits_file(intel, "1536", "1536")
    check = doctor.check_memlock(intel, 64 << 20)
    assert check.status is Status.FAIL
    assert check.message == "1536 B: less than the 64 MiB to pin"
    limits_file(intel, str(1536 * MiB), str(1536 * MiB))
    check = doctor.check_memlock(intel, 1)
    assert check.message == "1536 MiB, enough for 1 B"


def test_vm_qemu_shows_a_limit_below_a_mib_as_it_is(intel: SimulatedKernel) -> None:
    """vm qemu printed a 64 KiB RLIMIT_MEMLOCK (an older kernel's default) as "0 MiB"."""
    intel.host.write(snapshot.META, json.dumps({"euid": 1000}))
    limits_file(intel, str(64 * KiB), str(64 * KiB))
    plan = qemu.build(["00:05.0"], memory="4G", sysfs=intel)
    assert "now 64 KiB soft, 64 KiB hard" in str(plan.memlock)


def test_the_commands_say_one_size_one_way() -> None:
    for n in (0, 1536, 64 * KiB, 8 * MiB, 1536 * MiB, 5 * GiB):
        advice = grant.MemlockAdvice("u", n, None, None)
        assert f"pins up to {_sizes.size_text(n)} for DMA" in str(advice)
        resource = details.Resource(0, 0xF0000000, n, "mem32", False)
        assert str(resource) == f"BAR 0: mem32 at 0xf0000000, {_sizes.size_text(n)}"
