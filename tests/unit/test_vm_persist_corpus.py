"""pyvfio persist against a corpus of boot configurations as distributions ship them and
as users change them (tests/data/vm/persist/corpus/NAME: etc/, boot/, usr/ trees).

For every tree: plan, apply, then the files as their tools read them. The shell-sourced
ones are sourced by bash, before and after, in the order the tool sources them: every
value there before is still there, plus exactly what pyvfio adds, and no other variable
changed; each file pyvfio wrote passes ``bash -n``. Files pyvfio does not own and should
not touch (boot entries, kernelstub's configuration, other snippets) are untouched. Then
undo: the whole tree byte for byte. The second half is the refusals: files pyvfio cannot
read exactly, or that switch the IOMMU off, are refused with one line naming the file,
exit status 2, nothing written.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pyvfio import testing as synthetic
from pyvfio.cli import app
from pyvfio.host.bind import VFIO_MODULES
from pyvfio.vm import persist

CORPUS = Path(__file__).parent.parent / "data" / "vm" / "persist" / "corpus"
BASH = shutil.which("bash")
runner = CliRunner()

INTEL = (synthetic.intel_server, ("03:00.0", "04:00.0"))
AMD = (synthetic.amd_desktop, ("0a:00.0", "0a:00.1"))
LAB = (synthetic.q35_lab, ("00:10.0", "00:11.0"))  # no cpuinfo: the Intel options
#: The corpus is about boot files: bind's device checks (AMD's GPU drives the console,
#: which persist refuses without it) are test_vm_persist.py's.
FORCE = True
BOTH = ("intel_iommu=on", "iommu=pt")
PT = ("iommu=pt",)
DEBIAN_FILES = {persist.RULE, persist.SOFTDEP, "/etc/initramfs-tools/hooks/pyvfio"}
MODULES_FILE = "/etc/initramfs-tools/modules"


@dataclass(frozen=True)
class Case:
    """One tree: the host it sits on, what plan must change and add, and say."""

    name: str
    host: tuple[Callable[[Path], object], tuple[str, ...]]
    files: frozenset[str]
    #: the options added to the command line, in the file(s) pyvfio edits
    added: tuple[str, ...] = ()
    commands: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    absent_notes: tuple[str, ...] = ()


def files(*paths: str) -> frozenset[str]:
    return frozenset(paths)


CASES = [
    # Debian 12: a comment after the value, single quotes with double quotes inside,
    # kdump's grub.d snippet extending _DEFAULT, dm-crypt and i915 with an argument.
    Case(
        "debian-desktop",
        INTEL,
        files(*DEBIAN_FILES, MODULES_FILE, persist.GRUB_SNIPPET),
        BOTH,
        ("update-initramfs -u -k all", "update-grub"),
    ),
    # Ubuntu cloud image: 50-cloudimg-settings.cfg replaces _DEFAULT after
    # /etc/default/grub; intel_iommu=on,igfx_off is in GRUB_CMDLINE_LINUX: only iommu=pt.
    Case(
        "ubuntu-cloud",
        INTEL,
        files(*DEBIAN_FILES, MODULES_FILE, persist.GRUB_SNIPPET),
        PT,
        ("update-grub",),
    ),
    # Set up by a guide already: intel_iommu=on,igfx_off iommu=pt vfio-pci.ids= (with a
    # comment after), vfio-pci with ids= in the modules file: neither is touched.
    Case("ubuntu-vfio-done", INTEL, files(*DEBIAN_FILES), (), ("update-initramfs -u -k all",)),
    # Pop!_OS: kernelstub writes the systemd-boot entry; its JSON is read, never written.
    Case(
        "popos",
        INTEL,
        files(*DEBIAN_FILES, MODULES_FILE),
        (),
        ("kernelstub --add-options 'intel_iommu=on iommu=pt'",),
        absent_notes=("Pop_OS-current.conf",),
    ),
    # Fedora 40: BLS entries (grubby), user dracut files before and after pyvfio's.
    Case(
        "fedora-bls",
        LAB,
        files(persist.RULE, persist.SOFTDEP, persist.DRACUT_CONF, persist.GRUB),
        BOTH,
        (
            "dracut -f --regenerate-all",
            "grubby --update-kernel=ALL --args='intel_iommu=on iommu=pt'",
        ),
    ),
    # An entry with intel_iommu=igfx_off: grubby --args=intel_iommu=on would replace it,
    # so grubby gets iommu=pt only and the entry a note; the files get their own words.
    Case(
        "fedora-igfx",
        LAB,
        files(
            persist.RULE,
            persist.SOFTDEP,
            persist.DRACUT_CONF,
            persist.GRUB,
            persist.KERNEL_CMDLINE,
        ),
        BOTH,
        ("grubby --update-kernel=ALL --args=iommu=pt",),
        ("has intel_iommu=igfx_off: add intel_iommu=on to its options line by hand",),
    ),
    # RHEL 8: options $kernelopts (grubenv) $tuned_params; iommu=pt there already.
    Case(
        "rhel8",
        LAB,
        files(persist.RULE, persist.SOFTDEP, persist.DRACUT_CONF, persist.GRUB),
        ("intel_iommu=on",),
        ("grubby --update-kernel=ALL --args=intel_iommu=on",),
    ),
    # Arch with LUKS: MODULES over several lines with comments and both quotes, FILES
    # with the keyfile and a comment after, HOOKS over two lines, resume= and a comment
    # after _DEFAULT, cryptdevice= in GRUB_CMDLINE_LINUX.
    Case(
        "arch-luks",
        AMD,
        files(persist.RULE, persist.SOFTDEP, persist.MKINITCPIO, persist.GRUB),
        PT,
        ("mkinitcpio -P", "grub-mkconfig -o /boot/grub/grub.cfg"),
    ),
    # Arch with UKIs: a mkinitcpio.conf.d drop-in (MODULES+=, HOOKS replaced),
    # /etc/kernel/cmdline, a hand-written loader entry (left alone: the cmdline rules).
    Case(
        "arch-uki",
        AMD,
        files(persist.RULE, persist.SOFTDEP, persist.MKINITCPIO, persist.KERNEL_CMDLINE),
        PT,
        ("mkinitcpio -P",),
        absent_notes=("arch.conf",),
    ),
    # systemd-boot entries only: a note per entry lacking the options, no edit in /boot.
    Case(
        "arch-sdboot",
        AMD,
        files(persist.RULE, persist.SOFTDEP, persist.MKINITCPIO),
        (),
        ("mkinitcpio -P",),
        ("add iommu=pt to the options line of /boot/loader/entries/arch.conf",),
        ("arch-lts.conf",),
    ),
    # mkinitcpio's old string syntax (vfio-pci already listed, FILES=""); grub
    # has amd_iommu=on iommu=pt in single quotes: unchanged.
    Case("arch-legacy", AMD, files(persist.RULE, persist.SOFTDEP, persist.MKINITCPIO)),
]


def make(name: str, host: Callable[[Path], object], where: Path) -> Path:
    host(where)
    shutil.copytree(CORPUS / name, where, dirs_exist_ok=True)
    return where


def snapshot(root: Path) -> dict[str, object]:
    """Every file and folder below etc/, boot/, usr/: bytes and mode, the symlinks."""
    out: dict[str, object] = {}
    for top in ("etc", "boot", "usr"):
        for dirpath, dirnames, filenames in os.walk(root / top):
            rel = os.path.relpath(dirpath, root)
            out[rel + "/"] = (sorted(dirnames), os.stat(dirpath).st_mode)
            for name in filenames:
                path = Path(dirpath) / name
                if path.is_symlink():
                    out[f"{rel}/{name}"] = ("->", os.readlink(path))
                else:
                    out[f"{rel}/{name}"] = (path.read_bytes(), path.stat().st_mode)
    return out


# -- bash --------------------------------------------------------------------------

_SHOW = r"""
__show() {
    local -n __x=$1
    if [[ ${__x@a} == *a* ]]; then printf '%s\0' "$1" a "${#__x[@]}" "${__x[@]}"
    elif [[ -v $1 ]]; then printf '%s\0' "$1" s 1 "$__x"
    else printf '%s\0' "$1" u 0; fi
}
"""


@dataclass
class Sourced:
    """What bash has after sourcing files: the variables asked for (arrays as lists,
    strings as one-item lists), and ``declare -p`` of everything else they set."""

    values: dict[str, tuple[str, list[str]]] = field(default_factory=dict)
    others: dict[str, str] = field(default_factory=dict)


def source(paths: Sequence[Path], names: Sequence[str]) -> Sourced:
    """Source ``paths`` in order with ``set -e`` (commands the files run are stubbed)."""
    assert BASH is not None
    script = (
        "set -e\nlsb_release() { echo Distro; }\nsed() { echo Distro; }\n"
        + _SHOW
        + 'for __f in "$@"; do . "$__f"; done\n'
        + f"for __n in {' '.join(names)}; do __show $__n; done\n"
        + "printf '%s\\0' __END__\ndeclare -p\n"
    )
    done = subprocess.run(
        [BASH, "--norc", "--noprofile", "-c", script, "bash", *map(str, paths)],
        capture_output=True,
        env={"PATH": os.environ["PATH"], "LC_ALL": "C"},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr.decode()
    head, _, tail = done.stdout.partition(b"__END__\0")
    fields = [f.decode() for f in head.split(b"\0")][:-1]
    out = Sourced()
    i = 0
    while i < len(fields):
        name, kind, count = fields[i], fields[i + 1], int(fields[i + 2])
        out.values[name] = (kind, fields[i + 3 : i + 3 + count])
        i += 3 + count
    baseline = _baseline()
    for line in tail.decode().splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[0] == "declare":
            name = parts[2].split("=", 1)[0]
            if name not in baseline and not name.startswith("__") and name not in names:
                out.others[name] = line
    return out


_BASELINE: set[str] = set()


def _baseline() -> set[str]:
    """The variables bash has with nothing sourced."""
    if not _BASELINE:
        assert BASH is not None
        done = subprocess.run(
            [BASH, "--norc", "--noprofile", "-c", "declare -p"],
            capture_output=True,
            text=True,
            env={"PATH": os.environ["PATH"], "LC_ALL": "C"},
            timeout=60,
        )
        for line in done.stdout.splitlines():
            parts = line.split(" ", 2)
            if len(parts) == 3 and parts[0] == "declare":
                _BASELINE.add(parts[2].split("=", 1)[0])
    return _BASELINE


def syntax_ok(path: Path) -> None:
    assert BASH is not None
    done = subprocess.run([BASH, "-n", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"bash -n {path}: {done.stderr}"


def words(value: tuple[str, list[str]]) -> list[str]:
    """An array's elements; a string split as mkinitcpio's arrayize_config and dracut do."""
    kind, items = value
    return items if kind == "a" else (items[0].split() if items else [])


# -- the families --------------------------------------------------------------------


def grub_chain(root: Path, distro: str) -> list[Path]:
    """/etc/default/grub, then (Debian's grub-mkconfig) grub.d/*.cfg in name order."""
    chain = [root / "etc/default/grub"]
    if distro == "debian":
        chain += sorted((root / "etc/default/grub.d").glob("*.cfg"))
    return [p for p in chain if p.exists()]


def check_grub(before: Path, after: Path, distro: str, added: tuple[str, ...]) -> None:
    keys = list(persist.GRUB_KEYS)
    old = source(grub_chain(before, distro), keys)
    new = source(grub_chain(after, distro), keys)
    edited = "GRUB_CMDLINE_LINUX" if distro == "fedora" else "GRUB_CMDLINE_LINUX_DEFAULT"
    for key in keys:
        was = old.values[key][1][0] if old.values[key][1] else ""
        now = new.values[key][1][0] if new.values[key][1] else ""
        if key == edited and added:
            # Every option there before, in order, untouched; then exactly pyvfio's.
            assert now == f"{was} {' '.join(added)}", (key, was, now)
        else:
            assert now == was, (key, was, now)
    assert new.others == old.others


def check_mkinitcpio(before: Path, after: Path) -> None:
    def chain(root: Path) -> list[Path]:
        return [root / "etc/mkinitcpio.conf", *sorted(root.glob("etc/mkinitcpio.conf.d/*.conf"))]

    names = ["MODULES", "FILES", "HOOKS"]
    old, new = source(chain(before), names), source(chain(after), names)
    was = words(old.values["MODULES"])
    have = {m.replace("-", "_") for m in was}
    missing = [m for m in VFIO_MODULES if m not in have]
    assert words(new.values["MODULES"]) == missing + was
    assert words(new.values["FILES"]) == [*words(old.values["FILES"]), persist.RULE]
    assert words(new.values["HOOKS"]) == words(old.values["HOOKS"])
    assert new.others == old.others  # BINARIES, COMPRESSION, COMPRESSION_OPTIONS...


def check_dracut(before: Path, after: Path) -> None:
    def chain(root: Path) -> list[Path]:
        by_name = {}
        for folder in ("usr/lib/dracut/dracut.conf.d", "etc/dracut.conf.d"):
            for path in (root / folder).glob("*.conf"):
                by_name[path.name] = path
        return [by_name[n] for n in sorted(by_name)]

    names = ["force_drivers", "install_items", "add_drivers", "omit_drivers"]
    old, new = source(chain(before), names), source(chain(after), names)
    ours = Counter(VFIO_MODULES)
    assert (
        Counter(words(new.values["force_drivers"]))
        == Counter(words(old.values["force_drivers"])) + ours
    )
    assert set(words(old.values["install_items"])) < set(words(new.values["install_items"]))
    assert persist.RULE in words(new.values["install_items"])
    for name in ("add_drivers", "omit_drivers"):
        assert words(new.values[name]) == words(old.values[name])
    assert new.others == old.others


def check_kernel_cmdline(before: Path, after: Path, added: tuple[str, ...]) -> None:
    was = (before / "etc/kernel/cmdline").read_text()
    now = (after / "etc/kernel/cmdline").read_text()
    assert now.split() == was.split() + list(added)
    assert now.startswith(was.rstrip("\n"))


@pytest.mark.needs_tool("bash")  # to source the files
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_corpus_apply_keeps_every_value_and_undo_restores(case: Case, tmp_path: Path) -> None:
    host, devices = case.host
    root = make(case.name, host, tmp_path / "host")
    pristine = make(case.name, host, tmp_path / "pristine")
    before = snapshot(root)
    plan = persist.plan(list(devices), root=root, force=FORCE)
    assert {c.path for c in plan.changes} == case.files
    for command in case.commands:
        assert command in plan.commands, plan.commands
    for note in case.notes:
        assert any(note in n for n in plan.notes), plan.notes
    for text in case.absent_notes:
        assert not any(text in n for n in plan.notes), plan.notes
    for change in plan.changes:
        if change.before is not None:
            # A user's file only grows at its end: nothing of it is rewritten.
            kept = (
                change.before.rstrip("\n")
                if change.path == persist.KERNEL_CMDLINE
                else change.before
            )
            assert change.after.startswith(kept), change.path
    persist.apply(plan, root=root)

    shell = (
        persist.GRUB,
        persist.GRUB_SNIPPET,
        persist.MKINITCPIO,
        persist.DRACUT_CONF,
        "/etc/initramfs-tools/hooks/pyvfio",
    )
    for change in plan.changes:
        if change.path in shell:
            syntax_ok(root / change.path.lstrip("/"))
    if plan.distro == "debian" and (root / "etc/default/grub").exists():
        check_grub(pristine, root, "debian", case.added)
    elif persist.GRUB in case.files:
        check_grub(pristine, root, plan.distro, case.added)
    elif (root / "etc/default/grub").exists():
        check_grub(pristine, root, plan.distro, ())
    if persist.MKINITCPIO in case.files:
        check_mkinitcpio(pristine, root)
    if persist.DRACUT_CONF in case.files:
        check_dracut(pristine, root)
    if persist.KERNEL_CMDLINE in case.files:
        check_kernel_cmdline(pristine, root, case.added)
    # What pyvfio does not write is as it was: boot entries, kernelstub, other snippets.
    after = snapshot(root)
    touched = {c.path.lstrip("/") for c in plan.changes} | {
        c.path.lstrip("/") + persist.BACKUP_SUFFIX for c in plan.changes
    }
    for key, value in before.items():
        if key not in touched and not key.endswith("/"):
            assert after[key] == value, key

    persist.undo(root=root)
    assert snapshot(root) == before


# -- refusals ------------------------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    """A tree of the corpus with ``edits`` (path -> text; ``->target`` makes a symlink):
    plan must refuse, naming ``path``, with ``match`` in the message."""

    name: str
    base: str
    host: tuple[Callable[[Path], object], tuple[str, ...]]
    edits: dict[str, str]
    path: str
    match: str


GRUB_ARCH = """GRUB_DEFAULT=0
GRUB_TIMEOUT=5
GRUB_DISTRIBUTOR="Arch"
{line}
GRUB_CMDLINE_LINUX=""
"""

REFUSALS = [
    Refusal(
        "grub-command-substitution",
        "arch-luks",
        AMD,
        {
            "/etc/default/grub": GRUB_ARCH.format(
                line='GRUB_CMDLINE_LINUX_DEFAULT="quiet $(cat /etc/kernel-extra)"'
            )
        },
        "/etc/default/grub",
        "/etc/default/grub line 4: the value of GRUB_CMDLINE_LINUX_DEFAULT holds something "
        "only running the file would tell ($(cat /etc/kernel-extra))",
    ),
    Refusal(
        "grub-unknown-variable",
        "arch-luks",
        AMD,
        {"/etc/default/grub": GRUB_ARCH.format(line='GRUB_CMDLINE_LINUX_DEFAULT="$EXTRA quiet"')},
        "/etc/default/grub",
        "holds something only running the file would tell (${EXTRA})",
    ),
    Refusal(
        "grub-quote-not-closed",
        "arch-luks",
        AMD,
        {"/etc/default/grub": GRUB_ARCH.format(line='GRUB_CMDLINE_LINUX_DEFAULT="loglevel=3')},
        "/etc/default/grub",
        # The quote runs on to the next line's first ", as in the shell; the one after
        # that opens a quote no line closes.
        'line 5: the " opened on line 5 is not closed',
    ),
    Refusal(
        "grub-ends-in-continuation",
        "arch-luks",
        AMD,
        {"/etc/default/grub": 'GRUB_CMDLINE_LINUX_DEFAULT="quiet" \\\n'},
        "/etc/default/grub",
        "the file ends in a line continuation",
    ),
    Refusal(
        "grub-set-in-an-if",
        "debian-desktop",
        INTEL,
        {
            "/etc/default/grub.d/vfio.cfg": (
                "if [ -e /etc/vfio-host ]; then\n"
                '    GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT iommu=pt"\n'
                "fi\n"
            )
        },
        "/etc/default/grub.d/vfio.cfg",
        "/etc/default/grub.d/vfio.cfg line 2: GRUB_CMDLINE_LINUX_DEFAULT is set inside if",
    ),
    Refusal(
        "grub-set-after-and",
        "arch-luks",
        AMD,
        {
            "/etc/default/grub": GRUB_ARCH.format(
                line='[ -f /etc/vfio ] && GRUB_CMDLINE_LINUX_DEFAULT="quiet iommu=pt"'
            )
        },
        "/etc/default/grub",
        "after && or ||",
    ),
    Refusal(
        "grub-sources-another-file",
        "arch-luks",
        AMD,
        {"/etc/default/grub": GRUB_ARCH.format(line=". /etc/default/grub.local")},
        "/etc/default/grub",
        "'.' runs other code",
    ),
    Refusal(
        "grub-intel-iommu-off",
        "debian-desktop",
        INTEL,
        {"/etc/default/grub": 'GRUB_CMDLINE_LINUX_DEFAULT="quiet intel_iommu=off"\n'},
        "/etc/default/grub",
        "has intel_iommu=off, which keeps the IOMMU off",
    ),
    Refusal(
        "grub-amd-iommu-off",
        "arch-luks",
        AMD,
        {"/etc/default/grub": GRUB_ARCH.format(line="GRUB_CMDLINE_LINUX_DEFAULT='amd_iommu=off'")},
        "/etc/default/grub",
        "has amd_iommu=off",
    ),
    Refusal(
        "grub-snippet-replaces-after-pyvfio",
        "ubuntu-cloud",
        INTEL,
        {"/etc/default/grub.d/zzz-local.cfg": 'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\n'},
        "/etc/default/grub.d/zzz-local.cfg",
        "/etc/default/grub.d/zzz-local.cfg line 1 sets GRUB_CMDLINE_LINUX_DEFAULT after "
        "/etc/default/grub.d/zz-pyvfio.cfg",
    ),
    Refusal(
        "grub-symlink",
        "arch-luks",
        AMD,
        {"/etc/default/grub.real": GRUB_ARCH.format(line=""), "/etc/default/grub": "->grub.real"},
        "/etc/default/grub",
        "/etc/default/grub is a symbolic link (to grub.real)",
    ),
    Refusal(
        "mkinitcpio-array-not-closed",
        "arch-luks",
        AMD,
        {"/etc/mkinitcpio.conf": "HOOKS=(base udev)\nMODULES=(\n    btrfs\n    amdgpu\n"},
        "/etc/mkinitcpio.conf",
        "line 2: the array opened on line 2 is not closed",
    ),
    Refusal(
        "mkinitcpio-array-runs-into-the-next",
        "arch-luks",
        AMD,
        {"/etc/mkinitcpio.conf": "MODULES=(\n    btrfs\n    amdgpu\nHOOKS=(base udev)\n"},
        "/etc/mkinitcpio.conf",
        "line 4: '(' inside the array opened on line 1",
    ),
    Refusal(
        "mkinitcpio-dropin-replaces-modules",
        "arch-uki",
        AMD,
        {"/etc/mkinitcpio.conf.d/20-gpu.conf": "MODULES=(amdgpu)\n"},
        "/etc/mkinitcpio.conf.d/20-gpu.conf",
        "/etc/mkinitcpio.conf.d/20-gpu.conf line 1 sets MODULES after /etc/mkinitcpio.conf",
    ),
    Refusal(
        "mkinitcpio-conditional-files",
        "arch-luks",
        AMD,
        {
            "/etc/mkinitcpio.conf": (
                "MODULES=(btrfs)\n[[ -e /crypto_keyfile.bin ]] && FILES=(/crypto_keyfile.bin)\n"
            )
        },
        "/etc/mkinitcpio.conf",
        "line 2: FILES is set inside if/case/a loop/a function, after && or ||",
    ),
    Refusal(
        "mkinitcpio-unset",
        "arch-luks",
        AMD,
        {"/etc/mkinitcpio.conf": "MODULES=(btrfs)\nunset FILES\n"},
        "/etc/mkinitcpio.conf",
        "line 2: FILES is changed by a command (unset)",
    ),
    Refusal(
        "kernel-cmdline-iommu-off",
        "arch-uki",
        AMD,
        {"/etc/kernel/cmdline": "root=/dev/mapper/root rw iommu=off\n"},
        "/etc/kernel/cmdline",
        "/etc/kernel/cmdline has iommu=off",
    ),
    Refusal(
        "bls-entry-intel-iommu-off",
        "fedora-bls",
        LAB,
        {
            "/boot/loader/entries/3f9a1c0e8b7d4e2f9a6c5b4d3e2f1a0b-0-rescue.conf": (
                "title rescue\nlinux /vmlinuz-0-rescue\noptions root=UUID=8d2c ro intel_iommu=off\n"
            )
        },
        "/boot/loader/entries/3f9a1c0e8b7d4e2f9a6c5b4d3e2f1a0b-0-rescue.conf",
        "has intel_iommu=off",
    ),
    Refusal(
        "dracut-file-after-pyvfio-replaces",
        "fedora-bls",
        LAB,
        {"/etc/dracut.conf.d/zz-local.conf": 'force_drivers="i915"\n'},
        "/etc/dracut.conf.d/zz-local.conf",
        "sets force_drivers= after /etc/dracut.conf.d/pyvfio.conf",
    ),
    Refusal(
        "kernelstub-not-json",
        "popos",
        INTEL,
        {"/etc/kernelstub/configuration": '{"user": {"kernel_options": ["quiet",]}}\n'},
        "/etc/kernelstub/configuration",
        "cannot read /etc/kernelstub/configuration",
    ),
    Refusal(
        "kernelstub-intel-iommu-off",
        "popos",
        INTEL,
        {"/etc/kernelstub/configuration": '{"user": {"kernel_options": ["intel_iommu=off"]}}'},
        "/etc/kernelstub/configuration",
        "kernelstub's options (/etc/kernelstub/configuration) has intel_iommu=off",
    ),
]


def make_refusal(case: Refusal, where: Path) -> Path:
    root = make(case.base, case.host[0], where)
    for path, text in case.edits.items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
        if text.startswith("->"):
            target.symlink_to(text[2:])
        else:
            target.write_text(text)
    return root


@pytest.mark.parametrize("case", REFUSALS, ids=lambda c: c.name)
def test_refused_with_the_file_named_and_nothing_written(case: Refusal, tmp_path: Path) -> None:
    root = make_refusal(case, tmp_path)
    before = snapshot(root)
    with pytest.raises(persist.PersistRefusedError) as caught:
        persist.plan(list(case.host[1]), root=root, force=FORCE)
    assert case.match in str(caught.value)
    assert case.path in caught.value.paths
    assert "\n" not in str(caught.value)
    args = ["persist", *case.host[1], "--root", str(root), "--apply", "--force"]
    done = runner.invoke(app, args)
    assert done.exit_code == 2, done.output
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1
    assert case.match in " ".join(done.stderr.split())
    done = runner.invoke(app, [*args, "--json"])
    assert done.exit_code == 2
    data = json.loads(done.stdout)
    assert case.match in data["refused"] and case.path in data["files"]
    assert snapshot(root) == before
