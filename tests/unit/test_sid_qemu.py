"""The sid chroot's bookkeeping: which mirror, which tree counts as built, what is said."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pyvfio.lab import sid_qemu
from pyvfio.lab.sid_qemu import SidQemuError, debian_mirror, ensure_chroot, find_chroot


def test_mirror_from_a_deb822_source_skips_security(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm\n"
    )
    assert debian_mirror(tmp_path) == "http://mirror.example/debian"


def test_mirror_from_a_one_line_source_with_options(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text(
        "# deb http://old.example/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://one.example/debian bookworm main\n"
    )
    assert debian_mirror(tmp_path) == "http://one.example/debian"


def test_mirror_falls_back_to_debians_cdn_and_yields_to_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "sources.list").write_text("deb https://packages.example/apt stable main\n")
    assert debian_mirror(tmp_path) == "http://deb.debian.org/debian"
    monkeypatch.setenv("PYVFIO_DEBIAN_MIRROR", "http://env.example/debian")
    assert debian_mirror(tmp_path) == "http://env.example/debian"


def _stamp(root: Path) -> None:
    root.mkdir(parents=True)
    (root / sid_qemu.STAMP).write_text(
        json.dumps(
            {
                "qemu_version": "11.1.3 (Debian 1:11.1.3+ds-1)",
                "suite": "sid",
                "mirror": "http://deb.debian.org/debian",
                "built": "2026-01-01T00:00:00Z",
                "seconds": 42.0,
            }
        )
    )


def test_a_tree_counts_only_with_its_stamp_and_qemu(tmp_path: Path) -> None:
    root = tmp_path / "sid-qemu"
    assert find_chroot(root) is None
    _stamp(root)
    assert find_chroot(root) is None  # stamp without QEMU: not a chroot
    qemu = root / sid_qemu.QEMU.lstrip("/")
    qemu.parent.mkdir(parents=True)
    qemu.touch()
    chroot = find_chroot(root)
    assert chroot is not None
    assert chroot.qemu_version.startswith("11.1.3")
    assert chroot.command("-version") == ["chroot", str(root), sid_qemu.QEMU, "-version"]
    assert chroot.host_path("/tmp/x.sock") == root / "tmp" / "x.sock"
    assert chroot.inside_path(root / "tmp" / "x.sock") == "/tmp/x.sock"
    # A finished chroot is returned as it is: nothing is run, even without root.
    assert ensure_chroot(root) == chroot


def test_building_without_root_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(SidQemuError, match="needs root"):
        ensure_chroot(tmp_path / "sid-qemu")
    assert not (tmp_path / "sid-qemu").exists()


def test_a_failed_debootstrap_leaves_nothing_and_names_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "debootstrap"
    fake.write_text(
        "#!/bin/sh\necho 'I: Retrieving InRelease'\n"
        "echo 'E: Failed getting release file' >&2\nexit 1\n"
    )
    fake.chmod(0o755)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr("pyvfio.lab.sid_qemu.shutil.which", lambda name: str(fake))
    said: list[str] = []
    root = tmp_path / "cache" / "sid-qemu"
    with pytest.raises(SidQemuError, match=r"failed \(exit 1\): .*Failed getting release file"):
        ensure_chroot(root, mirror="http://mirror.invalid/debian", say=said.append)
    assert not root.exists()
    assert not (root.parent / ".sid-qemu.partial").exists()
    assert "Retrieving InRelease" in (root.parent / "sid-qemu.debootstrap.log").read_text()
    assert any("Retrieving InRelease" in line for line in said)


def test_only_debootstraps_stages_are_relayed() -> None:
    assert sid_qemu._is_milestone("I: Configuring the base system...\n")
    assert sid_qemu._is_milestone("E: Couldn't download packages\n")
    assert not sid_qemu._is_milestone("I: Retrieving libc6 2.41-6\n")
    assert not sid_qemu._is_milestone("I: Unpacking bash...\n")
