"""``pyvfio persist``: make the vfio-pci binding of devices survive a reboot.

What it writes, for the distribution it finds in ``/etc/os-release``:

* a udev rule setting each device's ``driver_override`` to vfio-pci when the device is
  added (by address, like ``pyvfio bind``: an identical card elsewhere is untouched,
  unlike ``vfio-pci ids=``). udev writes ATTR{} while it processes the rules and runs
  the module load (80-drivers.rules' RUN) only after, so the override comes first;
* ``softdep DRIVER pre: vfio-pci`` in modprobe.d, so vfio-pci is loaded before the host
  driver that would otherwise take the device;
* the initramfs's module list and the rule inside it, since a host driver loaded from
  the initramfs binds before the root filesystem's udev rules exist:
  initramfs-tools (Debian, Ubuntu), dracut (Fedora, RHEL), mkinitcpio (Arch);
* the IOMMU options missing from the kernel command line (:mod:`pyvfio.host.kcmdline`).

It never rewrites what it does not own. Its own files are whole files; in a user's file
it only appends: to a shell-sourced file (``mkinitcpio.conf``, ``/etc/default/grub``) a
marked line that *extends* the variable (``MODULES=(vfio_pci ... "${MODULES[@]}")``,
``GRUB_CMDLINE_LINUX="${GRUB_CMDLINE_LINUX} iommu=pt"``), after reading the file with
:mod:`pyvfio.vm.shellconf` to know what is there and that the appended line is a line;
to ``/etc/kernel/cmdline`` its words at the end. Where it cannot read a file exactly, or
the command line switches the IOMMU off, it refuses (:class:`PersistRefusedError`) and
says what to do by hand. Boot entries other tools own (BLS entries via ``grubby``,
kernelstub's configuration on Pop!_OS) are read, not written: the commands to run are
printed with only the options they lack.

:func:`plan` reads and changes nothing; :func:`apply` records every file's hash before
and after in the undo record, then writes backups and files, each durably (temporary
file, fsync, rename, fsync of the folder); :func:`undo` checks every file against the
record first and refuses (unless ``force``) if one changed since, then puts each back
byte for byte. Regenerating the initramfs and the boot loader configuration is left to
the commands printed.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import os
import shlex
import shutil
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyvfio.errors import DeviceNotFoundError, HostError
from pyvfio.host import bind, inventory, kcmdline, usage
from pyvfio.host.bind import VFIO_MODULES, VFIO_PCI
from pyvfio.host.durable import Replacement, fsync_dir
from pyvfio.host.journal import read_journal
from pyvfio.host.sysfs import PCI_DEVICES, Sysfs
from pyvfio.pci.address import normalize
from pyvfio.vm import shellconf

RULE = "/etc/udev/rules.d/50-pyvfio-vfio-pci.rules"
SOFTDEP = "/etc/modprobe.d/pyvfio-vfio.conf"
MANIFEST = "/etc/pyvfio/persist-undo.json"
MANIFEST_VERSION = 2
BACKUP_SUFFIX = ".pyvfio-bak"
TMP_SUFFIX = ".pyvfio-tmp"
HEADER = "# Written by pyvfio persist; 'pyvfio persist --undo' removes it."
#: Above the lines appended to a user's file.
MARK = "# Added by pyvfio persist; 'pyvfio persist --undo' takes it out."

GRUB = "/etc/default/grub"
#: Debian's grub-mkconfig sources /etc/default/grub.d/*.cfg after /etc/default/grub, in
#: name order: a file of pyvfio's there, sorted last, extends what every other one set
#: (Ubuntu's cloud images set GRUB_CMDLINE_LINUX_DEFAULT in one, replacing the value).
GRUB_SNIPPET = "/etc/default/grub.d/zz-pyvfio.cfg"
GRUB_KEYS = ("GRUB_CMDLINE_LINUX", "GRUB_CMDLINE_LINUX_DEFAULT")
KERNEL_CMDLINE = "/etc/kernel/cmdline"
KERNELSTUB = "/etc/kernelstub/configuration"
#: Where Boot Loader Specification entries live: /boot (grub's blscfg, Fedora), the ESP
#: at /efi or /boot/efi (systemd-boot).
BLS_DIRS = ("/boot/loader/entries", "/efi/loader/entries", "/boot/efi/loader/entries")
GRUBENV = "/boot/grub2/grubenv"
MKINITCPIO = "/etc/mkinitcpio.conf"
MKINITCPIO_DROPINS = "/etc/mkinitcpio.conf.d"
DRACUT_CONF = "/etc/dracut.conf.d/pyvfio.conf"
#: dracut sources these in name order (/etc winning over /usr/lib for one name).
DRACUT_DIRS = ("/usr/lib/dracut/dracut.conf.d", "/etc/dracut.conf.d")

DISTROS = ("debian", "fedora", "arch")
_FAMILY = {
    "debian": "debian",
    "ubuntu": "debian",
    "fedora": "fedora",
    "rhel": "fedora",
    "centos": "fedora",
    "arch": "arch",
}


class PersistError(HostError):
    """The files cannot be planned or written as asked; the message says why."""


class PersistRefusedError(PersistError, ValueError):
    """pyvfio will not touch the files: one cannot be read exactly, the command line
    switches the IOMMU off, or (undo) a file changed since pyvfio wrote it. Nothing was
    changed; the message names the file and what to do. ``paths`` lists the files."""

    def __init__(self, message: str, paths: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.paths = tuple(paths)


@dataclass(frozen=True)
class FileChange:
    """One file ``persist`` writes: its text before (None: a new file) and after."""

    path: str
    before: str | None
    after: str
    mode: int = 0o644

    def diff(self) -> str:
        old = "/dev/null" if self.before is None else f"a{self.path}"
        lines = difflib.unified_diff(
            (self.before or "").splitlines(keepends=True),
            self.after.splitlines(keepends=True),
            old,
            f"b{self.path}",
        )
        return "".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "new": self.before is None, "diff": self.diff()}


@dataclass(frozen=True)
class PersistPlan:
    """Every file to write, and the commands that make the boot use them."""

    distro: str
    changes: tuple[FileChange, ...]
    commands: tuple[str, ...]
    undo_commands: tuple[str, ...]
    notes: tuple[str, ...] = ()

    def diff(self) -> str:
        return "".join(c.diff() for c in self.changes)

    def __str__(self) -> str:
        lines = [self.diff().rstrip("\n"), f"# {self.distro}: after --apply, run:"]
        lines += [f"#   {c}" for c in self.commands]
        lines += [f"# note: {n}" for n in self.notes]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "distro": self.distro,
            "files": [c.to_json() for c in self.changes],
            "commands": list(self.commands),
            "undo_commands": list(self.undo_commands),
            "notes": list(self.notes),
        }


# -- reading -------------------------------------------------------------------------


def _under(root: Path, path: str) -> Path:
    return root / path.lstrip("/")


def _decode(data: bytes) -> str:
    # surrogateescape: bytes that are not UTF-8 come back out as they went in.
    return data.decode("utf-8", "surrogateescape")


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _read(root: Path, path: str) -> str | None:
    """The file's text, byte for byte (no newline translation), or None if absent."""
    try:
        return _decode(_under(root, path).read_bytes())
    except (FileNotFoundError, NotADirectoryError):
        return None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def detect_distro(root: Path) -> str:
    """debian, fedora or arch, from ID and ID_LIKE in /etc/os-release."""
    text = _read(root, "/etc/os-release") or _read(root, "/usr/lib/os-release") or ""
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition("=")
        fields[key.strip()] = value.strip().strip("\"'")
    for name in [fields.get("ID", ""), *fields.get("ID_LIKE", "").split()]:
        if name in _FAMILY:
            return _FAMILY[name]
    shown = fields.get("PRETTY_NAME") or fields.get("ID")
    if shown:
        raise PersistError(
            f"pyvfio persist knows Debian/Ubuntu, Fedora/RHEL and Arch, not {shown}: "
            "--distro debian|fedora|arch picks the closest"
        )
    raise PersistRefusedError(  # the tree lacks a file: bad input (exit 2), as a refusal
        f"{_no_os_release(root)}; or name it: --distro debian|fedora|arch", ["/etc/os-release"]
    )


def _no_os_release(root: Path) -> str:
    """Why ``root`` tells no distribution: most often a copy of /etc whose os-release is
    the usual link to ../usr/lib/os-release, which the copy does not hold."""
    shown = os.path.join(os.fspath(root), "etc/os-release")
    link = _under(root, "/etc/os-release")
    if link.is_symlink():
        return (
            f"{shown} links to {os.readlink(link)}, which {os.fspath(root)} does not hold "
            "(a copy of /etc alone): copy the file itself into the tree, "
            f"e.g. cp --remove-destination -L /etc/os-release {shown}"
        )
    return (
        f"{os.fspath(root)} has neither etc/os-release nor usr/lib/os-release to tell the "
        "distribution"
    )


def _host_module(address: str, driver: str | None, sysfs: Sysfs) -> str | None:
    """The module of the host driver the device would get (None: no driver to beat)."""
    if driver == VFIO_PCI and sysfs.is_live:
        entry = read_journal().get(address)
        driver = entry.original_driver if entry else None
    if driver is None or driver == VFIO_PCI:
        return None
    module = sysfs.link_name(f"sys/bus/pci/drivers/{driver}/module")
    return module or driver.replace("-", "_")


def _append(text: str, lines: Iterable[str]) -> str:
    """``text`` with a marked block of ``lines`` at its end, on lines of their own."""
    if text and not text.endswith("\n"):
        text += "\n"
    sep = "" if not text or text.endswith("\n\n") else "\n"  # a blank line before the mark
    return text + sep + "\n".join([MARK, *lines]) + "\n"


def _sorted_dropins(root: Path, folders: Sequence[str], suffix: str) -> list[str]:
    """The files ``folder/*suffix`` in name order, a later folder winning for one name
    (dracut's rule for /usr/lib and /etc; one folder for grub.d and mkinitcpio.conf.d)."""
    by_name: dict[str, str] = {}
    for folder in folders:
        with contextlib.suppress(OSError):
            for entry in os.scandir(_under(root, folder)):
                if entry.name.endswith(suffix) and entry.is_file():
                    by_name[entry.name] = f"{folder}/{entry.name}"
    # grub-mkconfig, mkinitcpio and dracut glob in the shell; sorting by code point is
    # the C locale's order, which all of them document or use in practice.
    return [by_name[n] for n in sorted(by_name)]


def _read_shell(
    root: Path, paths: Sequence[str], names: Iterable[str], what_to_do: str
) -> shellconf.Env:
    """Follow ``names`` through the shell files ``paths``, sourced in that order."""
    env = shellconf.Env(frozenset(names))
    for path in paths:
        text = _read(root, path)
        if text is None:
            continue
        try:
            env.source(path, text)
        except shellconf.ShellReadError as err:
            raise PersistRefusedError(
                f"{err}; pyvfio persist reads this file without running it: {what_to_do}, "
                "or make that a plain assignment",
                [path],
            ) from None
    return env


def _overridden(env: shellconf.Env, name: str, after: Sequence[str]) -> shellconf.Origin | None:
    """A later file of ``after`` that sets ``name`` afresh, dropping what came before."""
    for origin in env.origins.get(name, ()):
        if origin.path in after and not origin.keeps_earlier:
            return origin
    return None


def _refuse_off(where: str, review: kcmdline.Review, path: str) -> None:
    if review.off is not None:
        raise PersistRefusedError(
            f"{where} has {review.off}, which keeps the IOMMU off, and vfio-pci cannot work "
            f"without it: remove {review.off} there (pyvfio persist then adds what VFIO "
            "needs), or leave the IOMMU off and the devices on their drivers",
            [path],
        )


# -- the kernel command line ---------------------------------------------------------


@dataclass
class _Cmdline:
    """What the command line sources add up to: file edits, commands, notes."""

    changes: list[FileChange] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    undo: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: a file or tool that sets the options of every future boot was found
    source_found: bool = False


def _grub(root: Path, distro: str, amd: bool, out: _Cmdline) -> tuple[str, ...] | None:
    """/etc/default/grub (and Debian's grub.d): the options added, None without grub."""
    text = _read(root, GRUB)
    if text is None:
        return None
    out.source_found = True
    # Debian and Arch put the options for normal boots in _DEFAULT; Fedora's
    # grub2-mkconfig and grubby read GRUB_CMDLINE_LINUX. Both reach a normal boot, so
    # both count for what is there.
    key = "GRUB_CMDLINE_LINUX" if distro == "fedora" else "GRUB_CMDLINE_LINUX_DEFAULT"
    snippets = []
    if distro == "debian":
        snippets = _sorted_dropins(root, ["/etc/default/grub.d"], ".cfg")
    wanted = " ".join(kcmdline.iommu_options(amd))
    env = _read_shell(root, [GRUB, *snippets], GRUB_KEYS, f"add {wanted} to {key} by hand")
    words = [w for k in GRUB_KEYS for w in kcmdline.split(env.text(k))]
    review = kcmdline.review(words, amd)
    where = f"the GRUB command line ({GRUB}{' and its grub.d' if snippets else ''})"
    _refuse_off(where, review, GRUB)
    if review.kept:
        out.notes.append(f"{review.kept} in {GRUB} keeps the IOMMU translating: left as is")
    if not review.add:
        return ()
    line = f'{key}="${{{key}}} {" ".join(review.add)}"'
    if distro == "debian":
        later = [p for p in snippets if p > GRUB_SNIPPET]
        origin = _overridden(env, key, later)
        if origin is not None:
            raise PersistRefusedError(
                f"{origin.path} line {origin.line} sets {key} after {GRUB_SNIPPET}, "
                f"dropping the options before it: add {' '.join(review.add)} there by hand",
                [origin.path],
            )
        out.changes.append(
            FileChange(GRUB_SNIPPET, _read(root, GRUB_SNIPPET), f"{HEADER}\n{line}\n")
        )
        out.commands.append("update-grub")
        out.undo.append("update-grub")
    else:
        out.changes.append(FileChange(GRUB, text, _append(text, [line])))
        if distro == "arch":
            out.commands.append("grub-mkconfig -o /boot/grub/grub.cfg")
            out.undo.append("grub-mkconfig -o /boot/grub/grub.cfg")
    return review.add


def _kernel_cmdline(root: Path, amd: bool, out: _Cmdline) -> None:
    """/etc/kernel/cmdline (kernel-install, UKIs): our words appended to the last line."""
    text = _read(root, KERNEL_CMDLINE)
    if text is None:
        return
    out.source_found = True
    review = kcmdline.review(kcmdline.split(text), amd)
    _refuse_off(KERNEL_CMDLINE, review, KERNEL_CMDLINE)
    if not review.add:
        return
    body = text.rstrip()
    after = (body + " " if body else "") + " ".join(review.add) + (text[len(body) :] or "\n")
    out.changes.append(FileChange(KERNEL_CMDLINE, text, after))
    out.notes.append(
        f"{KERNEL_CMDLINE} is read when kernel-install or a UKI build runs: entries made "
        "before keep their options until it runs again for them"
    )


def _kernelstub(root: Path, amd: bool, out: _Cmdline) -> None:
    """Pop!_OS: kernelstub writes the systemd-boot entry from its JSON configuration."""
    text = _read(root, KERNELSTUB)
    if text is None:
        return
    out.source_found = True
    try:
        options = json.loads(text)["user"]["kernel_options"]
        if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
            raise TypeError("kernel_options is not a list of strings")
    except (ValueError, KeyError, TypeError) as err:
        raise PersistRefusedError(
            f"pyvfio persist cannot read {KERNELSTUB} ({err}): repair it with kernelstub, "
            f"or add {' '.join(kcmdline.iommu_options(amd))} with 'kernelstub -a' by hand",
            [KERNELSTUB],
        ) from None
    review = kcmdline.review([w for o in options for w in kcmdline.split(o)], amd)
    _refuse_off(f"kernelstub's options ({KERNELSTUB})", review, KERNELSTUB)
    if review.add:
        args = shlex.quote(" ".join(review.add))
        out.commands.append(f"kernelstub --add-options {args}")
        out.undo.append(f"kernelstub --delete-options {args}")


def _bls_entries(root: Path) -> dict[str, list[str]]:
    """Each Boot Loader Specification entry and the words of its ``options`` lines."""
    kernelopts = ""
    for line in (_read(root, GRUBENV) or "").splitlines():
        if line.startswith("kernelopts="):
            kernelopts = line.split("=", 1)[1]
    entries: dict[str, list[str]] = {}
    for path in _sorted_dropins(root, BLS_DIRS[:1], ".conf") + [
        p for d in BLS_DIRS[1:] for p in _sorted_dropins(root, [d], ".conf")
    ]:
        words: list[str] = []
        for line in (_read(root, path) or "").splitlines():
            key, _, value = line.strip().partition(" ")
            if key == "options":  # several options lines add up (systemd-boot)
                # RHEL 8 and Fedora before 33 keep the options in grubenv's kernelopts.
                words += kcmdline.split(value.replace("$kernelopts", kernelopts))
        entries[path] = words
    return entries


def _bls(
    root: Path, distro: str, amd: bool, grub_added: tuple[str, ...] | None, out: _Cmdline
) -> None:
    """BLS entries: Fedora's grubby edits them (printed, with only safe arguments);
    elsewhere a note, where nothing else sets the options of the next boot."""
    entries = _bls_entries(root)
    missing: dict[str, tuple[str, ...]] = {}
    for path, words in entries.items():
        review = kcmdline.review(words, amd)
        _refuse_off(f"the boot entry {path}", review, path)
        if review.add:
            missing[path] = review.add
    if distro != "fedora":
        if not out.source_found:
            for path, add in missing.items():
                out.notes.append(f"add {' '.join(add)} to the options line of {path}")
            if not entries:
                out.notes.append(
                    f"no {GRUB}, {KERNEL_CMDLINE}, {KERNELSTUB} or boot entries found: add "
                    f"{' '.join(kcmdline.iommu_options(amd))} to the kernel command line in "
                    "your boot loader's configuration"
                )
        return
    if entries:
        wanted = [o for o in kcmdline.iommu_options(amd) if any(o in a for a in missing.values())]
    else:  # no entries to read (no BLS, or /boot elsewhere): what the grub file lacked
        wanted = list(kcmdline.iommu_options(amd) if grub_added is None else grub_added)
    args = []
    for option in wanted:
        key = option.split("=", 1)[0] + "="
        # grubby --args drops every word of the same key first (intel_iommu=igfx_off
        # would go): such an entry is left to the administrator.
        clash = [
            (p, w)
            for p, words in entries.items()
            for w in words
            if w.startswith(key) and w != option
        ]
        if clash:
            path, word = clash[0]
            out.notes.append(
                f"{path} has {word}: add {option} to its options line by hand "
                f"('grubby --args={option}' would replace {word})"
            )
        else:
            args.append(option)
    if args:
        quoted = shlex.quote(" ".join(args))
        out.commands.append(f"grubby --update-kernel=ALL --args={quoted}")
        out.undo.append(f"grubby --update-kernel=ALL --remove-args={quoted}")


def _cmdline_plan(root: Path, distro: str, amd: bool) -> _Cmdline:
    out = _Cmdline()
    grub_added = _grub(root, distro, amd, out)
    _kernel_cmdline(root, amd, out)
    _kernelstub(root, amd, out)
    _bls(root, distro, amd, grub_added, out)
    return out


# -- the initramfs -------------------------------------------------------------------


def _module_name(name: str) -> str:
    return name.replace("-", "_")


def _append_modules(text: str | None) -> str:
    """initramfs-tools' modules file with the VFIO modules (one a line) appended."""
    old = text or ""
    have = {
        _module_name(line.split()[0])
        for line in old.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    }
    missing = [m for m in VFIO_MODULES if m not in have]
    return _append(old, missing) if missing else old


def _mkinitcpio(root: Path, text: str, notes: list[str]) -> str:
    """mkinitcpio.conf with lines appended that put the VFIO modules first in MODULES and
    the udev rule in FILES, keeping every value already there."""
    dropins = _sorted_dropins(root, [MKINITCPIO_DROPINS], ".conf")
    todo = f"put {' '.join(VFIO_MODULES)} first in MODULES and {RULE} in FILES by hand"
    env = _read_shell(root, [MKINITCPIO, *dropins], ("MODULES", "FILES", "HOOKS"), todo)
    for name in ("MODULES", "FILES"):
        origin = _overridden(env, name, dropins)
        if origin is not None:
            raise PersistRefusedError(
                f"{origin.path} line {origin.line} sets {name} after {MKINITCPIO}, dropping "
                f"what that holds, so lines appended there would not count: {todo} "
                f"in {origin.path}",
                [origin.path],
            )

    def words(name: str) -> list[str]:
        value = env.get(name)
        return list(value) if isinstance(value, tuple) else str(value).split()

    lines = []
    modules = {_module_name(m) for m in words("MODULES")}
    missing = [m for m in VFIO_MODULES if m not in modules]
    # Strings are mkinitcpio's old syntax for these (it still reads them): kept a string,
    # even an empty one ("${FILES[@]}" of FILES="" is one empty file name). Unset: an array.
    legacy = {n: isinstance(env.values.get(n), str) for n in ("MODULES", "FILES")}
    if missing:
        # First, so vfio-pci is loaded before any GPU driver listed after it.
        if legacy["MODULES"]:
            lines.append(f'MODULES="{" ".join(missing)} ${{MODULES}}"')
        else:
            lines.append(f'MODULES=({" ".join(missing)} "${{MODULES[@]}}")')
    if RULE not in words("FILES"):
        if legacy["FILES"]:
            lines.append(f'FILES="${{FILES}} {RULE}"')
        else:
            lines.append(f'FILES=("${{FILES[@]}}" {RULE})')
    if "modconf" not in words("HOOKS"):
        notes.append("HOOKS lacks modconf: the softdep in modprobe.d stays out of the initramfs")
    return _append(text, lines) if lines else text


def _dracut_overrides(root: Path) -> None:
    """Refuse where a dracut file read after pyvfio's sets force_drivers or install_items
    afresh: pyvfio's += would be dropped."""
    names = ("force_drivers", "install_items")
    ours = DRACUT_CONF.rsplit("/", 1)[1]
    later = [p for p in _sorted_dropins(root, DRACUT_DIRS, ".conf") if p.rsplit("/", 1)[1] > ours]
    todo = f"add {' '.join(VFIO_MODULES)} to its force_drivers by hand"
    env = _read_shell(root, later, names, todo)
    for name in names:
        origin = _overridden(env, name, later)
        if origin is not None:
            raise PersistRefusedError(
                f"{origin.path} line {origin.line} sets {name}= after {DRACUT_CONF} "
                f"(dracut reads it later), dropping pyvfio's {name}+=: make it {name}+=",
                [origin.path],
            )


DEBIAN_HOOK = f"""#!/bin/sh
{HEADER}
# Puts the vfio-pci udev rule in the initramfs (initramfs-tools copies modprobe.d itself).
PREREQ=""
prereqs() {{ echo "$PREREQ"; }}
case "$1" in
prereqs) prereqs; exit 0 ;;
esac
mkdir -p "$DESTDIR/lib/udev/rules.d"
cp {RULE} "$DESTDIR/lib/udev/rules.d/"
"""


def _device_info(address: str, root: Path, sysfs: Sysfs) -> inventory.PciDeviceInfo:
    """The device as the tree's sysfs shows it; under a ``--root`` without the device a
    DeviceNotFoundError that says what the tree lacks (not "on this host")."""
    addr = normalize(address)
    try:
        return inventory.device_info(addr, sysfs)
    except DeviceNotFoundError:
        if sysfs.is_live:
            raise
    if not _under(root, PCI_DEVICES).is_dir():
        raise DeviceNotFoundError(
            f"{root} has no {PCI_DEVICES}/ to read {addr} from: --root takes a tree with "
            "etc/ beside the sys/ and proc/ of the machine; unpack a 'pyvfio snapshot' "
            "of it and copy its /etc in (docs/vm.md shows how)"
        )
    raise DeviceNotFoundError(
        f"no PCI device {addr} in {root}/{PCI_DEVICES} (the snapshot's machine has none "
        f"there; 'pyvfio ls --root {root}' lists its devices)"
    )


def _check_devices(infos: Sequence[inventory.PciDeviceInfo], sysfs: Sysfs) -> list[str]:
    """``pyvfio bind``'s checks, for the boot after: the same functions, so the same rules
    and words. A device the host uses (a mounted disk, an interface with routes, the
    console) raises DeviceInUseError; a group that would not be viable (a member left on
    a host driver) raises PersistRefusedError. ``--force`` skips both. The notes: what
    could not be checked."""
    users = {i.address: usage.device_users(i.address, sysfs) for i in infos}
    bind.refuse_in_use([bind.BindAction(a, None, True, "persist", u) for a, u in users.items()])
    named = [i.address for i in infos]
    groups: dict[int, list[str]] = {}
    for address in named:
        number = sysfs.iommu_group(address)
        if number is not None:
            groups.setdefault(number, sysfs.group_devices(number))
    if not groups:  # persist turns the IOMMU on: the groups exist only after the reboot
        return [
            "no IOMMU groups now (the IOMMU is off), so their viability is unchecked: after "
            f"the reboot, pyvfio doctor {' '.join(named)} says"
        ]
    blockers = bind.group_blockers(groups, named, sysfs)
    if blockers:
        group, address, driver = blockers[0]
        more = f" (and {len(blockers) - 1} more)" if len(blockers) > 1 else ""
        also = list(dict.fromkeys(b[1] for b in blockers))
        raise PersistRefusedError(
            f"group {group} would not be viable after the reboot: {address} stays on "
            f"{driver}{more}, and vfio-pci needs every endpoint of the group; name "
            f"{'it' if len(also) == 1 else 'them'} too (pyvfio persist "
            f"{' '.join([*named, *also])}), or --force to write the files anyway; nothing "
            "was written",
            [],
        )
    return []


def plan(
    addresses: Sequence[str],
    *,
    root: str | os.PathLike[str] = "/",
    distro: str | None = None,
    force: bool = False,
) -> PersistPlan:
    """The files that make ``addresses`` bind to vfio-pci at boot; changes nothing.

    ``root`` holds both the /etc tree to change and the sysfs/procfs the devices are
    read from (``/`` on a live host; a snapshot with a fixture /etc in tests).
    Raises :class:`PersistRefusedError` where a file cannot be changed safely, and, as
    ``pyvfio bind`` does (unless ``force``), DeviceInUseError for a device the host uses
    and PersistRefusedError for a group that would not be viable.
    """
    base = Path(root)
    if not base.is_dir():
        raise ValueError(f"--root {os.fspath(root)}: no such folder (a tree with etc/ and sys/)")
    sysfs = Sysfs(base)
    if not addresses:
        raise PersistError("name at least one PCI address, e.g. 0000:01:00.0")
    if distro is None:
        distro = detect_distro(base)
    elif distro not in DISTROS:
        raise ValueError(f"distro {distro!r}: use one of {', '.join(DISTROS)}")
    if _under(base, MANIFEST).exists():
        raise PersistError(
            f"pyvfio persist was applied already ({MANIFEST}): 'pyvfio persist --undo' first"
        )
    infos = [_device_info(a, base, sysfs) for a in dict.fromkeys(addresses)]
    notes: list[str] = []
    rule_lines = [HEADER]
    modules = []
    for info in infos:
        if info.is_bridge:
            raise ValueError(f"{info.address} is a PCI bridge: VFIO passes endpoints only")
        rule_lines.append(
            f'ACTION=="add", SUBSYSTEM=="pci", KERNEL=="{info.address}", '
            f'ATTR{{driver_override}}="{VFIO_PCI}"'
        )
        module = _host_module(info.address, info.driver, sysfs)
        if module is not None and module not in modules:
            modules.append(module)
    if not force:
        notes += _check_devices(infos, sysfs)
    changes = [FileChange(RULE, _read(base, RULE), "\n".join(rule_lines) + "\n")]
    if modules:
        softdeps = [HEADER] + [f"softdep {m} pre: vfio-pci" for m in modules]
        changes.append(FileChange(SOFTDEP, _read(base, SOFTDEP), "\n".join(softdeps) + "\n"))
    commands: list[str] = []
    if distro == "debian":
        path = "/etc/initramfs-tools/modules"
        before = _read(base, path)
        changes.append(FileChange(path, before, _append_modules(before)))
        hook = "/etc/initramfs-tools/hooks/pyvfio"
        changes.append(FileChange(hook, _read(base, hook), DEBIAN_HOOK, 0o755))
        commands.append("update-initramfs -u -k all")
    elif distro == "fedora":
        _dracut_overrides(base)
        items = [RULE, SOFTDEP] if modules else [RULE]
        text = (
            f"{HEADER}\n"
            f'force_drivers+=" {" ".join(VFIO_MODULES)} "\n'
            f'install_items+=" {" ".join(items)} "\n'
        )
        changes.append(FileChange(DRACUT_CONF, _read(base, DRACUT_CONF), text))
        commands.append("dracut -f --regenerate-all")
    else:
        before = _read(base, MKINITCPIO)
        if before is None:
            raise PersistError(f"{MKINITCPIO} is missing: is this Arch (mkinitcpio)?")
        changes.append(FileChange(MKINITCPIO, before, _mkinitcpio(base, before, notes)))
        commands.append("mkinitcpio -P")
    undo = list(commands)
    cmdline = _cmdline_plan(base, distro, kcmdline.is_amd(sysfs))
    changes += cmdline.changes
    commands += cmdline.commands
    undo += cmdline.undo
    notes += cmdline.notes
    changed = tuple(c for c in changes if c.before != c.after)
    for change in changed:
        target = _under(base, change.path)
        if target.is_symlink():
            raise PersistRefusedError(
                f"{change.path} is a symbolic link (to {os.readlink(target)}): pyvfio persist "
                "replaces regular files only; make it one, or edit what it points to by hand",
                [change.path],
            )
    return PersistPlan(distro, changed, tuple(commands), tuple(undo), tuple(notes))


# -- writing -------------------------------------------------------------------------


@dataclass(frozen=True)
class Applied:
    """What :func:`apply` wrote, and how to take it back."""

    written: tuple[str, ...]
    backups: tuple[str, ...]
    commands: tuple[str, ...]
    undo_commands: tuple[str, ...]

    def __str__(self) -> str:
        lines = [f"wrote {p}" for p in self.written]
        lines += [f"backup {b}" for b in self.backups]
        lines.append("now run:")
        lines += [f"  {c}" for c in self.commands]
        lines.append("to undo: pyvfio persist --undo, then run:")
        lines += [f"  {c}" for c in self.undo_commands]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "written": list(self.written),
            "backups": list(self.backups),
            "commands": list(self.commands),
            "undo_commands": list(self.undo_commands),
            "record": MANIFEST,
        }


def _tmp(target: Path) -> Path:
    """The temporary file beside ``target``: a name of its own, so that undo finds what
    a crash left behind."""
    return target.with_name(f".{target.name}{TMP_SUFFIX}")


def _like(fd: int, st: os.stat_result | None, mode: int) -> None:
    """Give the file the mode (and, where allowed, owner) of the file it replaces."""
    os.fchmod(fd, stat.S_IMODE(st.st_mode) if st else mode)
    if st is not None and (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
        os.fchown(fd, st.st_uid, st.st_gid)


def _write_durably(target: Path, data: bytes, st: os.stat_result | None, mode: int) -> None:
    """Replace ``target`` by ``data`` durably (:class:`~pyvfio.host.durable.Replacement`)."""
    with Replacement(target, tmp=_tmp(target)) as new:
        new.file.write(data)
        new.file.flush()
        _like(new.file.fileno(), st, mode)


def _backup_durably(target: Path, backup: Path, expected: bytes) -> None:
    """Copy ``target`` (bytes, mode, times, extended attributes, owner) to ``backup``
    durably, and make sure the copy holds ``expected``."""
    data = target.read_bytes()
    if data != expected:
        raise PersistError(f"{target} changed while it was copied: run pyvfio persist again")
    with Replacement(backup, tmp=_tmp(backup)) as new:
        new.file.write(data)
        new.file.flush()
        shutil.copystat(target, new.tmp)
        _like(new.file.fileno(), target.stat(), 0)


def _missing_dirs(root: Path, path: str) -> list[str]:
    """The folders above ``path`` that do not exist yet, outermost first."""
    missing = []
    parent = Path(path).parent
    while not _under(root, str(parent)).exists():
        missing.append(str(parent))
        parent = parent.parent
    return list(reversed(missing))


def _mkdir_durably(root: Path, folder: str) -> None:
    target = _under(root, folder)
    if not target.exists():
        target.mkdir()
        fsync_dir(target.parent)


def apply(plan: PersistPlan, *, root: str | os.PathLike[str] = "/") -> Applied:
    """Write ``plan``'s files. First the undo record (each file's SHA-256 before and
    after, its backup, the folders to create), durably; then per file its backup
    FILE.pyvfio-bak and the new text, each durably. A crash anywhere leaves every file
    as it was or as planned, and :func:`undo` tells which from the record."""
    base = Path(root)
    if _under(base, MANIFEST).exists():
        raise PersistError(f"{MANIFEST} exists: 'pyvfio persist --undo' first")
    for change in plan.changes:
        current = _read(base, change.path)
        if current != change.before:
            raise PersistError(f"{change.path} changed since the plan was made: run it again")
        kept = change.path + BACKUP_SUFFIX
        if change.before is not None and _under(base, kept).exists():
            raise PersistRefusedError(
                f"{kept} exists already, and pyvfio persist keeps its backup there: "
                "move it away, then run pyvfio persist again",
                [kept],
            )
        if _under(base, change.path).is_symlink():
            raise PersistRefusedError(f"{change.path} is a symbolic link now", [change.path])
    dirs: list[str] = []
    for path in [MANIFEST, *(c.path for c in plan.changes)]:
        dirs += [d for d in _missing_dirs(base, path) if d not in dirs]
    files = []
    for change in plan.changes:
        files.append(
            {
                "path": change.path,
                "backup": None if change.before is None else change.path + BACKUP_SUFFIX,
                "before_sha256": None if change.before is None else _sha256(_encode(change.before)),
                "after_sha256": _sha256(_encode(change.after)),
            }
        )
    record = {
        "version": MANIFEST_VERSION,
        "files": files,
        "dirs": dirs,
        "undo_commands": list(plan.undo_commands),
    }
    try:
        for folder in _missing_dirs(base, MANIFEST):
            _mkdir_durably(base, folder)
        data = (json.dumps(record, indent=1) + "\n").encode()
        _write_durably(_under(base, MANIFEST), data, None, 0o644)
        for change in plan.changes:
            target = _under(base, change.path)
            st = None
            if change.before is not None:
                st = target.stat()
                backup = _under(base, change.path + BACKUP_SUFFIX)
                _backup_durably(target, backup, _encode(change.before))
            else:
                for folder in _missing_dirs(base, change.path):
                    _mkdir_durably(base, folder)
            _write_durably(target, _encode(change.after), st, change.mode)
    except OSError as err:
        raise PersistError(
            f"writing {err.filename or 'a file'} failed: {err.strerror}; "
            "'pyvfio persist --undo' puts back what was written"
        ) from err
    return Applied(
        tuple(c.path for c in plan.changes),
        tuple(f["backup"] for f in files if f["backup"] is not None),
        plan.commands,
        plan.undo_commands,
    )


# -- undoing -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Step:
    path: str
    action: str  # "restore" (the backup over the file), "remove" (a file pyvfio made), ""
    backup: str | None


def _current(root: Path, path: str) -> bytes | None:
    try:
        return _under(root, path).read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None


def _steps(root: Path, record: dict[str, Any], force: bool) -> list[_Step]:
    """What undo does to each file; raises, changing nothing, where it must not."""
    steps: list[_Step] = []
    changed: list[str] = []
    for entry in record["files"]:
        path, backup = entry["path"], entry["backup"]
        before, after = entry["before_sha256"], entry["after_sha256"]
        now = _current(root, path)
        now_hash = None if now is None else _sha256(now)
        if now_hash == before:
            steps.append(_Step(path, "", backup))  # never written (a crash before it)
            continue
        if now_hash != after:
            changed.append(path)
            if not force:
                continue
        if backup is None:
            steps.append(_Step(path, "remove" if now is not None else "", None))
            continue
        saved = _current(root, backup)
        if saved is None or _sha256(saved) != before:
            raise PersistRefusedError(
                f"the backup {backup} is missing or not what pyvfio saved, so {path} cannot "
                "be put back: restore it by hand, then delete "
                f"{MANIFEST}",
                [path, backup],
            )
        steps.append(_Step(path, "restore", backup))
    if changed and not force:
        shown = ", ".join(changed)
        raise PersistRefusedError(
            f"{shown} changed since 'pyvfio persist --apply' wrote "
            f"{'it' if len(changed) == 1 else 'them'}, and undo would throw that away: "
            "nothing was undone; check the changes, then 'pyvfio persist --undo --force' "
            "puts back the files as they were before --apply",
            changed,
        )
    return steps


def _legacy_steps(root: Path, record: dict[str, Any], force: bool) -> tuple[list[_Step], list[str]]:
    """An undo record of pyvfio before version 2: no hashes, so no way to tell changes."""
    paths = [*record.get("backups", {}), *record.get("created", [])]
    if not force:
        raise PersistRefusedError(
            f"{MANIFEST} was written by an older pyvfio that kept no hashes, so undo cannot "
            f"tell whether {', '.join(paths)} changed since: check them, then "
            "'pyvfio persist --undo --force' puts back the backups",
            paths,
        )
    steps = [
        _Step(path, "restore", backup)
        for path, backup in record.get("backups", {}).items()
        if _under(root, backup).exists()
    ]
    steps += [_Step(path, "remove", None) for path in record.get("created", [])]
    return steps, list(record.get("dirs", []))


def undo(*, root: str | os.PathLike[str] = "/", force: bool = False) -> list[str]:
    """Put back every file :func:`apply` changed and remove what it created; the paths.

    Every file is first compared with the hash recorded when it was written: if one
    changed since (an administrator's edit), nothing is touched and
    :class:`PersistRefusedError` names it, unless ``force``."""
    base = Path(root)
    text = _read(base, MANIFEST)
    if text is None:
        raise PersistError(f"nothing to undo: {MANIFEST} is missing")
    try:
        record = json.loads(text)
        if record.get("version") == MANIFEST_VERSION:
            steps, dirs = _steps(base, record, force), list(record["dirs"])
        else:
            steps, dirs = _legacy_steps(base, record, force)
    except PersistRefusedError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise PersistError(f"{MANIFEST} is damaged ({err}): put the files back by hand") from err
    try:
        done = _undo_steps(base, steps, dirs)
    except OSError as err:
        raise PersistError(
            f"undo stopped at {err.filename or 'a file'}: {err.strerror}; what is done stays "
            "done, and 'pyvfio persist --undo' again finishes the rest"
        ) from err
    return done


def _undo_steps(base: Path, steps: Sequence[_Step], dirs: Sequence[str]) -> list[str]:
    done = []
    for step in steps:
        target = _under(base, step.path)
        if step.action == "restore":
            assert step.backup is not None
            os.replace(_under(base, step.backup), target)  # the backup's inode: mode kept
            fsync_dir(target.parent)
            done.append(step.path)
        elif step.action == "remove":
            with contextlib.suppress(FileNotFoundError):
                target.unlink()
                fsync_dir(target.parent)
                done.append(step.path)
        elif step.backup is not None and _under(base, step.backup).exists():
            _under(base, step.backup).unlink()  # made before a crash stopped the apply
            fsync_dir(target.parent)
        for left in (step.path, step.backup):  # temporary files a crash left behind
            if left is not None:
                with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                    _tmp(_under(base, left)).unlink()
    manifest = _under(base, MANIFEST)
    with contextlib.suppress(FileNotFoundError):
        _tmp(manifest).unlink()
    manifest.unlink()
    fsync_dir(manifest.parent)
    for folder in reversed(dirs):
        with contextlib.suppress(OSError):  # not empty: something else lives there now
            _under(base, folder).rmdir()
            fsync_dir(_under(base, folder).parent)
    return done
