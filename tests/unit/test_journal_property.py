"""The bind journal, as a property: whatever sequence of bind / unbind / restore runs, and
wherever it is killed (SIGKILL after any of its steps, a sysfs write or a journal write),
``restore --all`` gives every device back its original driver and ``driver_override``.

The host is the simulated q35 lab kernel (pyvfio.testing), whose driver writes act
as the PCI core's; each example starts from random original overrides, may have a device
that refuses vfio-pci (so a bind rolls back), and runs in a forked child that the
journal's crash hook kills after step N of the whole sequence.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pyvfio.errors import HostError
from pyvfio.host import bind, journal
from pyvfio.testing import Q35_LAB, SimulatedKernel, q35_lab

ORIGINAL = {addr: driver for addr, _, _, _, driver, _, _ in Q35_LAB}
#: Devices a user might name: endpoints on the root bus, behind a root port, behind a
#: switch, the chipset group; the bridges and the 9p root come along through --group.
NAMED = (
    "0000:00:10.0",
    "0000:00:11.0",
    "0000:01:00.0",
    "0000:04:00.0",
    "0000:00:1f.0",
    "0000:00:1f.2",
    "0000:00:1f.3",
)

Op = tuple[Any, ...]
_addresses = st.lists(st.sampled_from(NAMED), min_size=1, max_size=3, unique=True)
_bind = st.tuples(st.just("bind"), _addresses, st.booleans(), st.booleans())  # group, force
_ops = st.one_of(
    _bind,
    _bind,  # twice as likely: binds are what leave work half-done
    st.tuples(st.just("unbind"), _addresses),
    st.tuples(st.just("restore"), _addresses),
    st.just(("restore-all",)),
)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[dict[str, str | None], set[str], list[Op], int | None]:
    overrides = {
        addr: draw(st.sampled_from([None, driver or "vfio-pci"]))
        for addr, driver in ORIGINAL.items()
    }
    refuse = draw(st.sets(st.sampled_from(NAMED), max_size=1))
    ops = draw(st.lists(_ops, min_size=1, max_size=4))
    # 0: run to the end. Binding one device is 6-8 steps (journal, modules, then per
    # device override, journal, unbind, journal, probe, journal); restoring one is 1.
    crash_after = draw(st.integers(0, 14))
    return overrides, refuse, ops, crash_after or None


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatedKernel]:
    """One simulated host for all examples (building one is slow); each example resets it."""
    yield q35_lab(tmp_path_factory.mktemp("q35"))


def _set_override(kernel: SimulatedKernel, addr: str, value: str | None) -> None:
    kernel.path(f"{kernel.device_dir(addr)}/driver_override").write_text(f"{value or '(null)'}\n")


def _host_state(kernel: SimulatedKernel) -> dict[str, tuple[str | None, str | None]]:
    return {addr: (kernel.driver(addr), bind.read_override(addr, kernel)) for addr in ORIGINAL}


def _apply(op: Op, kernel: SimulatedKernel, journal_dir: Path) -> None:
    kind, *args = op
    if kind == "bind":
        addrs, group, force = args
        plan = bind.plan_bind(addrs, group=group, sysfs=kernel)
        bind.bind_devices(plan, force=force, sysfs=kernel, journal_dir=journal_dir)
    elif kind == "unbind":
        bind.unbind_devices(args[0], sysfs=kernel, journal_dir=journal_dir)
    elif kind == "restore":
        bind.restore(args[0], sysfs=kernel, journal_dir=journal_dir)
    else:
        bind.restore(all_devices=True, sysfs=kernel, journal_dir=journal_dir)


def _run_and_maybe_die(
    ops: list[Op], crash_after: int | None, kernel: SimulatedKernel, journal_dir: Path
) -> int:
    """Run ``ops`` in a child killed after step ``crash_after`` of the whole sequence."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            if crash_after is not None:
                os.environ[journal.CRASH_ENV] = str(crash_after)
            bind.begin_steps = lambda: None  # type: ignore[attr-defined]  # count across ops
            journal._Steps.count = 0
            for op in ops:
                # HostError: refused (in use, a device that will not bind), as designed
                with contextlib.suppress(HostError):
                    _apply(op, kernel, journal_dir)
        except BaseException:
            code = 3  # anything else is a bug the parent reports
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return status


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(scenario=scenarios())
def test_any_prefix_of_steps_restores_the_host(
    scenario: tuple[dict[str, str | None], set[str], list[Op], int | None],
    kernel: SimulatedKernel,
    tmp_path: Path,
) -> None:
    overrides, refuse, ops, crash_after = scenario
    journal_dir = tmp_path / "journal"
    shutil.rmtree(journal_dir, ignore_errors=True)
    for addr, driver in ORIGINAL.items():
        kernel.host.bind(addr, driver)
        _set_override(kernel, addr, overrides[addr])
    kernel.refuse = {(addr, "vfio-pci") for addr in refuse}
    original = _host_state(kernel)

    status = _run_and_maybe_die(ops, crash_after, kernel, journal_dir)
    if os.WIFSIGNALED(status):
        assert os.WTERMSIG(status) == signal.SIGKILL
        event("killed part way")
    else:
        assert os.WEXITSTATUS(status) == 0, "the sequence raised something other than HostError"
        event("ran to the end")

    kernel.refuse = set()  # the device is fine again: restore must finish
    bind.restore(all_devices=True, sysfs=kernel, journal_dir=journal_dir)
    assert _host_state(kernel) == original
    assert journal.read_journal(journal_dir) == {}
    writes = len(kernel.writes)
    assert bind.restore(all_devices=True, sysfs=kernel, journal_dir=journal_dir) == []
    assert len(kernel.writes) == writes, "a second restore changed something"


# -- Whatever the file holds, reading it gives the entries or one JournalError ---------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=12,
)
_fields = st.fixed_dictionaries(
    {},
    optional={
        "address": st.sampled_from([*NAMED, "00:10.0", "x"]) | _json,
        "original_driver": st.sampled_from(["nvme", None, "../x", "", "a b"]) | _json,
        "original_override": st.sampled_from(["vfio-pci", None]) | _json,
        "target": st.sampled_from(["vfio-pci", "pci-stub", None]) | _json,
        "step": st.sampled_from([*journal.STEPS, "gone"]) | _json,
        "waiting": st.fixed_dictionaries(
            {"write": _json | st.just("unbind from vfio-pci"), "pid": _json, "start": _json}
        )
        | _json,
    },
)
#: Near-misses of the real shape: the right version, devices keyed by addresses or not.
_journals = st.fixed_dictionaries(
    {"version": st.just(1) | _json},
    optional={
        "devices": st.dictionaries(st.sampled_from([*NAMED, "00:11.0", "bogus"]), _fields | _json)
        | _json
    },
)


def _load(text: str | bytes, folder: Path) -> dict[str, journal.JournalEntry] | None:
    folder.mkdir(exist_ok=True)
    (folder / "journal.json").write_bytes(text.encode() if isinstance(text, str) else text)
    try:
        return journal.Journal(folder).entries
    except journal.JournalError as err:
        assert "\n" not in str(err) and str(folder / "journal.json") in str(err)
        return None


@settings(max_examples=400, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=_journals | _json)
def test_any_json_loads_as_entries_or_one_journal_error(doc: object, tmp_path: Path) -> None:
    entries = _load(json.dumps(doc), tmp_path / "j")
    if entries is None:
        event("refused")
        return
    event("loaded")
    for addr, entry in entries.items():  # what was accepted is what pyvfio could write
        assert addr in NAMED and entry.step in journal.STEPS
        for name in (entry.original_driver, entry.original_override, entry.target):
            assert name is None or ("/" not in name and name not in ("", ".", ".."))
    saved = journal.Journal(tmp_path / "j")
    saved.save()
    assert journal.Journal(tmp_path / "j").entries == entries


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=64) | st.text(max_size=64).map(str.encode))
def test_any_bytes_load_or_give_one_journal_error(data: bytes, tmp_path: Path) -> None:
    _load(data, tmp_path / "b")


def test_a_journal_cut_anywhere_is_one_journal_error(tmp_path: Path) -> None:
    folder = tmp_path / "cut"
    folder.mkdir()
    whole = journal.Journal(folder)
    whole.entries = {
        "0000:00:11.0": journal.JournalEntry(
            "0000:00:11.0", "nvme", None, "vfio-pci", "unbound",
            journal.Waiting("unbind from nvme", 4242, 17),
        )
    }  # fmt: skip
    whole.save()
    text = (folder / "journal.json").read_text()
    assert journal.Journal(folder).entries == whole.entries
    for end in range(len(text) - 1):
        assert _load(text[:end], tmp_path / "c") is None, text[:end]
