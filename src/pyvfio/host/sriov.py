"""SR-IOV: a physical function's virtual functions, made and removed through sysfs.

The kernel's interface is two files of the PF (Documentation/ABI/testing/sysfs-bus-pci):
``sriov_totalvfs`` (how many VFs the device can have) and ``sriov_numvfs`` (how many it
has; writing N creates them). Its rules, mirrored here so a request is refused with the
reason before anything is written:

* the PF needs a driver that configures SR-IOV (``sriov_configure``): no driver, or one
  without it, answers -ENOENT; vfio-pci has it only with its module parameter
  ``enable_sriov=1`` (:func:`enable_vfio_sriov`);
* N > ``sriov_totalvfs`` is -ERANGE;
* a PF with VFs takes a new count only through 0 (-EBUSY: "Disable before enabling"),
  so N -> M is two writes, and removing VFs takes them from whoever holds them: a VF
  held open through VFIO would make the write wait until it is closed.

Every change is journaled like a bind (:mod:`pyvfio.host.journal`): before the first
write the PF's original count goes to ``sriov.json`` beside the bind journal (under the
same lock), so ``pyvfio restore`` puts the count back after any crash. Only the original
is trusted on restore, and every step of it (write 0, write the original) is idempotent.
"""

from __future__ import annotations

import errno
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pyvfio.errors import HostError, InvalidAddressError
from pyvfio.host import usage
from pyvfio.host.journal import (
    begin_steps,
    exclusive_lock,
    state_dir,
    step,
    write_json_atomically,
)
from pyvfio.host.sysfs import LIVE, PCI_DEVICES, Sysfs, WriteTimeoutError
from pyvfio.pci.address import normalize

SRIOV_JOURNAL = "sriov.json"
FORMAT_VERSION = 1
#: vfio-pci's module parameter that lets it create VFs (drivers/vfio/pci/vfio_pci.c).
ENABLE_SRIOV_PARAM = "sys/module/vfio_pci/parameters/enable_sriov"
#: Seconds one write of ``sriov_numvfs`` may take: the kernel adds (or removes) every VF
#: and probes its driver inside the write, which on real hardware takes seconds per VF.
WRITE_TIMEOUT = 120.0

Progress = Callable[[str], None]


class SriovError(HostError, ValueError):
    """A request the device or its driver cannot take (bad input: exit 2, nothing changed)."""


class VfInUseError(SriovError):
    """Removing VFs would take one from a user (a process holding it, or the host)."""


@dataclass(frozen=True)
class VirtualFunction:
    """One VF of a PF: its address, its index (``virtfnN``) and its driver."""

    index: int
    address: str
    driver: str | None

    def __str__(self) -> str:
        return f"{self.address} ({self.driver or 'no driver'})"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SriovState:
    """A PF's SR-IOV as sysfs shows it now."""

    address: str
    driver: str | None
    total_vfs: int
    num_vfs: int
    vfs: tuple[VirtualFunction, ...]

    def __str__(self) -> str:
        text = f"{self.address} ({self.driver or 'no driver'}): {self.num_vfs} of "
        text += f"{self.total_vfs} VFs"
        return text + "".join(f"\n    {vf}" for vf in self.vfs)

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "driver": self.driver,
            "total_vfs": self.total_vfs,
            "num_vfs": self.num_vfs,
            "vfs": [vf.to_json() for vf in self.vfs],
        }


def virtual_functions(address: str, sysfs: Sysfs = LIVE) -> tuple[VirtualFunction, ...]:
    """The PF's VFs in ``virtfnN`` order (empty for a device without any)."""
    rel = sysfs.device_dir(address)
    names = [n for n in sysfs.listdir(rel) if n.startswith("virtfn") and n[6:].isdigit()]
    out = []
    for name in sorted(names, key=lambda n: int(n[6:])):
        vf = sysfs.link_name(f"{rel}/{name}")
        if vf is not None:
            out.append(VirtualFunction(int(name[6:]), vf, sysfs.driver(vf)))
    return tuple(out)


def physical_function(address: str, sysfs: Sysfs = LIVE) -> str | None:
    """The PF of a VF (its ``physfn`` link); None for any other device."""
    return sysfs.link_name(f"{sysfs.device_dir(address)}/physfn")


def state(address: str, sysfs: Sysfs = LIVE) -> SriovState:
    """The PF's SR-IOV now; SriovError for a device that has none (no sriov_totalvfs)."""
    addr = normalize(address)
    rel = sysfs.device_dir(addr)
    total = sysfs.read_int(f"{rel}/sriov_totalvfs")
    if total is None:
        pf = physical_function(addr, sysfs)
        why = f"it is a VF of {pf}" if pf else "it has no SR-IOV capability (no sriov_totalvfs)"
        raise SriovError(f'{addr} cannot have VFs: {why}; pyvfio ls shows the PFs ("SR-IOV" lines)')
    return SriovState(
        addr,
        sysfs.driver(addr),
        total,
        sysfs.read_int(f"{rel}/sriov_numvfs") or 0,
        virtual_functions(addr, sysfs),
    )


def relations(sysfs: Sysfs = LIVE) -> dict[str, dict[str, Any]]:
    """``ls``'s SR-IOV fields, by address, for the PFs and VFs only: a PF's
    ``{"sriov": {"total_vfs", "num_vfs", "vfs": [...]}}``, a VF's ``{"physical_function"}``."""
    out: dict[str, dict[str, Any]] = {}
    for addr in sysfs.listdir(PCI_DEVICES):
        rel = f"{PCI_DEVICES}/{addr}"
        pf = sysfs.link_name(f"{rel}/physfn")
        if pf is not None:
            out[addr] = {"physical_function": pf}
        elif sysfs.exists(f"{rel}/sriov_totalvfs"):
            out[addr] = {"sriov": {**state(addr, sysfs).to_json()}}
            for key in ("address", "driver"):
                del out[addr]["sriov"][key]
    return out


def vfio_sriov_enabled(sysfs: Sysfs = LIVE) -> bool | None:
    """vfio-pci's ``enable_sriov`` parameter (None: vfio-pci is not loaded)."""
    text = sysfs.read_attr(ENABLE_SRIOV_PARAM)
    return None if text is None else text in ("Y", "1")


def enable_vfio_sriov(sysfs: Sysfs = LIVE) -> None:
    """Set vfio-pci's ``enable_sriov`` (the parameter is root-writable, 0644); HostError
    when it cannot be, with the boot option that does the same."""
    if vfio_sriov_enabled(sysfs):
        return
    try:
        sysfs.write_attr(ENABLE_SRIOV_PARAM, "1")
    except OSError as err:
        raise HostError(
            f"cannot set vfio-pci's enable_sriov (/{ENABLE_SRIOV_PARAM}: {err.strerror}); "
            "load vfio-pci and run as root, or boot with vfio_pci.enable_sriov=1"
        ) from err


# -- the journal -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SriovEntry:
    """A PF whose VF count pyvfio changed: the count it had, the one asked for, how far."""

    address: str
    original: int
    target: int
    #: planned (journaled, being written: restore trusts only ``original``) -> done
    step: str = "planned"

    @property
    def done(self) -> bool:
        return self.step == "done"

    def __str__(self) -> str:
        if self.done:
            return f"{self.address} has {self.target} VFs by pyvfio (was {self.original})"
        return (
            f"{self.address} VFs half-done: stopped after '{self.step}' on the way to "
            f"{self.target} (was {self.original})"
        )

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "done": self.done}


STEPS = ("planned", "done")


class SriovJournal:
    """``sriov.json`` in the state folder: the PFs whose VF count pyvfio changed."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or state_dir()
        self.path = self.directory / SRIOV_JOURNAL
        self.entries = self._load()

    def _damaged(self, why: str) -> HostError:
        return SriovError(
            f"cannot read the SR-IOV journal {self.path}: {why}; nothing was changed; to "
            f"repair: read it (cat {self.path}), set each PF's sriov_numvfs it names by "
            f"hand, then remove it (rm {self.path})"
        )

    def _load(self) -> dict[str, SriovEntry]:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except PermissionError:
            return {}  # root's, like the bind journal: a user reads no entries
        except (OSError, ValueError, RecursionError) as err:
            raise self._damaged(str(err) or type(err).__name__) from None
        if not isinstance(raw, dict) or raw.get("version") != FORMAT_VERSION:
            raise self._damaged("not a version 1 SR-IOV journal")
        devices = raw.get("devices")
        if not isinstance(devices, dict):
            raise self._damaged("'devices' is not an object")
        out = {}
        for addr, data in devices.items():
            if not isinstance(data, dict) or _canonical(addr) != addr:
                raise self._damaged(f"the entry {addr!r} is not a PCI address with an object")
            original, target, where = data.get("original"), data.get("target"), data.get("step")
            if type(original) is not int or type(target) is not int or where not in STEPS:
                raise self._damaged(f"the entry {addr!r} lacks original, target or step")
            if not 0 <= original <= 0xFFFF or not 0 <= target <= 0xFFFF:
                raise self._damaged(f"the entry {addr!r} has a VF count out of range")
            out[addr] = SriovEntry(addr, original, target, where)
        return out

    def save(self) -> None:
        data = {
            "version": FORMAT_VERSION,
            "devices": {a: asdict(e) for a, e in sorted(self.entries.items())},
        }
        write_json_atomically(self.path, data)
        step("sriov journal")

    def put(self, entry: SriovEntry) -> None:
        self.entries[entry.address] = entry
        self.save()

    def forget(self, address: str) -> None:
        if self.entries.pop(address, None) is not None:
            self.save()


def _canonical(addr: str) -> str | None:
    try:
        return normalize(addr)
    except InvalidAddressError:
        return None


def _locked(directory: Path | None) -> Any:
    where = directory or state_dir()
    # The bind journal's lock: a bind and a VF change never interleave.
    return exclusive_lock(where, "journal.lock", f"the journal in {where}")


def journal_entries(directory: Path | None = None) -> dict[str, SriovEntry]:
    """The entries now, without locking (for ``ls``); SriovError when damaged."""
    return SriovJournal(directory).entries


# -- changing the count -----------------------------------------------------------------------


@dataclass(frozen=True)
class SriovChange:
    """What ``pyvfio sriov`` did: the count before and after, and the VFs now."""

    address: str
    before: int
    after: int
    vfs: tuple[VirtualFunction, ...]

    @property
    def changed(self) -> bool:
        return self.before != self.after

    def __str__(self) -> str:
        if not self.changed:
            return f"{self.address} has {self.after} VFs already: nothing to do"
        text = f"{self.address}: {self.before} -> {self.after} VFs"
        return text + "".join(f"\n    {vf}" for vf in self.vfs)

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "before": self.before,
            "after": self.after,
            "changed": self.changed,
            "vfs": [vf.to_json() for vf in self.vfs],
        }


def check_request(address: str, count: int, sysfs: Sysfs = LIVE) -> SriovState:
    """The PF's state when ``count`` VFs can be asked of it; SriovError saying why not."""
    now = state(address, sysfs)
    addr = now.address
    if count < 0:
        raise SriovError(f"--vfs {count}: give a number of VFs from 0 to {now.total_vfs}")
    if count > now.total_vfs:
        raise SriovError(
            f"{addr} can have at most {now.total_vfs} VFs (sriov_totalvfs), not {count}"
        )
    if count == now.num_vfs:
        return now
    if now.driver is None:
        raise SriovError(
            f"{addr} has no driver, and only a PF's driver creates VFs: bind it to its own "
            f"driver, or to vfio-pci with enable_sriov (pyvfio bind {addr}); nothing was changed"
        )
    if now.driver == "vfio-pci" and vfio_sriov_enabled(sysfs) is False:
        raise SriovError(
            f"{addr} is on vfio-pci, which creates VFs only with its parameter enable_sriov=1: "
            f"add --enable-sriov (or echo 1 > /{ENABLE_SRIOV_PARAM}, or boot with "
            "vfio_pci.enable_sriov=1); nothing was changed"
        )
    return now


def refuse_vfs_in_use(now: SriovState, sysfs: Sysfs = LIVE, *, force: bool = False) -> None:
    """VfInUseError when removing ``now``'s VFs would take one from a user: a process
    holding it through VFIO (always: the write would wait for it), or the host (a mount,
    a live link; ``force`` takes those)."""
    for vf in now.vfs:
        if not sysfs.exists(f"{PCI_DEVICES}/{vf.address}"):
            continue
        held = [h for h in usage.device_holders(vf.address, sysfs) if h.certain]
        if held:
            raise VfInUseError(
                f"{now.address}'s VF {vf.address} is held open by "
                f"{usage.describe_holders(held)}: removing the VFs would wait until it is "
                "closed; close that program first; nothing was changed"
            )
        users = () if force else usage.device_users(vf.address, sysfs)
        if users:
            raise VfInUseError(
                f"{now.address}'s VF {vf.address} is in use: {users[0]}; removing the VFs "
                "would take it away, so nothing was changed (--force takes it anyway)"
            )


def _write_numvfs(sysfs: Sysfs, addr: str, count: int, timeout: float) -> None:
    rel = f"{sysfs.device_dir(addr)}/sriov_numvfs"
    try:
        sysfs.write_attr(rel, str(count), timeout=timeout)
    except WriteTimeoutError as err:
        raise HostError(
            f"{addr}: writing {count} to sriov_numvfs did not return in {err.timeout:g} s: the "
            f"kernel is still adding or removing VFs (process {err.pid} waits for it; a VF "
            "held open makes it wait until it is closed); run pyvfio restore once it is done"
        ) from err
    except PermissionError as err:
        raise HostError(f"{addr}: permission denied writing /{rel}; run as root") from err
    except OSError as err:
        why = {
            errno.ENOENT: "its driver does not create VFs (no driver, or vfio-pci without "
            "enable_sriov=1)",
            errno.ERANGE: "more than sriov_totalvfs",
            errno.EBUSY: "it has VFs already (the kernel takes a new count only through 0)",
        }.get(err.errno or 0, "see dmesg for the driver's reason")
        raise HostError(
            f"{addr}: writing {count} to sriov_numvfs failed: {err.strerror}: {why}"
        ) from err


def _settle(sysfs: Sysfs, addr: str, count: int, timeout: float, progress: Progress) -> None:
    """Write ``count``, through 0 when VFs are there; the journal step after the zero."""
    current = sysfs.read_int(f"{sysfs.device_dir(addr)}/sriov_numvfs") or 0
    if current == count:
        return
    if current:
        progress(f"{addr}: removing {current} VFs")
        _write_numvfs(sysfs, addr, 0, timeout)
        step("sriov zero")
    if count:
        progress(f"{addr}: creating {count} VFs (the kernel probes each: this can take a while)")
        _write_numvfs(sysfs, addr, count, timeout)
        step("sriov write")


def _quiet(_: str) -> None:
    pass


def set_num_vfs(
    address: str,
    count: int,
    *,
    force: bool = False,
    enable_sriov: bool = False,
    sysfs: Sysfs = LIVE,
    journal_dir: Path | None = None,
    timeout: float = WRITE_TIMEOUT,
    progress: Progress = _quiet,
) -> SriovChange:
    """Give the PF ``count`` VFs (0 removes them), journaled so restore can undo it.

    Refused before anything is written (SriovError): not a PF, more than
    ``sriov_totalvfs``, a PF without a driver that creates VFs, VFs in use (the host's
    uses: unless ``force``). ``enable_sriov`` sets vfio-pci's parameter first for a PF
    on vfio-pci. ``progress`` is told before each slow write.
    """
    from pyvfio.host.bind import require_root  # the bind module's rule, written once

    addr = normalize(address)
    if enable_sriov and sysfs.driver(addr) == "vfio-pci":
        state(addr, sysfs)  # a non-PF is bad input before the parameter is touched
        require_root(sysfs, "changing VFs")
        enable_vfio_sriov(sysfs)
    now = check_request(addr, count, sysfs)
    if count == now.num_vfs:
        return SriovChange(addr, count, count, now.vfs)
    if now.num_vfs:
        refuse_vfs_in_use(now, sysfs, force=force)
    require_root(sysfs, "changing VFs")
    begin_steps()
    with _locked(journal_dir):
        journal = SriovJournal(journal_dir)
        old = journal.entries.get(addr)
        original = old.original if old is not None else now.num_vfs
        journal.put(SriovEntry(addr, original, count))
        # On any error the entry stays: restore puts the original count back.
        _settle(sysfs, addr, count, timeout, progress)
        if count == original:
            journal.forget(addr)  # back where it started: nothing to undo
        else:
            journal.put(SriovEntry(addr, original, count, "done"))
    after = sysfs.read_int(f"{sysfs.device_dir(addr)}/sriov_numvfs") or 0
    if after != count:
        raise HostError(f"{addr} has {after} VFs after writing {count}; see dmesg for why")
    return SriovChange(addr, now.num_vfs, count, virtual_functions(addr, sysfs))


@dataclass(frozen=True)
class SriovRestored:
    """A PF whose VF count was put back (or found with nothing to undo)."""

    address: str
    num_vfs: int
    changed: bool
    note: str = ""

    def __str__(self) -> str:
        if not self.changed:
            return f"{self.address}: {self.note or 'VF count: nothing to undo'}"
        return f"{self.address}: back to {self.num_vfs} VFs"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def restore(
    addresses: Sequence[str] = (),
    *,
    all_devices: bool = False,
    sysfs: Sysfs = LIVE,
    journal_dir: Path | None = None,
    timeout: float = WRITE_TIMEOUT,
    progress: Progress = _quiet,
) -> list[SriovRestored]:
    """Put journaled PFs back to their original VF count (all of them, or those named
    that pyvfio changed; a named device it did not is left out: the bind restore speaks
    for it). A VF held open is refused (VfInUseError) before anything is written."""
    wanted = [normalize(a) for a in addresses]
    entries = SriovJournal(journal_dir).entries
    todo = list(entries) if all_devices else [a for a in wanted if a in entries]
    if not todo:
        return []
    from pyvfio.host.bind import require_root

    require_root(sysfs, "restoring VF counts")
    begin_steps()
    done = []
    with _locked(journal_dir):
        journal = SriovJournal(journal_dir)
        for addr in todo:
            entry = journal.entries.get(addr)
            if entry is None:
                continue
            if not sysfs.exists(f"{PCI_DEVICES}/{addr}"):
                journal.forget(addr)
                done.append(SriovRestored(addr, entry.original, False, "device gone"))
                continue
            if sysfs.read_int(f"{sysfs.device_dir(addr)}/sriov_totalvfs") is None:
                # Another device at that address now (hot-plug): nothing of pyvfio's to undo.
                journal.forget(addr)
                done.append(SriovRestored(addr, entry.original, False, "no SR-IOV PF there now"))
                continue
            current = sysfs.read_int(f"{sysfs.device_dir(addr)}/sriov_numvfs") or 0
            if current != entry.original and current:
                refuse_vfs_in_use(state(addr, sysfs), sysfs, force=True)
            _settle(sysfs, addr, entry.original, timeout, progress)
            journal.forget(addr)
            done.append(SriovRestored(addr, entry.original, current != entry.original))
    return done


__all__ = [
    "SriovChange",
    "SriovEntry",
    "SriovError",
    "SriovRestored",
    "SriovState",
    "VfInUseError",
    "VirtualFunction",
    "enable_vfio_sriov",
    "physical_function",
    "relations",
    "restore",
    "set_num_vfs",
    "state",
    "virtual_functions",
]
