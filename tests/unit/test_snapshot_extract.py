"""Snapshots unpack safely on every Python 3.11, with or without tarfile's filters."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from pyvfio.host import snapshot
from pyvfio.host.snapshot import SnapshotError
from pyvfio.host.synthetic import intel_server
from pyvfio.host.sysfs import Sysfs


@pytest.fixture(params=["filter", "by hand"])
def python_tarfile(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "by hand":  # as on Debian 12's Python 3.11.2
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    return str(request.param)


def test_a_recorded_snapshot_opens(tmp_path: Path, python_tarfile: str) -> None:
    intel_server(tmp_path / "host")
    snapshot.record(tmp_path / "s.tar.gz", Sysfs(tmp_path / "host"))
    opened = snapshot.open_root(tmp_path / "s.tar.gz")
    assert opened.pci_devices() == Sysfs(tmp_path / "host").pci_devices()


def _evil(tmp_path: Path, name: str) -> Path:
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        info = tarfile.TarInfo(name)
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    return evil


def test_a_member_climbing_out_is_refused(tmp_path: Path, python_tarfile: str) -> None:
    with pytest.raises((SnapshotError, tarfile.FilterError)):
        snapshot.open_root(_evil(tmp_path, "../escape"))
    assert not (tmp_path.parent / "escape").exists()


def test_an_absolute_member_is_refused_without_filters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (tarfile's "data" filter strips the leading "/" instead, which is as safe.)
    monkeypatch.delattr(tarfile, "data_filter", raising=False)
    with pytest.raises(SnapshotError, match="unsafe member '/etc/evil'"):
        snapshot.open_root(_evil(tmp_path, "/etc/evil"))
