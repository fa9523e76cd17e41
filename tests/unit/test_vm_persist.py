"""pyvfio persist on fixture /etc trees: golden diffs, and apply-then-undo byte for byte.

Each tree is a hand-made host (sysfs, procfs) with a distribution's /etc copied in from
tests/data/vm/persist/DISTRO (``PYVFIO_UPDATE_GOLDEN=1`` rewrites the golden diffs).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pyvfio.cli import app
from pyvfio.host import synthetic
from pyvfio.vm import persist

DATA = Path(__file__).parent.parent / "data" / "vm"
runner = CliRunner()

#: distro -> (the host it runs on, the devices made persistent)
CASES: dict[str, tuple[Callable[[Path], object], list[str]]] = {
    "debian": (synthetic.intel_server, ["03:00.0", "04:00.0"]),
    "fedora": (synthetic.q35_lab, ["00:10.0", "00:11.0"]),
    "arch": (synthetic.amd_desktop, ["0a:00.0", "0a:00.1"]),
}


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
    plan = persist.plan(CASES[distro][1], root=root)
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
    plan = persist.plan(CASES[distro][1], root=root)
    applied = persist.apply(plan, root=root)
    for change in plan.changes:
        assert (root / change.path.lstrip("/")).read_text() == change.after
    assert set(applied.written) == {c.path for c in plan.changes}
    assert tree(root) != before
    with pytest.raises(persist.PersistError, match="--undo"):
        persist.plan(CASES[distro][1], root=root)
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
    plan = persist.plan(["0a:00.0"], root=root)
    assert "/etc/default/grub" not in {c.path for c in plan.changes}


def test_unknown_distribution_says_what_to_do(tmp_path: Path) -> None:
    root = host_with_etc("arch", tmp_path)
    (root / "etc/os-release").write_text('ID=gentoo\nPRETTY_NAME="Gentoo Linux"\n')
    with pytest.raises(persist.PersistError, match="--distro"):
        persist.plan(["0a:00.0"], root=root)
    assert persist.plan(["0a:00.0"], root=root, distro="arch").distro == "arch"


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
