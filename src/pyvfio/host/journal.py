"""The bind journal: what pyvfio changed on this host, so it can always be undone.

Before pyvfio writes anything to sysfs it records, for each device it is about to move,
the driver and ``driver_override`` the device had; after every step it records how far
it got. The file is replaced atomically (write a temporary file, fsync it, rename it over
the old one, fsync the folder), so a reader sees the old or the new journal, never half
of one, whenever the writer dies (kill -9, power loss).

:func:`pyvfio.host.bind.restore` trusts only the *original* state in an entry, never the
step: every step of the undo is idempotent, so a device is given back correctly whether
the bind died before, during or after any of its writes.

The journal lives in ``/run/pyvfio`` (a tmpfs: driver bindings do not survive a reboot,
so neither should a record of them); ``$PYVFIO_STATE_DIR`` moves it (tests, containers).
Writers hold an exclusive ``flock`` on ``journal.lock`` so two pyvfio processes never
interleave their changes.

The file is root's (``/run/pyvfio`` is 0700), but pyvfio acts on what it says as root, so
it is read as untrusted input all the same: anything but the shape :meth:`Journal.save`
writes (a list, an entry that is not an object, a field of the wrong type, an address
or driver name that is not one, truncated JSON, an empty file) is a :class:`JournalError`
that names the file and how to repair it, and nothing is changed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import signal
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyvfio.errors import HostError, InvalidAddressError
from pyvfio.host.durable import write_durably
from pyvfio.pci.address import normalize

if TYPE_CHECKING:
    from pyvfio.host.sysfs import Sysfs

STATE_DIR_ENV = "PYVFIO_STATE_DIR"
DEFAULT_STATE_DIR = Path("/run/pyvfio")
JOURNAL_NAME = "journal.json"
#: Where a snapshot carries its copy of the journal, below its root.
SNAPSHOT_JOURNAL = f"run/pyvfio/{JOURNAL_NAME}"
FORMAT_VERSION = 1

#: Test hook: ``PYVFIO_CRASH_AFTER_STEP=N`` makes the process SIGKILL itself right after
#: its N-th step (a sysfs write or a journal write), to prove every step recoverable.
CRASH_ENV = "PYVFIO_CRASH_AFTER_STEP"

#: Steps of one device's bind, in order. An entry in any state but ``bound`` is half-done.
STEPS = ("planned", "override-set", "unbound", "bound")


#: What a driver name in the journal may be: it becomes a path component below
#: /sys/bus/pci/drivers (the kernel's own names are letters, digits, '_', '-', '.').
_DRIVER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+:-]{0,63}")


def state_dir() -> Path:
    return Path(os.environ.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR)


class JournalError(HostError, ValueError):
    """The journal file cannot be read or trusted (bad input: exit 2, nothing changed)."""


class JournalUnreadableError(JournalError):
    """The journal is there but this user may not read it (``/run/pyvfio`` is root's)."""


@dataclass(frozen=True)
class Waiting:
    """A sysfs write for the device that did not return in time: the kernel is still
    doing it (vfio-pci's remove waits until every user closes the device) in process
    ``pid`` (``start``: its start time in /proc/PID/stat, which tells a reused pid apart)."""

    write: str  # what was written, e.g. "unbind from vfio-pci"
    pid: int
    start: int


@dataclass(frozen=True)
class JournalEntry:
    """One device pyvfio moved: where it came from, where it goes, how far it got."""

    address: str
    original_driver: str | None
    original_override: str | None
    target: str
    step: str = "planned"
    #: Set while a write to the device's driver waits in the kernel (see Waiting).
    waiting: Waiting | None = None

    @property
    def done(self) -> bool:
        return self.step == "bound" and self.waiting is None

    def __str__(self) -> str:
        was = self.original_driver or "no driver"
        if self.waiting is not None:
            return (
                f"{self.address} waiting: the kernel has not finished '{self.waiting.write}' "
                f"(pid {self.waiting.pid} waits until the device is closed; was {was})"
            )
        if self.done:
            return f"{self.address} on {self.target} by pyvfio (was {was})"
        return f"{self.address} half-done: stopped after '{self.step}' (was {was})"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "done": self.done}


class _Steps:
    """Counts the steps of the current bind for the crash hook."""

    count = 0


def begin_steps() -> None:
    """Start counting steps afresh (each bind counts its own)."""
    _Steps.count = 0


def step(label: str) -> None:
    """Mark that one step finished; dies here if ``$PYVFIO_CRASH_AFTER_STEP`` says so."""
    _Steps.count += 1
    wanted = os.environ.get(CRASH_ENV)
    if wanted and wanted.isdigit() and int(wanted) == _Steps.count:
        os.kill(os.getpid(), signal.SIGKILL)


class Journal:
    """The entries on disk, by address. Open with :meth:`locked` to change them."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or state_dir()
        self.path = self.directory / JOURNAL_NAME
        self.entries: dict[str, JournalEntry] = self._load()

    def _load(self) -> dict[str, JournalEntry]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return {}
        except PermissionError as err:
            raise JournalUnreadableError(
                f"cannot read the bind journal {self.path}: permission denied; run as root"
            ) from err
        except (OSError, ValueError) as err:  # ValueError: not UTF-8
            raise self._damaged(str(err)) from err
        return self._parse(text)

    def _damaged(self, why: str) -> JournalError:
        return JournalError(
            f"cannot read the bind journal {self.path}: {why}; nothing was changed; to "
            f"repair: read it (cat {self.path}), give each device it names back to its "
            f"driver by hand (lspci -k shows them), then remove it (rm {self.path})"
        )

    def _parse(self, text: str) -> dict[str, JournalEntry]:
        """The entries of the file's text: exactly the shape :meth:`save` writes."""
        if not text.strip():
            raise self._damaged("the file is empty (a write cut short?)")
        try:
            raw = json.loads(text)
        except ValueError as err:
            raise self._damaged(f"not JSON ({err})") from None
        except RecursionError:  # the C scanner's answer to [[[[...]]]] nested too deep
            raise self._damaged("not JSON (nested too deep)") from None
        if not isinstance(raw, dict):
            raise self._damaged(f"it holds a JSON {_kind(raw)}, not an object")
        if raw.get("version") != FORMAT_VERSION:
            raise JournalError(
                f"{self.path} has journal format {raw.get('version')!r}, this pyvfio "
                f"reads {FORMAT_VERSION}: restore with the pyvfio that wrote it"
            )
        devices = raw.get("devices", {})
        if not isinstance(devices, dict):
            raise self._damaged(f"'devices' is a JSON {_kind(devices)}, not an object")
        entries = {}
        for addr, data in devices.items():
            entries[addr] = self._entry(addr, data)
        return entries

    def _entry(self, addr: str, data: object) -> JournalEntry:
        def bad(why: str) -> JournalError:
            return self._damaged(f"the entry {addr!r} {why}")

        try:
            canonical = normalize(addr)
        except InvalidAddressError:
            raise bad("is not a PCI address") from None
        if canonical != addr:
            raise bad(f"is not written as pyvfio writes it ({canonical})")
        if not isinstance(data, dict):
            raise bad(f"is a JSON {_kind(data)}, not an object")
        if data.get("address", addr) != addr:
            raise bad(f"names another device ({data.get('address')!r})")
        names: dict[str, str | None] = {}
        for key, optional in (
            ("original_driver", True),
            ("original_override", True),
            ("target", False),
        ):
            value = data.get(key)
            if value is None and optional:
                names[key] = None
                continue
            if not isinstance(value, str) or not _DRIVER_NAME.fullmatch(value):
                raise bad(f"has {key} {value!r}, not a driver name")
            names[key] = value
        step_name = data.get("step", "planned")
        if step_name not in STEPS:
            raise bad(f"has step {step_name!r}, not one of {', '.join(STEPS)}")
        return JournalEntry(
            address=addr,
            original_driver=names["original_driver"],
            original_override=names["original_override"],
            target=names["target"] or "vfio-pci",
            step=step_name,
            waiting=self._waiting(data.get("waiting"), bad),
        )

    @staticmethod
    def _waiting(value: object, bad: Any) -> Waiting | None:
        if value is None:
            return None
        if not isinstance(value, dict):
            raise bad(f"has 'waiting' as a JSON {_kind(value)}, not an object")
        write, pid, start = value.get("write"), value.get("pid"), value.get("start")
        if not isinstance(write, str) or type(pid) is not int or type(start) is not int:
            raise bad("has a 'waiting' without a write (text), a pid and a start (numbers)")
        if pid <= 0 or start < 0:
            raise bad(f"has a 'waiting' with pid {pid} and start {start}")
        return Waiting(write, pid, start)

    @classmethod
    @contextlib.contextmanager
    def locked(cls, directory: Path | None = None) -> Iterator[Journal]:
        """The journal under an exclusive lock held until the block ends."""
        where = directory or state_dir()
        with exclusive_lock(where, "journal.lock", f"the bind journal in {where}"):
            yield cls(where)

    def save(self) -> None:
        """Replace the file atomically: temp file, fsync, rename, fsync the folder."""
        data = {
            "version": FORMAT_VERSION,
            "devices": {a: asdict(e) for a, e in sorted(self.entries.items())},
        }
        write_json_atomically(self.path, data)
        step("journal")

    def record(self, entries: Mapping[str, JournalEntry]) -> None:
        self.entries.update(entries)
        self.save()

    def advance(self, address: str, new_step: str) -> None:
        self.entries[address] = replace(self.entries[address], step=new_step)
        self.save()

    def wait_on(self, address: str, waiting: Waiting | None) -> None:
        """Record (or clear, with None) a write to the device the kernel has not finished."""
        self.entries[address] = replace(self.entries[address], waiting=waiting)
        self.save()

    def forget(self, address: str) -> None:
        if self.entries.pop(address, None) is not None:
            self.save()


@contextlib.contextmanager
def exclusive_lock(directory: Path, name: str, what: str) -> Iterator[None]:
    """Hold an flock on ``directory/name`` (made 0700 if missing) for the block; ``what``
    names the state a PermissionError keeps from being written."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock = os.open(directory / name, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except PermissionError as err:
        raise HostError(f"cannot write {what}: run as root") from err
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
    finally:
        os.close(lock)  # closing drops the flock


def write_json_atomically(path: Path, data: object) -> None:
    """Replace ``path`` with ``data`` as JSON: temp file, fsync, rename, fsync the folder,
    so a crash at any point leaves the old file or the new one, never half of one."""
    write_durably(path, json.dumps(data, indent=1).encode())


def journal_of(sysfs: Sysfs) -> dict[str, JournalEntry]:
    """The entries of the host ``sysfs`` reads, without locking (for ``pyvfio ls``): live,
    the state folder's; a snapshot, its copy, found inside it like every other file
    (a recorded ``run -> ../../run`` would otherwise show this host's journal)."""
    if sysfs.is_live:
        return read_journal()
    inside = sysfs.realpath(SNAPSHOT_JOURNAL)
    if inside is None or os.path.basename(inside) != JOURNAL_NAME:
        return {}
    return read_journal(sysfs.root / os.path.dirname(inside))


def read_journal(directory: Path | None = None) -> dict[str, JournalEntry]:
    """The entries as they are now, without locking (for ``pyvfio ls``): none for a user
    who may not read the journal (as everything pyvfio changed, it is root's), and
    JournalError when the file is damaged (the caller decides what it can still say)."""
    try:
        return Journal(directory).entries
    except JournalUnreadableError:
        return {}


def _kind(value: object) -> str:
    """JSON's name for a parsed value's type."""
    names = {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")
