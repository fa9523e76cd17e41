"""``pyvfio reset-method``: choose which resets the kernel may use for a device.

The kernel lists a device's reset methods, in the order it tries them, in the sysfs
attribute ``reset_method`` (Linux 5.15+, drivers/pci/pci-sysfs.c); writing a list of
those names keeps only them, in that order, and writing ``default`` gives back the list
the kernel found when it probed the device. A method the device does not support is
refused by the kernel with EINVAL. Users narrow the list when one reset hangs or breaks
a device (a GPU whose FLR does not come back, a bus reset that takes a neighbour too).

Every change is journaled before it is made, like a bind: the list the device had
before pyvfio first changed it is kept in ``reset_methods.json`` in the journal's
folder (:func:`pyvfio.host.journal.state_dir`, under the same lock), and
``pyvfio restore`` (:func:`pyvfio.host.bind.restore`) writes it back, after a crash too.
The file is read as untrusted input, like the bind journal.

Which devices a bus reset takes with it is :func:`bus_reset_affected`: sysfs's answer,
for ``pyvfio show`` (an open device gets the kernel's own answer from
:meth:`pyvfio.Device.hot_reset_dependents`).
"""

from __future__ import annotations

import errno
import json
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyvfio.errors import HostError
from pyvfio.host.journal import (
    JournalError,
    begin_steps,
    exclusive_lock,
    state_dir,
    step,
    write_json_atomically,
)
from pyvfio.host.sysfs import LIVE, PCI_DEVICES, Sysfs
from pyvfio.pci.address import normalize

#: The file beside the bind journal that keeps each device's original list.
RESET_JOURNAL_NAME = "reset_methods.json"
FORMAT_VERSION = 1
#: What ``reset-method`` takes to give the device back the kernel's own list.
DEFAULT = "default"
#: The kernel's names (pci_reset_fn_methods[], Linux 6.12), for messages only: what a
#: device accepts is what its ``reset_method`` lists, and a newer kernel may add names.
KERNEL_METHODS = ("device_specific", "acpi", "flr", "af_flr", "pm", "bus", "cxl_bus")
#: A method name as the kernel writes them; at most 8 (PCI_NUM_RESET_METHODS - 1).
_METHOD = re.compile(r"[a-z][a-z0-9_]{0,31}")
_MAX_METHODS = 8

_ADDRESS = re.compile(r"^[0-9a-f]{4,8}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")


class ResetMethodError(HostError, ValueError):
    """A reset method the device does not offer, or a list the kernel refused (exit 2)."""


def reset_methods(address: str, sysfs: Sysfs = LIVE) -> tuple[str, ...]:
    """The resets the kernel offers for the device, in the order it tries them (empty:
    none, or a kernel before 5.15 without the attribute)."""
    return tuple((sysfs.read_attr(f"{sysfs.device_dir(address)}/reset_method") or "").split())


def bus_reset_affected(address: str, sysfs: Sysfs = LIVE) -> tuple[str, ...]:
    """The other devices a bus reset of ``address`` resets too: every function below
    the parent bridge (its secondary bus and the buses below it), as vfio-pci's hot reset
    (pci_reset_bus, pci_walk_bus) takes them; () on a root bus, where there is none."""
    real = sysfs.realpath(sysfs.device_dir(address)) or ""
    parent, _, name = real.rpartition("/")
    if not _ADDRESS.match(parent.rpartition("/")[2]):
        return ()
    found: list[str] = []

    def walk(folder: str) -> None:
        for child in sysfs.listdir(folder):
            if _ADDRESS.match(child):
                found.append(child)
                walk(f"{folder}/{child}")

    walk(parent)
    return tuple(sorted(a for a in found if a != name))


# -- the journal --------------------------------------------------------------------------


def _journal_path(directory: Path | None) -> Path:
    return (directory or state_dir()) / RESET_JOURNAL_NAME


def _damaged(path: Path, why: str) -> JournalError:
    return JournalError(
        f"cannot read the reset-method journal {path}: {why}; nothing was changed; to "
        f"repair: read it (cat {path}), write each device's list back by hand (echo default "
        f"> /sys/bus/pci/devices/BDF/reset_method), then remove it (rm {path})"
    )


def read_originals(directory: Path | None = None) -> dict[str, tuple[str, ...]]:
    """Each device whose reset methods pyvfio changed, and the list it had before.

    Read without the lock; a user who may not read the folder (it is root's) sees none;
    a damaged file is JournalError."""
    path = _journal_path(directory)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except PermissionError:
        return {}
    except (OSError, ValueError) as err:
        raise _damaged(path, str(err)) from err
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError):
        raise _damaged(path, "not JSON") from None
    if not isinstance(raw, dict) or raw.get("version") != FORMAT_VERSION:
        raise _damaged(path, f"not a version {FORMAT_VERSION} reset-method journal")
    devices = raw.get("devices")
    if not isinstance(devices, dict):
        raise _damaged(path, "'devices' is not an object")
    out: dict[str, tuple[str, ...]] = {}
    for addr, methods in devices.items():
        if not isinstance(addr, str) or not _ADDRESS.match(addr):
            raise _damaged(path, f"{addr!r} is not a PCI address as pyvfio writes it")
        if (
            not isinstance(methods, list)
            or not 0 < len(methods) <= _MAX_METHODS
            or not all(isinstance(m, str) and _METHOD.fullmatch(m) for m in methods)
        ):
            raise _damaged(path, f"the entry {addr!r} is not a list of reset method names")
        out[addr] = tuple(methods)
    return out


def _save(directory: Path | None, originals: dict[str, tuple[str, ...]]) -> None:
    path = _journal_path(directory)
    data = {
        "version": FORMAT_VERSION,
        "devices": {a: list(m) for a, m in sorted(originals.items())},
    }
    write_json_atomically(path, data)


@contextmanager
def _locked(directory: Path | None) -> Iterator[None]:
    """The bind journal's lock: binds, restores and reset-method changes never interleave."""
    where = directory or state_dir()
    with exclusive_lock(where, "journal.lock", f"the journal in {where}"):
        yield


# -- changing the list ----------------------------------------------------------------------


@dataclass(frozen=True)
class ResetMethodChange:
    """What ``pyvfio reset-method`` did: the list before and after, and the original
    that ``restore`` writes back (None: pyvfio has nothing of it to undo)."""

    address: str
    before: tuple[str, ...]
    after: tuple[str, ...]
    original: tuple[str, ...] | None

    def __str__(self) -> str:
        text = f"{self.address}: reset_method {' '.join(self.after) or '(none)'}"
        if self.before != self.after:
            text += f" (was {' '.join(self.before) or '(none)'})"
        if self.original is not None:
            text += f"; 'pyvfio restore {self.address}' puts back {' '.join(self.original)}"
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "before": list(self.before),
            "after": list(self.after),
            "original": list(self.original) if self.original is not None else None,
        }


def check_methods(address: str, methods: Sequence[str], offered: Sequence[str]) -> tuple[str, ...]:
    """``methods`` as the kernel takes them, or ResetMethodError naming what is wrong.

    ``default`` stands alone; otherwise each name must be one ``offered`` (the list the
    device had before pyvfio changed it), once."""
    names = tuple(m.strip() for m in methods)
    if not names:
        raise ResetMethodError(
            f"name the reset methods to keep for {address}, in order, or 'default' "
            f"(it offers: {' '.join(offered) or 'none'})"
        )
    if DEFAULT in names:
        if len(names) > 1:
            raise ResetMethodError(
                f"'default' gives {address} the kernel's own list: name it alone"
            )
        return names
    for name in names:
        if name not in offered:
            known = "" if name in KERNEL_METHODS else " (not a reset method the kernel knows)"
            raise ResetMethodError(
                f"{address} does not offer the reset method {name!r}{known}: choose among "
                f"{' '.join(offered) or 'none'}, or 'default' for the kernel's own list"
            )
        if names.count(name) > 1:
            raise ResetMethodError(f"{name!r} is named twice: name each reset method once")
    return names


def set_reset_method(
    address: str,
    methods: Sequence[str],
    *,
    sysfs: Sysfs = LIVE,
    journal_dir: Path | None = None,
) -> ResetMethodChange:
    """Keep only ``methods`` (in that order) for the device, or ``["default"]``; the
    original list is journaled first so that :func:`pyvfio.host.bind.restore` undoes it.

    Bad input (an unknown device or method, a device without ``reset_method``) is a
    ValueError and changes nothing."""
    addr = normalize(address)
    rel = f"{sysfs.device_dir(addr)}/reset_method"
    current = reset_methods(addr, sysfs)
    if not sysfs.exists(rel):
        raise ResetMethodError(
            f"{addr} has no reset_method attribute: the kernel offers no reset for it "
            "(or is older than Linux 5.15, where the list cannot be chosen)"
        )
    originals = read_originals(journal_dir)
    offered = originals.get(addr, current)
    names = check_methods(addr, methods, offered)
    if sysfs.is_live and os.geteuid() != 0:  # as bind.require_root (which imports this)
        raise ResetMethodError(
            "changing reset methods needs root: run it with sudo (nothing was changed)"
        )
    begin_steps()
    with _locked(journal_dir):
        originals = read_originals(journal_dir)
        before = reset_methods(addr, sysfs)
        original = originals.get(addr, before)
        originals[addr] = original
        _save(journal_dir, originals)  # recorded before the first write
        step("journal")
        try:
            _write_methods(sysfs, rel, addr, " ".join(names))
            step("reset_method")
        finally:
            after = reset_methods(addr, sysfs)
            if after == original:  # back where it was, or never changed: nothing to undo
                del originals[addr]
                _save(journal_dir, originals)
    return ResetMethodChange(addr, before, after, None if after == original else original)


def _write_methods(sysfs: Sysfs, rel: str, addr: str, text: str) -> None:
    try:
        sysfs.write_attr(rel, text)
    except PermissionError as err:
        raise HostError(f"writing /{rel}: permission denied; run as root") from err
    except OSError as err:
        if err.errno == errno.EINVAL:
            raise ResetMethodError(
                f"the kernel refused reset methods {text!r} for {addr} (EINVAL: a method "
                "the device does not support; dmesg says which); nothing was changed"
            ) from err
        raise HostError(f"writing /{rel} failed: {err.strerror}") from err


def restore_locked(address: str, sysfs: Sysfs, journal_dir: Path | None) -> tuple[str, ...] | None:
    """Write back the original list of ``address`` if pyvfio changed it; return that
    list (None: nothing to undo). The caller holds the journal's lock."""
    originals = read_originals(journal_dir)
    original = originals.get(address)
    if original is None:
        return None
    rel = f"{PCI_DEVICES}/{address}/reset_method"
    if sysfs.exists(rel):
        _write_methods(sysfs, rel, address, " ".join(original))
    del originals[address]
    _save(journal_dir, originals)
    return original
