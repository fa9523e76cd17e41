"""Move a device between its host driver and vfio-pci through sysfs.

Binding uses the per-device ``driver_override`` (kernel 3.16+): it names the one
driver allowed to take that device, so identical cards elsewhere are untouched,
unlike ``new_id`` which claims every device with the same IDs.

Two levels:

* :func:`bind_to` / :func:`bind_vfio` / :func:`give_back` move one device, and
  remember nothing (the lab's fixtures and the demo use them);
* :func:`plan_bind` + :func:`bind_devices`, :func:`unbind_devices` and :func:`restore`
  are what ``pyvfio bind/unbind/restore`` run: they check the devices are not in use,
  follow the IOMMU group rule, and record every step in the
  :mod:`~pyvfio.host.journal` so that any interrupted bind can be undone.

Two rules keep the journal true when several pyvfio run at once or a device is held:

* a plan is made without the journal's lock, so :func:`bind_devices` reads every
  device's driver and users again under the lock and refuses (:class:`StalePlanError`,
  nothing changed) when they are not what the plan saw: the original it records is
  the driver the device has at that moment, never one another pyvfio already changed;
* every sysfs write has a deadline (:data:`WRITE_TIMEOUT`): vfio-pci's remove waits
  until every user has closed the device, so a device still held open is refused up
  front (:class:`DeviceHeldError`, naming the processes), and a write that waits anyway
  (a holder pyvfio cannot see) ends in :class:`UnbindTimeoutError` with the journal's lock
  released and the entry marked as waiting, never in a hang.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from pyvfio.errors import HostError, InvalidAddressError
from pyvfio.host import inventory, resetmethod, usage
from pyvfio.host.journal import Journal, JournalEntry, Waiting, begin_steps, step
from pyvfio.host.sysfs import LIVE, PCI_DEVICES, Sysfs, WriteTimeoutError, process_start
from pyvfio.pci.address import normalize
from pyvfio.viability import is_vfio_driver

VFIO_PCI = "vfio-pci"
#: The modules vfio-pci needs, vfio_pci first: its own, the VFIO core, the type1 backend
#: (what doctor checks for and what persist puts in an initramfs, in this order).
VFIO_MODULES = ("vfio_pci", "vfio", "vfio_iommu_type1")
#: Seconds a sysfs write may take before pyvfio stops waiting for it. Unbinding a host
#: driver from real hardware (a GPU's) can take seconds; vfio-pci's remove asks the
#: device's user to let go every 10 s (the req eventfd, which QEMU answers by unplugging
#: the device from its guest), so this leaves room for a guest that cooperates.
WRITE_TIMEOUT = 30.0


def module_loaded(name: str, sysfs: Sysfs = LIVE) -> bool:
    """Loaded, or built in: /sys/module/NAME exists (a built-in module shows there only
    when it has parameters, so modules.builtin is asked too)."""
    if sysfs.exists(f"sys/module/{name.replace('-', '_')}"):
        return True
    release = sysfs.read_attr("proc/sys/kernel/osrelease")
    builtin = sysfs.read_lines(f"lib/modules/{release}/modules.builtin") if release else []
    return name.replace("-", "_") in _module_names(builtin)


def load_module(name: str, sysfs: Sysfs = LIVE) -> None:
    """``modprobe NAME`` unless it is loaded or built in; HostError with the reason."""
    if module_loaded(name, sysfs):
        return
    try:
        done = subprocess.run(["modprobe", name], capture_output=True, text=True, check=False)
    except FileNotFoundError as err:
        raise HostError(
            f"cannot load {name}: modprobe is missing (Debian: apt-get install kmod)"
        ) from err
    if done.returncode != 0 or not module_loaded(name, sysfs):
        why = done.stderr.strip() or f"modprobe exited with {done.returncode}"
        raise HostError(f"cannot load {name}: {why}; is this kernel built with CONFIG_VFIO_PCI?")


def _write(sysfs: Sysfs, rel: str, value: str, doing: str, timeout: float = WRITE_TIMEOUT) -> None:
    try:
        sysfs.write_attr(rel, value, timeout=timeout)
    except WriteTimeoutError:
        raise  # the caller knows the device and says who holds it
    except PermissionError as err:
        raise HostError(f"{doing}: permission denied writing /{rel}; run as root") from err
    except OSError as err:
        # drivers_probe and bind answer ENODEV/EINVAL... when no driver accepts the device.
        if err.errno in (errno.ENODEV, errno.EINVAL) and rel.endswith(("/bind", "drivers_probe")):
            return
        raise HostError(f"{doing}: writing /{rel} failed: {err.strerror}") from err


def _unbind(sysfs: Sysfs, addr: str, driver: str, timeout: float, doing: str = "") -> None:
    """Take ``addr`` from ``driver`` through the driver's ``unbind`` file."""
    unbind = f"sys/bus/pci/drivers/{driver}/unbind"
    _write(sysfs, unbind, addr, doing or f"unbinding {addr} from {driver}", timeout)


def _probe(sysfs: Sysfs, addr: str, timeout: float) -> None:
    """Let the kernel bind ``addr`` to the driver its driver_override (or IDs) names."""
    _write(sysfs, "sys/bus/pci/drivers_probe", addr, f"probing {addr}", timeout)


def bind_to(
    address: str, driver: str | None, sysfs: Sysfs = LIVE, *, timeout: float = WRITE_TIMEOUT
) -> str | None:
    """Give ``address`` to ``driver`` (None: no driver); return the driver it had.

    Steps, each a single sysfs write: set driver_override, unbind from the current
    driver, probe. A device already on ``driver`` is left alone (a no-op). A device a
    process holds open through VFIO is refused (DeviceHeldError), nothing changed.
    """
    addr = normalize(address)
    dev = sysfs.device_dir(addr)
    before = sysfs.driver(addr)
    if before == driver:
        return before
    if is_vfio_driver(before):
        refuse_held(addr, sysfs)
    if driver == VFIO_PCI:
        load_module(VFIO_PCI, sysfs)
    try:
        _write(sysfs, f"{dev}/driver_override", (driver or "\n"), f"binding {addr}", timeout)
        if before is not None:
            _unbind(sysfs, addr, before, timeout)
        if driver is not None:
            _probe(sysfs, addr, timeout)
    except WriteTimeoutError as err:
        raise UnbindTimeoutError.of(addr, before, err, sysfs) from err
    after = sysfs.driver(addr)
    if driver is not None and after != driver:
        raise HostError(
            f"{addr} did not bind to {driver} (it is on "
            f"{after or 'no driver'}); see dmesg for the driver's reason"
        )
    return before


def bind_vfio(address: str, sysfs: Sysfs = LIVE) -> str | None:
    """Bind ``address`` to vfio-pci; return the driver it had (None: none)."""
    return bind_to(address, VFIO_PCI, sysfs)


def read_override(address: str, sysfs: Sysfs = LIVE) -> str | None:
    """The device's ``driver_override`` (None: unset; the kernel shows that as ``(null)``)."""
    text = sysfs.read_attr(f"{sysfs.device_dir(address)}/driver_override")
    return None if text in (None, "", "(null)") else text


def give_back(
    address: str,
    original: str | None,
    sysfs: Sysfs = LIVE,
    *,
    original_override: str | None = None,
    timeout: float = WRITE_TIMEOUT,
) -> None:
    """Return ``address`` to ``original`` (None: leave it driverless), restore the override.

    Idempotent, so it is safe on a device a bind left at any step: the override goes
    first (else ``bind`` is refused for a device whose override names another driver),
    then the device leaves whatever driver it is on, then ``original`` takes it.
    A device a process holds open through VFIO is refused first (DeviceHeldError):
    vfio-pci would wait for it to close the device; a write that waits all the same
    ends in UnbindTimeoutError after ``timeout`` seconds.
    """
    addr = normalize(address)
    dev = sysfs.device_dir(addr)
    current = sysfs.driver(addr)
    if is_vfio_driver(current) and current != original:
        refuse_held(addr, sysfs)
    try:
        _write(
            sysfs,
            f"{dev}/driver_override",
            original_override or "\n",
            f"restoring {addr}",
            timeout,
        )
        current = sysfs.driver(addr)
        if current == original:
            return
        if current is not None:
            _unbind(sysfs, addr, current, timeout)
        if original is not None:
            if not sysfs.exists(f"sys/bus/pci/drivers/{original}"):
                load_module(original, sysfs)
            _write(
                sysfs,
                f"sys/bus/pci/drivers/{original}/bind",
                addr,
                f"binding {addr} back to {original}",
                timeout,
            )
    except WriteTimeoutError as err:
        raise UnbindTimeoutError.of(addr, current, err, sysfs) from err
    if original is not None and sysfs.driver(addr) != original:
        raise HostError(
            f"{addr} did not go back to {original}; see dmesg for the driver's reason, "
            f"then try 'echo {addr} > /sys/bus/pci/drivers/{original}/bind'"
        )


# -- Modules and drivers the kernel can provide ------------------------------------------------


def _module_names(lines: list[str]) -> set[str]:
    """Module names from modules.dep / modules.builtin lines (``kernel/.../vfio-pci.ko.xz:``)."""
    names = set()
    for line in lines:
        path = line.split(":", 1)[0].strip()
        base = path.rsplit("/", 1)[-1]
        if ".ko" in base:
            names.add(base[: base.index(".ko")].replace("-", "_"))
    return names


def module_available(name: str, sysfs: Sysfs = LIVE) -> bool:
    """Loaded, built in, or installed for the running kernel (modules.dep/modules.builtin)."""
    if module_loaded(name, sysfs):
        return True
    release = sysfs.read_attr("proc/sys/kernel/osrelease")
    if not release:
        return False
    base = f"lib/modules/{release}"
    known = _module_names(sysfs.read_lines(f"{base}/modules.dep"))
    known |= _module_names(sysfs.read_lines(f"{base}/modules.builtin"))
    return name.replace("-", "_") in known


def check_driver(name: str, sysfs: Sysfs = LIVE) -> None:
    """UnknownDriverError unless ``name`` is a PCI driver here or a module that can load."""
    if sysfs.exists(f"sys/bus/pci/drivers/{name}") or module_available(name, sysfs):
        return
    known = ", ".join(sysfs.listdir("sys/bus/pci/drivers")[:12])
    raise UnknownDriverError(
        f"no PCI driver called {name!r} on this host, loaded or installable "
        f"(loaded PCI drivers: {known or 'none'})"
    )


# -- Safe binding: plan, check, journal, act ------------------------------------------------------


class UnknownDriverError(HostError, ValueError):
    """A driver name that is neither loaded nor installed (bad input: exit 2)."""


class NotRootError(HostError, ValueError):
    """Changing drivers needs root (bad input: exit 2, nothing changed)."""


class DeviceInUseError(HostError):
    """The host is using a device pyvfio was asked to take; ``users`` says how."""

    def __init__(self, message: str, users: dict[str, tuple[str, ...]]) -> None:
        super().__init__(message)
        self.users = users


class StalePlanError(HostError, ValueError):
    """A device is not as the plan saw it when the journal's lock was taken: another
    pyvfio (or the host) moved it meanwhile. Refused, nothing changed (exit 2)."""


class DeviceHeldError(HostError, ValueError):
    """A process holds the device open through VFIO, so vfio-pci would not let it go
    (its remove waits for the last close). Refused, nothing changed (exit 2);
    ``holders`` names the processes."""

    def __init__(self, message: str, holders: Sequence[usage.Holder]) -> None:
        super().__init__(message)
        self.holders = tuple(holders)


class UnbindTimeoutError(HostError):
    """A write to a device's driver did not return in time: the kernel waits for a user
    of the device pyvfio could not tell in advance. The writer process waits on and the
    kernel finishes the write when the device is closed; ``holders`` are the candidates."""

    def __init__(
        self, message: str, address: str, waiting: Waiting, holders: Sequence[usage.Holder]
    ) -> None:
        super().__init__(message)
        self.address = address
        self.waiting = waiting
        self.holders = tuple(holders)

    @classmethod
    def of(
        cls, address: str, driver: str | None, err: WriteTimeoutError, sysfs: Sysfs
    ) -> UnbindTimeoutError:
        found = (
            usage.device_holders(address, sysfs) if sysfs.exists(f"{PCI_DEVICES}/{address}") else []
        )
        who = (
            usage.describe_holders(found)
            if found
            else ("a user pyvfio cannot see (fuser -v /dev/vfio/* or lsof | grep vfio may show it)")
        )
        on = f"{driver} to let it go" if driver else "its driver to finish"
        message = (
            f"{address}: waited {err.timeout:g} s for {on}: the kernel waits until the device "
            f"is closed, by {who}; pyvfio stopped waiting (its lock is free); close that "
            f"program or end it (pyvfio revoke {address} --user NAME --kill, or kill PID), "
            f"and the kernel finishes by itself (process {err.pid} waits for it); then run "
            "pyvfio restore again"
        )
        write = f"unbind from {driver}" if driver else "write to its driver"
        return cls(message, address, Waiting(write, err.pid, err.start), found)


def refuse_held(address: str, sysfs: Sysfs = LIVE) -> None:
    """DeviceHeldError when a process holds ``address`` open through VFIO (its group
    node, its cdev, or its device fd where the kernel names the device): unbinding it
    would wait, uninterruptibly, until that process closes it."""
    found = [h for h in usage.device_holders(address, sysfs) if h.certain]
    if not found:
        return
    users = sorted({h.user for h in found})
    raise DeviceHeldError(
        f"{address} is held open by {usage.describe_holders(found)}: vfio-pci lets it go "
        f"only when that is closed; close that program or end it (pyvfio revoke {address} "
        f"--user {users[0]} --kill, or kill {found[0].pid}), then run the command again; "
        "nothing was changed",
        found,
    )


def require_root(sysfs: Sysfs = LIVE, doing: str = "changing drivers") -> None:
    if sysfs.is_live and os.geteuid() != 0:
        raise NotRootError(f"{doing} needs root: run it with sudo (nothing was changed)")


@dataclass(frozen=True)
class BindAction:
    """What a bind does to one device, and why."""

    address: str
    driver: str | None
    bind: bool
    reason: str
    users: tuple[str, ...] = ()

    def __str__(self) -> str:
        now = self.driver or "no driver"
        head = f"{self.address} ({now})"
        text = f"{head}: {self.reason}"
        for user in self.users:
            text += f"\n    in use: {user}"
        return text

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class BindPlan:
    """Every device a bind touches or checks, the target driver, and what stays blocking."""

    target: str
    actions: tuple[BindAction, ...]
    #: Members of the groups involved that stay on host drivers (the group is not viable).
    blockers: tuple[tuple[int, str, str], ...] = ()

    @property
    def changes(self) -> tuple[BindAction, ...]:
        return tuple(a for a in self.actions if a.bind)

    @property
    def in_use(self) -> tuple[BindAction, ...]:
        return tuple(a for a in self.changes if a.users)

    def __str__(self) -> str:
        lines = [str(a) for a in self.actions]
        for group, addr, driver in self.blockers:
            lines.append(
                f"group {group} stays not viable: {addr} is on {driver} "
                f"(bind it too, or use --group)"
            )
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "devices": [a.to_json() for a in self.actions],
            "blockers": [{"group": g, "address": a, "driver": d} for g, a, d in self.blockers],
        }


def _member_action(addr: str, target: str, sysfs: Sysfs) -> BindAction:
    """What ``--group`` does with a group member nobody named: the kernel's viability rule."""
    info = inventory.device_info(addr, sysfs)
    driver = info.driver
    if driver == target:
        return BindAction(addr, driver, False, f"group member, already on {target}")
    if info.is_bridge or driver == "pcieport":
        return BindAction(addr, driver, False, "group member, a bridge: stays on its driver")
    if driver is None:
        return BindAction(addr, driver, False, "group member without a driver: fine as it is")
    if not info.blocks_group:
        return BindAction(addr, driver, False, f"group member on {driver}: fine as it is")
    return BindAction(addr, driver, True, f"group member: {driver} -> {target}")


def plan_bind(
    addresses: Sequence[str],
    *,
    group: bool = False,
    target: str = VFIO_PCI,
    sysfs: Sysfs = LIVE,
) -> BindPlan:
    """Check the request and say what a bind would do; changes nothing.

    Raises InvalidAddressError / DeviceNotFoundError / UnknownDriverError for bad input,
    HostError when a device cannot go to vfio-pci at all (no IOMMU group).
    """
    if not addresses:
        raise InvalidAddressError("name at least one PCI address, e.g. 0000:00:1f.2")
    named = list(dict.fromkeys(normalize(a) for a in addresses))
    for addr in named:
        sysfs.device_dir(addr)
    check_driver(target, sysfs)
    actions: dict[str, BindAction] = {}
    groups: dict[int, list[str]] = {}
    for addr in named:
        driver = sysfs.driver(addr)
        number = sysfs.iommu_group(addr)
        if number is None and target == VFIO_PCI:
            raise HostError(
                f"{addr} has no IOMMU group, so vfio-pci cannot take it: the IOMMU is off "
                "(pyvfio doctor says what to change)"
            )
        if number is not None:
            groups.setdefault(number, sysfs.group_devices(number))
        if driver == target:
            actions[addr] = BindAction(addr, driver, False, f"already on {target}: nothing to do")
        else:
            users = usage.device_users(addr, sysfs)
            actions[addr] = BindAction(
                addr, driver, True, f"{driver or 'no driver'} -> {target}", users
            )
    if group:
        for members in groups.values():
            for member in members:
                if member not in actions:
                    action = _member_action(member, target, sysfs)
                    if action.bind:
                        action = replace(action, users=usage.device_users(member, sysfs))
                    actions[member] = action
    taken = {a.address for a in actions.values() if a.bind}
    return BindPlan(target, tuple(actions.values()), group_blockers(groups, taken, sysfs))


def group_blockers(
    groups: Mapping[int, Sequence[str]], taken: Collection[str], sysfs: Sysfs = LIVE
) -> tuple[tuple[int, str, str], ...]:
    """(group, address, driver) of each member of ``groups`` outside ``taken`` whose host
    driver keeps its group from being viable (the kernel's rule, `viability`); bind and
    persist both ask this."""
    blockers = []
    for number, members in sorted(groups.items()):
        for member in members:
            if member in taken:
                continue
            info = inventory.device_info(member, sysfs)
            if info.blocks_group and info.driver is not None:
                blockers.append((number, member, info.driver))
    return tuple(blockers)


def refuse_in_use(busy: Sequence[BindAction]) -> None:
    """DeviceInUseError naming the first device of ``busy`` the host uses (``users``);
    bind and persist both ask this, and both pass it with --force."""
    busy = [a for a in busy if a.users]
    if not busy:
        return
    first = busy[0]
    more = f" (and {len(busy) - 1} more device(s))" if len(busy) > 1 else ""
    raise DeviceInUseError(
        f"{first.address} is in use: {first.users[0]}{more}; taking it away would break "
        "the host, so nothing was changed (--force takes it anyway)",
        {a.address: a.users for a in busy},
    )


def bind_devices(
    plan: BindPlan,
    *,
    force: bool = False,
    sysfs: Sysfs = LIVE,
    journal_dir: Path | None = None,
    timeout: float = WRITE_TIMEOUT,
) -> list[BindAction]:
    """Carry out ``plan``, journaling each step; return the actions that changed a device.

    Under the journal's lock every device's driver (and users, without ``force``) is
    read again and compared with the plan: a difference is StalePlanError, nothing
    changed. The journal gets every device's original driver and override before the
    first write. If a device refuses to bind, every device this call moved is given
    back and HostError says which and why; a write that waits in the kernel longer than
    ``timeout`` seconds is UnbindTimeoutError, the device marked waiting in the journal.
    """
    if not force:
        refuse_in_use(plan.in_use)
    todo = plan.changes
    if not todo:
        return []
    require_root(sysfs, "binding devices")
    begin_steps()
    with Journal.locked(journal_dir) as journal:
        _check_plan(plan, force, sysfs)
        fresh = {}
        for action in todo:
            old = journal.entries.get(action.address)
            if old is not None and old.waiting is not None:
                _refuse_waiting(old, sysfs)
                old = replace(old, waiting=None)  # the kernel finished meanwhile
            # A device left half-done keeps the original recorded the first time;
            # otherwise the original is the driver read under the lock (the plan's).
            fresh[action.address] = JournalEntry(
                address=action.address,
                original_driver=old.original_driver if old else action.driver,
                original_override=(
                    old.original_override if old else read_override(action.address, sysfs)
                ),
                target=plan.target,
            )
        journal.record(fresh)
        try:
            if plan.target == VFIO_PCI:
                load_module(VFIO_PCI, sysfs)
                step("modules")
            for action in todo:
                _bind_one(journal, action.address, plan.target, sysfs, timeout)
        except BaseException as err:
            stuck = err.address if isinstance(err, UnbindTimeoutError) else None
            for addr in reversed(fresh):
                if addr == stuck:  # any write for it would wait as well: left as marked
                    continue
                with contextlib.suppress(HostError):
                    _restore_one(journal, journal.entries[addr], sysfs, timeout)
            raise
    return list(todo)


def _check_plan(plan: BindPlan, force: bool, sysfs: Sysfs) -> None:
    """StalePlanError unless every device is still as ``plan`` saw it (run under the
    journal's lock: the plan was made without it, and another pyvfio may have moved a
    device since, even left it half-way: its original would be recorded wrong)."""
    seen = [(a.address, a.driver) for a in plan.actions]
    seen += [(addr, driver) for _, addr, driver in plan.blockers]
    for addr, driver in seen:
        now = sysfs.driver(addr)
        if now != driver:
            raise StalePlanError(
                f"{addr} changed while the bind was planned: it was on "
                f"{driver or 'no driver'}, now it is on {now or 'no driver'} (another pyvfio "
                "or the host moved it); nothing was changed: run the command again"
            )
    if force:
        return
    for action in plan.changes:
        users = usage.device_users(action.address, sysfs)
        if users != action.users:
            raise StalePlanError(
                f"{action.address} changed while the bind was planned: now in use: "
                f"{users[0] if users else 'no longer'}; nothing was changed: run the command "
                "again (--force takes a device in use anyway)"
            )


def _bind_one(journal: Journal, addr: str, target: str, sysfs: Sysfs, timeout: float) -> None:
    dev = sysfs.device_dir(addr)
    current = sysfs.driver(addr)
    try:
        _write(sysfs, f"{dev}/driver_override", target, f"binding {addr}", timeout)
        step("override")
        journal.advance(addr, "override-set")
        current = sysfs.driver(addr)
        if current not in (None, target):
            _unbind(sysfs, addr, current, timeout)
            step("unbind")
            journal.advance(addr, "unbound")
        if sysfs.driver(addr) != target:
            _probe(sysfs, addr, timeout)
            step("probe")
    except WriteTimeoutError as err:
        stuck = UnbindTimeoutError.of(addr, current, err, sysfs)
        journal.wait_on(addr, stuck.waiting)
        raise stuck from err
    after = sysfs.driver(addr)
    if after != target:
        raise HostError(
            f"{addr} did not bind to {target} (it is on {after or 'no driver'}); "
            "see dmesg for the driver's reason; every device was given back"
        )
    journal.advance(addr, "bound")


def _refuse_waiting(entry: JournalEntry, sysfs: Sysfs) -> None:
    """HostError while the write the entry waits on is still in the kernel: any other
    write for the device would queue behind it (the device lock) and wait as well."""
    waiting = entry.waiting
    if waiting is None or process_start(waiting.pid) != waiting.start:
        return
    found = usage.device_holders(entry.address, sysfs)
    who = usage.describe_holders(found) if found else "a user pyvfio cannot see"
    raise HostError(
        f"{entry.address}: the kernel has not finished '{waiting.write}' (process "
        f"{waiting.pid} still waits for the device to be closed, by {who}); close "
        "that program or end it, then run pyvfio restore again; nothing was changed"
    )


def _restore_one(journal: Journal, entry: JournalEntry, sysfs: Sysfs, timeout: float) -> None:
    if entry.waiting is not None:
        _refuse_waiting(entry, sysfs)
        journal.wait_on(entry.address, None)  # the kernel finished: undo as usual
    if sysfs.exists(f"{PCI_DEVICES}/{entry.address}"):
        try:
            give_back(
                entry.address,
                entry.original_driver,
                sysfs,
                original_override=entry.original_override,
                timeout=timeout,
            )
        except UnbindTimeoutError as err:
            journal.wait_on(entry.address, err.waiting)
            raise
    journal.forget(entry.address)


@dataclass(frozen=True)
class Restored:
    """A device given back (or found with nothing to undo)."""

    address: str
    driver: str | None
    changed: bool
    note: str = ""
    #: The reset methods written back (pyvfio reset-method had changed them), or None.
    reset_method: tuple[str, ...] | None = None
    #: False when only the reset methods were undone: the driver is as it was.
    rebound: bool = True

    def __str__(self) -> str:
        if not self.changed:
            return f"{self.address}: {self.note or 'nothing to undo'}"
        said = [f"back on {self.driver or 'no driver'}"] if self.rebound else []
        if self.reset_method is not None:
            said.append(f"reset_method back to {' '.join(self.reset_method)}")
        return f"{self.address}: {', '.join(said)}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def restore(
    addresses: Sequence[str] = (),
    *,
    all_devices: bool = False,
    sysfs: Sysfs = LIVE,
    journal_dir: Path | None = None,
    timeout: float = WRITE_TIMEOUT,
) -> list[Restored]:
    """Give journaled devices back to their original driver and override.

    With ``all_devices`` every journal entry; otherwise those named (a named device
    pyvfio did not touch is reported unchanged). A device still held open through VFIO
    is refused (DeviceHeldError) before anything is written for it; a write that waits
    longer than ``timeout`` seconds is UnbindTimeoutError, the entry kept and marked.
    """
    if not all_devices and not addresses:
        raise InvalidAddressError("name the devices to restore, or use --all")
    named = [normalize(a) for a in addresses]
    for addr in named:
        sysfs.device_dir(addr)
    entries = Journal(journal_dir).entries  # a damaged journal is an error here
    resets = resetmethod.read_originals(journal_dir)  # pyvfio reset-method's changes
    wanted = list(dict.fromkeys([*entries, *resets])) if all_devices else named
    if not any(a in entries or a in resets for a in wanted):
        return [Restored(a, sysfs.driver(a), False, "pyvfio did not change it") for a in wanted]
    require_root(sysfs, "restoring devices")
    done = []
    with Journal.locked(journal_dir) as journal:
        for addr in wanted:
            reset = resetmethod.restore_locked(addr, sysfs, journal_dir)
            entry = journal.entries.get(addr)
            gone = "device gone" if not sysfs.exists(f"{PCI_DEVICES}/{addr}") else ""
            if entry is None:
                if reset is None:
                    note = "pyvfio did not change it"
                    done.append(Restored(addr, sysfs.driver(addr), False, note))
                else:
                    done.append(Restored(addr, sysfs.driver(addr), True, gone, reset, False))
                continue
            _restore_one(journal, entry, sysfs, timeout)
            gone = "device gone" if not sysfs.exists(f"{PCI_DEVICES}/{addr}") else ""
            done.append(Restored(addr, entry.original_driver, True, gone, reset))
    return done


def unbind_devices(
    addresses: Sequence[str],
    *,
    sysfs: Sysfs = LIVE,
    journal_dir: Path | None = None,
    timeout: float = WRITE_TIMEOUT,
) -> list[Restored]:
    """Take devices off vfio-pci: journaled ones go back to their original driver;
    others have their override cleared and are offered to the host's drivers."""
    if not addresses:
        raise InvalidAddressError("name at least one PCI address, e.g. 0000:00:1f.2")
    named = list(dict.fromkeys(normalize(a) for a in addresses))
    for addr in named:
        sysfs.device_dir(addr)
    entries = Journal(journal_dir).entries
    out: list[Restored] = []
    for addr in named:
        if addr in entries:
            out += restore([addr], sysfs=sysfs, journal_dir=journal_dir, timeout=timeout)
            continue
        driver = sysfs.driver(addr)
        if not is_vfio_driver(driver):
            out.append(Restored(addr, driver, False, f"not on vfio-pci ({driver or 'no driver'})"))
            continue
        require_root(sysfs, "unbinding devices")
        refuse_held(addr, sysfs)
        dev = sysfs.device_dir(addr)
        try:
            _write(sysfs, f"{dev}/driver_override", "\n", f"unbinding {addr}", timeout)
            _unbind(sysfs, addr, driver, timeout, f"unbinding {addr}")
            _probe(sysfs, addr, timeout)
        except WriteTimeoutError as err:
            raise UnbindTimeoutError.of(addr, driver, err, sysfs) from err
        out.append(Restored(addr, sysfs.driver(addr), True, ""))
    return out
