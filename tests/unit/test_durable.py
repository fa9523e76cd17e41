"""One durable write for the journal, grants.json, snapshots and persist's files."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

from pyvfio.host import durable, journal


def test_write_durably_syncs_the_file_renames_then_syncs_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "state.json"
    target.write_text("old")
    calls: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        calls.append(("replace", str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    durable.write_durably(target, b"new", mode=0o640)
    assert [c[0] for c in calls] == ["fsync", "replace", "fsync"]
    assert calls[0][1].startswith(str(tmp_path / ".state.json."))
    assert calls[1:] == [("replace", str(target)), ("fsync", str(tmp_path))]
    assert target.read_bytes() == b"new"
    assert target.stat().st_mode & 0o777 == 0o640 & ~_umask()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_block_that_raises_leaves_the_target_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt), durable.Replacement(target) as new:
        new.file.write(b"half")
        raise KeyboardInterrupt
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_link_at_the_target_is_replaced_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    link = tmp_path / "link"
    link.symlink_to(victim)
    durable.write_durably(link, b"data")
    assert victim.read_text() == "precious"
    assert not link.is_symlink() and link.read_bytes() == b"data"


def test_a_named_temporary_is_never_opened_through_a_link(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    tmp = tmp_path / ".out.tmp"
    tmp.symlink_to(victim)
    with pytest.raises(OSError) as caught:
        durable.Replacement(tmp_path / "out", tmp=tmp)
    assert caught.value.errno == errno.ELOOP
    assert victim.read_text() == "precious"
    stale = tmp_path / ".other.tmp"
    stale.write_text("left by a crash, longer than the new content")
    with durable.Replacement(tmp_path / "other", tmp=stale) as new:
        new.file.write(b"new")
    assert (tmp_path / "other").read_bytes() == b"new" and not stale.exists()


def test_the_journal_is_written_through_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    written: list[Path] = []
    real = durable.Replacement.commit

    def commit(self: durable.Replacement) -> None:
        written.append(self.path)
        real(self)

    monkeypatch.setattr(durable.Replacement, "commit", commit)
    journal.write_json_atomically(tmp_path / "journal.json", {"a": 1})
    assert written == [tmp_path / "journal.json"]
    assert (tmp_path / "journal.json").read_text() == '{\n "a": 1\n}'
