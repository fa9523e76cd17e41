"""pyvfio persist on fixture /etc trees: golden diffs, and apply-then-undo byte for byte.

Each tree is a hand-made host (sysfs, procfs) with a distribution's /etc copied in from
tests/data/vm/persist/DISTRO (``PYVFIO_UPDATE_GOLDEN=1`` rewrites the golden diffs).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from pyvfio import testing as synthetic
from pyvfio.cli import app
from pyvfio.host import bind
from pyvfio.host.bind import DeviceInUseError
from pyvfio.host.sysfs import Sysfs
from pyvfio.vm import persist

DATA = Path(__file__).parent.parent / "data" / "vm"
runner = CliRunner()

#: distro -> (the host it runs on, the devices made persistent)
CASES: dict[str, tuple[Callable[[Path], object], list[str]]] = {
    "debian": (synthetic.intel_server, ["03:00.0", "04:00.0"]),
    "fedora": (synthetic.q35_lab, ["00:10.0", "00:11.0"]),
    "arch": (synthetic.amd_desktop, ["0a:00.0", "0a:00.1"]),
}
#: The cases whose host uses a device made persistent (arch: the GPU drives the console),
#: which ``pyvfio bind`` would refuse too: planned with ``force``.
FORCED = {"arch"}


def host_with_etc(distro: str, where: Path) -> Path:
    make, _ = CASES[distro]
    make(where)
    shutil.copytree(DATA / "persist" / distro / "etc", where / "etc")
    return where


def tree(root: Path) -> dict[str, object]:
    """Everything below etc/: each folder, each file's bytes and mode."""
    out: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(root / "etc"):
        rel = os.path.relpath(dirpath, root)
        out[rel + "/"] = sorted(dirnames)
        for name in filenames:
            path = Path(dirpath) / name
            out[f"{rel}/{name}"] = (path.read_bytes(), path.stat().st_mode)
    return out


@pytest.mark.parametrize("distro", sorted(CASES))
def test_golden_diff(distro: str, tmp_path: Path) -> None:
    root = host_with_etc(distro, tmp_path)
    plan = persist.plan(CASES[distro][1], root=root, force=distro in FORCED)
    assert plan.distro == distro
    text = str(plan) + "\n"
    golden = DATA / "persist" / f"{distro}.diff"
    if os.environ.get("PYVFIO_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text(), f"{golden.name} changed; review, PYVFIO_UPDATE_GOLDEN=1"


@pytest.mark.parametrize("distro", sorted(CASES))
def test_apply_then_undo_restores_the_tree_byte_for_byte(distro: str, tmp_path: Path) -> None:
    root = host_with_etc(distro, tmp_path)
    before = tree(root)
    plan = persist.plan(CASES[distro][1], root=root, force=distro in FORCED)
    applied = persist.apply(plan, root=root)
    for change in plan.changes:
        assert (root / change.path.lstrip("/")).read_text() == change.after
    assert set(applied.written) == {c.path for c in plan.changes}
    assert tree(root) != before
    with pytest.raises(persist.PersistError, match="--undo"):
        persist.plan(CASES[distro][1], root=root, force=distro in FORCED)
    restored = persist.undo(root=root)
    assert set(restored) == {c.path for c in plan.changes}
    assert tree(root) == before
    with pytest.raises(persist.PersistError, match="nothing to undo"):
        persist.undo(root=root)


def test_the_debian_hook_is_executable(tmp_path: Path) -> None:
    root = host_with_etc("debian", tmp_path)
    persist.apply(persist.plan(CASES["debian"][1], root=root), root=root)
    assert os.access(root / "etc/initramfs-tools/hooks/pyvfio", os.X_OK)


def test_options_already_there_are_not_added_twice(tmp_path: Path) -> None:
    root = host_with_etc("arch", tmp_path)
    grub = root / "etc/default/grub"
    grub.write_text(grub.read_text().replace('"loglevel=3 quiet"', '"quiet iommu=pt"'))
    plan = persist.plan(["0a:00.0"], root=root, force=True)
    assert "/etc/default/grub" not in {c.path for c in plan.changes}


def test_unknown_distribution_says_what_to_do(tmp_path: Path) -> None:
    root = host_with_etc("arch", tmp_path)
    (root / "etc/os-release").write_text('ID=gentoo\nPRETTY_NAME="Gentoo Linux"\n')
    with pytest.raises(persist.PersistError, match="--distro"):
        persist.plan(["0a:00.0"], root=root, force=True)
    assert persist.plan(["0a:00.0"], root=root, distro="arch", force=True).distro == "arch"


def test_cli_diff_apply_undo(tmp_path: Path) -> None:
    root = host_with_etc("fedora", tmp_path)
    before = tree(root)
    base = ["persist", "00:10.0", "--root", str(root)]
    done = runner.invoke(app, base)
    assert done.exit_code == 0, done.output
    assert "+++ b/etc/dracut.conf.d/pyvfio.conf" in done.stdout
    assert "dracut -f --regenerate-all" in done.stdout
    done = runner.invoke(app, [*base, "--apply", "--json"])
    assert done.exit_code == 0, done.output
    data = json.loads(done.stdout)
    assert data["applied"] and "/etc/default/grub.pyvfio-bak" in data["backups"]
    assert any("--remove-args" in c for c in data["undo_commands"])
    done = runner.invoke(app, ["persist", "--undo", "--root", str(root)])
    assert done.exit_code == 0, done.output
    assert tree(root) == before
    done = runner.invoke(app, ["persist", "00:18.0", "--root", str(root)])
    assert done.exit_code == 2 and "bridge" in done.output


# -- undo refuses what changed since --apply; the record; crashes; fsync --------------

#: (id, what the administrator did after --apply, the file undo must name)
EDITS: list[tuple[str, Callable[[Path], object], str]] = [
    (
        "appended-to-grub",
        lambda root: (root / "etc/default/grub").open("a").write("GRUB_TIMEOUT=1\n"),
        "/etc/default/grub",
    ),
    (
        "edited-the-rule",
        lambda root: (root / "etc/udev/rules.d/50-pyvfio-vfio-pci.rules").write_text("# mine\n"),
        "/etc/udev/rules.d/50-pyvfio-vfio-pci.rules",
    ),
    (
        "deleted-mkinitcpio-conf",
        lambda root: (root / "etc/mkinitcpio.conf").unlink(),
        "/etc/mkinitcpio.conf",
    ),
    (
        "replaced-mkinitcpio-conf-with-the-backup",
        lambda root: (
            shutil.copy(root / "etc/mkinitcpio.conf.pyvfio-bak", root / "etc/mkinitcpio.conf")
            and (root / "etc/mkinitcpio.conf").open("a").write("# and more\n")
        ),
        "/etc/mkinitcpio.conf",
    ),
]


@pytest.mark.parametrize(("case", "edit", "path"), EDITS, ids=[e[0] for e in EDITS])
def test_undo_refuses_a_file_changed_since_apply_and_force_overrides(
    case: str, edit: Callable[[Path], object], path: str, tmp_path: Path
) -> None:
    root = host_with_etc("arch", tmp_path)
    before = tree(root)
    persist.apply(persist.plan(CASES["arch"][1], root=root, force=True), root=root)
    edit(root)
    edited = tree(root)
    with pytest.raises(persist.PersistRefusedError) as caught:
        persist.undo(root=root)
    message = str(caught.value)
    assert path in message and "--force" in message and "nothing was undone" in message
    assert caught.value.paths == (path,)
    assert tree(root) == edited  # every file checked before any was touched
    done = runner.invoke(app, ["persist", "--undo", "--root", str(root)])
    assert done.exit_code == 2
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1
    done = runner.invoke(app, ["persist", "--undo", "--root", str(root), "--json"])
    assert done.exit_code == 2
    assert json.loads(done.stdout)["files"] == [path]
    assert tree(root) == edited
    done = runner.invoke(app, ["persist", "--undo", "--force", "--root", str(root), "--json"])
    assert done.exit_code == 0, done.output
    assert tree(root) == before


def test_a_file_pyvfio_made_and_the_admin_deleted_is_not_in_the_way(tmp_path: Path) -> None:
    root = host_with_etc("debian", tmp_path)
    before = tree(root)
    persist.apply(persist.plan(CASES["debian"][1], root=root), root=root)
    (root / persist.RULE.lstrip("/")).unlink()
    persist.undo(root=root)
    assert tree(root) == before


def test_a_damaged_backup_is_refused_even_with_force(tmp_path: Path) -> None:
    root = host_with_etc("arch", tmp_path)
    persist.apply(persist.plan(CASES["arch"][1], root=root, force=True), root=root)
    (root / "etc/mkinitcpio.conf.pyvfio-bak").write_text("")  # e.g. lost in a crash
    applied = tree(root)
    for force in (False, True):
        with pytest.raises(persist.PersistRefusedError, match=r"mkinitcpio\.conf\.pyvfio-bak"):
            persist.undo(root=root, force=force)
        assert tree(root) == applied


def test_a_backup_in_the_way_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    root = host_with_etc("arch", tmp_path)
    (root / "etc/default/grub.pyvfio-bak").write_text("someone's\n")
    before = tree(root)
    plan = persist.plan(CASES["arch"][1], root=root, force=True)
    with pytest.raises(persist.PersistRefusedError, match=r"grub\.pyvfio-bak exists"):
        persist.apply(plan, root=root)
    assert tree(root) == before


def lab_snapshot_with_etc(where: Path) -> Path:
    """docs/vm.md's recipe on the recorded lab guest (tests/data/snapshots): the snapshot
    unpacked, a Debian /etc copied in with its os-release a file."""
    where.mkdir()
    tarball = DATA.parent / "snapshots" / "lab-main.tar.gz"
    subprocess.run(["tar", "-xzf", str(tarball), "-C", str(where)], check=True)
    shutil.copytree(DATA / "persist" / "debian" / "etc", where / "etc")
    return where


def test_persist_refuses_a_device_the_host_uses_as_bind_does_unless_forced(
    tmp_path: Path,
) -> None:
    """The lab guest's root filesystem is 9p on the virtio device 00:01.0: bind refuses
    it, and so does persist (the next boot would lose its root), with bind's words."""
    root = lab_snapshot_with_etc(tmp_path / "tree")
    virtio = "0000:00:01.0"
    with pytest.raises(DeviceInUseError) as persisting:
        persist.plan([virtio], root=root)
    sysfs = Sysfs(root)
    plan = bind.plan_bind([virtio], sysfs=sysfs)
    with pytest.raises(DeviceInUseError) as binding:
        bind.refuse_in_use(plan.in_use)
    assert str(persisting.value) == str(binding.value)
    assert "9p filesystem" in str(persisting.value) and "--force" in str(persisting.value)
    base = ["persist", virtio, "--root", str(root)]
    done = runner.invoke(app, base)
    assert done.exit_code == 1 and done.stderr.count("\n") == 1, done.output
    assert "is in use" in done.stderr and not done.stdout
    done = runner.invoke(app, [*base, "--force"])
    assert done.exit_code == 0, done.output
    assert f'KERNEL=="{virtio}", ATTR{{driver_override}}="vfio-pci"' in done.stdout
    assert "softdep virtio_pci pre: vfio-pci" in done.stdout


def test_persist_refuses_a_group_left_not_viable_unless_forced(tmp_path: Path) -> None:
    """The q35 chipset's SATA (00:1f.2) shares group 9 with the LPC bridge and the SMBus
    controller: vfio-pci alone on it leaves the group unusable after the reboot."""
    root = lab_snapshot_with_etc(tmp_path / "tree")
    sata = "0000:00:1f.2"
    with pytest.raises(persist.PersistRefusedError) as caught:
        persist.plan([sata], root=root)
    message = str(caught.value)
    blockers = bind.plan_bind([sata], sysfs=Sysfs(root)).blockers  # bind's own rule
    group, first, driver = blockers[0]
    assert f"group {group} would not be viable after the reboot: {first} stays on" in message
    assert f"{first} stays on {driver} (and {len(blockers) - 1} more)" in message
    also = " ".join(b[1] for b in blockers)
    assert f"name them too (pyvfio persist {sata} {also})" in message and "--force" in message
    assert "\n" not in message
    done = runner.invoke(app, ["persist", sata, "--root", str(root), "--json"])
    assert done.exit_code == 2 and "would not be viable" in json.loads(done.stdout)["refused"]
    assert not (root / "etc/pyvfio").exists()
    done = runner.invoke(app, ["persist", sata, "--root", str(root), "--force", "--apply"])
    assert done.exit_code == 0, done.output
    assert "0000:00:1f.2" in (root / persist.RULE.lstrip("/")).read_text()


def test_persist_of_a_whole_group_and_of_a_free_device_passes_the_checks(tmp_path: Path) -> None:
    root = lab_snapshot_with_etc(tmp_path / "tree")
    chipset = ["0000:00:1f.0", "0000:00:1f.2", "0000:00:1f.3"]
    assert persist.plan(chipset, root=root).notes == ()
    assert persist.plan(["0000:00:11.0"], root=root).changes  # the lab's nvme, unused


def test_without_iommu_groups_persist_says_viability_waits_for_the_reboot(
    tmp_path: Path,
) -> None:
    """The IOMMU off (no groups yet): persist turns it on, so it cannot refuse for a
    group it cannot see; a note says where to check after the reboot."""
    root = host_with_etc("fedora", tmp_path)
    for link in root.glob("sys/devices/**/iommu_group"):
        link.unlink()
    plan = persist.plan(["00:10.0"], root=root)
    assert any("pyvfio doctor 0000:00:10.0" in n for n in plan.notes), plan.notes


def test_force_without_undo_passes_the_device_checks_only(tmp_path: Path) -> None:
    """--force alone was refused ('goes with --undo') before it passed bind's checks."""
    root = host_with_etc("arch", tmp_path)
    done = runner.invoke(app, ["persist", "0a:00.0", "--root", str(root)])
    assert done.exit_code == 1 and "framebuffer" in done.stderr, done.output
    done = runner.invoke(app, ["persist", "0a:00.0", "0a:00.1", "--force", "--root", str(root)])
    assert done.exit_code == 0, done.output
    assert "softdep nouveau pre: vfio-pci" in done.stdout


def test_a_record_of_an_older_pyvfio_needs_force(tmp_path: Path) -> None:
    """Version 1 records held no hashes: undo cannot tell a change, so it asks."""
    root = host_with_etc("arch", tmp_path)
    before = tree(root)
    conf = root / "etc/mkinitcpio.conf"
    shutil.copy2(conf, root / "etc/mkinitcpio.conf.pyvfio-bak")
    conf.write_text("MODULES=(vfio_pci vfio vfio_iommu_type1)\n")
    rule = root / persist.RULE.lstrip("/")
    rule.parent.mkdir(parents=True)
    rule.write_text("# rule\n")
    (root / "etc/pyvfio").mkdir()
    record = {
        "backups": {"/etc/mkinitcpio.conf": "/etc/mkinitcpio.conf.pyvfio-bak"},
        "created": [persist.RULE],
        "dirs": ["/etc/pyvfio", "/etc/udev", "/etc/udev/rules.d"],
    }
    (root / "etc/pyvfio/persist-undo.json").write_text(json.dumps(record))
    applied = tree(root)
    with pytest.raises(persist.PersistRefusedError, match=r"older pyvfio.*--force"):
        persist.undo(root=root)
    assert tree(root) == applied
    persist.undo(root=root, force=True)
    assert tree(root) == before


class Crash(BaseException):
    """The process dies here: nothing after it runs (not even except/finally of OSError)."""


@pytest.mark.parametrize("distro", sorted(CASES))
@pytest.mark.parametrize("where", ["before-fsync", "before-rename"])
def test_a_crash_anywhere_in_apply_is_undone_byte_for_byte(
    distro: str, where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Crash apply before its N-th fsync (N = 1, 2, ...: a temporary file written but not
    synced, a file synced but not renamed, renamed but its folder not synced) or before
    its N-th rename, until one runs through; after each, undo puts back the tree."""
    root = host_with_etc(distro, tmp_path / "host")
    pristine = tmp_path / "etc"
    shutil.copytree(root / "etc", pristine, symlinks=True)
    before = tree(root)
    plan = persist.plan(CASES[distro][1], root=root, force=distro in FORCED)
    reals: dict[str, Callable[..., None]] = {"before-fsync": os.fsync, "before-rename": os.replace}
    real = reals[where]
    name = {"before-fsync": "fsync", "before-rename": "replace"}[where]
    crashed_after_record = 0
    for n in range(1, 200):
        shutil.rmtree(root / "etc")
        shutil.copytree(pristine, root / "etc", symlinks=True)
        calls = 0

        def dying(*args: Any, _n: int = n) -> Any:
            nonlocal calls
            calls += 1
            if calls == _n:
                raise Crash
            return real(*args)

        monkeypatch.setattr(f"pyvfio.vm.persist.os.{name}", dying)
        try:
            persist.apply(plan, root=root)
        except Crash:
            pass
        else:
            monkeypatch.undo()
            break
        finally:
            monkeypatch.undo()
        if (root / persist.MANIFEST.lstrip("/")).exists():
            crashed_after_record += 1
            persist.undo(root=root)
            assert tree(root) == before, f"crash at {where} #{n}"
        else:
            # The record is written before anything else: no file of the user's changed.
            # At most /etc/pyvfio with a temporary file in it is there.
            after = {k: v for k, v in tree(root).items() if not k.startswith("etc/pyvfio/")}
            after["etc/"] = [d for d in after["etc/"] if d != "pyvfio"]  # type: ignore[attr-defined]
            assert after == before
            with pytest.raises(persist.PersistError, match="nothing to undo"):
                persist.undo(root=root)
    else:
        pytest.fail("apply never ran through")
    assert crashed_after_record > len(plan.changes)


def test_every_file_backup_record_and_folder_is_fsynced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = host_with_etc("arch", tmp_path)
    synced: list[str] = []
    real = os.fsync

    def recording(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr("pyvfio.vm.persist.os.fsync", recording)
    plan = persist.plan(CASES["arch"][1], root=root, force=True)
    persist.apply(plan, root=root)
    base = str(root.resolve())
    for path in [persist.MANIFEST, *(c.path for c in plan.changes)]:
        target = Path(base + path)
        assert str(target.with_name(f".{target.name}.pyvfio-tmp")) in synced, path
        assert str(target.parent) in synced, path
    for change in plan.changes:
        if change.before is not None:
            backup = Path(base + change.path + persist.BACKUP_SUFFIX)
            assert str(backup.with_name(f".{backup.name}.pyvfio-tmp")) in synced
    for folder in ("/etc/udev/rules.d", "/etc/udev", "/etc/pyvfio"):  # made, then synced
        assert str(Path(base + folder).parent) in synced
    synced.clear()
    persist.undo(root=root)
    for change in plan.changes:
        assert str(Path(base + change.path).parent) in synced
    assert base + "/etc" in synced  # the record's folder removed
