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
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyvfio.errors import HostError

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


def state_dir() -> Path:
    return Path(os.environ.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR)


@dataclass(frozen=True)
class JournalEntry:
    """One device pyvfio moved: where it came from, where it goes, how far it got."""

    address: str
    original_driver: str | None
    original_override: str | None
    target: str
    step: str = "planned"

    @property
    def done(self) -> bool:
        return self.step == "bound"

    def __str__(self) -> str:
        was = self.original_driver or "no driver"
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
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as err:
            raise HostError(
                f"cannot read the bind journal {self.path}: {err}; fix or remove it "
                "after checking each device's driver by hand (lspci -k)"
            ) from err
        if raw.get("version") != FORMAT_VERSION:
            raise HostError(
                f"{self.path} has journal format {raw.get('version')!r}, this pyvfio "
                f"reads {FORMAT_VERSION}: restore with the pyvfio that wrote it"
            )
        entries = {}
        for addr, data in raw.get("devices", {}).items():
            entries[addr] = JournalEntry(
                address=addr,
                original_driver=data.get("original_driver"),
                original_override=data.get("original_override"),
                target=data.get("target") or "vfio-pci",
                step=data.get("step") or "planned",
            )
        return entries

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
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, json.dumps(data, indent=1).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dirfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


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
    """The entries as they are now, without locking (for ``pyvfio ls``)."""
    try:
        return Journal(directory).entries
    except HostError:
        return {}
