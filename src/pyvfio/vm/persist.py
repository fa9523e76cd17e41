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
* the IOMMU options missing from the kernel command line (``intel_iommu=on`` for
  Intel, whose IOMMU many kernels leave off; ``iommu=pt`` spares host devices the
  translation), in /etc/default/grub or /etc/kernel/cmdline.

:func:`plan` reads and changes nothing; :func:`apply` writes with backups and an undo
manifest; :func:`undo` puts every file back as it was, byte for byte. Regenerating
the initramfs and the boot loader configuration is left to the commands printed.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import re
import shlex
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyvfio.errors import HostError
from pyvfio.host import inventory
from pyvfio.host.bind import VFIO_PCI
from pyvfio.host.journal import read_journal
from pyvfio.host.sysfs import Sysfs
from pyvfio.pci.address import normalize

RULE = "/etc/udev/rules.d/50-pyvfio-vfio-pci.rules"
SOFTDEP = "/etc/modprobe.d/pyvfio-vfio.conf"
MANIFEST = "/etc/pyvfio/persist-undo.json"
BACKUP_SUFFIX = ".pyvfio-bak"
#: vfio_pci needs vfio and the type1 backend; listed so the initramfs has all three.
VFIO_MODULES = ("vfio_pci", "vfio", "vfio_iommu_type1")
HEADER = "# Written by pyvfio persist; 'pyvfio persist --undo' removes it."

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


def _under(root: Path, path: str) -> Path:
    return root / path.lstrip("/")


def _read(root: Path, path: str) -> str | None:
    try:
        return _under(root, path).read_text()
    except FileNotFoundError:
        return None


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
    shown = fields.get("PRETTY_NAME") or fields.get("ID") or "no /etc/os-release"
    raise PersistError(
        f"pyvfio persist knows Debian/Ubuntu, Fedora/RHEL and Arch, not {shown}: "
        "--distro debian|fedora|arch picks the closest"
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


def _iommu_options(sysfs: Sysfs) -> tuple[str, ...]:
    vendor = ""
    for line in sysfs.read_lines("proc/cpuinfo"):
        key, _, value = line.partition(":")
        if key.strip() == "vendor_id":
            vendor = value.strip()
            break
    # AMD-Vi is on whenever the firmware enables it; Intel VT-d needs intel_iommu=on
    # unless the kernel was built with CONFIG_INTEL_IOMMU_DEFAULT_ON.
    return ("iommu=pt",) if vendor == "AuthenticAMD" else ("intel_iommu=on", "iommu=pt")


def _add_options(words: list[str], wanted: Sequence[str]) -> list[str]:
    """``words`` with each wanted ``key=value`` added, or replacing another value of key."""
    out = list(words)
    for option in wanted:
        key = option.split("=", 1)[0]
        same = [n for n, w in enumerate(out) if w.split("=", 1)[0] == key]
        if not same:
            out.append(option)
        else:
            for n in same:
                out[n] = option
    return out


_GRUB_LINE = re.compile(r'^(?P<key>GRUB_CMDLINE_LINUX(?:_DEFAULT)?)=(?P<q>["\']?)(?P<v>.*)(?P=q)$')


def _grub_change(text: str, key: str, wanted: Sequence[str]) -> str:
    lines = text.splitlines(keepends=True)
    for n, line in enumerate(lines):
        m = _GRUB_LINE.match(line.rstrip("\n"))
        if m and m.group("key") == key:
            words = _add_options(m.group("v").split(), wanted)
            lines[n] = f'{key}="{" ".join(words)}"\n'
            return "".join(lines)
    return (
        text + ("" if not text or text.endswith("\n") else "\n") + f'{key}="{" ".join(wanted)}"\n'
    )


def _cmdline_changes(
    root: Path, distro: str, wanted: Sequence[str]
) -> tuple[list[FileChange], list[str], list[str], list[str]]:
    """Kernel command line edits, the commands that apply them, their undo, and notes."""
    changes: list[FileChange] = []
    commands: list[str] = []
    undo: list[str] = []
    notes: list[str] = []
    grub = _read(root, "/etc/default/grub")
    kernel_cmdline = _read(root, "/etc/kernel/cmdline")
    # Debian and Arch put the options for normal boots in _DEFAULT; Fedora's grubby
    # reads GRUB_CMDLINE_LINUX.
    key = "GRUB_CMDLINE_LINUX" if distro == "fedora" else "GRUB_CMDLINE_LINUX_DEFAULT"
    if grub is not None:
        after = _grub_change(grub, key, wanted)
        if after != grub:
            changes.append(FileChange("/etc/default/grub", grub, after))
    if kernel_cmdline is not None:
        words = kernel_cmdline.split()
        after_words = _add_options(words, wanted)
        if after_words != words:
            changes.append(
                FileChange("/etc/kernel/cmdline", kernel_cmdline, " ".join(after_words) + "\n")
            )
    if grub is None and kernel_cmdline is None:
        notes.append(
            f"no /etc/default/grub or /etc/kernel/cmdline: add {' '.join(wanted)} to the "
            "kernel command line in your boot loader's configuration"
        )
    if not changes:
        return changes, commands, undo, notes
    args = " ".join(wanted)
    if distro == "debian":
        commands.append("update-grub")
        undo.append("update-grub")
    elif distro == "fedora":
        commands.append(f"grubby --update-kernel=ALL --args={shlex.quote(args)}")
        undo.append(f"grubby --update-kernel=ALL --remove-args={shlex.quote(args)}")
    else:
        commands.append("grub-mkconfig -o /boot/grub/grub.cfg")
        undo.append("grub-mkconfig -o /boot/grub/grub.cfg")
    return changes, commands, undo, notes


def _append_modules(text: str | None) -> str:
    """initramfs-tools' modules file with the VFIO modules (one a line) appended."""
    old = text or ""
    have = {line.split()[0] for line in old.splitlines() if line.strip() and line[0] != "#"}
    missing = [m for m in VFIO_MODULES if m not in have]
    if not missing:
        return old
    sep = "" if not old or old.endswith("\n") else "\n"
    return old + sep + "# pyvfio persist: vfio-pci in the initramfs\n" + "\n".join(missing) + "\n"


_BASH_ARRAY = re.compile(r"^(?P<key>MODULES|FILES|HOOKS)=\((?P<v>[^)]*)\)\s*$")


def _mkinitcpio(text: str, notes: list[str]) -> str:
    lines = text.splitlines(keepends=True)
    found = set()
    for n, line in enumerate(lines):
        m = _BASH_ARRAY.match(line.rstrip("\n"))
        if not m:
            continue
        key, words = m.group("key"), m.group("v").split()
        found.add(key)
        if key == "MODULES":
            # First, so vfio-pci is loaded before any GPU driver listed after it.
            words = [*[w for w in VFIO_MODULES if w not in words], *words]
        elif key == "FILES":
            words = [*words, *[f for f in (RULE,) if f not in words]]
        elif "modconf" not in words:
            notes.append(
                "HOOKS lacks modconf: the softdep in modprobe.d stays out of the initramfs"
            )
        lines[n] = f"{key}=({' '.join(words)})\n"
    for key, words in (("MODULES", VFIO_MODULES), ("FILES", (RULE,))):
        if key not in found:
            lines.append(f"{key}=({' '.join(words)})\n")
    return "".join(lines)


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


def plan(
    addresses: Sequence[str],
    *,
    root: str | os.PathLike[str] = "/",
    distro: str | None = None,
) -> PersistPlan:
    """The files that make ``addresses`` bind to vfio-pci at boot; changes nothing.

    ``root`` holds both the /etc tree to change and the sysfs/procfs the devices are
    read from (``/`` on a live host; a snapshot with a fixture /etc in tests).
    """
    base = Path(root)
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
    infos = [inventory.device_info(normalize(a), sysfs) for a in dict.fromkeys(addresses)]
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
    changes = [FileChange(RULE, _read(base, RULE), "\n".join(rule_lines) + "\n")]
    if modules:
        softdeps = [HEADER] + [f"softdep {m} pre: vfio-pci" for m in modules]
        changes.append(FileChange(SOFTDEP, _read(base, SOFTDEP), "\n".join(softdeps) + "\n"))
    commands: list[str] = []
    undo: list[str] = []
    if distro == "debian":
        path = "/etc/initramfs-tools/modules"
        before = _read(base, path)
        changes.append(FileChange(path, before, _append_modules(before)))
        hook = "/etc/initramfs-tools/hooks/pyvfio"
        changes.append(FileChange(hook, _read(base, hook), DEBIAN_HOOK, 0o755))
        commands.append("update-initramfs -u -k all")
    elif distro == "fedora":
        path = "/etc/dracut.conf.d/pyvfio.conf"
        items = [RULE, SOFTDEP] if modules else [RULE]
        text = (
            f"{HEADER}\n"
            f'force_drivers+=" {" ".join(VFIO_MODULES)} "\n'
            f'install_items+=" {" ".join(items)} "\n'
        )
        changes.append(FileChange(path, _read(base, path), text))
        commands.append("dracut -f --regenerate-all")
    else:
        path = "/etc/mkinitcpio.conf"
        before = _read(base, path)
        if before is None:
            raise PersistError(f"{path} is missing: is this Arch (mkinitcpio)?")
        changes.append(FileChange(path, before, _mkinitcpio(before, notes)))
        commands.append("mkinitcpio -P")
    undo += commands
    more, cmd_commands, cmd_undo, cmd_notes = _cmdline_changes(base, distro, _iommu_options(sysfs))
    changes += more
    commands += cmd_commands
    undo += cmd_undo
    notes += cmd_notes
    changed = tuple(c for c in changes if c.before != c.after)
    return PersistPlan(distro, changed, tuple(commands), tuple(undo), tuple(notes))


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
        }


def _mkdirs(root: Path, path: str, created: list[str]) -> None:
    """Create the parents of ``path`` below ``root``, noting each one made (for undo)."""
    missing = []
    parent = Path(path).parent
    while not _under(root, str(parent)).exists():
        missing.append(str(parent))
        parent = parent.parent
    for folder in reversed(missing):
        _under(root, folder).mkdir()
        created.append(folder)


def _write_atomic(target: Path, text: str, mode: int) -> None:
    tmp = target.with_name(f".{target.name}.pyvfio-tmp")
    tmp.write_text(text)
    os.chmod(tmp, mode)
    os.replace(tmp, target)


def apply(plan: PersistPlan, *, root: str | os.PathLike[str] = "/") -> Applied:
    """Write ``plan``'s files: each changed file first copied to FILE.pyvfio-bak, new files
    and folders recorded, all in the undo manifest (written before the first change)."""
    base = Path(root)
    if _under(base, MANIFEST).exists():
        raise PersistError(f"{MANIFEST} exists: 'pyvfio persist --undo' first")
    for change in plan.changes:
        current = _read(base, change.path)
        if current != change.before:
            raise PersistError(f"{change.path} changed since the plan was made: run it again")
    dirs: list[str] = []
    _mkdirs(base, MANIFEST, dirs)
    manifest: dict[str, Any] = {"backups": {}, "created": [], "dirs": dirs}
    for change in plan.changes:
        if change.before is None:
            manifest["created"].append(change.path)
        else:
            manifest["backups"][change.path] = change.path + BACKUP_SUFFIX
    manifest_text = json.dumps(manifest, indent=1) + "\n"
    _write_atomic(_under(base, MANIFEST), manifest_text, 0o644)
    try:
        for change in plan.changes:
            target = _under(base, change.path)
            if change.before is not None:
                shutil.copy2(target, _under(base, change.path + BACKUP_SUFFIX))
                mode = target.stat().st_mode & 0o7777
            else:
                _mkdirs(base, change.path, dirs)
                mode = change.mode
            _write_atomic(target, change.after, mode)
        manifest["dirs"] = dirs
        _write_atomic(_under(base, MANIFEST), json.dumps(manifest, indent=1) + "\n", 0o644)
    except OSError as err:
        raise PersistError(
            f"writing {err.filename or 'a file'} failed: {err.strerror}; "
            "'pyvfio persist --undo' puts back what was written"
        ) from err
    return Applied(
        tuple(c.path for c in plan.changes),
        tuple(manifest["backups"].values()),
        plan.commands,
        plan.undo_commands,
    )


def undo(*, root: str | os.PathLike[str] = "/") -> list[str]:
    """Put back every file :func:`apply` changed, remove what it created; the paths."""
    base = Path(root)
    text = _read(base, MANIFEST)
    if text is None:
        raise PersistError(f"nothing to undo: {MANIFEST} is missing")
    manifest = json.loads(text)
    done = []
    for path, backup in manifest["backups"].items():
        if _under(base, backup).exists():
            os.replace(_under(base, backup), _under(base, path))
            done.append(path)
    for path in manifest["created"]:
        try:
            _under(base, path).unlink()
            done.append(path)
        except FileNotFoundError:
            pass
    _under(base, MANIFEST).unlink()
    for folder in reversed(manifest["dirs"]):
        with contextlib.suppress(OSError):  # not empty: something else lives there now
            _under(base, folder).rmdir()
    return done
