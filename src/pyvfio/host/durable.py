"""Files replaced durably: a crash leaves the old file or the new one, never a part of one.

Everything pyvfio must not lose or leave half-written goes through :class:`Replacement`:
the bind journal and ``grants.json`` (:func:`pyvfio.host.journal.write_json_atomically`),
a snapshot, and the files and undo record of ``pyvfio persist``. The new content goes to
a file of its own beside the target (created, never opened through a link), is fsynced,
renamed over the target (a rename replaces a symlink there instead of writing where it
points), and then the folder is fsynced so that the rename survives a crash too.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from types import TracebackType
from typing import BinaryIO


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """Make the latest rename, creation or removal in ``folder`` survive a crash."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Replacement:
    """A new file that takes ``path``'s place when :meth:`commit` is called.

    It is created at once, with ``mode`` (less the umask), as ``tmp`` (default: a new
    name beside ``path``, ``.NAME.RANDOM.tmp``; an existing ``tmp`` is overwritten, but
    never through a link). Write to :attr:`file`; leaving a ``with`` block commits,
    or discards the file when the block raised.
    """

    def __init__(self, path: Path, *, mode: int = 0o600, tmp: Path | None = None) -> None:
        self.path = path
        self.tmp = tmp or path.with_name(f".{path.name}.{os.urandom(4).hex()}.tmp")
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        flags |= os.O_EXCL if tmp is None else os.O_TRUNC
        self.file: BinaryIO = open(os.open(self.tmp, flags, mode), "wb")  # noqa: SIM115
        self._done = False

    def commit(self) -> None:
        """fsync the file, rename it over the target, fsync the folder."""
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.tmp, self.path)
        self._done = True
        fsync_dir(self.path.parent)

    def discard(self) -> None:
        """Close and remove the new file; the target stays as it was."""
        self.file.close()
        if not self._done:
            with contextlib.suppress(OSError):
                os.unlink(self.tmp)
            self._done = True

    def __enter__(self) -> Replacement:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if kind is None and not self._done:
            try:
                self.commit()
            except BaseException:
                self.discard()
                raise
        else:
            self.discard()


def write_durably(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Replace ``path`` by ``data`` (a new file of ``mode``) durably."""
    with Replacement(path, mode=mode) as new:
        new.file.write(data)
